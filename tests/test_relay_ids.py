"""Response ids as gateways make them : LiteLLM's ids are about 400 characters
of base64 text (it encodes its routing into them). --resumable, --resume and --doctor --probe
all apply the one rule (usable_response_id): printable ASCII, no spaces, at most
RESPONSE_ID_MAX characters, percent-encoded into one URL path segment.

Every test runs the script as a subprocess against ``StoredGateway`` on loopback and asserts on
the recorded requests (one POST per image at most) and on the saved bytes.
"""

from __future__ import annotations

import base64
import json
import shlex
import urllib.parse
from pathlib import Path

import pytest

from tests import images
from tests.conftest import doctor_line, env_for, report, run_cli
from tests.gateway import image_events
from tests.stored_gateway import StoredGateway

PNG = images.png_bytes(40, 24)
B64 = images.b64(PNG)


def litellm_id(tag: str = "a") -> str:
    """An id shaped like LiteLLM's: "resp_" + base64 of its routing text and the upstream id
    (standard alphabet, so "+", "/" and "=" occur)."""
    routing = (
        "litellm:custom_llm_provider:openai;model_id:7f3c2a9e-51d4-4b8e-9c1a-2f6d8e0b4a73;"
        "response_id:resp_" + tag * 64 + ";deployment:gpt-image-relay-eu-west;"
        "api_base:http://upstream.invalid/v1;" + "\xfb\xff~" * 30
    )
    return "resp_" + base64.b64encode(routing.encode("latin-1")).decode("ascii")


LONG_ID = litellm_id()
assert 380 <= len(LONG_ID) <= 460 and "/" in LONG_ID and "+" in LONG_ID, len(LONG_ID)


def encoded(rid: str) -> str:
    return "/v1/responses/" + urllib.parse.quote(rid, safe="")


def test_a_cut_stream_behind_a_long_id_is_resumed_not_posted_again(
    tmp_path: Path, sg: StoredGateway
) -> None:
    env = env_for(tmp_path, sg.base_url)
    sg.plan(image_events(B64, resp_id=LONG_ID), cuts=[4])
    out = tmp_path / "out.png"
    proc = run_cli(["--prompt", "a fox", "--out", str(out), "--resumable", "--json"], env)
    assert proc.returncode == 0, report(proc, sg.gw)
    assert len(sg.posts()) == 1, sg.dump()
    (get,) = sg.gets()
    assert get.path == encoded(LONG_ID)  # "/" and "+" percent-encoded: one path segment
    assert get.query == {"stream": ["true"], "starting_after": ["3"]}
    assert out.read_bytes() == PNG
    record = json.loads(proc.stdout)
    assert record["response_id"] == LONG_ID and record["resumes"] == 1  # whole, not cut


def test_no_stream_polls_a_queued_response_with_a_long_id(
    tmp_path: Path, sg: StoredGateway
) -> None:
    # before: the id was ignored, so the queued answer was taken for the final one (exit 5)
    env = env_for(tmp_path, sg.base_url)
    sg.plan(image_events(B64, resp_id=LONG_ID), polls=1, retry_after_ms=10)
    out = tmp_path / "out.png"
    proc = run_cli(["--prompt", "a fox", "--out", str(out), "--resumable", "--no-stream"], env)
    assert proc.returncode == 0, report(proc, sg.gw)
    assert len(sg.posts()) == 1
    assert [g.path for g in sg.gets()] == [encoded(LONG_ID)] * 2
    assert out.read_bytes() == PNG


def test_resume_accepts_the_gateways_own_long_id(tmp_path: Path, sg: StoredGateway) -> None:
    env = env_for(tmp_path, sg.base_url)
    sg.store(sg.plan(image_events(B64, resp_id=LONG_ID)))
    sg.plans.clear()
    out = tmp_path / "got.png"
    proc = run_cli(["--resume", LONG_ID, "--out", str(out), "--json"], env)
    assert proc.returncode == 0, report(proc, sg.gw)
    assert sg.posts() == [] and [g.path for g in sg.gets()] == [encoded(LONG_ID)]
    assert out.read_bytes() == PNG
    assert json.loads(proc.stdout)["response_id"] == LONG_ID


def test_the_printed_resume_command_carries_the_long_id(tmp_path: Path, sg: StoredGateway) -> None:
    env = env_for(tmp_path, sg.base_url)
    plan = sg.plan(image_events(B64, resp_id=LONG_ID), cuts=[3, 0])
    out = tmp_path / "fox.png"
    proc = run_cli(["--prompt", "a fox", "--out", str(out), "--resumable", "--retries", "0"], env)
    assert proc.returncode == 4, report(proc, sg.gw)
    line = next(x for x in proc.stderr.splitlines() if "--resume " in x)
    command = shlex.split(line.split("with: ", 1)[1])
    assert command[command.index("--resume") + 1] == LONG_ID
    plan.cuts.clear()
    again = run_cli(command[2:], env)
    assert again.returncode == 0, report(again, sg.gw)
    assert out.read_bytes() == PNG and len(sg.posts()) == 1


def test_an_id_a_shell_would_act_on_is_resumed_but_not_pasted_into_a_command(
    tmp_path: Path, sg: StoredGateway
) -> None:
    rid = "resp_a%PATH%&b'c"
    env = env_for(tmp_path, sg.base_url)
    sg.plan(image_events(B64, resp_id=rid), cuts=[4, 0])
    proc = run_cli(["--prompt", "x", "--out", str(tmp_path / "o.png"), "--resumable"], env)
    assert proc.returncode == 0, report(proc, sg.gw)  # the run itself resumes it
    assert len(sg.posts()) == 1 and sg.gets()[0].path == encoded(rid)
    sg.plan(image_events(B64, resp_id=rid), cuts=[4, 0])
    args = ["--prompt", "x", "--out", str(tmp_path / "p.png"), "--resumable", "--retries", "0"]
    failed = run_cli(args, env)
    assert failed.returncode == 4, report(failed, sg.gw)
    line = next(x for x in failed.stderr.splitlines() if "--resume " in x)
    assert "--resume RESPONSE_ID --out" in line and "%PATH%&" not in line.split("with: ", 1)[1]


@pytest.mark.parametrize("rid", ["resp 1", "resp_\x07", ".", "..", "r" * 1025, "resp_\u00e9"])
def test_resume_refuses_what_no_gateway_path_can_carry(
    tmp_path: Path, sg: StoredGateway, rid: str
) -> None:
    env = env_for(tmp_path, sg.base_url)
    proc = run_cli(["--resume", rid, "--out", str(tmp_path / "got.png")], env)
    assert proc.returncode == 2, report(proc)
    assert sg.requests == []


def test_probe_vouches_for_a_long_id_it_can_fetch(tmp_path: Path, sg: StoredGateway) -> None:
    env = env_for(tmp_path, sg.base_url)
    plan = sg.plan(image_events(B64, resp_id=LONG_ID))
    proc = run_cli(["--doctor", "--probe"], env)
    assert doctor_line(proc, "store").startswith("ok"), proc.stdout
    assert encoded(LONG_ID) in [g.path for g in sg.gets()]
    assert plan.cancelled


def test_probe_does_not_vouch_for_an_id_a_run_would_refuse(
    tmp_path: Path, sg: StoredGateway
) -> None:
    # the probe's store check applies the run's rule: it never promises a resume that fails
    rid = "resp_" + "x" * 1100
    env = env_for(tmp_path, sg.base_url)
    sg.plan(image_events(B64, resp_id=rid))
    proc = run_cli(["--doctor", "--probe"], env)
    line = doctor_line(proc, "store")
    assert line.startswith("note") and "cannot be resumed" in line, proc.stdout
    assert [g.path for g in sg.gets() if g.path.startswith("/v1/responses")] == []
    run = run_cli(["--resume", rid, "--out", str(tmp_path / "got.png")], env)
    assert run.returncode == 2
