"""Regression tests for the third review (the CLI from the user's side).

Each test fails on the script before the commit that added it: odd names are refused before a
paid request (or rescued after one, never retried as a network fault), output paths that cannot
be written are found before sending, batch jobs cannot trip over each other, a replaced image is
re-uploaded by --edit-from instead of editing the stored older one, non-UTF-8 input is exit 2
rather than a crash, a password in the base URL is never printed, NaN timeouts are refused and
the gateway's words cannot send escape sequences to the terminal.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import generate_gateway_image as g
from tests import images
from tests.conftest import (
    PNG,
    SCRIPT,
    TEST_KEY,
    clean_env,
    image_reply,
    leftovers,
    permissions_bind,
    report,
    run_cli,
    write_codex_home,
)
from tests.gateway import Gateway, error_reply

OTHER = images.png_bytes(40, 24, noise=True, seed=5)
POSIX = os.name == "posix"


def batch(tmp_path: Path, *lines: dict[str, object]) -> Path:
    path = tmp_path / "jobs.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


# --- names the file system refuses -----------------------------------------------------------


@pytest.mark.parametrize("name", ["a\u0000b.png", "\ud800.png"])
def test_batch_out_name_that_cannot_be_a_file_is_refused_before_sending(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], name: str
) -> None:
    jobs = batch(tmp_path, {"prompt": "x", "out": name})
    proc = run_cli(["--batch", str(jobs), "--out-dir", str(tmp_path / "out"), "--json"], env)
    assert proc.returncode == 2, report(proc, gateway)
    assert gateway.requests == []


def test_sink_rescues_the_image_when_the_name_is_refused(tmp_path: Path) -> None:
    """Defence in depth: a ValueError from the file system is a write failure (rescue file,
    exit 7 later), not a broken connection that would be retried and billed again."""
    sink = g.ImageSink(str(tmp_path / "a\u0000b.png"), force=False)
    assert sink.save(base64.b64encode(PNG).decode("ascii"))
    assert sink.image is not None and sink.image.rescued
    rescued = Path(sink.image.path)
    try:
        assert rescued.parent == Path(tempfile.gettempdir())
        assert rescued.read_bytes() == PNG
    finally:
        rescued.unlink()


# --- output paths checked before anything is paid for ------------------------------------------


@pytest.mark.parametrize("case", ["trailing-slash", "too-long"])
def test_unusable_out_is_refused_before_sending(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], case: str
) -> None:
    out = (
        str(tmp_path / "nd3") + os.sep
        if case == "trailing-slash"
        else str(tmp_path / ("x" * 240 + ".png"))
    )
    proc = run_cli(["--prompt", "p", "--out", out], env)
    assert proc.returncode == 7, report(proc, gateway)
    assert proc.stderr.startswith("error: --out "), proc.stderr
    assert gateway.requests == []


def test_unwritable_folder_is_refused_before_sending(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    prefix = permissions_bind()
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        proc = subprocess.run(
            [*prefix, sys.executable, str(SCRIPT), "--prompt", "p", "--out", str(folder / "x.png")],
            env=env,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=60,
        )
    finally:
        folder.chmod(0o755)
    assert proc.returncode == 7, report(proc, gateway)
    assert "permission denied" in proc.stderr
    assert gateway.requests == []


@pytest.mark.parametrize(
    "lines",
    [
        [{"prompt": "x", "out": "sub/"}],
        [{"prompt": "x", "out": "same.png"}, {"prompt": "y", "out": "same.png/x.png"}],
    ],
    ids=["folder-name", "output-inside-another-output"],
)
def test_batch_outputs_that_cannot_all_be_written_are_refused(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], lines: list[dict[str, object]]
) -> None:
    jobs = batch(tmp_path, *lines)
    proc = run_cli(["--batch", str(jobs), "--out-dir", str(tmp_path / "out")], env)
    assert proc.returncode in (2, 7), report(proc, gateway)
    assert "nothing was sent" in proc.stderr
    assert gateway.requests == []


def test_batch_input_that_another_job_writes_is_refused(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    out_dir = tmp_path / "bo"
    out_dir.mkdir()
    (out_dir / "in.png").write_bytes(PNG)
    jobs = batch(
        tmp_path,
        {"prompt": "x", "out": "in.png"},
        {"prompt": "y", "out": "b.png", "image": str(out_dir / "in.png")},
    )
    proc = run_cli(
        ["--batch", str(jobs), "--out-dir", str(out_dir), "--force", "--concurrency", "1"], env
    )
    assert proc.returncode == 2, report(proc, gateway)
    assert "which line 1 writes" in proc.stderr
    assert gateway.requests == []


# --- --edit-from with a sidecar older than the image -------------------------------------------


def test_edit_from_a_replaced_image_uploads_it(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    first = tmp_path / "cabin.png"
    gateway.enqueue(image_reply(PNG, resp_id="resp_old"))
    assert (
        run_cli(["--prompt", "a", "--out", str(first), "--sidecar", "--store"], env).returncode == 0
    )
    first.write_bytes(OTHER)  # e.g. rerun with --force and no --sidecar: the sidecar is stale
    gateway.enqueue(image_reply(PNG))
    second = tmp_path / "cabin2.png"
    proc = run_cli(["--prompt", "b", "--edit-from", str(first), "--out", str(second)], env)
    assert proc.returncode == 0, report(proc, gateway)
    body = gateway.posts()[1].json
    assert body is not None
    assert "previous_response_id" not in body
    content = body["input"][0]["content"]
    assert [c["type"] for c in content] == ["input_text", "input_image"]
    url = content[1]["image_url"]
    assert base64.b64decode(url.split(",", 1)[1]) == OTHER


# --- text that is not UTF-8 --------------------------------------------------------------------


@pytest.mark.skipif(not POSIX, reason="arguments are bytes only on POSIX")
def test_prompt_that_is_not_utf8_is_exit_2(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    proc = run_cli(["--prompt", "caf\udce9", "--out", str(tmp_path / "c.png")], env)
    assert proc.returncode == 2, report(proc, gateway)
    assert "not valid UTF-8" in proc.stderr
    assert gateway.requests == []


def test_prompt_on_stdin_that_is_not_utf8_is_exit_2(tmp_path: Path, env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, str(g.__file__), "--prompt", "-", "--out", str(tmp_path / "q.png")],
        input=b"\xff\xfe",
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert b"Traceback" not in proc.stderr


@pytest.mark.skipif(not POSIX, reason="file names are bytes only on POSIX")
def test_out_name_that_is_not_utf8_is_saved_and_reported(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.enqueue(image_reply())
    out = str(tmp_path / "\udce9t\udce9.png")
    proc = run_cli(["--prompt", "p", "--out", out], env)
    assert proc.returncode == 0, report(proc, gateway)
    assert Path(out).read_bytes() == PNG
    assert proc.stdout.strip().endswith(".png"), proc.stdout
    assert leftovers(tmp_path) == []


# --- what is printed ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [["--dry-run", "--prompt", "p", "--out", "x.png"], ["--doctor"]])
def test_password_in_the_base_url_is_never_printed(
    tmp_path: Path, gateway: Gateway, mode: list[str]
) -> None:
    host = gateway.base_url.split("://", 1)[1]
    url = f"http://bob:pw-SECRET-123@{host}?api-key=qk-SECRET-456"
    home = write_codex_home(tmp_path / "home", url)
    proc = run_cli([*mode, "--verbose"], clean_env(CODEX_HOME=str(home)))
    text = proc.stdout + proc.stderr
    assert "pw-SECRET-123" not in text, text
    assert "qk-SECRET-456" not in text, text
    assert TEST_KEY not in text


@pytest.mark.parametrize("flag", ["--timeout", "--idle-timeout", "--connect-timeout"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_timeouts_must_be_finite(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], flag: str, value: str
) -> None:
    proc = run_cli(["--prompt", "p", "--out", str(tmp_path / "o.png"), flag, value], env)
    assert proc.returncode == 2, report(proc, gateway)
    assert gateway.requests == []


def test_escape_sequences_from_the_gateway_do_not_reach_the_terminal(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.enqueue(error_reply(400, "bad \x1b[31mred\x1b[0m size\x07\x00 value"))
    proc = run_cli(["--prompt", "p", "--out", str(tmp_path / "o.png")], env)
    assert proc.returncode == 4, report(proc, gateway)
    assert "red" in proc.stderr
    assert not any(c in proc.stderr for c in "\x1b\x07\x00"), repr(proc.stderr)


def test_check_text_rules() -> None:
    assert g.check_text("a\x00b", "the prompt") == "a\x00b"  # JSON carries a NUL fine
    assert g.check_text("caf\u00e9", "the prompt") == "caf\u00e9"
    with pytest.raises(g.UsageError, match="not valid UTF-8"):
        g.check_text("caf\udce9", "the prompt")
    with pytest.raises(g.UsageError, match="NUL"):
        g.check_text("a\x00b.png", "the output path", path=True)
    with pytest.raises(g.UsageError, match="cannot be a file name"):
        g.check_text("\ud800.png", "the output path", path=True)
