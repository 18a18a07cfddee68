"""A local disk fault is a local error: a full output folder or temporary folder while the image
arrives or is saved is exit 7, never a network error, never retried (one POST), and an image
that arrived in full is kept wherever a folder still takes it. The full disks are real: small
tmpfs mounts in a private mount namespace (unshare -m, as root in CI), else RLIMIT_FSIZE."""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import SCRIPT, report
from tests.gateway import Gateway, image_events, sse_reply
from tests.images import b64, png_bytes

BIG = png_bytes(512, 512, noise=True)  # about 790 KB, 1 MB of base64: more than a small disk


def can_mount() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
        capture_output=True,
        timeout=10,
    )
    return probe.returncode == 0


MOUNTS = can_mount()


def run_on_small_disks(
    args: list[str], env: dict[str, str], small: list[Path]
) -> subprocess.CompletedProcess[str]:
    """Each folder in `small` becomes a 256 KB tmpfs for the script alone."""
    mounts = " && ".join(f'mount -t tmpfs -o size=256k tmpfs "{p}"' for p in small)
    return in_mount_namespace(f'{mounts} && exec "$0" "$@"', args, env)


def in_mount_namespace(
    command: str, args: list[str], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """The shell `command` in a mount namespace of its own, "$0" "$@" being the script run."""
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", command, sys.executable, str(SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def save_big(
    gateway: Gateway, env: dict[str, str], folders: tuple[Path, Path], small: list[Path]
) -> subprocess.CompletedProcess[str]:
    """A streamed BIG image saved to out/a.png, with TMPDIR=tmp and `small` as tiny disks."""
    out, tmp = folders
    gateway.enqueue(sse_reply(image_events(b64(BIG))))
    args = ["--prompt", "x", "--out", str(out / "a.png")]
    return run_on_small_disks(args, dict(env, TMPDIR=str(tmp)), small)


def assert_local_fault(proc: subprocess.CompletedProcess[str], gateway: Gateway) -> None:
    assert proc.returncode == 7, report(proc, gateway)
    assert "connection" not in proc.stderr and "retrying may help" not in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(gateway.posts()) == 1, "a local disk fault is never paid for twice"


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    out.mkdir()
    tmp.mkdir()
    return out, tmp


needs_mounts = pytest.mark.skipif(not MOUNTS, reason="no private mounts here: see the RLIMIT test")


@needs_mounts
def test_full_temp_folder_is_not_needed(
    gateway: Gateway, env: dict[str, str], folders: tuple[Path, Path]
) -> None:
    out, tmp = folders
    proc = save_big(gateway, env, folders, [tmp])
    assert proc.returncode == 0, report(proc, gateway)
    assert (out / "a.png").read_bytes() == BIG
    assert [p.name for p in out.iterdir()] == ["a.png"]


@needs_mounts
def test_full_output_folder_keeps_the_image_in_the_temp_folder(
    gateway: Gateway, env: dict[str, str], folders: tuple[Path, Path]
) -> None:
    out, tmp = folders
    proc = save_big(gateway, env, folders, [out])
    assert_local_fault(proc, gateway)
    (rescued,) = tmp.glob("codex-imagegen-rescue-*.png")
    assert rescued.read_bytes() == BIG
    assert str(rescued) in proc.stderr
    assert rescued.stat().st_mode & 0o077 == 0, "private to the user"


@needs_mounts
def test_both_folders_full_is_exit_7_and_says_the_image_is_lost(
    gateway: Gateway, env: dict[str, str], folders: tuple[Path, Path]
) -> None:
    out, tmp = folders
    proc = save_big(gateway, env, folders, [out, tmp])
    assert_local_fault(proc, gateway)
    assert "no folder could hold it" in proc.stderr and "it is lost" in proc.stderr
    assert "No space left on device" in proc.stderr


def test_file_size_limit_is_a_local_fault(
    gateway: Gateway, env: dict[str, str], folders: tuple[Path, Path]
) -> None:
    """RLIMIT_FSIZE (EFBIG on every write past it) works without privileges: every folder
    refuses the image, the run says so, and it is not a network error."""
    out, tmp = folders
    gateway.enqueue(sse_reply(image_events(b64(BIG))))

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--prompt", "x", "--out", str(out / "a.png")],
        env=dict(env, TMPDIR=str(tmp)),
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit,
    )
    assert_local_fault(proc, gateway)
    assert "File too large" in proc.stderr and "it is lost" in proc.stderr
    assert list(out.iterdir()) == []


def run_on_disks(
    args: list[str], env: dict[str, str], sizes: dict[Path, str]
) -> subprocess.CompletedProcess[str]:
    """Each folder becomes a tmpfs of its own size (e.g. "900k") for the script alone; what the
    run left in it is copied to FOLDER.seen (the mount ends with the run)."""
    mounts = " && ".join(f'mount -t tmpfs -o size={size} tmpfs "{p}"' for p, size in sizes.items())
    copies = "; ".join(f'mkdir "{p}.seen" && cp -a "{p}/." "{p}.seen/"' for p in sizes)
    return in_mount_namespace(f'{mounts} && {{ "$0" "$@"; rc=$?; {copies}; exit $rc; }}', args, env)


@needs_mounts
def test_base64_that_no_folder_can_spool_goes_to_memory_and_the_image_is_saved(
    gateway: Gateway, env: dict[str, str], folders: tuple[Path, Path]
) -> None:
    # the 1 MB of base64 is spooled beside --out until that folder is full, then carried to the
    # temp folder, which is fuller still (the copy itself fails), then to memory; once the
    # spool is gone the 790 KB image fits beside --out
    out, tmp = folders
    gateway.enqueue(sse_reply(image_events(b64(BIG))))
    args = ["--prompt", "x", "--out", str(out / "a.png")]
    proc = run_on_disks(args, dict(env, TMPDIR=str(tmp)), {out: "900k", tmp: "64k"})
    assert proc.returncode == 0, report(proc, gateway)
    seen_out, seen_tmp = Path(f"{out}.seen"), Path(f"{tmp}.seen")
    assert (seen_out / "a.png").read_bytes() == BIG
    assert [p.name for p in seen_out.iterdir()] == ["a.png"] and list(seen_tmp.iterdir()) == []
    assert len(gateway.posts()) == 1


# --- the spool's own guards, in-process -----------------------------------------------------------


def test_a_spool_folder_that_takes_no_file_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    import generate_gateway_image as g

    missing = tmp_path / "gone"  # removed while the job ran, say
    monkeypatch.setattr(g.SPOOL, "folders", [str(missing), str(tmp_path)], raising=False)
    blob = g.Blob()
    try:
        assert blob.folders == [None]  # the missing one and the one that took it are used up
        assert not isinstance(blob.file, io.BytesIO)
        blob.write(b"QUJD" * 1000)
        assert b"".join(blob.pieces()) == b"QUJD" * 1000
    finally:
        blob.close()
    assert not missing.exists()


def test_a_spool_write_error_that_is_not_a_full_disk_is_raised(tmp_path: Path) -> None:
    import generate_gateway_image as g

    blob = g.Blob()
    blob.folders = [str(tmp_path)]  # a folder it could move to: it must not
    blob.file.close()
    path = tmp_path / "read-only"
    path.write_bytes(b"")
    blob.file = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by blob.close()
    try:
        with pytest.raises(OSError) as info:
            blob.write(b"QUJD")  # not a disk fault: no other folder would help
        assert info.value.errno not in g.DISK_FAULTS
        assert blob.folders == [str(tmp_path)]  # nothing was moved
    finally:
        blob.close()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="/dev/full is Linux's full disk")
def test_a_full_spool_that_cannot_be_read_back_is_an_error_not_lost_data(tmp_path: Path) -> None:
    import generate_gateway_image as g

    blob = g.Blob()
    blob.file.close()
    full = open("/dev/full", "wb", buffering=0)  # noqa: SIM115 - every write: ENOSPC
    blob.file = full
    blob.folders = [str(tmp_path)]
    raised: list[BaseException] = []

    def write() -> None:
        try:
            blob.write(b"QUJD")  # full: carried to tmp_path, but it cannot be read back
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            raised.append(exc)

    try:  # in a thread: a regression here loops for ever (each next folder fails the same)
        worker = threading.Thread(target=write, daemon=True)
        worker.start()
        worker.join(10)
        assert not worker.is_alive(), "the copy error was taken for a full disk, again and again"
        (exc,) = raised
        assert isinstance(exc, OSError) and exc.errno not in g.DISK_FAULTS
    finally:
        full.close()
        blob.close()
