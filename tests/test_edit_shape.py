"""An edit without --size keeps its reference's shape (the nearest size the
image model accepts, or auto), --dry-run shows the choice, and a saved image whose shape differs
clearly from the reference's gets a warning."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests import images
from tests.conftest import run_cli
from tests.gateway import Gateway, image_events, sse_reply


def reference(tmp_path: Path, w: int, h: int) -> Path:
    path = tmp_path / f"ref-{w}x{h}.jpg"
    path.write_bytes(images.jpeg_bytes(w, h))
    return path


def sent_tool(gateway: Gateway) -> Any:
    posts = gateway.posts()
    assert len(posts) == 1, gateway.dump()
    return json.loads(posts[0].body.decode("utf-8"))["tools"][0]


def edit(
    tmp_path: Path,
    gateway: Gateway,
    env: dict[str, str],
    ref: Path,
    *extra: str,
    result: bytes | None = None,
) -> Any:
    gateway.set_default(sse_reply(image_events(images.b64(result or images.png_bytes(48, 32)))))
    out = tmp_path / "out.png"
    return run_cli(
        ["--prompt", "make it night", "--image", str(ref), "--out", str(out), *extra], env
    )


@pytest.mark.parametrize(
    "w, h, sent",
    [
        (1536, 1024, "1536x1024"),
        (1024, 1536, "1024x1536"),
        (1920, 1080, "1536x1024"),  # 16:9: the nearest accepted landscape size
        (600, 1200, "1024x1536"),
        (800, 800, "1024x1024"),
        (1220, 1000, "auto"),  # between square and 3:2: let the model choose
    ],
)
def test_edit_without_size_follows_the_reference(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], w: int, h: int, sent: str
) -> None:
    proc = edit(tmp_path, gateway, env, reference(tmp_path, w, h))
    assert proc.returncode == 0, proc.stderr
    assert sent_tool(gateway)["size"] == sent
    assert f"size {sent} follows the shape of" in proc.stderr


def test_gpt_image_2_gets_the_reference_ratio(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    proc = edit(
        tmp_path, gateway, env, reference(tmp_path, 3840, 2160), "--image-model", "gpt-image-2"
    )
    assert proc.returncode == 0, proc.stderr
    w, h = (int(x) for x in sent_tool(gateway)["size"].split("x"))
    assert w % 16 == 0 and h % 16 == 0
    assert abs(w / h - 16 / 9) < 0.02, (w, h)
    assert 655_360 <= w * h <= 1536 * 1024  # not the 8.3 MP of the photo: the cost stays


def test_explicit_size_wins(tmp_path: Path, gateway: Gateway, env: dict[str, str]) -> None:
    ref = reference(tmp_path, 1536, 1024)
    proc = edit(tmp_path, gateway, env, ref, "--size", "1024x1024", result=images.png_bytes(32, 32))
    assert proc.returncode == 0, proc.stderr
    assert sent_tool(gateway)["size"] == "1024x1024"
    assert "follows the shape" not in proc.stderr
    assert "changed the picture's shape" not in proc.stderr  # the user asked for a square


def test_generation_keeps_the_default(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(sse_reply(image_events(images.b64(images.png_bytes(32, 32)))))
    proc = run_cli(["--prompt", "a fox", "--out", str(tmp_path / "o.png")], env)
    assert proc.returncode == 0, proc.stderr
    assert sent_tool(gateway)["size"] == "1024x1024"


def test_dry_run_shows_the_choice(tmp_path: Path, gateway: Gateway, env: dict[str, str]) -> None:
    ref = reference(tmp_path, 1024, 1536)
    proc = run_cli(
        ["--prompt", "p", "--image", str(ref), "--out", str(tmp_path / "o.png"), "--dry-run"], env
    )
    assert proc.returncode == 0, proc.stderr
    assert "# size 1024x1536 follows the shape of" in proc.stdout
    assert '"size": "1024x1536"' in proc.stdout
    assert gateway.requests == []


def test_a_changed_shape_is_warned_about(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    ref = reference(tmp_path, 1220, 1000)  # auto is sent; the model answers with a tall image
    proc = edit(tmp_path, gateway, env, ref, result=images.png_bytes(32, 48))
    assert proc.returncode == 0, proc.stderr
    assert sent_tool(gateway)["size"] == "auto"
    assert "changed the picture's shape" in proc.stderr
    assert "32x48" in proc.stderr and "1220x1000" in proc.stderr


def test_a_kept_shape_is_not_warned_about(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    ref = reference(tmp_path, 1220, 1000)
    proc = edit(tmp_path, gateway, env, ref, result=images.png_bytes(61, 50))
    assert proc.returncode == 0, proc.stderr
    assert "changed the picture's shape" not in proc.stderr


def test_mcp_edit_without_size_follows_the_reference(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    pytest.importorskip("mcp")
    import sys

    import anyio
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters, stdio_client

    from tests.conftest import SCRIPT

    gateway.set_default(sse_reply(image_events(images.b64(images.png_bytes(48, 32)))))
    work = tmp_path / "work"
    work.mkdir()
    reference(work, 1024, 1536)
    params = StdioServerParameters(
        command=sys.executable, args=[str(SCRIPT), "--mcp", "--out-dir", str(work)], env=env
    )

    async def main() -> Any:
        with open(tmp_path / "err.txt", "w", encoding="utf-8") as errlog:
            async with Client(stdio_client(params, errlog=errlog), mode="legacy") as client:  # type: ignore[arg-type]
                return await client.call_tool(
                    "generate_image",
                    {"prompt": "make it night", "images": ["ref-1024x1536.jpg"], "out": "n.png"},
                )

    result = anyio.run(main)
    assert not result.is_error, result.content
    assert sent_tool(gateway)["size"] == "1024x1536"
    assert result.structured_content["requested_size"] == "1024x1536"
