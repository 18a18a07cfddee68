"""Progress on stderr: in place on a terminal (dimmed unless NO_COLOR), plain lines and a
heartbeat otherwise, nothing with --quiet."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

import generate_gateway_image as g
from tests.conftest import SCRIPT, run_cli
from tests.gateway import Gateway, image_events, sse_reply
from tests.images import b64, png_bytes

IMAGE = png_bytes(32, 32)


def test_plain_lines_per_phase_and_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    progress = g.Progress(g.Console())
    assert not progress.tty
    progress.phase("generating")
    assert err.getvalue().splitlines()[-1].endswith("generating")
    count = len(err.getvalue().splitlines())
    progress._show()  # nothing new yet: no heartbeat within 15 s
    assert len(err.getvalue().splitlines()) == count
    progress.last_line -= g.HEARTBEAT_SECONDS + 1
    progress._show()
    lines = err.getvalue().splitlines()
    assert len(lines) == count + 1 and lines[-1].endswith("generating")
    assert "\r" not in err.getvalue() and "\x1b" not in err.getvalue()


def test_quiet_prints_no_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    progress = g.Progress(g.Console(quiet=True))
    progress.phase("generating")
    progress.last_line -= g.HEARTBEAT_SECONDS + 1
    progress._show()
    assert err.getvalue() == ""


def test_non_tty_run_logs_phases(gateway: Gateway, env: dict[str, str], tmp_path: Path) -> None:
    gateway.enqueue(sse_reply(image_events(b64(IMAGE))))
    proc = run_cli(["--prompt", "x", "--out", str(tmp_path / "a.png")], env)
    assert proc.returncode == 0, proc.stderr
    assert "] generating" in proc.stderr and "] finalising" in proc.stderr
    assert "\x1b" not in proc.stderr


def test_quiet_run_has_no_progress(gateway: Gateway, env: dict[str, str], tmp_path: Path) -> None:
    gateway.enqueue(sse_reply(image_events(b64(IMAGE))))
    proc = run_cli(["--prompt", "x", "--out", str(tmp_path / "a.png"), "--quiet"], env)
    assert proc.returncode == 0, proc.stderr
    assert "generating" not in proc.stderr and "requesting" not in proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "a.png")


def _run_on_tty(env: dict[str, str], args: list[str]) -> str:
    """Run the script with stderr on a pseudo-terminal; return what it wrote there."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), *args], env=env, stdout=subprocess.PIPE, stderr=slave
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=30)
    os.close(master)
    assert proc.returncode == 0
    return b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.skipif(os.name != "posix", reason="pseudo-terminals are POSIX only")
@pytest.mark.parametrize("no_color", [False, True])
def test_tty_status_line_in_place(
    gateway: Gateway, env: dict[str, str], tmp_path: Path, no_color: bool
) -> None:
    gateway.enqueue(sse_reply(image_events(b64(IMAGE)), delay=0.4))
    if no_color:
        env = dict(env, NO_COLOR="1")
    out = _run_on_tty(env, ["--prompt", "x", "--out", str(tmp_path / "a.png")])
    assert "\r\x1b[2K" in out  # rewritten in place
    assert "generating" in out
    assert ("\x1b[2m" in out) is (not no_color)


def test_a_gateway_flipping_phases_does_not_flood_the_log(tmp_path: Path) -> None:
    # every change of phase was a line (an MCP notification under --mcp): two events flipping
    # between queued and in progress wrote thousands of lines a second into the agent's log
    import json

    from tests.conftest import clean_env, write_codex_home
    from tests.raw_servers import RawServer, endless

    flip = b"".join(
        b"data: " + json.dumps({"type": kind}).encode() + b"\n\n"
        for kind in ("response.queued", "response.in_progress")
    )
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
    with RawServer(endless(head, flip * 64)) as server:
        home = write_codex_home(tmp_path / "home", server.base_url)
        args = ["--prompt", "p", "--out", str(tmp_path / "a.png"), "--timeout", "3"]
        proc = run_cli([*args, "--retries", "0"], clean_env(CODEX_HOME=str(home)))
    assert proc.returncode == 6, proc.stderr[-2000:]
    assert "] queued" in proc.stderr and "] in progress" in proc.stderr
    assert len(proc.stderr.splitlines()) < 20, len(proc.stderr.splitlines())


def test_a_status_line_is_cleared_before_any_other_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal the status line stays on screen without a line break: a warning (stderr)
    or a result (stdout) first erases it, once; --quiet shows no status at all."""
    err, out = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setenv("NO_COLOR", "1")
    console = g.Console()
    console.status("generating", tty=True)
    assert err.getvalue() == "\r\x1b[2Kgenerating"
    console.warn("slow gateway")
    console.warn("still slow")
    assert (
        err.getvalue() == "\r\x1b[2Kgenerating\r\x1b[2Kwarning: slow gateway\nwarning: still slow\n"
    )
    err.seek(0)
    err.truncate()
    console.status("finalising", tty=True)
    console.result("/tmp/a.png")
    console.result("/tmp/b.png")
    assert err.getvalue() == "\r\x1b[2Kfinalising\r\x1b[2K"
    assert out.getvalue() == "/tmp/a.png\n/tmp/b.png\n"
    err.seek(0)
    err.truncate()
    quiet = g.Console(quiet=True)
    quiet.status("generating", tty=True)
    quiet.status("generating", tty=False)
    quiet.result("/tmp/c.png")
    assert err.getvalue() == ""
    assert out.getvalue().endswith("/tmp/b.png\n/tmp/c.png\n")
