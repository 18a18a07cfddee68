"""The MCP server acts only inside its workspace: every path a call names is resolved (symlinks
followed, '..' collapsed, '~' never expanded) and must lie inside --out-dir, an --allow-dir
folder or one of the client's roots; anything else is an error result (exit 2) with nothing
sent or written. Driven by the official MCP SDK client, as a prompt-injected model would."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")  # Python >= 3.10

import anyio  # noqa: E402
from mcp import Client, types  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402

from tests.conftest import SCRIPT  # noqa: E402
from tests.gateway import Gateway, image_events, sse_reply  # noqa: E402
from tests.images import b64, png_bytes  # noqa: E402

IMAGE = png_bytes(40, 30)


@asynccontextmanager
async def mcp_server(
    env: dict[str, str], out_dir: Path, errlog: Path, *extra: str, roots: list[Path] | None = None
) -> AsyncIterator[Client]:
    import sys

    params = StdioServerParameters(
        command=sys.executable,
        args=[str(SCRIPT), "--mcp", "--out-dir", str(out_dir), *extra],
        env=env,
        cwd=str(out_dir),
    )
    kw: dict[str, Any] = {}
    if roots is not None:

        async def list_roots(context: Any) -> types.ListRootsResult:
            return types.ListRootsResult(roots=[types.Root(uri=r.as_uri()) for r in roots])

        kw["list_roots_callback"] = list_roots
    with open(errlog, "w", encoding="utf-8") as err:
        async with Client(stdio_client(params, errlog=err), mode="legacy", **kw) as client:  # type: ignore[arg-type]
            yield client


def texts(result: Any) -> str:
    return "\n".join(c.text for c in result.content if c.type == "text")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    folder = tmp_path / "home"
    (folder / ".ssh").mkdir(parents=True)
    (folder / ".bashrc").write_text("# mine\n")
    return folder


@pytest.fixture
def work(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


def calls(
    env: dict[str, str], work: Path, tmp_path: Path, *arguments: dict[str, Any], **kw: Any
) -> list[Any]:
    async def main() -> list[Any]:
        async with mcp_server(
            env, work, tmp_path / "err.txt", *kw.get("extra", ()), roots=kw.get("roots")
        ) as client:
            return [await client.call_tool("generate_image", a) for a in arguments]

    return anyio.run(main)  # type: ignore[no-any-return]


def assert_confined(result: Any, work: Path) -> None:
    assert result.is_error, texts(result)
    data = result.structured_content
    assert data["exit_code"] == 2, data
    assert "outside the folders this server may use" in data["error"]
    assert str(work) in data["error"] and "--allow-dir" in data["hint"]


def test_out_outside_the_workspace_is_refused(
    gateway: Gateway, env: dict[str, str], work: Path, home: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (work / "link").symlink_to(outside)
    env = dict(env, HOME=str(home))
    results = calls(
        env,
        work,
        tmp_path,
        {"prompt": "x", "out": str(home / ".bashrc"), "force": True},
        {"prompt": "x", "out": str(home / ".ssh" / "authorized_keys")},
        {"prompt": "x", "out": "../escape.png"},
        {"prompt": "x", "out": "link/deep/x.png"},
        {"prompt": "x", "out": "link/../../escape2.png"},
    )
    for result in results:
        assert_confined(result, work)
    assert gateway.requests == []
    assert (home / ".bashrc").read_text() == "# mine\n"
    assert not (home / ".ssh" / "authorized_keys").exists()
    assert not (tmp_path / "escape.png").exists() and not (tmp_path / "escape2.png").exists()
    assert list(outside.iterdir()) == []


def test_tilde_is_a_name_not_home(
    gateway: Gateway, env: dict[str, str], work: Path, home: Path, tmp_path: Path
) -> None:
    gateway.enqueue(sse_reply(image_events(b64(IMAGE))))
    (result,) = calls(dict(env, HOME=str(home)), work, tmp_path, {"prompt": "x", "out": "~/x.png"})
    assert not result.is_error, texts(result)
    assert (work / "~" / "x.png").read_bytes() == IMAGE
    assert not (home / "x.png").exists()


def test_inputs_outside_the_workspace_are_never_sent(
    gateway: Gateway, env: dict[str, str], work: Path, home: Path, tmp_path: Path
) -> None:
    photo = home / "private-photo.png"
    photo.write_bytes(IMAGE)
    (work / "photo-link.png").symlink_to(photo)
    (work / "ok.png").write_bytes(IMAGE)
    results = calls(
        env,
        work,
        tmp_path,
        {"prompt": "x", "images": [str(photo)]},
        {"prompt": "x", "images": ["photo-link.png"]},
        {"prompt": "x", "images": ["ok.png"], "mask": str(photo)},
        {"prompt": "x", "images": ["/dev/stdin"]},
        {"prompt": "x", "images": ["../home/private-photo.png"]},
    )
    for result in results:
        assert_confined(result, work)
    assert gateway.requests == []


@pytest.mark.filterwarnings("ignore:ping is removed")  # a legacy-era client: it has ping
def test_a_fifo_inside_the_workspace_is_refused_at_once_and_the_server_stays_up(
    gateway: Gateway, env: dict[str, str], work: Path, tmp_path: Path
) -> None:
    os.mkfifo(work / "pipe.png")

    async def main() -> tuple[list[Any], float]:
        async with mcp_server(env, work, tmp_path / "err.txt") as client:
            started = time.monotonic()
            results = []
            for _ in range(5):  # more than --concurrency (4): a held slot would wedge the server
                results.append(
                    await client.call_tool(
                        "generate_image", {"prompt": "x", "images": ["pipe.png"]}
                    )
                )
            for _ in range(5):
                await client.send_ping()
            return results, time.monotonic() - started

    results, elapsed = anyio.run(main)
    for result in results:
        assert result.is_error and result.structured_content["exit_code"] == 2
        assert "FIFO" in result.structured_content["error"]
    assert elapsed < 30
    assert gateway.requests == []


def test_allow_dir_widens_the_workspace(
    gateway: Gateway, env: dict[str, str], work: Path, tmp_path: Path
) -> None:
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "ref.png").write_bytes(IMAGE)
    gateway.enqueue(sse_reply(image_events(b64(IMAGE))))
    (result,) = calls(
        env,
        work,
        tmp_path,
        {"prompt": "x", "images": [str(assets / "ref.png")], "out": str(assets / "new.png")},
        extra=("--allow-dir", str(assets)),
    )
    assert not result.is_error, texts(result)
    assert (assets / "new.png").read_bytes() == IMAGE
    assert len(gateway.posts()) == 1


def test_client_roots_widen_the_workspace(
    gateway: Gateway, env: dict[str, str], work: Path, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    gateway.enqueue(sse_reply(image_events(b64(IMAGE))))
    allowed, refused = calls(
        env,
        work,
        tmp_path,
        {"prompt": "x", "out": str(project / "hero.png")},
        {"prompt": "x", "out": str(tmp_path / "elsewhere.png")},
        roots=[project],
    )
    assert not allowed.is_error, texts(allowed)
    assert (project / "hero.png").read_bytes() == IMAGE
    assert_confined(refused, work)
    assert str(project) in refused.structured_content["error"]
    assert not (tmp_path / "elsewhere.png").exists()


def test_roots_are_not_taken_from_a_client_that_has_none(
    gateway: Gateway, env: dict[str, str], work: Path, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (result,) = calls(env, work, tmp_path, {"prompt": "x", "out": str(project / "hero.png")})
    assert_confined(result, work)


def test_annotations_say_a_call_may_replace_a_file(
    env: dict[str, str], work: Path, tmp_path: Path
) -> None:
    async def main() -> Any:
        async with mcp_server(env, work, tmp_path / "err.txt") as client:
            return await client.list_tools()

    tools = {t.name: t for t in anyio.run(main).tools}
    generate = tools["generate_image"]
    assert generate.annotations is not None and generate.annotations.destructive_hint is True
    assert str(work) in (generate.description or "")


def test_allow_dir_must_be_a_folder_and_needs_mcp(env: dict[str, str], tmp_path: Path) -> None:
    from tests.conftest import run_cli

    proc = run_cli(["--mcp", "--allow-dir", str(tmp_path / "nope")], env)
    assert proc.returncode == 2 and "--allow-dir" in proc.stderr
    proc = run_cli(["--prompt", "x", "--allow-dir", str(tmp_path), "--dry-run"], env)
    assert proc.returncode == 2 and "--allow-dir applies to --mcp only" in proc.stderr


def test_a_client_that_never_answers_roots_list_delays_one_call_only(
    gateway: Gateway, env: dict[str, str], work: Path, tmp_path: Path
) -> None:
    """The first call waits MCP_ROOTS_WAIT (5 s) for roots/list; later calls do not wait."""
    import sys

    gateway.set_default(sse_reply(image_events(b64(IMAGE))))

    async def never(context: Any) -> types.ListRootsResult:
        await anyio.sleep(3600)
        raise AssertionError("unreachable")

    params = StdioServerParameters(
        command=sys.executable,
        args=[str(SCRIPT), "--mcp", "--out-dir", str(work)],
        env=env,
        cwd=str(work),
    )

    async def main() -> list[float]:
        took = []
        with open(tmp_path / "err.txt", "w", encoding="utf-8") as err:
            client = Client(
                stdio_client(params, errlog=err), mode="legacy", list_roots_callback=never
            )  # type: ignore[arg-type]
            async with client:
                for name in ("a.png", "b.png", "c.png"):
                    started = time.monotonic()
                    result = await client.call_tool("generate_image", {"prompt": "x", "out": name})
                    assert not result.is_error, texts(result)
                    took.append(time.monotonic() - started)
        return took

    first, second, third = anyio.run(main)
    assert first >= 4.5, first
    assert second < 4 and third < 4, (second, third)
