"""Never pay twice: --resumable, --resume, the response id in
failures, --json/sidecar fields, Ctrl-C, and --doctor --probe on store/background.

Every test runs the script as a subprocess against ``StoredGateway``, a loopback gateway that
keeps background responses, and asserts on the recorded requests (one POST per image at most)
and on the saved bytes.
"""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests import images
from tests.conftest import (
    SCRIPT,
    TEST_KEY,
    cli,
    closed_port,
    doctor_line,
    env_for,
    leftovers,
    report,
    run_cli,
)
from tests.gateway import (
    Gateway,
    error_reply,
    image_events,
    json_reply,
    response_obj,
    sse_reply,
)
from tests.stored_gateway import StoredGateway

PNG = images.png_bytes(48, 32)
RID = "resp_bg1"


def events(rid: str = RID, data: bytes = PNG) -> list[dict[str, Any]]:
    # seq 0 created, 1 in_progress, 2 item added, 3 call in_progress, 4 generating,
    # 5 call completed, 6 output_item.done (the image), 7 response.completed
    return image_events(images.b64(data), resp_id=rid)


def assert_secret_free(proc: subprocess.CompletedProcess[str]) -> None:
    assert TEST_KEY not in proc.stdout + proc.stderr
    assert TEST_KEY[-8:] not in proc.stdout + proc.stderr


# --- 1. --resumable ----------------------------------------------------------------------------


def test_resumable_sends_background_and_store(tmp_path: Path, sg: StoredGateway) -> None:
    env = env_for(tmp_path, sg.base_url)
    sg.plan(events())
    proc = cli(tmp_path, env, "--resumable", "--json")
    assert proc.returncode == 0, report(proc)
    (post,) = sg.posts()
    assert post.json["background"] is True and post.json["store"] is True
    assert post.json["stream"] is True
    assert (tmp_path / "out.png").read_bytes() == PNG
    record = json.loads(proc.stdout)
    assert record["response_id"] == RID and record["stored"] is True and record["resumes"] == 0


def test_without_resumable_no_background(tmp_path: Path, sg: StoredGateway) -> None:
    env = env_for(tmp_path, sg.base_url)
    sg.plan(events())
    proc = cli(tmp_path, env, "--json")
    assert proc.returncode == 0, report(proc)
    (post,) = sg.posts()
    assert "background" not in post.json and post.json["store"] is False
    assert json.loads(proc.stdout)["stored"] is False


def test_cut_stream_resumes_with_starting_after(tmp_path: Path, sg: StoredGateway) -> None:
    env = env_for(tmp_path, sg.base_url)
    sg.plan(events(), cuts=[4])  # the POST's stream breaks after seq 0..3
    proc = cli(tmp_path, env, "--resumable", "--json", "--header", "X-Team: blue")
    assert proc.returncode == 0, report(proc, sg.gw)
    assert len(sg.posts()) == 1, sg.dump()  # never a second, paid POST
    (get,) = sg.gets()
    assert get.path == f"/v1/responses/{RID}"
    assert get.query == {"stream": ["true"], "starting_after": ["3"]}
    assert get.body == b""
    assert get.header("authorization") == "Bearer " + TEST_KEY  # the gateway's own fetch
    assert get.header("x-team") == "blue"
    assert (tmp_path / "out.png").read_bytes() == PNG
    assert json.loads(proc.stdout)["resumes"] == 1
    assert f"fetching the stored response {RID} after event 3" in proc.stderr
    assert "billed twice" not in proc.stderr
    assert leftovers(tmp_path) == []
    assert_secret_free(proc)


def test_stream_cut_twice_resumes_from_the_latest_event(tmp_path: Path, sg: StoredGateway) -> None:
    env = env_for(tmp_path, sg.base_url)
    sg.plan(events(), cuts=[3, 2])  # POST: seq 0-2; first resume: seq 3-4; second: the rest
    proc = cli(tmp_path, env, "--resumable", "--retries", "0")
    assert proc.returncode == 0, report(proc, sg.gw)
    assert len(sg.posts()) == 1
    assert [g.query.get("starting_after") for g in sg.gets()] == [["2"], ["4"]]
    assert (tmp_path / "out.png").read_bytes() == PNG


def test_resumes_without_progress_are_bounded_by_retries(tmp_path: Path, sg: StoredGateway) -> None:
    env = env_for(tmp_path, sg.base_url)
    sg.plan(events(), cuts=[3, 0, 0, 0, 0, 0])  # every resume breaks before any event
    proc = cli(tmp_path, env, "--resumable", "--retries", "2")
    assert proc.returncode == 4, report(proc, sg.gw)
    assert len(sg.posts()) == 1
    assert len(sg.gets()) == 3  # the first resume is free (the POST made progress), then 2
    assert not (tmp_path / "out.png").exists()


def test_a_stalled_stream_is_resumed_after_the_idle_timeout(
    tmp_path: Path, sg: StoredGateway
) -> None:
    env = env_for(tmp_path, sg.base_url)
    sg.plan(events(), stall_after=5)  # seq 0..4 arrive, then silence
    proc = cli(tmp_path, env, "--resumable", "--idle-timeout", "1")
    assert proc.returncode == 0, report(proc, sg.gw)
    assert len(sg.posts()) == 1
    (get,) = sg.gets()
    assert get.query["starting_after"] == ["4"]
    assert (tmp_path / "out.png").read_bytes() == PNG


def test_polling_stops_at_the_time_budget_with_the_resume_command(
    tmp_path: Path, sg: StoredGateway
) -> None:
    env = env_for(tmp_path, sg.base_url)
    sg.plan(events(), polls=10_000, retry_after_ms=200)
    proc = cli(tmp_path, env, "--resumable", "--no-stream", "--timeout", "3")
    assert proc.returncode == 6, report(proc, sg.gw)
    assert "still in_progress" in proc.stderr
    assert f"--resume {RID} --out" in proc.stderr and "--no-stream" in proc.stderr
    assert len(sg.posts()) == 1 and len(sg.gets()) >= 3


def test_failure_names_the_exact_resume_command(tmp_path: Path, sg: StoredGateway) -> None:
    env = env_for(tmp_path, sg.base_url)
    plan = sg.plan(events(), cuts=[3, 0])
    out = tmp_path / "sub dir" / "fox.png"
    proc = run_cli(["--prompt", "a fox", "--out", str(out), "--resumable", "--retries", "0"], env)
    assert proc.returncode == 4, report(proc, sg.gw)
    assert f"(response {RID})" in proc.stderr
    line = next(x for x in proc.stderr.splitlines() if "--resume " in x)
    command = shlex.split(line.split("with: ", 1)[1])
    args = command[command.index("--resume") :]
    assert args == ["--resume", RID, "--out", str(out)]
    plan.cuts.clear()  # the gateway finished meanwhile: the printed command fetches it
    again = run_cli(args, env)
    assert again.returncode == 0, report(again, sg.gw)
    assert out.read_bytes() == PNG
    assert len(sg.posts()) == 1


def test_the_resume_command_of_a_forced_run_can_replace_the_file(
    tmp_path: Path, sg: StoredGateway
) -> None:
    env = env_for(tmp_path, sg.base_url)
    plan = sg.plan(events(), cuts=[3, 0])
    out = tmp_path / "fox.png"
    out.write_bytes(b"the old picture")
    args = ["--prompt", "a fox", "--out", str(out), "--force", "--sidecar"]
    proc = run_cli([*args, "--resumable", "--retries", "0"], env)
    assert proc.returncode == 4, report(proc, sg.gw)
    line = next(x for x in proc.stderr.splitlines() if "--resume " in x)
    command = shlex.split(line.split("with: ", 1)[1])
    assert "--force" in command and "--sidecar" in command
    plan.cuts.clear()
    again = run_cli(command[2:], env)  # without "python3 SCRIPT"
    assert again.returncode == 0, report(again, sg.gw)
    assert out.read_bytes() == PNG and (tmp_path / "fox.png.json").exists()
    assert len(sg.posts()) == 1


@pytest.mark.parametrize("rid", ["resp_1' & calc & '", "resp_1\x1b[2J", "resp 1", "r" * 1025])
def test_a_response_id_that_is_not_a_plain_token_is_never_offered(
    tmp_path: Path, sg: StoredGateway, rid: str
) -> None:
    # the id went into the printed --resume command: shlex quoting is POSIX-only, so
    # "resp_1' & calc & '" ran calc when pasted into cmd.exe; an escape became "?". Ids a
    # run can fetch but a shell would act on (%, &): tests/test_relay_ids.py
    env = env_for(tmp_path, sg.base_url)
    sg.plan(events(rid), cuts=[3, 0])
    proc = cli(tmp_path, env, "--resumable", "--retries", "0")
    assert proc.returncode == 4, report(proc, sg.gw)
    assert "--resume" not in proc.stderr and "calc" not in proc.stderr
    assert "\x1b" not in proc.stderr and "PATH" not in proc.stderr
    assert len(sg.posts()) == 1


def test_no_stream_polls_until_completed(tmp_path: Path, sg: StoredGateway) -> None:
    env = env_for(tmp_path, sg.base_url)
    sg.plan(events(), polls=2, retry_after_ms=30)
    started = time.monotonic()
    proc = cli(tmp_path, env, "--resumable", "--no-stream", "--json")
    assert proc.returncode == 0, report(proc, sg.gw)
    assert time.monotonic() - started < 30
    (post,) = sg.posts()
    assert post.json["stream"] is False and post.json["background"] is True
    gets = sg.gets()
    assert len(gets) == 3 and all(g.query == {} for g in gets)  # 2x in_progress, then done
    assert all(g.path == f"/v1/responses/{RID}" for g in gets)
    # honours retry-after-ms: the two later polls come quickly after each other
    assert gets[2].t_start - gets[1].t_start < 0.9
    assert (tmp_path / "out.png").read_bytes() == PNG
    assert json.loads(proc.stdout)["stored"] is True


def test_store_refused_falls_back_once_with_a_warning(tmp_path: Path) -> None:
    with StoredGateway(refuse_store=True) as sg:
        env = env_for(tmp_path, sg.base_url)
        sg.plan(events())
        proc = cli(tmp_path, env, "--resumable", "--json")
        assert proc.returncode == 0, report(proc, sg.gw)
        first, second = sg.posts()
        assert first.json["store"] is True and first.json["background"] is True
        assert second.json["store"] is False and "background" not in second.json
    assert proc.stderr.count("does not keep responses") == 1
    record = json.loads(proc.stdout)
    assert record["stored"] is False
    assert any("does not keep responses" in f for f in record["fallbacks"])
    assert (tmp_path / "out.png").read_bytes() == PNG


def test_store_refused_with_strict_fails(tmp_path: Path) -> None:
    with StoredGateway(refuse_store=True) as sg:
        env = env_for(tmp_path, sg.base_url)
        sg.plan(events())
        proc = cli(tmp_path, env, "--resumable", "--strict")
        assert proc.returncode == 4, report(proc, sg.gw)
        assert len(sg.posts()) == 1
    assert "Store must be set to false" in proc.stderr
    assert "--strict" in proc.stderr


def test_store_refused_with_strict_json_says_nothing_is_stored(tmp_path: Path) -> None:
    with StoredGateway(refuse_store=True) as sg:
        env = env_for(tmp_path, sg.base_url)
        sg.plan(events())
        proc = cli(tmp_path, env, "--resumable", "--strict", "--json")
        assert proc.returncode == 4, report(proc, sg.gw)
    record = json.loads(proc.stdout)
    assert record["ok"] is False and record["response_id"] is None
    assert record["stored"] is False  # the gateway refused to keep it: nothing to --resume


def test_store_refused_inside_the_stream_falls_back(tmp_path: Path, gateway: Gateway) -> None:
    env = env_for(tmp_path, gateway.base_url)
    refusal = {
        "type": "error",
        "code": "invalid_request_error",
        "message": "Store must be set to false",
    }
    gateway.enqueue(sse_reply([refusal]), sse_reply(events()))
    proc = cli(tmp_path, env, "--resumable")
    assert proc.returncode == 0, report(proc, gateway)
    first, second = gateway.posts()
    assert first.json["store"] is True and second.json["store"] is False


def test_ctrl_c_prints_the_resume_command(tmp_path: Path, sg: StoredGateway) -> None:
    env = env_for(tmp_path, sg.base_url)
    sg.plan(events(), stall_after=4)
    out = tmp_path / "out.png"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--prompt", "a fox", "--out", str(out), "--resumable"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        sg.gw.wait_for_requests(1, timeout=20)
        time.sleep(1.0)  # the first events (with the id) arrive
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert f"--resume {RID} --out {shlex.quote(str(out))}" in stderr
    assert "without paying again" in stderr
    assert leftovers(tmp_path) == []


# --- 2. --resume -------------------------------------------------------------------------------


def test_resume_fetches_a_completed_response(tmp_path: Path, sg: StoredGateway) -> None:
    env = env_for(tmp_path, sg.base_url)
    sg.store(sg.plan(events()))
    sg.plans.clear()
    proc = run_cli(["--resume", RID, "--out", str(tmp_path / "got.png"), "--json"], env)
    assert proc.returncode == 0, report(proc, sg.gw)
    assert sg.posts() == []
    (get,) = sg.gets()
    assert get.path == f"/v1/responses/{RID}" and get.query == {}
    assert (tmp_path / "got.png").read_bytes() == PNG
    record = json.loads(proc.stdout)
    assert record["response_id"] == RID and record["stored"] is True


def test_resume_follows_a_running_response_stream(tmp_path: Path, sg: StoredGateway) -> None:
    env = env_for(tmp_path, sg.base_url)
    sg.store(sg.plan(events(), polls=1))
    proc = run_cli(["--resume", RID, "--out", str(tmp_path / "got.png")], env)
    assert proc.returncode == 0, report(proc, sg.gw)
    assert sg.posts() == []
    first, second = sg.gets()
    assert first.query == {} and second.query == {"stream": ["true"]}
    assert (tmp_path / "got.png").read_bytes() == PNG


def test_resume_no_stream_polls(tmp_path: Path, sg: StoredGateway) -> None:
    env = env_for(tmp_path, sg.base_url)
    sg.store(sg.plan(events(), polls=2, retry_after_ms=10))
    proc = run_cli(["--resume", RID, "--out", str(tmp_path / "got.png"), "--no-stream"], env)
    assert proc.returncode == 0, report(proc, sg.gw)
    assert [g.query for g in sg.gets()] == [{}, {}, {}]
    assert (tmp_path / "got.png").read_bytes() == PNG


def test_resume_unknown_id_is_a_clear_404(tmp_path: Path, sg: StoredGateway) -> None:
    env = env_for(tmp_path, sg.base_url)
    proc = run_cli(["--resume", "resp_nope", "--out", str(tmp_path / "got.png")], env)
    assert proc.returncode == 4, report(proc, sg.gw)
    assert "resp_nope" in proc.stderr and "404" in proc.stderr
    assert "not stored" in proc.stderr
    assert sg.posts() == [] and len(sg.gets()) == 1
    assert not (tmp_path / "got.png").exists()


def test_a_gateway_that_forgets_the_response_is_not_posted_again(
    tmp_path: Path, gateway: Gateway
) -> None:
    env = env_for(tmp_path, gateway.base_url)  # a plain gateway: accepts the flags, stores nothing
    gateway.enqueue(sse_reply(events(), cut_after=4))
    gateway.set_default(error_reply(404, "Response not found"), path=f"/v1/responses/{RID}")
    proc = cli(tmp_path, env, "--resumable")
    assert proc.returncode == 4, report(proc, gateway)
    assert len(gateway.posts()) == 1
    assert [r.method for r in gateway.requests] == ["POST", "GET"]
    assert "does not keep responses" in proc.stderr and "without --resumable" in proc.stderr


def test_a_refused_stream_replay_is_polled_instead(tmp_path: Path, gateway: Gateway) -> None:
    """A gateway that keeps responses but cannot replay their stream (a 400 to ?stream=true):
    the running response is polled, never posted again."""
    env = env_for(tmp_path, gateway.base_url)
    done = events()[-1]["response"]
    gateway.enqueue(
        json_reply(response_obj([], resp_id=RID, status="in_progress")),
        error_reply(400, "stream is not supported when retrieving a response", param="stream"),
        json_reply(done),
        path=f"/v1/responses/{RID}",
    )
    proc = run_cli(["--resume", RID, "--out", str(tmp_path / "got.png")], env)
    assert proc.returncode == 0, report(proc, gateway)
    assert gateway.posts() == []
    assert [r.query for r in gateway.requests] == [{}, {"stream": ["true"]}, {}]
    assert (tmp_path / "got.png").read_bytes() == PNG


def test_a_refused_poll_is_not_adapted_or_posted(tmp_path: Path, gateway: Gateway) -> None:
    """A 400 to the GET of a stored response ends the resume: no option is dropped, nothing is
    posted (a POST would pay again), one GET."""
    env = env_for(tmp_path, gateway.base_url)
    gateway.set_default(
        error_reply(400, "tool_choice is not supported", param="tool_choice"),
        path=f"/v1/responses/{RID}",
    )
    proc = run_cli(["--resume", RID, "--out", str(tmp_path / "got.png"), "--no-stream"], env)
    assert proc.returncode == 4, report(proc, gateway)
    assert gateway.posts() == [] and len(gateway.requests) == 1
    assert "tool_choice is not supported" in proc.stderr and "warning" not in proc.stderr
    assert not (tmp_path / "got.png").exists()


def test_a_running_response_without_resumable_is_not_polled(
    tmp_path: Path, gateway: Gateway
) -> None:
    """An answer that says the response is still running, to a request that did not ask for
    it to be stored: nothing to fetch later, so exit 4 with its id after one POST."""
    env = env_for(tmp_path, gateway.base_url)
    gateway.enqueue(json_reply(response_obj([], resp_id="resp_run1", status="in_progress")))
    proc = cli(tmp_path, env, "--no-stream")
    assert proc.returncode == 4, report(proc, gateway)
    assert len(gateway.requests) == 1
    assert "before the image was ready (response resp_run1 is in_progress)" in proc.stderr
    assert not (tmp_path / "out.png").exists()


def test_a_network_failure_under_resumable_is_not_a_store_refusal(tmp_path: Path) -> None:
    env = env_for(tmp_path, f"http://127.0.0.1:{closed_port()}/v1")
    proc = cli(tmp_path, env, "--resumable", "--retries", "0")
    assert proc.returncode == 6, report(proc)
    assert "refused" in proc.stderr and "does not keep responses" not in proc.stderr


def test_a_key_refused_under_resumable_is_not_a_store_refusal(
    tmp_path: Path, gateway: Gateway
) -> None:
    """A 401 that mentions store is about the key: exit 3, no normal request sent instead."""
    env = env_for(tmp_path, gateway.base_url)
    gateway.set_default(error_reply(401, "Incorrect API key for store access", param="store"))
    proc = cli(tmp_path, env, "--resumable")
    assert proc.returncode == 3, report(proc, gateway)
    assert len(gateway.posts()) == 1
    assert "does not keep responses" not in proc.stderr


@pytest.mark.parametrize("rid", ["../models", "resp 1", "", "."])
def test_resume_refuses_what_is_not_an_id(tmp_path: Path, sg: StoredGateway, rid: str) -> None:
    env = env_for(tmp_path, sg.base_url)
    proc = run_cli(["--resume", rid, "--out", str(tmp_path / "got.png")], env)
    assert proc.returncode == 2, report(proc)
    assert "not a response id" in proc.stderr
    assert sg.requests == []


def test_resume_refuses_a_prompt(tmp_path: Path, sg: StoredGateway) -> None:
    env = env_for(tmp_path, sg.base_url)
    proc = run_cli(["--resume", RID, "--prompt", "x", "--out", str(tmp_path / "a.png")], env)
    assert proc.returncode == 2 and "--prompt cannot be combined with --resume" in proc.stderr
    assert sg.requests == []


def test_unstored_failure_says_it_cannot_be_fetched(tmp_path: Path, gateway: Gateway) -> None:
    env = env_for(tmp_path, gateway.base_url)
    gateway.enqueue(sse_reply(events(rid="resp_plain"), cut_after=3))
    proc = cli(tmp_path, env, "--retries", "0")
    assert proc.returncode == 4, report(proc, gateway)
    assert "(response resp_plain)" in proc.stderr
    assert "was not stored" in proc.stderr and "cannot be fetched again" in proc.stderr
    assert "--resume" not in proc.stderr.replace("--resumable", "")


# --- 3. --json / sidecar / --edit-from ----------------------------------------------------------


def test_sidecar_records_stored_and_edit_from_continues(tmp_path: Path, sg: StoredGateway) -> None:
    env = env_for(tmp_path, sg.base_url)
    sg.plan(events(), cuts=[4])
    first = tmp_path / "first.png"
    proc = run_cli(["--prompt", "a fox", "--out", str(first), "--resumable", "--sidecar"], env)
    assert proc.returncode == 0, report(proc, sg.gw)
    side = json.loads((tmp_path / "first.png.json").read_text(encoding="utf-8"))
    assert side["stored"] is True and side["response_id"] == RID and side["resumes"] == 1
    sg.plan(events(rid="resp_second"))
    second = tmp_path / "second.png"
    proc = run_cli(["--prompt", "at night", "--edit-from", str(first), "--out", str(second)], env)
    assert proc.returncode == 0, report(proc, sg.gw)
    assert sg.posts()[-1].json["previous_response_id"] == RID


def test_sidecar_of_a_refused_store_is_not_stored(tmp_path: Path) -> None:
    with StoredGateway(refuse_store=True) as sg:
        env = env_for(tmp_path, sg.base_url)
        sg.plan(events())
        sg.plan(events(rid="resp_second"))
        first = tmp_path / "first.png"
        args = ["--prompt", "a fox", "--out", str(first), "--resumable", "--sidecar"]
        assert run_cli(args, env).returncode == 0
        side = json.loads((tmp_path / "first.png.json").read_text(encoding="utf-8"))
        assert side["stored"] is False
        proc = run_cli(
            ["--prompt", "night", "--edit-from", str(first), "--out", str(tmp_path / "b.png")], env
        )
        assert proc.returncode == 0, report(proc, sg.gw)
        last = sg.posts()[-1].json
        assert "previous_response_id" not in last
        assert last["input"][0]["content"][1]["type"] == "input_image"  # re-uploaded


# --- 7. --doctor --probe ---------------------------------------------------------------------


def test_probe_reports_a_gateway_that_keeps_responses(tmp_path: Path, sg: StoredGateway) -> None:
    env = env_for(tmp_path, sg.base_url)
    plan = sg.plan(events(rid="resp_probe"))
    proc = run_cli(["--doctor", "--probe"], env)
    assert doctor_line(proc, "probe").startswith("ok"), proc.stdout
    assert doctor_line(proc, "store").startswith("ok"), proc.stdout
    (post,) = sg.posts()
    assert post.json["background"] is True and post.json["store"] is True
    assert [r.path for r in sg.gets() if "resp_probe" in r.path] == ["/v1/responses/resp_probe"]
    assert plan.cancelled  # the probe's background render is cancelled, not left running


def test_probe_reports_a_gateway_that_refuses_store(tmp_path: Path) -> None:
    with StoredGateway(refuse_store=True) as sg:
        env = env_for(tmp_path, sg.base_url)
        sg.plan(events(rid="resp_probe"))
        proc = run_cli(["--doctor", "--probe"], env)
        posts = sg.posts()
    line = doctor_line(proc, "store")
    assert line.startswith("note") and "does not keep responses" in line, proc.stdout
    assert doctor_line(proc, "probe").startswith("ok"), proc.stdout
    assert [p.json["store"] for p in posts] == [True, False]


def test_resume_command_on_windows_uses_py(monkeypatch: pytest.MonkeyPatch) -> None:
    """The printed --resume command is what an agent copies: on Windows python3 is often missing
    or the Microsoft Store stub, so it says py -3 there (as SKILL.md does)."""
    import generate_gateway_image as g

    monkeypatch.setattr(sys, "argv", ["C:/skills/gen/generate_gateway_image.py"])
    monkeypatch.setattr(g.os, "name", "posix")
    posix = g.resume_command(RID, "out.png")
    monkeypatch.setattr(g.os, "name", "nt")
    command = g.resume_command(RID, "out.png")
    monkeypatch.undo()
    assert command.startswith("py -3 C:/skills/gen/generate_gateway_image.py "), command
    assert posix.startswith("python3 C:/skills/"), posix


# --- 4. free resumes are paced -----------------------------------------------------------------


def trickle(count: int) -> list[dict[str, Any]]:
    """A stored response that makes progress (one event per stream) but never the image."""
    head = events()[:4]  # created, in_progress, item added, call in_progress
    filler = [dict(head[3], sequence_number=4 + i) for i in range(count)]
    return head + filler


def test_a_stream_cut_after_every_event_is_resumed_at_a_measured_pace(
    tmp_path: Path, sg: StoredGateway
) -> None:
    """Each resume brings one new event and is cut: without pacing this made thousands of GETs
    in a few seconds. Resumes wait 0, 0.5, 1, 2, 4 s..., so a 4-second budget allows about 4."""
    env = env_for(tmp_path, sg.base_url)
    sg.plan(trickle(5000), cuts=[4] + [1] * 5000)
    proc = cli(tmp_path, env, "--resumable", "--timeout", "4")
    assert proc.returncode in (4, 6), report(proc)
    assert len(sg.posts()) == 1
    assert 2 <= len(sg.gets()) <= 6, len(sg.gets())
    assert not (tmp_path / "out.png").exists()


def test_resumes_of_one_image_stop_at_the_ceiling(tmp_path: Path, sg: StoredGateway) -> None:
    """MAX_RESUMES (20) resumes, then a clear failure with the --resume command: in process,
    with the waits skipped, so the ceiling is reached in a moment."""
    import generate_gateway_image as g

    env = env_for(tmp_path, sg.base_url)
    sg.plan(trickle(200), cuts=[4] + [1] * 200)
    argv = ["--prompt", "a fox", "--out", str(tmp_path / "out.png"), "--resumable"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(g.time, "sleep", lambda seconds: None)
        for key, value in env.items():
            mp.setenv(key, value)
        code = g.main(argv)
    assert code == 4
    assert len(sg.posts()) == 1
    assert len(sg.gets()) == 20  # MAX_RESUMES
