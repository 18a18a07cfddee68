"""The script inside an agent's sandbox: a connect() the sandbox forbids (EPERM/EACCES) is exit 6
with advice that works under `codex exec`, and an output folder on a read-only file system is
exit 7 naming a read-only sandbox. We run as root, so nothing here relies on permission bits:
the errno is raised by a patched call in the subprocess, or comes from a real read-only mount
when this machine allows one (`unshare -m`)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SCRIPT, TEST_KEY, leftovers, report
from tests.gateway import Gateway, image_events, sse_reply
from tests.images import b64, png_bytes

IMAGE = png_bytes(32, 32)

# Runs the script's main() after patching one call to fail the way a sandbox makes it fail.
WRAPPER = """\
import errno, os, socket, sys
sys.path.insert(0, os.path.dirname(os.environ["SCRIPT"]))
import generate_gateway_image as g
kind, code, where = os.environ["FAULT"].split(":", 2)
code = int(code)
if kind == "connect":
    def connect(self, address):
        raise OSError(code, os.strerror(code) if code < 1000 else "forbidden by access permissions")
    socket.socket.connect = connect
elif kind == "open":
    real_open = os.open
    folders = [os.path.abspath(w) for w in where.split(os.pathsep)]
    def fake_open(path, flags, *args, **kwargs):
        inside = any(os.path.abspath(path).startswith(f + os.sep) for f in folders)
        if inside and flags & os.O_CREAT:
            raise OSError(code, os.strerror(code), path)
        return real_open(path, flags, *args, **kwargs)
    os.open = fake_open
    if os.environ.get("SKIP_OUT_CHECK"):  # as if the folder turned read-only mid-render
        g.check_output_path = lambda out, force: None
    if os.environ.get("TEMP_FOLDER"):  # tempfile would skip a folder that refuses files
        import tempfile
        tempfile.tempdir = os.environ["TEMP_FOLDER"]
sys.exit(g.main(sys.argv[1:]))
"""


def run_faulty(
    fault: str, args: list[str], env: dict[str, str], **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WRAPPER, *args],
        env=dict(env, FAULT=fault, SCRIPT=str(SCRIPT), **extra),
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- the network: Codex's workspace-write sandbox blocks every connect(), loopback included ----


@pytest.mark.parametrize("code", [errno.EPERM, errno.EACCES, 10013])  # 10013: WSAEACCES
def test_connect_not_permitted_is_a_sandbox_hint(
    code: int, gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> None:
    proc = run_faulty(f"connect:{code}:", ["--prompt", "p", "--out", str(tmp_path / "a.png")], env)
    assert proc.returncode == 6, report(proc, gateway)
    first, hint = proc.stderr.strip().splitlines()[-2:]
    assert first.startswith("error: connecting to 127.0.0.1:") and "not permitted" in first
    for fix in (
        "sandbox_workspace_write.network_access=true",
        "--sandbox danger-full-access",
        "--mcp",
        "approval policy",
    ):
        assert fix in hint, hint
    assert "retrying" not in proc.stderr  # a sandbox does not change its mind
    assert gateway.requests == []


def test_doctor_names_the_sandbox_at_the_tcp_step(gateway: Gateway, env: dict[str, str]) -> None:
    proc = run_faulty(f"connect:{errno.EPERM}:", ["--doctor"], env)
    assert proc.returncode == 6, report(proc)
    tcp = proc.stdout[proc.stdout.index("failed tcp") :]
    assert "not permitted" in tcp and "sandbox_workspace_write.network_access" in tcp


# --- the output folder: the default `codex exec` sandbox is read-only everywhere ---------------


def can_mount_read_only() -> bool:
    if sys.platform != "linux" or not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o ro tmpfs /mnt"],
        capture_output=True,
    )
    return probe.returncode == 0


def run_in_read_only(
    folder: Path, args: list[str], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """The script with `folder` on a read-only file system: a real read-only mount in a private
    mount namespace when possible, else open() failing with EROFS there."""
    if can_mount_read_only():
        script = 'mount -t tmpfs -o ro tmpfs "$0" && shift && exec "$@"'
        return subprocess.run(
            ["unshare", "-m", "sh", "-c", script, str(folder), "--", sys.executable, str(SCRIPT)]
            + args,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    return run_faulty(f"open:{errno.EROFS}:{folder}", args, env)


def test_read_only_output_folder_names_the_sandbox(
    gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    proc = run_in_read_only(folder, ["--prompt", "p", "--out", str(folder / "a.png")], env)
    assert proc.returncode == 7, report(proc, gateway)
    first, hint = proc.stderr.strip().splitlines()[-2:]
    assert first == f"error: cannot write in {folder}: read-only file system", first
    assert "read-only sandbox" in hint and "--sandbox workspace-write" in hint
    assert "--mcp" in hint
    assert gateway.requests == []  # refused before anything was paid for
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("sandboxed", [True, False])
def test_permission_denied_names_the_sandbox_only_in_one(
    sandboxed: bool, gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    extra = {"CODEX_SANDBOX_NETWORK_DISABLED": "1"} if sandboxed else {}
    proc = run_faulty(
        f"open:{errno.EACCES}:{folder}",
        ["--prompt", "p", "--out", str(folder / "a.png")],
        env,
        **extra,
    )
    assert proc.returncode == 7, report(proc, gateway)
    assert f"cannot write in {folder}: permission denied" in proc.stderr
    hint = proc.stderr.strip().splitlines()[-1]
    if sandboxed:
        assert "read-only sandbox" in hint, hint
    else:
        assert hint.endswith("hint: choose another --out folder"), hint
    assert gateway.requests == []


def test_paid_image_with_nowhere_to_go_names_the_sandbox(
    gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> None:
    """The folder and the temp folder both refuse (the whole file system is read-only) after
    the image was paid for: the message says why another --out would not help."""
    out, temp = tmp_path / "out", tmp_path / "tmp"
    out.mkdir()
    temp.mkdir()
    gateway.enqueue(sse_reply(image_events(b64(IMAGE))))
    proc = run_faulty(
        f"open:{errno.EROFS}:{out}{os.pathsep}{temp}",
        ["--prompt", "p", "--out", str(out / "a.png")],
        env,
        SKIP_OUT_CHECK="1",
        TEMP_FOLDER=str(temp),
    )
    assert proc.returncode == 7, report(proc, gateway)
    assert "nor a rescue file" in proc.stderr
    assert "read-only sandbox" in proc.stderr.strip().splitlines()[-1]
    assert len(gateway.posts()) == 1  # never retried: a retry would be billed again
    assert leftovers(out) == [] and TEST_KEY not in proc.stderr


def test_dns_failure_in_a_network_less_codex_sandbox_names_the_fixes(
    env: dict[str, str], tmp_path: Path
) -> None:
    """A gateway with a host name: under Codex's sandbox the lookup fails before any connect(),
    and Codex marks that sandbox with CODEX_SANDBOX_NETWORK_DISABLED=1. "Check your DNS" would
    send the agent the wrong way."""
    args = ["--base-url", "http://gateway.invalid/v1", "--prompt", "p", "--out"]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args, str(tmp_path / "a.png")],
        env=dict(env, CODEX_SANDBOX_NETWORK_DISABLED="1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 6, report(proc)
    first, hint = proc.stderr.strip().splitlines()[-2:]
    assert first.startswith("error: cannot resolve gateway.invalid"), proc.stderr
    assert "sandbox_workspace_write.network_access=true" in hint and "--mcp" in hint, hint
    assert "check base_url and your DNS" not in proc.stderr
