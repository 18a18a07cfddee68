"""Input files on the command line: only regular files are read (FIFOs, devices, sockets,
/proc files and stdin-as-a-file are refused without blocking), a pipe only where it is natural
(--prompt -, --prompt-file <(cmd), --batch -) and then never past --timeout; every read has a
cap. Configuration files that exist but cannot be read are exit 3, never "absent". A sidecar
given to --edit-from only names an image beside itself. All before anything is sent."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import SCRIPT, TEST_KEY, clean_env, report, run_cli, write_codex_home
from tests.gateway import Gateway, image_events, sse_reply
from tests.images import b64, png_bytes

IMAGE = png_bytes(32, 32)
PROMPT_CAP = 1024 * 1024  # MAX_PROMPT_BYTES
BATCH_LINE_CAP = PROMPT_CAP + 64 * 1024  # MAX_BATCH_LINE_BYTES


def fifo(folder: Path, name: str = "fifo") -> Path:
    path = folder / name
    os.mkfifo(path)
    return path


def run_bounded(
    args: list[str], env: dict[str, str], cwd: Path, **kw: object
) -> subprocess.CompletedProcess[str]:
    """The script under a 512 MB address-space limit: reading /dev/zero whole would die of it."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (512 * 1024 * 1024, 512 * 1024 * 1024))

    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env=env,
        cwd=str(cwd),
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=limit,
        **kw,  # type: ignore[arg-type]
    )


def assert_refused(proc: subprocess.CompletedProcess[str], gateway: Gateway, *words: str) -> None:
    assert proc.returncode == 2, report(proc, gateway)
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in proc.stderr, report(proc)
    assert gateway.requests == [], "nothing may be sent"


@pytest.mark.parametrize("flag", ["--image", "--mask", "--edit-from", "--prompt-file", "--batch"])
def test_fifo_nobody_writes_never_hangs(
    flag: str, gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> None:
    path = fifo(tmp_path)
    args = ["--timeout", "2", "--out-dir" if flag == "--batch" else "--out", str(tmp_path / "o")]
    if flag not in ("--prompt-file", "--batch"):
        args += ["--prompt", "edit it"]
    if flag == "--mask":
        (tmp_path / "base.png").write_bytes(IMAGE)
        args += ["--image", str(tmp_path / "base.png")]
    started = time.monotonic()
    proc = run_cli([flag, str(path), *args], env, cwd=tmp_path, timeout=30)
    elapsed = time.monotonic() - started
    assert_refused(proc, gateway, str(path))
    assert elapsed < 20, "a FIFO must not hold the run past --timeout"
    if flag in ("--prompt-file", "--batch"):  # a pipe is allowed there, but not past --timeout
        assert "nothing more arrived within 2 s" in proc.stderr
    else:
        assert "FIFO" in proc.stderr or "not a sidecar" in proc.stderr, proc.stderr


@pytest.mark.parametrize("flag", ["--image", "--mask", "--prompt-file", "--batch", "--edit-from"])
@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/stdin"])
def test_devices_are_refused_with_bounded_memory(
    flag: str, device: str, gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> None:
    args = [flag, device, "--out-dir" if flag == "--batch" else "--out", str(tmp_path / "o")]
    if flag not in ("--prompt-file", "--batch"):
        args += ["--prompt", "edit it"]
    if flag == "--mask":
        (tmp_path / "base.png").write_bytes(IMAGE)
        args += ["--image", str(tmp_path / "base.png")]
    with open("/dev/zero", "rb") as stdin:  # /dev/stdin is a device here too
        proc = run_bounded(args, env, tmp_path, stdin=stdin)
    assert_refused(proc, gateway, device)
    assert "MemoryError" not in proc.stderr
    assert "not a regular file" in proc.stderr or "not a sidecar" in proc.stderr, proc.stderr


def test_stdin_pipe_is_not_an_input_image(
    gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> None:
    proc = run_cli(
        ["--prompt", "x", "--image", "/dev/stdin", "--out", str(tmp_path / "o.png")],
        env,
        input="not an image",
    )
    assert_refused(proc, gateway, "FIFO")


def test_a_socket_and_proc_files_are_refused(
    gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> None:
    sock_path = tmp_path / "s.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    server.listen(1)
    try:
        proc = run_cli(
            ["--prompt", "x", "--image", str(sock_path), "--out", str(tmp_path / "o.png")], env
        )
    finally:
        server.close()
    assert proc.returncode == 2 and gateway.requests == [], report(proc)
    proc = run_cli(["--prompt-file", "/proc/self/environ", "--out", str(tmp_path / "o.png")], env)
    assert_refused(proc, gateway, "a file of the system")


def test_sparse_prompt_file_over_the_cap_is_refused_at_once(
    gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> None:
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:
        f.truncate(10 * 1024**3)  # 10 GB, sparse
    proc = run_bounded(["--prompt-file", str(big), "--out", str(tmp_path / "o.png")], env, tmp_path)
    assert_refused(proc, gateway, "larger than 1,048,576 bytes")


@pytest.mark.parametrize("extra", [0, 1])
def test_prompt_cap_edge(extra: int, gateway: Gateway, env: dict[str, str], tmp_path: Path) -> None:
    prompt = tmp_path / "p.txt"
    prompt.write_bytes(b"a" * (PROMPT_CAP + extra))
    proc = run_cli(
        ["--prompt-file", str(prompt), "--dry-run", "--out", str(tmp_path / "o.png")], env
    )
    if extra:
        assert_refused(proc, gateway, "larger than 1,048,576 bytes")
    else:
        assert proc.returncode == 0, report(proc)


def test_batch_line_over_its_cap_is_refused(
    gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> None:
    batch = tmp_path / "b.jsonl"
    batch.write_text('"a cat"\n' + json.dumps("d" * (BATCH_LINE_CAP + 10)) + "\n", encoding="utf-8")
    proc = run_cli(["--batch", str(batch), "--out-dir", str(tmp_path / "o")], env)
    assert_refused(proc, gateway, ":2: longer than 1,114,112 bytes")


def test_batch_file_over_its_cap_is_refused(
    gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> None:
    batch = tmp_path / "b.jsonl"
    with open(batch, "wb") as f:
        f.truncate(16 * 1024 * 1024 + 1)
    proc = run_cli(["--batch", str(batch), "--out-dir", str(tmp_path / "o")], env)
    assert_refused(proc, gateway, "larger than 16,777,216 bytes")


def test_a_prompt_from_a_process_substitution_pipe(
    gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> None:
    """--prompt-file <(cmd): the shell passes /dev/fd/N, a pipe whose writer is already there."""
    gateway.enqueue(sse_reply(image_events(b64(IMAGE))))
    read_end, write_end = os.pipe()
    os.write(write_end, b"a fox from a pipe")
    os.close(write_end)
    out = tmp_path / "fox.png"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--prompt-file", f"/dev/fd/{read_end}", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        pass_fds=(read_end,),
    )
    os.close(read_end)
    assert proc.returncode == 0, report(proc, gateway)
    assert gateway.posts()[0].json["input"][0]["content"][0]["text"] == "a fox from a pipe"
    assert out.read_bytes() == IMAGE


def test_stdin_pipe_that_never_closes_ends_at_the_timeout(
    gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(SCRIPT),
            "--prompt",
            "-",
            "--timeout",
            "1",
            "--out",
            str(tmp_path / "o.png"),
        ],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stderr is not None
    proc.stdin.write(b"half a prompt")
    proc.stdin.flush()
    try:
        code = proc.wait(timeout=20)  # the writer stays open: only --timeout ends the read
    finally:
        proc.kill()
        proc.stdin.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert code == 2, err
    assert "nothing more arrived within 1 s" in err
    assert gateway.requests == []


def test_batch_from_stdin(gateway: Gateway, env: dict[str, str], tmp_path: Path) -> None:
    proc = run_cli(
        ["--batch", "-", "--out-dir", str(tmp_path / "o"), "--dry-run"],
        env,
        input='"a cat"\n"a dog"\n',
    )
    assert proc.returncode == 0, report(proc)
    assert "a dog" in proc.stdout


# -- --edit-from: the sidecar's image is its neighbour -------------------------------------------


@pytest.mark.parametrize("named", ["ABS", "../secret.png", "sub/photo.png", "..", "a\\b.png"])
def test_sidecar_naming_another_path_is_refused(
    named: str, gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(IMAGE)
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "sub" / "photo.png").write_bytes(IMAGE)
    sidecar = work / "planted.png.json"
    sidecar.write_text(
        json.dumps({"path": str(secret) if named == "ABS" else named}), encoding="utf-8"
    )
    proc = run_cli(
        ["--edit-from", str(sidecar), "--prompt", "x", "--out", str(work / "o.png")], env
    )
    assert_refused(proc, gateway, "is not a file name beside the sidecar")


def test_sidecar_image_beside_it_is_used(
    gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "fox.png").write_bytes(IMAGE)
    sidecar = tmp_path / "fox.png.json"
    sidecar.write_text(json.dumps({"path": "fox.png"}), encoding="utf-8")
    proc = run_cli(
        [
            "--edit-from",
            str(sidecar),
            "--prompt",
            "x",
            "--dry-run",
            "--out",
            str(tmp_path / "o.png"),
        ],
        env,
    )
    assert proc.returncode == 0, report(proc)
    assert f"{len(IMAGE)} bytes from {tmp_path / 'fox.png'}" in proc.stdout


# -- configuration files that exist are read, or the run stops (exit 3) ---------------------------


def _make_unreadable(path: Path, how: str) -> None:
    if path.exists():
        path.unlink()
    if how == "directory":
        path.mkdir()
    elif how == "fifo":
        os.mkfifo(path)
    elif how == "zero":
        path.symlink_to("/dev/zero")
    elif how == "dangling":
        path.symlink_to(path.parent / "missing.toml")


@pytest.mark.parametrize(
    "name", ["config.toml", "auth.json", "prof.config.toml", "managed_config.toml"]
)
@pytest.mark.parametrize("how", ["directory", "fifo", "zero", "dangling"])
def test_unreadable_config_file_is_exit_3_never_absent(
    name: str, how: str, gateway: Gateway, tmp_path: Path
) -> None:
    home = write_codex_home(tmp_path / "home", gateway.base_url)
    system = tmp_path / "system"
    system.mkdir()
    args = ["--prompt", "x", "--out", str(tmp_path / "o.png"), "--timeout", "5"]
    if name == "prof.config.toml":
        (home / name).write_text('model = "gpt-5.5"\n', encoding="utf-8")
        args += ["--profile", "prof"]
    target = system / name if name == "managed_config.toml" else home / name
    _make_unreadable(target, how)
    env = clean_env(
        CODEX_HOME=str(home), CODEX_IMAGEGEN_SYSTEM_CONFIG_DIR=str(system), OPENAI_API_KEY=TEST_KEY
    )
    proc = run_bounded(args, env, tmp_path)
    assert proc.returncode == 3, report(proc, gateway)
    assert str(target) in proc.stderr
    why = {
        "directory": "a directory",
        "fifo": "FIFO",
        "zero": "a device",
        "dangling": "a symbolic link to a missing file",
    }[how]
    assert why in proc.stderr, proc.stderr
    assert gateway.requests == []


def test_config_without_read_permission_is_exit_3(gateway: Gateway, tmp_path: Path) -> None:
    from tests.conftest import permissions_bind

    home = write_codex_home(tmp_path / "home", gateway.base_url)
    (home / "config.toml").chmod(0)
    proc = subprocess.run(
        [
            *permissions_bind(),
            sys.executable,
            str(SCRIPT),
            "--prompt",
            "x",
            "--out",
            str(tmp_path / "o.png"),
        ],
        env=clean_env(CODEX_HOME=str(home)),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 3, report(proc)
    assert "config.toml: cannot read: Permission denied" in proc.stderr


def test_a_prompt_piped_over_its_cap_is_refused(
    gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> None:
    proc = run_cli(
        ["--prompt", "-", "--out", str(tmp_path / "o.png")], env, input="p" * (PROMPT_CAP + 1)
    )
    assert_refused(proc, gateway, "--prompt -: larger than 1,048,576 bytes")


def test_stdin_that_is_a_device_is_not_a_prompt(
    gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> None:
    with open("/dev/zero", "rb") as zero:
        proc = run_bounded(
            ["--prompt", "-", "--out", str(tmp_path / "o.png")], env, tmp_path, stdin=zero
        )
    assert_refused(proc, gateway, "a device, not a regular file")
    assert "MemoryError" not in proc.stderr


def test_a_batch_line_whose_prompt_is_over_the_prompt_cap(
    gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> None:
    # the line fits its own cap (the prompt's plus room for options); its prompt does not
    batch = tmp_path / "b.jsonl"
    batch.write_text(json.dumps({"prompt": "p" * (PROMPT_CAP + 1)}) + "\n", encoding="utf-8")
    proc = run_cli(["--batch", str(batch), "--out-dir", str(tmp_path / "o")], env)
    assert_refused(proc, gateway, "the prompt is longer than 1,048,576 bytes, the limit")


def test_a_closed_stdin_is_not_a_prompt(
    gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> None:
    # started with descriptor 0 closed (Python then has no sys.stdin at all)
    args = [sys.executable, str(SCRIPT), "--prompt", "-", "--out", str(tmp_path / "o.png")]
    proc = subprocess.run(
        ["sh", "-c", 'exec "$@" <&-', "sh", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert_refused(proc, gateway, "error: --prompt -: cannot read stdin: it is closed")


# --- the readers themselves, for what a subprocess cannot arrange ------------------------------


def test_reading_to_eof_stops_past_the_cap() -> None:
    """A terminal is read to EOF (no size to check first): past the cap it is None."""
    import generate_gateway_image as g

    for extra, expected in ((0, b"x" * 100), (1, None)):
        r, w = os.pipe()
        os.write(w, b"x" * (100 + extra))
        os.close(w)
        try:
            assert g._read_to_eof(r, 100) == expected
        finally:
            os.close(r)


@pytest.mark.skipif(os.name != "posix", reason="read_pipe selects on POSIX only")
def test_a_pipe_emptied_by_another_reader_is_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """select() said readable, but another reader of the same FIFO took the bytes (EAGAIN):
    the reader waits on instead of failing."""
    import generate_gateway_image as g

    real_read = os.read
    raced: list[int] = []

    def read(fd: int, n: int) -> bytes:
        if not raced:
            raced.append(fd)
            raise BlockingIOError(11, "Resource temporarily unavailable")
        return real_read(fd, n)

    r, w = os.pipe()
    os.write(w, b"a prompt")
    os.close(w)
    monkeypatch.setattr(g.os, "read", read)
    try:
        assert g.read_pipe(r, 1000, 5.0) == b"a prompt"
    finally:
        monkeypatch.undo()
        os.close(r)
    assert raced == [r]


def test_an_unknown_file_kind_is_named_generically() -> None:
    import stat

    import generate_gateway_image as g

    assert g.file_kind(stat.S_IFDIR) == "a directory"
    assert g.file_kind(0) == "not a regular file"  # no type bits: none of the known kinds


@pytest.mark.parametrize("content", ["[1]", "{}", '{"path": ""}', '"fox.png"'])
def test_a_json_file_that_is_not_a_sidecar_is_refused(
    content: str, gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "fox.png").write_bytes(IMAGE)
    other = tmp_path / "settings.json"
    other.write_text(content, encoding="utf-8")
    proc = run_cli(
        ["--edit-from", str(other), "--prompt", "x", "--out", str(tmp_path / "o.png")], env
    )
    assert_refused(proc, gateway, f"error: --edit-from {other}: not a sidecar written by --sidecar")


def test_a_sidecar_whose_stored_image_is_gone(
    gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> None:
    """The sidecar names a stored response, but its image was deleted: no checksum to compare,
    and the edit stops at the missing file (nothing sent, no traceback)."""
    sidecar = tmp_path / "fox.png.json"
    record = {"path": "fox.png", "stored": True, "response_id": "resp_1", "sha256": "0" * 64}
    sidecar.write_text(json.dumps(record), encoding="utf-8")
    proc = run_cli(
        ["--edit-from", str(sidecar), "--prompt", "x", "--out", str(tmp_path / "o.png")], env
    )
    assert_refused(proc, gateway, f"--edit-from {tmp_path / 'fox.png'}: no such file")


# --- image headers read without a decoder ------------------------------------------------------


def test_image_header_readers_on_unusual_files() -> None:
    """A PNG whose first chunk is not IHDR has no size to read; a JPEG may put fill and
    restart markers (no length of their own) before its frame header; a kind the completeness
    check does not know is never called complete."""
    import io

    import generate_gateway_image as g
    from tests.images import jpeg_bytes

    png = png_bytes(40, 24)
    assert g.image_dimensions(io.BytesIO(png), "png") == (40, 24)
    no_ihdr = png[:12] + b"tEXt" + png[16:]
    assert g.image_dimensions(io.BytesIO(no_ihdr), "png") is None
    jpeg = jpeg_bytes(32, 24)
    padded = jpeg[:2] + b"\xff\xd0\xff\x01\xff\xff\xd7" + jpeg[2:]
    assert g.image_dimensions(io.BytesIO(padded), "jpeg") == (32, 24)
    assert g.image_is_complete(io.BytesIO(png), "png", len(png)) is True
    assert g.image_is_complete(io.BytesIO(png), "bmp", len(png)) is False
