"""Fault injection, end to end: retries, timeouts, cut streams, bad image data, rescue files,
SIGTERM.

Every test runs ``generate_gateway_image.py`` as a subprocess against the loopback test gateway
(or against nothing at all) and checks the exit code, the message on stderr, how many requests
the gateway saw, and that no image or ``.part`` temporary file is left where it must not be.
Retry waits are kept short with ``Retry-After: 0`` and small ``--retries``/``--timeout`` values.
"""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import images
from tests.conftest import (
    PNG,
    TEST_KEY,
    clean_env,
    closed_port,
    event_index,
    image_reply,
    leftovers,
    parse_json_stdout,
    report,
    run_patched,
    run_until_sigterm,
    write_codex_home,
)
from tests.conftest import cli as shared_cli
from tests.gateway import (
    ForwardProxy,
    Gateway,
    Recorded,
    Reply,
    close_reply,
    error_event,
    error_reply,
    failed_events,
    image_events,
    image_item,
    incomplete_events,
    json_reply,
    message_item,
    raw_reply,
    response_obj,
    sse_reply,
    stall_reply,
    text_only_events,
)

NO_WAIT = {"Retry-After": "0"}
HTML_502 = (
    b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway | relay.example | Cloudflare</title>"
    b"<style>body{font:14px sans-serif}</style></head>\n<body><h1>Bad gateway</h1>"
    b"<p>The web server reported a bad gateway error.</p></body></html>\n"
)


# --- helpers -------------------------------------------------------------------------------


def out_path(tmp_path: Path, name: str = "image.png") -> Path:
    return tmp_path / "out" / name


def cli(
    tmp_path: Path,
    env: dict[str, str],
    *extra: str,
    out: Path | None = None,
    timeout: float = 30,
) -> subprocess.CompletedProcess[str]:
    """One generation into ``out/image.png`` (so that ``near_out`` sees only its folder)."""
    target = out if out is not None else out_path(tmp_path)
    return shared_cli(tmp_path, env, *extra, out=target, timeout=timeout)


def near_out(out: Path) -> list[str]:
    """Whatever sits in --out's folder (must be nothing after a failure)."""
    return sorted(p.name for p in out.parent.iterdir()) if out.parent.is_dir() else []


def assert_saved(
    proc: subprocess.CompletedProcess[str],
    tmp_path: Path,
    gw: Gateway | None = None,
    data: bytes = PNG,
    out: Path | None = None,
) -> None:
    out = out if out is not None else out_path(tmp_path)
    assert proc.returncode == 0, report(proc, gw)
    assert out.read_bytes() == data
    assert near_out(out) == [out.name]
    assert leftovers(tmp_path) == []
    assert_no_key(proc)


def assert_failed(
    proc: subprocess.CompletedProcess[str],
    code: int,
    tmp_path: Path,
    *needles: str,
    gw: Gateway | None = None,
    out: Path | None = None,
) -> None:
    out = out if out is not None else out_path(tmp_path)
    assert proc.returncode == code, report(proc, gw)
    for needle in needles:
        assert needle in proc.stderr, f"{needle!r} not on stderr\n{report(proc, gw)}"
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert not out.exists()
    assert near_out(out) == []
    assert leftovers(tmp_path) == []
    assert_no_key(proc)


def assert_no_key(proc: subprocess.CompletedProcess[str]) -> None:
    for stream in (proc.stdout, proc.stderr):
        assert TEST_KEY not in stream
        assert TEST_KEY[3:-4] not in stream  # not even the middle of it


def error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def retry_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if "attempt " in line]


# --- 1. retries ----------------------------------------------------------------------------


RETRIED = {
    "429-retry-after-0": (
        error_reply(429, "Rate limit reached", "rate_limit_exceeded", "requests", headers=NO_WAIT),
        ("HTTP 429", "Rate limit reached", "retrying in 0.0s"),
    ),
    "429-retry-after-ms": (
        error_reply(
            429,
            "Rate limit reached",
            "rate_limit_exceeded",
            "requests",
            headers={"retry-after-ms": "300", "Retry-After": "7"},
        ),
        ("HTTP 429", "retrying in 0.3s"),
    ),
    "500-json": (
        error_reply(
            500, "The server had an error", "server_error", "server_error", headers=NO_WAIT
        ),
        ("HTTP 500", "The server had an error"),
    ),
    "502-html": (
        raw_reply(HTML_502, status=502, headers=NO_WAIT),
        ("HTTP 502", "502 Bad Gateway | relay.example | Cloudflare"),
    ),
    "503": (
        error_reply(503, "Service Unavailable", type_="server_error", headers=NO_WAIT),
        ("HTTP 503", "Service Unavailable"),
    ),
    "524-cloudflare": (
        raw_reply(
            b"<html><head><title>a timeout occurred | relay.example</title></head></html>",
            status=524,
            headers=NO_WAIT,
        ),
        ("HTTP 524", "a timeout occurred"),
    ),
    "408": (error_reply(408, "Request timeout", headers=NO_WAIT), ("HTTP 408",)),
    "400-x-should-retry-true": (
        error_reply(400, "Try again please", headers={"x-should-retry": "true", **NO_WAIT}),
        ("HTTP 400", "Try again please"),
    ),
}


@pytest.mark.parametrize("case", list(RETRIED))
def test_transient_error_is_retried_then_succeeds(
    case: str, tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    first, needles = RETRIED[case]
    gateway.enqueue(first, image_reply())
    proc = cli(tmp_path, env)
    assert_saved(proc, tmp_path, gateway)
    assert len(gateway.posts()) == 2, gateway.dump()
    lines = retry_lines(proc)
    assert len(lines) == 1, proc.stderr
    assert "attempt 1/3" in lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "<html" not in proc.stderr.lower() and "<title" not in proc.stderr.lower()
    assert "<style" not in proc.stderr and "<h1>" not in proc.stderr
    # 524: the CDN gave up but the gateway may still be rendering (troubleshooting.md: "warned
    # that the gateway may bill each attempt"); the others never started on the image
    assert ("billed twice" in lines[0]) == (case == "524-cloudflare"), lines[0]
    assert error_lines(proc) == []
    # the retry resends the same request
    first_req, second_req = gateway.posts()
    assert first_req.body == second_req.body


def test_persistent_500_exhausts_retries(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(error_reply(500, "upstream is down", "server_error", headers=NO_WAIT))
    proc = cli(tmp_path, env, "--retries", "1")
    assert_failed(proc, 4, tmp_path, "HTTP 500", "upstream is down", gw=gateway)
    assert len(gateway.posts()) == 2
    lines = retry_lines(proc)
    assert len(lines) == 1 and "attempt 1/2" in lines[0], proc.stderr
    assert len(error_lines(proc)) == 1


def test_persistent_502_html_shows_status_and_title_only(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(raw_reply(HTML_502, status=502, headers=NO_WAIT))
    proc = cli(tmp_path, env, "--retries", "0")
    assert_failed(
        proc, 4, tmp_path, "HTTP 502", "502 Bad Gateway | relay.example | Cloudflare", gw=gateway
    )
    assert len(gateway.posts()) == 1
    assert "<" not in proc.stderr  # no raw HTML at all
    assert "web server reported" not in proc.stderr
    assert retry_lines(proc) == []


def test_an_html_page_full_of_title_tags_is_read_quickly(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    # "<title[^>]*>(.*?)</title>" scanned from every "<title>" to the end of the 2 MB page:
    # about half an hour of CPU after the body was read, where no timeout applies
    page = b"<html>" + b"<title>" * 290_000
    gateway.set_default(raw_reply(page, status=502, headers=NO_WAIT))
    started = time.monotonic()
    proc = cli(tmp_path, env, "--retries", "0")
    assert proc.returncode == 4, report(proc, gateway)
    assert "HTTP 502" in proc.stderr and "HTML page" in proc.stderr
    assert time.monotonic() - started < 10


NOT_RETRIED = {
    "500-x-should-retry-false": (
        error_reply(500, "do not retry me", headers={"x-should-retry": "false", **NO_WAIT}),
        4,
        ("HTTP 500", "do not retry me"),
    ),
    "400": (
        error_reply(400, "Unknown parameter: 'tools[0].foo'.", "unknown_parameter"),
        4,
        ("HTTP 400", "Unknown parameter: 'tools[0].foo'."),
    ),
    "404": (
        error_reply(404, "Not Found", type_="not_found"),
        4,
        ("HTTP 404", "base_url"),
    ),
    "413": (
        raw_reply(b"<html><title>413 Request Entity Too Large</title></html>", status=413),
        4,
        ("HTTP 413", "413 Request Entity Too Large"),
    ),
    "401": (
        error_reply(401, "Incorrect API key provided", "invalid_api_key"),
        3,
        ("HTTP 401", "Incorrect API key provided", "OPENAI_API_KEY in auth.json"),
    ),
    "403": (
        error_reply(403, "You are not allowed to sample from this model", "forbidden"),
        3,
        ("HTTP 403", "not allowed"),
    ),
    "403-must-be-verified": (
        error_reply(
            403,
            "Your organization must be verified to use the model `gpt-image-1`.",
            type_="invalid_request_error",
        ),
        3,
        ("HTTP 403", "must be verified", "platform.openai.com"),
    ),
    "429-insufficient-quota": (
        error_reply(
            429,
            "You exceeded your current quota, please check your plan and billing details.",
            "insufficient_quota",
            "insufficient_quota",
            headers=NO_WAIT,
        ),
        4,
        ("HTTP 429", "exceeded your current quota", "credit"),
    ),
    "400-moderation": (
        error_reply(
            400,
            "Your request was rejected by the safety system.",
            "moderation_blocked",
            "image_generation_user_error",
            moderation_details={"moderation_stage": "input", "categories": ["violence"]},
        ),
        5,
        ("moderation_blocked", "safety system", "input", "violence", "--moderation low"),
    ),
}


@pytest.mark.parametrize("case", list(NOT_RETRIED))
def test_permanent_error_is_not_retried(
    case: str, tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    reply, code, needles = NOT_RETRIED[case]
    gateway.set_default(reply)
    proc = cli(tmp_path, env)
    assert_failed(proc, code, tmp_path, *needles, gw=gateway)
    assert len(gateway.posts()) == 1
    assert retry_lines(proc) == []
    assert len(error_lines(proc)) == 1


def test_moderation_block_shows_request_id(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    """references/troubleshooting.md: moderation_blocked shows stage, categories, request ID."""
    gateway.set_default(
        error_reply(
            400,
            "Your request was rejected by the safety system.",
            "moderation_blocked",
            "image_generation_user_error",
            headers={"x-request-id": "req_5f2c0ffee1234"},
            moderation_details={"moderation_stage": "output", "categories": ["sexual"]},
        )
    )
    proc = cli(tmp_path, env)
    assert_failed(proc, 5, tmp_path, "output", "sexual", gw=gateway)
    assert "req_5f2c0ffee1234" in proc.stderr, proc.stderr
    assert len(gateway.posts()) == 1


def test_connection_refused_is_retried_then_exit_6(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    port = closed_port()
    proc = cli(tmp_path, env, "--base-url", f"http://127.0.0.1:{port}/v1", "--retries", "1")
    assert_failed(proc, 6, tmp_path, "refused", f"127.0.0.1:{port}")
    lines = retry_lines(proc)
    assert len(lines) == 1 and "attempt 1/2" in lines[0] and "refused" in lines[0], proc.stderr
    assert len(error_lines(proc)) == 1
    assert gateway.requests == []  # the configured gateway was not used


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_connection_closed_before_answer_is_retried(
    reset: bool, tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.enqueue(close_reply(reset=reset), image_reply())
    proc = cli(tmp_path, env)
    assert_saved(proc, tmp_path, gateway)
    assert len(gateway.posts()) == 2
    lines = retry_lines(proc)
    assert len(lines) == 1 and "attempt 1/3" in lines[0], proc.stderr


# --- 2. cut streams ------------------------------------------------------------------------


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_stream_cut_after_start_is_retried_and_may_be_billed_twice(
    reset: bool, tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    b64 = images.b64(PNG)
    gateway.enqueue(sse_reply(image_events(b64), cut_after=3, reset=reset), image_reply())
    proc = cli(tmp_path, env)
    assert_saved(proc, tmp_path, gateway)
    assert len(gateway.posts()) == 2
    lines = retry_lines(proc)
    assert len(lines) == 1 and "attempt 1/3" in lines[0], proc.stderr
    assert "billed twice" in lines[0]


def test_stream_cut_every_time_exits_4(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(sse_reply(image_events(images.b64(PNG)), cut_after=4))
    proc = cli(tmp_path, env, "--retries", "0")
    assert_failed(proc, 4, tmp_path, gw=gateway)
    assert "stream" in proc.stderr or "connection" in proc.stderr, proc.stderr
    assert len(gateway.posts()) == 1


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "close-delimited"])
def test_stream_cut_after_image_delivered_keeps_image(
    chunked: bool, tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    events = image_events(images.b64(PNG))
    done = [i for i, ev in enumerate(events) if ev["type"] == "response.output_item.done"]
    assert done and events[-1]["type"] == "response.completed"
    gateway.set_default(sse_reply(events, cut_after=done[-1] + 1, chunked=chunked))
    proc = cli(tmp_path, env)
    assert_saved(proc, tmp_path, gateway)
    assert len(gateway.posts()) == 1
    assert retry_lines(proc) == []


# --- 3. timeouts ---------------------------------------------------------------------------


def test_stall_before_answer_fires_idle_timeout(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(stall_reply())
    proc = cli(tmp_path, env, "--idle-timeout", "1", "--retries", "0")
    assert_failed(proc, 6, tmp_path, "--idle-timeout", "1s", gw=gateway)
    assert "--timeout" not in proc.stderr.replace("--idle-timeout", "")
    assert len(gateway.posts()) == 1


def test_stream_that_stalls_mid_way_fires_idle_timeout(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(sse_reply(image_events(images.b64(PNG)), stall_after=2))
    proc = cli(tmp_path, env, "--idle-timeout", "1", "--retries", "0")
    assert_failed(proc, 6, tmp_path, "--idle-timeout", gw=gateway)
    assert len(gateway.posts()) == 1


def test_trickling_keepalives_hit_the_total_budget(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    # a comment every 0.3 s for a minute: never idle, but never done
    gateway.set_default(sse_reply([b": keep-alive\n\n"] * 200, delay=0.3))
    proc = cli(tmp_path, env, "--timeout", "2", "--idle-timeout", "10", timeout=30)
    assert_failed(proc, 6, tmp_path, "--timeout 2", gw=gateway)
    assert "--idle-timeout" not in proc.stderr
    assert len(gateway.posts()) == 1


def test_stall_before_answer_hits_the_total_budget(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(stall_reply())
    proc = cli(tmp_path, env, "--timeout", "1", "--idle-timeout", "10", timeout=30)
    assert_failed(proc, 6, tmp_path, "--timeout 1", gw=gateway)
    assert "--idle-timeout" not in proc.stderr
    assert len(gateway.posts()) == 1


# --- 4. stream faults ----------------------------------------------------------------------


def test_response_failed_exits_4_with_gateway_message(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(
        sse_reply(
            failed_events("image_generation_failed", "The renderer crashed", started_image=True)
        )
    )
    proc = cli(tmp_path, env)
    assert_failed(proc, 4, tmp_path, "The renderer crashed", "image_generation_failed", gw=gateway)
    assert len(gateway.posts()) == 1
    assert len(error_lines(proc)) == 1


def test_response_failed_server_error_without_retries(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(sse_reply(failed_events("server_error", "Upstream fell over")))
    proc = cli(tmp_path, env, "--retries", "0")
    assert_failed(proc, 4, tmp_path, "Upstream fell over", gw=gateway)
    assert len(gateway.posts()) == 1


def test_response_incomplete_exits_4(tmp_path: Path, gateway: Gateway, env: dict[str, str]) -> None:
    gateway.set_default(sse_reply(incomplete_events("max_output_tokens", started_image=True)))
    proc = cli(tmp_path, env)
    assert_failed(proc, 4, tmp_path, "incomplete", "max_output_tokens", gw=gateway)
    assert len(gateway.posts()) == 1


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
def test_error_event_exits_4_with_message(
    nested: bool, tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    head = failed_events("x", "y")[:2]  # response.created, response.in_progress
    ev = error_event("bad_render", "The image tool broke down", nested, type_="server_error")
    gateway.set_default(sse_reply([*head, ev]))
    proc = cli(tmp_path, env)
    assert_failed(proc, 4, tmp_path, "The image tool broke down", gw=gateway)
    assert len(gateway.posts()) == 1


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
def test_error_event_moderation_exits_5(
    nested: bool, tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    head = failed_events("x", "y")[:2]
    ev = error_event(
        "moderation_blocked", "Your request was rejected by the safety system.", nested
    )
    gateway.set_default(sse_reply([*head, ev]))
    proc = cli(tmp_path, env)
    assert_failed(proc, 5, tmp_path, "moderation_blocked", "safety system", gw=gateway)
    assert len(gateway.posts()) == 1


def test_item_left_generating_with_result_is_a_success(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(image_reply(PNG, status_done="generating", include_completed_event=False))
    proc = cli(tmp_path, env)
    assert_saved(proc, tmp_path, gateway)
    assert len(gateway.posts()) == 1


def _cut_b64(data: bytes) -> str:
    text = images.b64(data)
    return text[: len(text) // 2 + 1]


BAD_RESULTS = {
    "corrupt-base64": ("!!!notbase64", "png", "base64"),
    "truncated-base64": (_cut_b64(images.png_bytes(64, 64, noise=True)), "png", ""),
    "truncated-png": (images.b64(images.truncated_png(PNG)), "png", "incomplete"),
    "jpeg-without-ffd9": (
        images.b64(images.truncated_jpeg(images.jpeg_bytes(32, 32))),
        "jpeg",
        "incomplete",
    ),
    "not-an-image": (
        images.b64(b"hello, this is text and not a picture " * 4),
        "png",
        "not an image",
    ),
}


BAD_CASES = [pytest.param(case, True, id=f"sse-{case}") for case in BAD_RESULTS] + [
    pytest.param(case, False, id=f"json-{case}") for case in ("corrupt-base64", "truncated-png")
]


@pytest.mark.parametrize(("case", "stream"), BAD_CASES)
def test_bad_image_data_never_reaches_out(
    case: str, stream: bool, tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    result, fmt, needle = BAD_RESULTS[case]
    out = out_path(tmp_path, "image.jpg" if fmt == "jpeg" else "image.png")
    if stream:
        gateway.set_default(sse_reply(image_events(result, output_format=fmt)))
    else:
        gateway.set_default(json_reply(response_obj([image_item(result, output_format=fmt)])))
    args = [] if stream else ["--no-stream"]
    proc = cli(tmp_path, env, *args, out=out)
    assert_failed(proc, 4, tmp_path, needle, gw=gateway, out=out)
    assert len(gateway.posts()) == 1
    assert len(error_lines(proc)) == 1


# --- 5. gateway quirks ---------------------------------------------------------------------


def test_streaming_only_gateway_switches_to_stream(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.enqueue(error_reply(400, "Stream must be set to true", param="stream"), image_reply())
    proc = cli(tmp_path, env, "--no-stream")
    assert_saved(proc, tmp_path, gateway)
    first, second = gateway.posts()
    assert first.json is not None and first.json["stream"] is False
    assert second.json is not None and second.json["stream"] is True
    assert second.header("accept") == "text/event-stream"
    assert "stream" in proc.stderr and "warning" in proc.stderr
    assert retry_lines(proc) == []


def test_non_streaming_gateway_switches_to_json(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.enqueue(
        error_reply(400, "stream is not supported for this model", param="stream"),
        json_reply(response_obj([image_item(images.b64(PNG))])),
    )
    proc = cli(tmp_path, env)
    assert_saved(proc, tmp_path, gateway)
    first, second = gateway.posts()
    assert first.json is not None and first.json["stream"] is True
    assert second.json is not None and second.json["stream"] is False
    assert "stream" in proc.stderr and "warning" in proc.stderr


def test_stream_quirk_applies_only_once(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(error_reply(400, "Stream must be set to true", param="stream"))
    proc = cli(tmp_path, env, "--no-stream")
    assert_failed(proc, 4, tmp_path, "Stream must be set to true", gw=gateway)
    assert len(gateway.posts()) == 2


def test_rejected_tool_choice_resent_with_auto(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.enqueue(
        error_reply(
            400,
            "Tool choice 'image_generation' not found in 'tools' parameter.",
            param="tool_choice",
        ),
        image_reply(),
    )
    proc = cli(tmp_path, env)
    assert_saved(proc, tmp_path, gateway)
    first, second = gateway.posts()
    assert first.json is not None and first.json["tool_choice"] == {"type": "image_generation"}
    assert "instructions" not in first.json
    assert second.json is not None and second.json["tool_choice"] == "auto"
    assert isinstance(second.json.get("instructions"), str)
    assert "image_generation" in second.json["instructions"]
    assert second.json["tools"] == first.json["tools"]
    assert "tool_choice" in proc.stderr


def test_min_pixel_budget_switches_to_larger_size(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.enqueue(
        error_reply(
            400,
            "Invalid size '512x512'. Requested resolution is below the current minimum "
            "pixel budget.",
            "invalid_value",
            param="tools[0].size",
        ),
        image_reply(),
    )
    proc = cli(tmp_path, env, "--size", "512x512", "--json")
    assert proc.returncode == 0, report(proc, gateway)
    first, second = gateway.posts()
    assert first.json is not None and first.json["tools"][0]["size"] == "512x512"
    assert second.json is not None and second.json["tools"][0]["size"] == "1024x1024"
    data = parse_json_stdout(proc)
    assert data["requested_size"] == "512x512"
    assert data["final_requested_size"] == "1024x1024"
    assert len(data["fallbacks"]) == 1 and "1024x1024" in data["fallbacks"][0]
    assert "1024x1024" in proc.stderr
    out = out_path(tmp_path)
    assert out.read_bytes() == PNG
    assert leftovers(tmp_path) == []


def test_min_pixel_budget_with_strict_size_exits_4(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(
        error_reply(
            400,
            "Invalid size '512x512'. Requested resolution is below the current minimum "
            "pixel budget.",
            "invalid_value",
            param="tools[0].size",
        )
    )
    proc = cli(tmp_path, env, "--size", "512x512", "--strict-size")
    assert_failed(proc, 4, tmp_path, "minimum pixel budget", gw=gateway)
    assert len(gateway.posts()) == 1


def test_text_only_answer_exits_5_with_text(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(sse_reply(text_only_events("I can't draw that, sorry.")))
    proc = cli(tmp_path, env)
    assert_failed(proc, 5, tmp_path, "I can't draw that, sorry.", gw=gateway)
    assert len(gateway.posts()) == 1


def test_text_only_json_answer_exits_5_with_text(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(json_reply(response_obj([message_item("Here is a poem instead.")])))
    proc = cli(tmp_path, env, "--no-stream")
    assert_failed(proc, 5, tmp_path, "Here is a poem instead.", gw=gateway)
    assert len(gateway.posts()) == 1


def _moderated_item() -> dict[str, Any]:
    item = image_item(None, status="failed")
    item["error"] = {
        "code": "moderation_blocked",
        "message": "Your request was rejected by the safety system.",
    }
    return item


def test_moderated_image_call_exits_5(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    head = failed_events("x", "y")[:2]
    item = _moderated_item()
    events = [
        *head,
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": response_obj([item])},
    ]
    gateway.set_default(sse_reply(events))
    proc = cli(tmp_path, env)
    assert_failed(proc, 5, tmp_path, "moderation_blocked", "safety system", gw=gateway)
    assert len(gateway.posts()) == 1


def test_moderated_image_call_in_json_answer_exits_5(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(json_reply(response_obj([_moderated_item()])))
    proc = cli(tmp_path, env, "--no-stream")
    assert_failed(proc, 5, tmp_path, "moderation_blocked", gw=gateway)
    assert len(gateway.posts()) == 1


def test_response_failed_with_moderation_exits_5(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(
        sse_reply(
            failed_events(
                "moderation_blocked",
                "Your request was rejected by the safety system.",
                started_image=True,
            )
        )
    )
    proc = cli(tmp_path, env)
    assert_failed(proc, 5, tmp_path, "moderation_blocked", gw=gateway)
    assert len(gateway.posts()) == 1


# --- 6. never lose a paid image --------------------------------------------------------------


def _rescue_env(env: dict[str, str], systmp: Path) -> dict[str, str]:
    systmp.mkdir()
    return {**env, "TMPDIR": str(systmp), "TEMP": str(systmp), "TMP": str(systmp)}


def _check_rescue(
    proc: subprocess.CompletedProcess[str], systmp: Path, gw: Gateway, data: bytes
) -> None:
    assert proc.returncode == 7, report(proc, gw)
    assert len(gw.posts()) == 1
    match = re.search(r"(\S*codex-imagegen-rescue-\S*)", proc.stderr)
    assert match, proc.stderr
    rescue = Path(match.group(1).rstrip(".,;:)"))
    try:
        assert rescue.parent == systmp, proc.stderr
        assert rescue.read_bytes() == data
    finally:
        rescue.unlink()
    assert list(systmp.iterdir()) == []
    assert_no_key(proc)


def test_rescue_when_out_folder_becomes_a_file(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    served = images.png_bytes(48, 40, noise=True)
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / "image.png"

    def sabotage(rec: Recorded) -> Reply:
        folder.rmdir()
        folder.write_bytes(b"I am a file now")
        return image_reply(served)

    gateway.set_default(sabotage)
    systmp = tmp_path / "systmp"
    proc = cli(tmp_path, _rescue_env(env, systmp), out=out)
    _check_rescue(proc, systmp, gateway, served)
    assert folder.read_bytes() == b"I am a file now"
    assert leftovers(tmp_path) == []


def test_rescue_when_out_becomes_a_directory(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    out = tmp_path / "out" / "image.png"
    out.parent.mkdir()

    def sabotage(rec: Recorded) -> Reply:
        out.mkdir()
        return image_reply()

    gateway.set_default(sabotage)
    systmp = tmp_path / "systmp"
    proc = cli(tmp_path, _rescue_env(env, systmp), "--force", out=out)
    _check_rescue(proc, systmp, gateway, PNG)
    assert out.is_dir() and list(out.iterdir()) == []
    assert near_out(out) == ["image.png"]
    assert leftovers(tmp_path) == []


def test_rescue_when_out_appears_meanwhile(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    out = tmp_path / "out" / "image.png"
    out.parent.mkdir()

    def sabotage(rec: Recorded) -> Reply:
        out.write_bytes(b"someone else's file")
        return image_reply()

    gateway.set_default(sabotage)
    systmp = tmp_path / "systmp"
    proc = cli(tmp_path, _rescue_env(env, systmp), out=out)
    _check_rescue(proc, systmp, gateway, PNG)
    assert out.read_bytes() == b"someone else's file"
    assert near_out(out) == ["image.png"]
    assert leftovers(tmp_path) == []


def test_out_parent_is_a_file_exits_7_before_sending(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"x")
    gateway.set_default(image_reply())
    proc = cli(tmp_path, env, out=blocker / "sub" / "image.png")
    assert proc.returncode == 7, report(proc, gateway)
    assert "blocker" in proc.stderr and "not a directory" in proc.stderr
    assert gateway.requests == []
    assert blocker.read_bytes() == b"x"
    assert leftovers(tmp_path) == []
    assert len(error_lines(proc)) == 1


# --- 7. input checks before any request ------------------------------------------------------


def _input_case(tmp_path: Path, case: str) -> tuple[list[str], list[str]]:
    """(extra arguments, expected stderr pieces) for one bad input."""
    png = tmp_path / "in.png"
    png.write_bytes(images.png_bytes(40, 30))
    if case == "missing-image":
        return ["--image", str(tmp_path / "nope.png")], ["nope.png", "no such file"]
    if case == "non-image":
        text = tmp_path / "notes.png"
        text.write_text("just some notes, not a picture\n", encoding="utf-8")
        return ["--image", str(text)], ["notes.png", "not an image"]
    if case == "mask-not-png":
        mask = tmp_path / "mask.jpg"
        mask.write_bytes(images.jpeg_bytes(40, 30))
        return ["--image", str(png), "--mask", str(mask)], ["mask.jpg", "PNG"]
    if case == "mask-without-alpha":
        mask = tmp_path / "mask.png"
        mask.write_bytes(images.png_bytes(40, 30, alpha=False))
        return ["--image", str(png), "--mask", str(mask)], ["mask.png", "alpha"]
    if case == "mask-size-mismatch":
        mask = tmp_path / "mask.png"
        mask.write_bytes(images.png_bytes(41, 30, alpha=True))
        return ["--image", str(png), "--mask", str(mask)], ["41x30", "40x30"]
    if case == "mask-size-mismatch-jpeg-image":
        jpg = tmp_path / "in.jpg"
        jpg.write_bytes(images.jpeg_bytes(64, 48))
        mask = tmp_path / "mask.png"
        mask.write_bytes(images.png_bytes(48, 64, alpha=True))
        return ["--image", str(jpg), "--mask", str(mask)], ["48x64", "64x48"]
    if case == "mask-without-image":
        mask = tmp_path / "mask.png"
        mask.write_bytes(images.png_bytes(40, 30, alpha=True))
        return ["--mask", str(mask)], ["--mask", "--image"]
    if case == "edit-without-image":
        return ["--action", "edit"], ["--action edit"]
    if case == "malformed-size":
        return ["--size", "huge"], ["--size", "huge"]
    if case == "gpt-image-2-illegal-size":
        return ["--image-model", "gpt-image-2", "--size", "1920x1080"], ["1920x1088"]
    if case == "gpt-image-1-nonstandard-size":
        return ["--image-model", "gpt-image-1", "--size", "1792x1024"], ["1792x1024", "1024x1536"]
    if case == "compression-101":
        return ["--compression", "101"], ["--compression", "101"]
    if case == "image-url-ftp":
        return ["--image-url", "ftp://files.example/x.png"], ["--image-url", "ftp://"]
    if case == "transparent-jpeg":
        return ["--background", "transparent", "--format", "jpeg"], ["transparent", "jpeg"]
    if case == "too-many-images":
        return [arg for _ in range(17) for arg in ("--image", str(png))], ["17", "16"]
    raise AssertionError(case)


INPUT_CASES = [
    "missing-image",
    "non-image",
    "mask-not-png",
    "mask-without-alpha",
    "mask-size-mismatch",
    "mask-size-mismatch-jpeg-image",
    "mask-without-image",
    "edit-without-image",
    "malformed-size",
    "gpt-image-2-illegal-size",
    "gpt-image-1-nonstandard-size",
    "compression-101",
    "image-url-ftp",
    "transparent-jpeg",
    "too-many-images",
]


@pytest.mark.parametrize("case", INPUT_CASES)
def test_bad_input_exits_2_before_any_request(
    case: str, tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(image_reply())
    args, needles = _input_case(tmp_path, case)
    proc = cli(tmp_path, env, *args)
    assert_failed(proc, 2, tmp_path, *needles, gw=gateway)
    assert gateway.requests == []
    lines = proc.stderr.splitlines()
    assert len(error_lines(proc)) == 1, proc.stderr
    assert lines[0].startswith("error:"), proc.stderr
    assert all(line.startswith(("error:", "  hint:")) for line in lines), proc.stderr


@pytest.mark.parametrize("which", ["auth.json", "config.toml"])
def test_malformed_config_file_exits_3_naming_file_and_line(
    which: str, tmp_path: Path, gateway: Gateway, env: dict[str, str], codex_home: Path
) -> None:
    gateway.set_default(image_reply())
    if which == "auth.json":
        (codex_home / which).write_text(
            '{\n  "OPENAI_API_KEY": "' + TEST_KEY + '",\n  oops\n}\n', encoding="utf-8"
        )
    else:
        text = (codex_home / which).read_text(encoding="utf-8")
        (codex_home / which).write_text(text + "\n[broken\nx = 1\n", encoding="utf-8")
    proc = cli(tmp_path, env)
    assert_failed(proc, 3, tmp_path, str(codex_home / which), gw=gateway)
    assert re.search(r"line \d+", proc.stderr), proc.stderr
    if which == "auth.json":
        assert "line 3" in proc.stderr
    assert gateway.requests == []
    assert len(error_lines(proc)) == 1


# --- 8. TLS --------------------------------------------------------------------------------


def _tls_env(tmp_path: Path, gw: Gateway, **extra: str) -> dict[str, str]:
    home = write_codex_home(tmp_path / "tls-home", gw.base_url)
    return clean_env(CODEX_HOME=str(home), **extra)


def test_tls_untrusted_certificate_exits_6_with_ca_hint(
    tmp_path: Path, tls_gateway: Gateway
) -> None:
    assert tls_gateway.base_url.startswith("https://")
    tls_gateway.set_default(image_reply())
    proc = cli(tmp_path, _tls_env(tmp_path, tls_gateway))
    assert_failed(proc, 6, tmp_path, "certif", "CODEX_CA_CERTIFICATE", gw=tls_gateway)
    assert tls_gateway.posts() == []
    assert retry_lines(proc) == []


@pytest.mark.parametrize("var", ["CODEX_CA_CERTIFICATE", "SSL_CERT_FILE"])
def test_tls_ca_bundle_variable_is_trusted(
    var: str, tmp_path: Path, tls_gateway: Gateway, tls_material: tuple[ssl.SSLContext, Path]
) -> None:
    tls_gateway.set_default(image_reply())
    proc = cli(tmp_path, _tls_env(tmp_path, tls_gateway, **{var: str(tls_material[1])}))
    assert_saved(proc, tmp_path, tls_gateway)
    assert len(tls_gateway.posts()) == 1


def test_tls_codex_ca_wins_over_ssl_cert_file(
    tmp_path: Path, tls_gateway: Gateway, tls_material: tuple[ssl.SSLContext, Path]
) -> None:
    tls_gateway.set_default(image_reply())
    bogus = tmp_path / "other-ca.pem"
    bogus.write_text("not a certificate\n", encoding="utf-8")
    env = _tls_env(
        tmp_path,
        tls_gateway,
        CODEX_CA_CERTIFICATE=str(tls_material[1]),
        SSL_CERT_FILE=str(bogus),
    )
    proc = cli(tmp_path, env)
    assert_saved(proc, tmp_path, tls_gateway)


def test_tls_ca_variable_pointing_at_missing_file_exits_3(
    tmp_path: Path, tls_gateway: Gateway
) -> None:
    tls_gateway.set_default(image_reply())
    missing = tmp_path / "no-such-ca.pem"
    proc = cli(tmp_path, _tls_env(tmp_path, tls_gateway, CODEX_CA_CERTIFICATE=str(missing)))
    assert_failed(proc, 3, tmp_path, "CODEX_CA_CERTIFICATE", "no-such-ca.pem", gw=tls_gateway)
    assert tls_gateway.posts() == []


# --- 9. proxy ------------------------------------------------------------------------------


@pytest.fixture
def proxy(gateway: Gateway) -> Iterator[ForwardProxy]:
    with ForwardProxy(gateway) as p:
        yield p


def test_http_proxy_is_used(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], proxy: ForwardProxy
) -> None:
    gateway.set_default(image_reply())
    proc = cli(tmp_path, {**env, "HTTP_PROXY": proxy.url, "NO_PROXY": ""})
    assert_saved(proc, tmp_path, gateway)
    assert proxy.lines == [f"POST {gateway.base_url}/responses HTTP/1.1"]
    assert len(gateway.posts()) == 1
    assert gateway.posts()[0].header("authorization") == f"Bearer {TEST_KEY}"


def test_http_proxy_credentials_are_sent_and_not_printed(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], proxy: ForwardProxy
) -> None:
    gateway.set_default(image_reply())
    proxy_url = proxy.url.replace("http://", "http://proxyuser:pr0xy-s3cret@")
    proc = cli(tmp_path, {**env, "HTTP_PROXY": proxy_url, "NO_PROXY": ""}, "--verbose")
    assert_saved(proc, tmp_path, gateway)
    assert len(proxy.lines) == 1
    auth = proxy.proxy_auth[0]
    assert auth is not None and auth.startswith("Basic ")
    assert "pr0xy-s3cret" not in proc.stderr + proc.stdout
    assert gateway.posts()[0].header("proxy-authorization") is None


def test_no_proxy_bypasses_the_proxy(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], proxy: ForwardProxy
) -> None:
    gateway.set_default(image_reply())
    proc = cli(tmp_path, {**env, "HTTP_PROXY": proxy.url, "NO_PROXY": "127.0.0.1"})
    assert_saved(proc, tmp_path, gateway)
    assert proxy.lines == []
    assert len(gateway.posts()) == 1


def test_dead_proxy_exits_6(tmp_path: Path, gateway: Gateway, env: dict[str, str]) -> None:
    gateway.set_default(image_reply())
    dead = f"http://127.0.0.1:{closed_port()}"
    proc = cli(tmp_path, {**env, "HTTP_PROXY": dead, "NO_PROXY": ""}, "--retries", "0")
    assert_failed(proc, 6, tmp_path, "refused", gw=gateway)
    assert gateway.requests == []


# --- 10. security --------------------------------------------------------------------------


def test_warns_when_key_goes_over_plain_http_to_a_remote_host(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], proxy: ForwardProxy
) -> None:
    """The only socket opened is the loopback proxy: ``.invalid`` is never resolved."""
    gateway.set_default(image_reply())
    remote = "http://imagegen-gateway.invalid/v1"
    proc = cli(tmp_path, {**env, "HTTP_PROXY": proxy.url, "NO_PROXY": ""}, "--base-url", remote)
    assert_saved(proc, tmp_path, gateway)
    assert proxy.lines == [f"POST {remote}/responses HTTP/1.1"]
    warnings = [line for line in proc.stderr.splitlines() if "http://" in line]
    assert any("imagegen-gateway.invalid" in w and "warning" in w for w in warnings), proc.stderr


def test_no_plain_http_warning_for_loopback(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(image_reply())
    proc = cli(tmp_path, env)
    assert_saved(proc, tmp_path, gateway)
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning")]
    assert not [w for w in warnings if "http" in w or "unencrypted" in w], proc.stderr


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("mode", [0o644, 0o600])
def test_world_readable_auth_json_warns(
    mode: int, tmp_path: Path, gateway: Gateway, env: dict[str, str], codex_home: Path
) -> None:
    (codex_home / "auth.json").chmod(mode)
    gateway.set_default(image_reply())
    proc = cli(tmp_path, env)
    assert_saved(proc, tmp_path, gateway)
    if mode == 0o644:
        assert "chmod 600" in proc.stderr and "auth.json" in proc.stderr, proc.stderr
    else:
        assert "chmod" not in proc.stderr


def test_key_never_appears_in_any_output(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], codex_home: Path
) -> None:
    echo = f"Incorrect API key provided: {TEST_KEY}. You can find your API key at ..."
    html = b"<html><head><title>bad key " + TEST_KEY.encode() + b"</title></head></html>"
    head = failed_events("x", "y")[:2]
    bad_home = write_codex_home(tmp_path / "bad-home", gateway.base_url)
    (bad_home / "config.toml").write_text(
        f'model_provider = "gw"\n[model_providers.gw]\nbase_url = "{gateway.base_url}"\n'
        f'experimental_bearer_token = "{TEST_KEY}\n',
        encoding="utf-8",
    )
    scenarios: list[tuple[str, list[Reply], list[str], dict[str, str], int]] = [
        ("401 echo", [error_reply(401, echo, "invalid_api_key")], [], env, 3),
        ("401 echo verbose", [error_reply(401, echo, "invalid_api_key")], ["--verbose"], env, 3),
        (
            "500 echo with retry",
            [error_reply(500, echo, "server_error", headers=NO_WAIT)] * 2,
            ["--retries", "1", "--verbose"],
            env,
            4,
        ),
        ("400 echo --json", [error_reply(400, echo)], ["--json"], env, 4),
        ("502 html echo", [raw_reply(html, status=502)], ["--retries", "0"], env, 4),
        (
            "moderation echo",
            [error_reply(400, echo, "moderation_blocked", "image_generation_user_error")],
            [],
            env,
            5,
        ),
        (
            "stream error event echo",
            [sse_reply([*head, error_event("bad", echo, nested=True)])],
            ["--verbose"],
            env,
            4,
        ),
        ("text-only echo", [sse_reply(text_only_events(echo))], [], env, 5),
        ("bad config", [], ["--verbose"], clean_env(CODEX_HOME=str(bad_home)), 3),
        ("dry run", [], ["--dry-run", "--verbose"], env, 0),
        ("verbose success", [image_reply()], ["--verbose", "--json"], env, 0),
        (
            "key in --header",
            [error_reply(401, echo)],
            ["--header", f"Authorization: Bearer {TEST_KEY}", "--verbose"],
            clean_env(CODEX_HOME=str(tmp_path / "empty-home")),
            3,
        ),
    ]
    (tmp_path / "empty-home").mkdir()
    for i, (name, replies, args, run_env, code) in enumerate(scenarios):
        gateway.enqueue(*replies)
        before = len(gateway.posts())
        out = tmp_path / f"o{i}" / "image.png"
        extra = list(args)
        if name == "key in --header":
            extra += ["--base-url", gateway.base_url]
        proc = cli(tmp_path, run_env, *extra, out=out)
        assert proc.returncode == code, f"{name}: {report(proc, gateway)}"
        assert len(gateway.posts()) - before == len(replies), name
        assert TEST_KEY not in proc.stdout, f"{name}: key on stdout\n{proc.stdout}"
        assert TEST_KEY not in proc.stderr, f"{name}: key on stderr\n{proc.stderr}"
        assert TEST_KEY[3:-4] not in proc.stdout + proc.stderr, name
        assert gateway.pending() == 0, name
    # the key did reach the gateway, so it was there to leak
    assert any(r.header("authorization") == f"Bearer {TEST_KEY}" for r in gateway.posts())
    assert leftovers(tmp_path) == []


# --- SIGTERM --------------------------------------------------------------------------------------


def sigterm_run(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], *extra: str
) -> tuple[int, str, Path]:
    out = tmp_path / "out" / "image.png"
    proc = run_until_sigterm(gateway, env, ["--prompt", "a fox", "--out", str(out), *extra])
    return proc.returncode, proc.stderr, out


@pytest.mark.skipif(os.name != "posix", reason="SIGTERM is POSIX")
def test_sigterm_while_waiting_exits_143(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    events = image_events(images.b64(PNG))
    gateway.set_default(sse_reply(events, stall_after=1))
    code, stderr, out = sigterm_run(tmp_path, gateway, env)
    assert code == 143, stderr
    assert "terminated" in stderr
    assert "Traceback" not in stderr
    assert not out.exists()
    assert leftovers(tmp_path) == []
    assert len(gateway.posts()) == 1


@pytest.mark.skipif(os.name != "posix", reason="SIGTERM is POSIX")
def test_sigterm_after_a_partial_image_leaves_no_part_file(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    events = image_events(images.b64(PNG), partials=[images.b64(images.png_bytes(8, 8))])
    partial = event_index(events, "response.image_generation_call.partial_image")
    gateway.set_default(sse_reply(events, stall_after=partial + 1))
    code, stderr, out = sigterm_run(tmp_path, gateway, env, "--partial-images", "1")
    assert code == 143, stderr
    assert "terminated" in stderr
    assert not out.exists()
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in out.parent.iterdir()) == ["image.partial-1.png"]


# --- the retry policy's own rules -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "0"}, 0.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "120000"}, 120.0),
        ({"retry-after-ms": "120001"}, None),
        ({"retry-after-ms": "-1"}, None),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after": "120"}, 120.0),
        ({"retry-after": "121"}, None),
        ({"retry-after": "240"}, None),
        ({"retry-after": "-3"}, None),
        ({"retry-after": "soon"}, None),
        ({"retry-after-ms": "x", "retry-after": "7"}, 7.0),
        ({}, None),
    ],
)
def test_retry_after_is_honoured_from_0_to_120_s(
    headers: dict[str, str], seconds: float | None
) -> None:
    import generate_gateway_image as g

    assert g.parse_retry_after(headers) == seconds


def test_retry_after_as_an_http_date() -> None:
    import email.utils

    import generate_gateway_image as g

    def at(delta: float) -> dict[str, str]:
        return {"retry-after": email.utils.formatdate(time.time() + delta, usegmt=True)}

    soon = g.parse_retry_after(at(60))
    assert soon is not None and 57 <= soon <= 61
    assert g.parse_retry_after(at(600)) is None
    assert g.parse_retry_after(at(-60)) is None


def test_backoff_doubles_from_half_a_second_up_to_8_s_with_jitter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import random

    import generate_gateway_image as g

    monkeypatch.setattr(random, "random", lambda: 0.0)
    assert [g.backoff(i) for i in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    monkeypatch.setattr(random, "random", lambda: 1.0)  # jitter takes off at most a quarter
    assert [g.backoff(i) for i in range(3)] == [0.375, 0.75, 1.5]


@pytest.mark.parametrize(
    ("status", "detail", "param", "rejected"),
    [
        (400, "previous_response_id not found", "", True),
        (404, "Previous response with id 'resp_1' not found.", "", True),
        (400, "invalid value", "previous_response_id", True),
        (400, "invalid value", "size", False),
        (500, "previous_response storage is down", "", False),  # the gateway's fault: retried
        (502, "bad gateway", "previous_response_id", False),
    ],
)
def test_only_a_4xx_rejects_previous_response(
    status: int, detail: str, param: str, rejected: bool
) -> None:
    import generate_gateway_image as g

    exc = g.GatewayError(f"HTTP {status}", status=status, detail=detail, param=param)
    assert g.rejects_previous_response(exc) is rejected


def test_a_bug_inside_the_exchange_is_not_retried_as_a_network_fault(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    # a TypeError while the answer is read is ours: one POST, exit 1 (internal error), never
    # "the connection broke", retried and billed again
    gateway.set_default(image_reply())
    patch = "def broken(self, *args): raise TypeError('a bug')\ng.SSEParser.feed = broken"
    proc = run_patched(patch, ["--prompt", "x", "--out", str(out_path(tmp_path))], env)
    assert proc.returncode == 1, report(proc, gateway)
    assert "internal error: TypeError: a bug" in proc.stderr
    assert "retrying" not in proc.stderr
    assert len(gateway.posts()) == 1


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        (b'{"error": "model overloaded today"}', "model overloaded today"),  # a bare string
        (b'{"detail": "Not allowed for this key tier"}', "Not allowed for this key tier"),
        (b'{"error": {"msg": "bad size 7x7"}}', "bad size 7x7"),
        (b'{"error": {"detail": "nested detail words"}}', "nested detail words"),
        (b'{"error": {"type": "x"}, "detail": "the top detail"}', "the top detail"),
        (b"{not json at all", "{not json at all"),
        (b"plain words from a relay", "plain words from a relay"),
    ],
)
def test_the_gateway_s_own_words_in_any_error_shape(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], body: bytes, shown: str
) -> None:
    gateway.set_default(raw_reply(body, status=400, content_type="application/json"))
    proc = cli(tmp_path, env, "--retries", "0")
    assert proc.returncode == 4, report(proc, gateway)
    assert f"HTTP 400 from 127.0.0.1:{gateway.port}: {shown}" in proc.stderr, proc.stderr
    assert len(gateway.posts()) == 1


# --- error bodies of odd shapes; network errors the loopback cannot produce ----------------------


@pytest.mark.parametrize("error", [None, 42, ["bad"]])
def test_an_error_field_of_another_type_falls_back_to_detail(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], error: Any
) -> None:
    body = {"error": error, "detail": "size must be 1024x1024 or larger"}
    gateway.set_default(json_reply(body, status=400))
    proc = cli(tmp_path, env)
    assert_failed(proc, 4, tmp_path, "size must be 1024x1024 or larger", gw=gateway)
    assert len(gateway.posts()) == 1


def test_a_name_that_cannot_be_resolved_in_codex_s_sandbox_says_the_sandbox(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    import generate_gateway_image as g

    exc = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    monkeypatch.delenv("CODEX_SANDBOX_NETWORK_DISABLED", raising=False)
    plain = g.describe_network_error(exc, "https://gw.example:8443/v1")
    assert plain.message == f"cannot resolve gw.example:8443: {exc}"
    assert plain.hint is not None and "check base_url and your DNS" in plain.hint
    monkeypatch.setenv("CODEX_SANDBOX_NETWORK_DISABLED", "1")  # what Codex sets in its sandbox
    boxed = g.describe_network_error(exc, "https://gw.example:8443/v1")
    assert boxed.message == plain.message and boxed.hint == g.SANDBOX_NETWORK_HINT


def test_any_other_network_error_is_named_and_not_retried() -> None:
    import errno

    import generate_gateway_image as g

    exc = OSError(errno.EHOSTUNREACH, "No route to host")
    err = g.describe_network_error(exc, "https://gw.example/v1")
    assert err.message == f"network error talking to gw.example: {exc}"
    assert err.exit_code == 6 and not err.retryable
    reset = g.describe_network_error(BrokenPipeError(32, "Broken pipe"), "https://gw.example/v1")
    assert reset.message.startswith("connection to gw.example was reset") and reset.retryable
