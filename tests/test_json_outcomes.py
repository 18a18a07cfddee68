"""A --json run prints exactly one JSON object on stdout for every outcome,
errors found before sending included, each with ok / exit_code / error / hint; --doctor --json
prints its checks as one object. Every test runs the script as a subprocess and parses stdout."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests import images
from tests.conftest import (
    TEST_KEY,
    clean_env,
    run_cli,
    run_patched,
    run_until_sigterm,
    write_codex_home,
)
from tests.gateway import (
    Gateway,
    error_reply,
    image_events,
    raw_reply,
    sse_reply,
    text_only_events,
)

PNG = images.png_bytes(40, 24)


def one_object(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """stdout is exactly one JSON object (one line), with the contract's fields."""
    text = f"exit {proc.returncode}\nstdout: {proc.stdout!r}\nstderr: {proc.stderr}"
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, text
    record = json.loads(lines[0])
    assert isinstance(record, dict), text
    assert record["ok"] is (proc.returncode == 0), text
    assert record["exit_code"] == proc.returncode, text
    if not record["ok"]:
        assert isinstance(record["error"], str) and record["error"], text
        assert isinstance(record["hint"], str) and record["hint"], text
    assert TEST_KEY not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    return record


@pytest.mark.parametrize(
    "extra, code, words",
    [
        (["--size", "huge"], 2, "size"),
        (["--n", "many"], 2, "--n"),  # an argparse error
        (["--no-such-flag"], 2, "--no-such-flag"),  # an argparse error
        (["--quality", "ultra"], 2, "quality"),
    ],
    ids=["bad-size", "bad-n", "unknown-flag", "bad-choice"],
)
def test_usage_errors_print_one_object(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], extra: list[str], code: int, words: str
) -> None:
    proc = run_cli(["--json", "--prompt", "p", "--out", str(tmp_path / "o.png"), *extra], env)
    record = one_object(proc)
    assert proc.returncode == code
    assert words in record["error"], record
    assert record.get("hint"), record
    assert gateway.requests == []


def test_json_after_the_error_still_counts(tmp_path: Path, env: dict[str, str]) -> None:
    proc = run_cli(
        ["--prompt", "p", "--size", "7by7", "--out", str(tmp_path / "o.png"), "--json"], env
    )
    assert one_object(proc)["exit_code"] == 2


def test_a_missing_prompt_is_one_object(tmp_path: Path, env: dict[str, str]) -> None:
    proc = run_cli(["--json", "--out", str(tmp_path / "o.png")], env)
    assert one_object(proc)["exit_code"] == 2


def test_missing_key_variable_is_one_object(tmp_path: Path, gateway: Gateway) -> None:
    home = write_codex_home(
        tmp_path / "ch", gateway.base_url, key=None, extra_provider='env_key = "GW_TEST_KEY"'
    )
    proc = run_cli(
        ["--json", "--prompt", "p", "--out", str(tmp_path / "o.png")],
        clean_env(CODEX_HOME=str(home)),
    )
    record = one_object(proc)
    assert proc.returncode == 3
    assert "GW_TEST_KEY" in record["error"] + record.get("hint", ""), record
    assert gateway.requests == []


def test_no_configuration_is_one_object(tmp_path: Path) -> None:
    env = clean_env(HOME=str(tmp_path / "home"), USERPROFILE=str(tmp_path / "home"))
    proc = run_cli(["--json", "--prompt", "p", "--out", str(tmp_path / "o.png")], env)
    record = one_object(proc)
    assert proc.returncode == 3 and "config.toml" in record["error"] + record.get("hint", "")


def test_existing_out_is_one_object(tmp_path: Path, gateway: Gateway, env: dict[str, str]) -> None:
    out = tmp_path / "o.png"
    out.write_bytes(b"keep me")
    proc = run_cli(["--json", "--prompt", "p", "--out", str(out)], env)
    record = one_object(proc)
    assert proc.returncode == 7
    assert "--force" in record["hint"], record
    assert out.read_bytes() == b"keep me"
    assert gateway.requests == []


def test_existing_out_with_n_is_one_object(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    (tmp_path / "o-2.png").write_bytes(b"keep me")
    proc = run_cli(["--json", "--prompt", "p", "--n", "2", "--out", str(tmp_path / "o.png")], env)
    assert one_object(proc)["exit_code"] == 7
    assert gateway.requests == []


def test_unreadable_batch_is_one_object(tmp_path: Path, env: dict[str, str]) -> None:
    proc = run_cli(
        ["--json", "--batch", str(tmp_path / "missing.jsonl"), "--out-dir", str(tmp_path)], env
    )
    assert one_object(proc)["exit_code"] == 2


def test_gateway_refusal_is_one_object(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(
        error_reply(400, "Invalid value for tools[0].quality.", code="invalid_value")
    )
    proc = run_cli(["--json", "--prompt", "p", "--out", str(tmp_path / "o.png")], env)
    record = one_object(proc)
    assert proc.returncode == 4 and "quality" in record["error"], record


@pytest.mark.parametrize("body", [b"", b'{"id": "resp_1", "output": ['], ids=["empty", "cut"])
def test_an_unreadable_json_answer_is_one_object_after_its_retries(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], body: bytes
) -> None:
    """A 200 JSON body that is empty or ends mid-value (its Content-Length complete): retried
    as a cut answer (the gateway had started: it may bill), then exit 4."""
    gateway.set_default(raw_reply(body, content_type="application/json"))
    out = tmp_path / "x.png"
    proc = run_cli(
        ["--prompt", "p", "--out", str(out), "--json", "--no-stream", "--retries", "1"], env
    )
    record = one_object(proc)
    assert record["exit_code"] == 4
    assert record["error"].startswith("the gateway's JSON answer is unreadable")
    assert record["hint"].startswith("the body may have been cut short; retry")
    assert len(gateway.posts()) == 2 and "may be billed twice" in proc.stderr
    assert not out.exists()


def test_network_error_is_one_object(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a loopback port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = clean_env(HOME=str(tmp_path), CODEX_API_KEY=TEST_KEY)
    proc = run_cli(
        [
            "--json",
            "--prompt",
            "p",
            "--out",
            str(tmp_path / "o.png"),
            "--base-url",
            f"http://127.0.0.1:{port}/v1",
            "--retries",
            "0",
        ],
        env,
    )
    assert one_object(proc)["exit_code"] == 6


def test_success_has_exit_code_zero(tmp_path: Path, gateway: Gateway, env: dict[str, str]) -> None:
    gateway.set_default(sse_reply(image_events(images.b64(PNG))))
    proc = run_cli(["--json", "--prompt", "p", "--out", str(tmp_path / "o.png")], env)
    record = one_object(proc)
    assert record["path"] == str(tmp_path / "o.png") and "error" not in record


@pytest.mark.skipif(os.name != "posix", reason="SIGTERM is POSIX")
def test_terminated_run_is_one_object(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(sse_reply(image_events(images.b64(PNG)), stall_after=1))
    proc = run_until_sigterm(
        gateway, env, ["--json", "--prompt", "p", "--out", str(tmp_path / "o.png")]
    )
    record = one_object(proc)
    assert proc.returncode == 143 and record["error"] == "terminated"


# --- --doctor --json --------------------------------------------------------------------------


def test_doctor_json_is_one_object(gateway: Gateway, env: dict[str, str]) -> None:
    proc = run_cli(["--doctor", "--json"], env)
    record = one_object(proc)
    assert proc.returncode == 0, proc.stderr
    names = [c["check"] for c in record["checks"]]
    assert {"config", "provider", "endpoint", "key", "models"} <= set(names), record
    assert all(c["status"] in ("ok", "note", "failed") for c in record["checks"])
    assert "endpoint" in proc.stderr  # the lines a person reads go to stderr meanwhile


def test_doctor_json_failure_names_the_check(tmp_path: Path, gateway: Gateway) -> None:
    home = write_codex_home(
        tmp_path / "ch",
        gateway.base_url,
        key=None,
        extra_provider='env_key = "GW_TEST_KEY"\nenv_key_instructions = "export GW_TEST_KEY=..."',
    )
    proc = run_cli(["--doctor", "--json"], clean_env(CODEX_HOME=str(home)))
    record = one_object(proc)
    assert proc.returncode == 3
    assert record["error"].startswith("key: "), record
    assert "export GW_TEST_KEY=..." in record["hint"]
    failed = [c for c in record["checks"] if c["status"] == "failed"]
    assert [c["check"] for c in failed] == ["key"]


def test_text_only_answer_is_one_object(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    from tests.gateway import text_only_events

    gateway.set_default(sse_reply(text_only_events("I cannot draw that.")))
    proc = run_cli(["--json", "--prompt", "p", "--out", str(tmp_path / "o.png")], env)
    record = one_object(proc)
    assert proc.returncode == 5 and "I cannot draw that." in record["error"], record


def test_unwritable_output_after_the_image_is_one_object(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    """The output appears while the image renders: the paid image goes to a rescue file, and
    the one object names it."""
    out = tmp_path / "o.png"

    def reply(rec: Any) -> Any:
        out.write_bytes(b"someone else's")
        return sse_reply(image_events(images.b64(PNG)))

    gateway.set_default(reply)
    proc = run_cli(["--json", "--prompt", "p", "--out", str(out)], env)
    record = one_object(proc)
    assert proc.returncode == 7, proc.stderr
    assert record["path"] and record["path"] != str(out)
    assert Path(record["path"]).read_bytes() == PNG
    Path(record["path"]).unlink()


def test_a_disk_fault_while_the_answer_arrives_is_one_object_and_not_retried(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    """An ENOSPC raised while the stream is read (planted in the SSE parser, where a spooled
    value's file could fail) is the local disk's: exit 7, one POST, never a network error."""
    gateway.set_default(sse_reply(image_events(images.b64(PNG))))
    patch = (
        "import errno\n"
        "def full(self, *args): raise OSError(errno.ENOSPC, 'No space left on device')\n"
        "g.SSEParser.feed = full"
    )
    out = tmp_path / "x.png"
    proc = run_patched(patch, ["--prompt", "p", "--out", str(out), "--json"], env)
    record = one_object(proc)
    assert record["exit_code"] == 7, proc.stderr
    assert record["error"] == (
        "the local disk refused a write while the answer arrived: No space left on device"
    )
    assert len(gateway.posts()) == 1 and "retrying" not in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("image", [False, True], ids=["no-image", "image"])
def test_a_budget_that_runs_out_as_the_answer_ends_is_one_object(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], image: bool
) -> None:
    """The total budget runs out while the last of the answer is handled (planted: a slow
    machine, 3.2 s after the body ended, --timeout 3): the answer came whole, so it is judged
    as it is: the image saved (exit 0), or the model's text without one (exit 5), never a
    time-out whose hint (raise --timeout) would pay again for the same answer. One POST."""
    events = image_events(images.b64(PNG)) if image else text_only_events("no picture")
    gateway.set_default(sse_reply(events))
    patch = (
        "import time\n"
        "read = g.read_sse_body\n"
        "def slow(*args):\n"
        "    ended = read(*args)\n"
        "    time.sleep(3.2)\n"
        "    return ended\n"
        "g.read_sse_body = slow"
    )
    out = tmp_path / "x.png"
    args = ["--prompt", "p", "--out", str(out), "--json", "--timeout", "3"]
    proc = run_patched(patch, args, env)
    record = one_object(proc)
    assert len(gateway.posts()) == 1
    if image:
        assert record["ok"] is True and out.read_bytes() == PNG
    else:
        assert record["exit_code"] == 5, proc.stderr
        assert "no picture" in proc.stderr and "time budget" not in proc.stderr
        assert not out.exists()
