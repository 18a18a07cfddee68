"""Never more renders than needed, and the cause stays the cause , through
small misbehaving relays (tests/relays.py) in front of the fake upstream on loopback:

* Portkey fails every streamed request with its own HTTP 500 after the upstream rendered the
  image: one non-streamed retry, one warning, never the same request again; --doctor --probe
  recommends --no-stream.
* A gateway that already retried (LiteLLM's x-litellm-* headers, "retries exhausted") is not
  retried again: at most 1 + --retries paid attempts per image.
* claude-relay-service parks its upstream account after a 429 and then answers a generic 400:
  the final error names the 429.
* The stream is read to response.completed after the image is safe, so a relay records the
  request (bounded by a short grace period).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests import images
from tests.conftest import cli, doctor_line, env_for, report, run_cli
from tests.gateway import Gateway, error_reply, image_events, json_reply, sse_reply
from tests.relays import Relay

PNG = images.png_bytes(40, 24)


def upstream_answers(gw: Gateway) -> None:
    """The fake upstream renders the image, streamed or not."""

    def answer(rec: Any) -> Any:
        events = image_events(images.b64(PNG))
        if isinstance(rec.json, dict) and rec.json.get("stream"):
            return sse_reply(events)
        return json_reply(events[-1]["response"])

    gw.set_default(answer)


# --- a relay's own 5xx to a streamed request ------------------------------------------


def test_portkeys_own_500_is_retried_once_without_streaming(
    tmp_path: Path, gateway: Gateway
) -> None:
    upstream_answers(gateway)
    with Relay(gateway, "portkey") as relay:
        proc = cli(tmp_path, env_for(tmp_path, relay.base_url), "--json")
    assert proc.returncode == 0, report(proc, gateway)
    first, second = gateway.posts()  # two renders paid upstream, not three
    assert first.json["stream"] is True and second.json["stream"] is False
    assert relay.answers == [500, 200]
    assert proc.stderr.count("warning: the relay failed") == 1, proc.stderr
    assert "own HTTP 500 (Something went wrong)" in proc.stderr
    assert "retrying once without streaming" in proc.stderr and "--no-stream" in proc.stderr
    record = json.loads(proc.stdout)
    assert record["stream"] is False and record["retries"] == 1
    assert (tmp_path / "out.png").read_bytes() == PNG


def test_the_non_streamed_retry_is_a_paid_attempt_within_retries(
    tmp_path: Path, gateway: Gateway
) -> None:
    upstream_answers(gateway)
    with Relay(gateway, "portkey") as relay:
        proc = cli(tmp_path, env_for(tmp_path, relay.base_url), "--retries", "0")
    assert proc.returncode == 4, report(proc, gateway)
    assert len(gateway.posts()) == 1
    assert "Something went wrong" in proc.stderr


def test_an_openai_shaped_500_is_not_taken_for_a_relay_failure(
    tmp_path: Path, gateway: Gateway
) -> None:
    gateway.enqueue(error_reply(500, "The server had an error", type_="server_error"))
    gateway.enqueue(sse_reply(image_events(images.b64(PNG))))
    proc = cli(tmp_path, env_for(tmp_path, gateway.base_url), "--json")
    assert proc.returncode == 0, report(proc, gateway)
    assert [p.json["stream"] for p in gateway.posts()] == [True, True]
    assert "without streaming" not in proc.stderr


def test_a_relays_own_500_to_a_non_streamed_request_is_an_ordinary_retry(
    tmp_path: Path, gateway: Gateway
) -> None:
    """Without streaming there is nothing to switch off: the relay's 500 is retried as it was."""
    relay_500 = json_reply({"status": "failure", "message": "Something went wrong"}, status=500)
    gateway.enqueue(relay_500, json_reply(image_events(images.b64(PNG))[-1]["response"]))
    proc = cli(tmp_path, env_for(tmp_path, gateway.base_url), "--no-stream")
    assert proc.returncode == 0, report(proc, gateway)
    assert [p.json["stream"] for p in gateway.posts()] == [False, False]
    assert "the relay failed" not in proc.stderr and "attempt 1/3 failed" in proc.stderr
    assert (tmp_path / "out.png").read_bytes() == PNG


def test_doctor_probe_recommends_no_stream_behind_portkey(tmp_path: Path, gateway: Gateway) -> None:
    upstream_answers(gateway)
    with Relay(gateway, "portkey") as relay:
        proc = run_cli(["--doctor", "--probe"], env_for(tmp_path, relay.base_url))
    stream = doctor_line(proc, "stream")
    assert stream.startswith("failed") and "Something went wrong" in stream, proc.stdout
    assert "hint: use --no-stream" in proc.stdout
    probe = doctor_line(proc, "probe")
    assert probe.startswith("ok") and "--no-stream works here" in probe, proc.stdout
    assert "--api auto" not in proc.stdout
    assert [p.json["stream"] for p in gateway.posts()] == [True, False]


# --- a gateway that already retried ---------------------------------------------------


def test_a_5xx_from_a_gateway_that_retries_itself_is_not_repeated(
    tmp_path: Path, gateway: Gateway
) -> None:
    headers = {"x-litellm-call-id": "c0ffee", "x-litellm-version": "1.108.7"}
    gateway.set_default(error_reply(500, "litellm.InternalServerError", headers=headers))
    proc = cli(tmp_path, env_for(tmp_path, gateway.base_url))
    assert proc.returncode == 4, report(proc, gateway)
    assert len(gateway.posts()) == 1  # with LiteLLM's own 3 tries: 3 upstream, not 9
    assert "already retried this request itself" in proc.stderr


def test_an_error_saying_retries_ran_out_is_not_repeated(tmp_path: Path, gateway: Gateway) -> None:
    gateway.set_default(
        error_reply(502, "upstream failed; LiteLLM Retried: 3 times, LiteLLM Max Retries: 3")
    )
    proc = cli(tmp_path, env_for(tmp_path, gateway.base_url))
    assert proc.returncode == 4, report(proc, gateway)
    assert len(gateway.posts()) == 1


def test_a_429_from_a_gateway_that_retries_itself_is_still_retried(
    tmp_path: Path, gateway: Gateway
) -> None:
    # a rate limit renders nothing: waiting and asking again pays for nothing
    headers = {"x-litellm-call-id": "c0ffee", "retry-after-ms": "10"}
    gateway.enqueue(
        error_reply(429, "Rate limit reached", code="rate_limit_exceeded", headers=headers)
    )
    gateway.enqueue(sse_reply(image_events(images.b64(PNG))))
    proc = cli(tmp_path, env_for(tmp_path, gateway.base_url))
    assert proc.returncode == 0, report(proc, gateway)
    assert len(gateway.posts()) == 2


def test_a_plain_5xx_keeps_the_usual_retries(tmp_path: Path, gateway: Gateway) -> None:
    gateway.set_default(error_reply(500, "The server had an error", type_="server_error"))
    started = time.monotonic()
    proc = cli(tmp_path, env_for(tmp_path, gateway.base_url))
    assert proc.returncode == 4, report(proc, gateway)
    assert len(gateway.posts()) == 3 and time.monotonic() - started < 60  # 1 + --retries 2


def test_a_retry_after_beyond_the_time_budget_is_not_waited_for(
    tmp_path: Path, gateway: Gateway
) -> None:
    """A 503 that asks for 100 s when 5 s are left: the answer now, not a wait that cannot end
    in time."""
    gateway.set_default(
        error_reply(503, "overloaded", type_="server_error", headers={"Retry-After": "100"})
    )
    proc = cli(tmp_path, env_for(tmp_path, gateway.base_url), "--timeout", "5")
    assert proc.returncode == 4, report(proc, gateway)
    assert len(gateway.posts()) == 1
    assert "overloaded" in proc.stderr and "retrying" not in proc.stderr


def test_a_size_below_the_minimum_with_no_larger_size_is_not_resent(
    tmp_path: Path, gateway: Gateway
) -> None:
    """The largest landscape size refused as too small: no bigger size to try, one render."""
    gateway.set_default(
        error_reply(400, "Requested size is below the minimum pixel budget", param="tools[0].size")
    )
    proc = cli(tmp_path, env_for(tmp_path, gateway.base_url), "--size", "1536x1024")
    assert proc.returncode == 4, report(proc, gateway)
    assert len(gateway.posts()) == 1
    assert "minimum pixel budget" in proc.stderr and "retrying once with" not in proc.stderr


# --- the cause stays the cause --------------------------------------------------------


def test_after_a_429_the_relays_generic_400_does_not_hide_the_cause(
    tmp_path: Path, gateway: Gateway
) -> None:
    gateway.enqueue(
        error_reply(
            429,
            "Rate limit reached for gpt-image-2",
            code="rate_limit_exceeded",
            headers={"retry-after-ms": "10"},
        )
    )
    upstream_answers(gateway)  # would render now, but the relay has parked its account
    with Relay(gateway, "claude_relay") as relay:
        proc = cli(tmp_path, env_for(tmp_path, relay.base_url))
    assert proc.returncode == 4, report(proc, gateway)
    assert relay.answers == [429, 400] and len(gateway.posts()) == 1
    error = next(x for x in proc.stderr.splitlines() if x.startswith("error:"))
    assert "HTTP 429" in error and "Rate limit reached" in error, proc.stderr
    assert error.index("HTTP 429") < error.index("HTTP 400"), error
    assert "paused its upstream account" in proc.stderr


def test_after_a_500_a_generic_500_names_the_first(tmp_path: Path, gateway: Gateway) -> None:
    gateway.enqueue(error_reply(503, "upstream overloaded", type_="server_error"))
    gateway.set_default(error_reply(500, "Internal server error"))
    proc = cli(tmp_path, env_for(tmp_path, gateway.base_url), "--retries", "1")
    assert proc.returncode == 4, report(proc, gateway)
    error = next(x for x in proc.stderr.splitlines() if x.startswith("error:"))
    assert error.startswith("error: HTTP 503") and "upstream overloaded" in error, error


def test_a_specific_later_error_stays_the_error(tmp_path: Path, gateway: Gateway) -> None:
    gateway.enqueue(error_reply(429, "slow down", headers={"retry-after-ms": "10"}))
    gateway.enqueue(error_reply(400, "Invalid size", param="tools[0].size"))
    proc = cli(tmp_path, env_for(tmp_path, gateway.base_url))
    assert proc.returncode == 4, report(proc, gateway)
    error = next(x for x in proc.stderr.splitlines() if x.startswith("error:"))
    assert error.startswith("error: HTTP 400") and "slow down" not in error, error
    assert "paused its upstream account" not in proc.stderr


# --- read to the end --------------------------------------------------------------------


def test_the_stream_is_read_to_response_completed_so_the_relay_records_it(
    tmp_path: Path, gateway: Gateway
) -> None:
    # response.completed comes a moment after the image (as upstreams send it)
    gateway.enqueue(sse_reply(image_events(images.b64(PNG)), delay=0.3))
    with Relay(gateway, "claude_relay") as relay:
        proc = cli(tmp_path, env_for(tmp_path, relay.base_url))
    assert proc.returncode == 0, report(proc, gateway)
    assert (relay.completed, relay.aborted) == (1, 0)
    assert (tmp_path / "out.png").read_bytes() == PNG


def test_a_stall_after_the_image_costs_only_the_grace_period(
    tmp_path: Path, gateway: Gateway
) -> None:
    # seq 0..6 arrive (6: the image), then silence instead of response.completed
    gateway.enqueue(sse_reply(image_events(images.b64(PNG)), stall_after=7))
    started = time.monotonic()
    proc = cli(tmp_path, env_for(tmp_path, gateway.base_url), "--idle-timeout", "120", "--json")
    assert proc.returncode == 0, report(proc, gateway)
    assert time.monotonic() - started < 60  # not the idle timeout: READ_TO_END_GRACE (5 s)
    assert json.loads(proc.stdout)["retries"] == 0
    assert (tmp_path / "out.png").read_bytes() == PNG


def test_a_cut_after_the_image_is_no_failure(tmp_path: Path, gateway: Gateway) -> None:
    gateway.enqueue(sse_reply(image_events(images.b64(PNG)), cut_after=7, reset=True))
    proc = cli(tmp_path, env_for(tmp_path, gateway.base_url))
    assert proc.returncode == 0, report(proc, gateway)
    assert len(gateway.posts()) == 1 and (tmp_path / "out.png").read_bytes() == PNG


# --- LiteLLM's cut stream: its own response.failed, not the response's ------------------------


def litellm_cut(rid: str) -> list[dict[str, Any]]:
    """What LiteLLM sends when its upstream stream breaks after 4 events: the events so far,
    then a response.failed of its own (same id, the next sequence number)."""
    events = image_events(images.b64(PNG), resp_id=rid)[:4]
    failed = {
        "id": rid,
        "object": "response",
        "status": "failed",
        "output": [],
        "error": {
            "code": "server_error",
            "message": "Response payload is not completed: <TransferEncodingError: 400, "
            "message='Not enough data to satisfy transfer length header.'>",
        },
    }
    return [*events, {"type": "response.failed", "response": failed, "sequence_number": 4}]


def test_a_relays_own_failed_event_for_a_stored_response_is_fetched_not_reposted(
    tmp_path: Path, gateway: Gateway
) -> None:
    rid = "resp_litellm1"
    gateway.enqueue(sse_reply(litellm_cut(rid)))
    final = image_events(images.b64(PNG), resp_id=rid)[-1]["response"]
    gateway.set_default(json_reply(final), path=f"/v1/responses/{rid}")
    proc = cli(tmp_path, env_for(tmp_path, gateway.base_url), "--resumable", "--json")
    assert proc.returncode == 0, report(proc, gateway)
    assert len(gateway.posts()) == 1, gateway.dump()
    (get,) = [r for r in gateway.requests if r.method == "GET"]
    assert get.query == {"stream": ["true"], "starting_after": ["3"]}  # not LiteLLM's own 4
    assert json.loads(proc.stdout)["resumes"] == 1
    assert (tmp_path / "out.png").read_bytes() == PNG


def test_without_resumable_the_relays_cut_is_an_ordinary_retry(
    tmp_path: Path, gateway: Gateway
) -> None:
    gateway.enqueue(sse_reply(litellm_cut("resp_litellm2")))
    gateway.enqueue(sse_reply(image_events(images.b64(PNG))))
    proc = cli(tmp_path, env_for(tmp_path, gateway.base_url))
    assert proc.returncode == 0, report(proc, gateway)
    assert len(gateway.posts()) == 2 and "billed twice" in proc.stderr


def test_where_litellm_counts_no_retries_of_its_own_the_script_retries(
    tmp_path: Path, gateway: Gateway
) -> None:
    headers = {"x-litellm-call-id": "c0ffee", "x-litellm-attempted-retries": "0"}
    gateway.enqueue(error_reply(500, "litellm.InternalServerError", headers=headers))
    gateway.enqueue(sse_reply(image_events(images.b64(PNG))))
    proc = cli(tmp_path, env_for(tmp_path, gateway.base_url))
    assert proc.returncode == 0, report(proc, gateway)
    assert len(gateway.posts()) == 2
