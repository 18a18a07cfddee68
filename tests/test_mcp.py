"""The MCP server (--mcp) driven by the official MCP Python SDK client over stdio, in both
protocol eras: the initialize handshake ("legacy"), "auto" (server/discover, then fallback) and
pinned to 2026-07-28. The server is the real script in a subprocess; the gateway is loopback."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")  # Python >= 3.10; the 3.9 run in CI has only the framing tests

import anyio  # noqa: E402
from mcp import Client  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402

from tests.conftest import SCRIPT, TEST_KEY, clean_env, leftovers  # noqa: E402
from tests.gateway import (  # noqa: E402
    Gateway,
    error_reply,
    image_events,
    sse_reply,
)
from tests.images import b64, png_bytes  # noqa: E402

MODES = ["legacy", "auto", "2026-07-28"]
IMAGE = png_bytes(64, 48)
HEARTBEAT_WRAPPER = (
    "import sys; sys.path.insert(0, {folder!r}); import generate_gateway_image as g; "
    "g.MCP_HEARTBEAT = {seconds!r}; sys.exit(g.main(sys.argv[1:]))"
)


@asynccontextmanager
async def server(
    mode: str,
    env: dict[str, str],
    out_dir: Path,
    stderr: Path,
    *extra: str,
    heartbeat: float | None = None,
) -> AsyncIterator[Client]:
    import sys

    argv = [str(SCRIPT), "--mcp", "--out-dir", str(out_dir), *extra]
    if heartbeat is not None:  # the same server with a shorter MCP_HEARTBEAT, for a quick test
        argv[:1] = ["-c", HEARTBEAT_WRAPPER.format(folder=str(SCRIPT.parent), seconds=heartbeat)]
    params = StdioServerParameters(
        command=sys.executable,
        args=argv,
        env=env,
        cwd=str(out_dir.parent),
    )
    with open(stderr, "w", encoding="utf-8") as errlog:
        async with Client(stdio_client(params, errlog=errlog), mode=mode) as client:  # type: ignore[arg-type]
            yield client


def run(coro: Any) -> Any:
    return anyio.run(coro)


def texts(result: Any) -> str:
    return "\n".join(c.text for c in result.content if c.type == "text")


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


@pytest.mark.parametrize("mode", MODES)
def test_list_tools_and_generate(
    mode: str, gateway: Gateway, env: dict[str, str], out_dir: Path, tmp_path: Path
) -> None:
    gateway.enqueue(sse_reply(image_events(b64(IMAGE))))
    errlog = tmp_path / "stderr.txt"

    async def main() -> Any:
        async with server(mode, env, out_dir, errlog) as client:
            tools = await client.list_tools()
            result = await client.call_tool("generate_image", {"prompt": "A red fox in snow"})
            return client.protocol_version, tools, result

    version, tools, result = run(main)
    assert version == ("2025-11-25" if mode == "legacy" else "2026-07-28")
    by_name = {t.name: t for t in tools.tools}
    assert set(by_name) == {"generate_image", "check_gateway"}
    generate = by_name["generate_image"]
    assert generate.input_schema["required"] == ["prompt"]
    assert "billed" in (generate.description or "")
    assert "image_gen" in (generate.description or "")
    assert generate.output_schema is not None
    assert not result.is_error, texts(result)
    saved = out_dir / "a-red-fox-in-snow.png"
    assert saved.read_bytes() == IMAGE
    assert f"saved {saved}" in texts(result)
    data = result.structured_content
    assert data["ok"] is True and data["path"] == str(saved) and data["bytes"] == len(IMAGE)
    assert data["images"][0]["path"] == str(saved)
    links = [c for c in result.content if c.type == "resource_link"]
    assert [str(link.uri) for link in links] == [saved.as_uri()]
    (preview,) = [c for c in result.content if c.type == "image"]  # small: the image itself
    assert base64.b64decode(preview.data) == IMAGE and preview.mime_type == "image/png"
    assert IMAGE_B64_NOT_IN(result)
    assert TEST_KEY not in errlog.read_text() + json.dumps(data)
    (req,) = gateway.posts()
    assert req.json["input"][0]["content"][0]["text"] == "A red fox in snow"


def IMAGE_B64_NOT_IN(result: Any) -> bool:
    """No base64 in text or structured content: only the image block carries it."""
    blob = b64(IMAGE)
    return blob not in texts(result) and blob not in json.dumps(result.structured_content)


def test_without_out_never_overwrites(
    gateway: Gateway, env: dict[str, str], out_dir: Path, tmp_path: Path
) -> None:
    (out_dir / "fox.png").write_bytes(b"mine")
    gateway.enqueue(sse_reply(image_events(b64(IMAGE))), sse_reply(image_events(b64(IMAGE))))

    async def main() -> Any:
        async with server("legacy", env, out_dir, tmp_path / "err.txt") as client:
            first = await client.call_tool("generate_image", {"prompt": "fox"})
            second = await client.call_tool("generate_image", {"prompt": "fox", "out": "fox.png"})
            return first, second

    first, second = run(main)
    assert (out_dir / "fox.png").read_bytes() == b"mine"
    assert first.structured_content["path"] == str(out_dir / "fox-2.png")
    assert second.is_error and second.structured_content["exit_code"] == 7
    assert "force: true" in texts(second)
    assert len(gateway.posts()) == 1  # the refused one sent nothing


@pytest.mark.parametrize("mode", MODES)
def test_progress_during_a_slow_render(
    mode: str, gateway: Gateway, env: dict[str, str], out_dir: Path, tmp_path: Path
) -> None:
    events = image_events(b64(IMAGE))
    at = next(i for i, e in enumerate(events) if e["type"].endswith(".generating")) + 1
    # 4 s of "generating" with nothing but no-op events: only a heartbeat reports it (every
    # 1.5 s here instead of MCP_HEARTBEAT's 5 s, so that the test takes seconds, not 11 s)
    heartbeat = 1.5
    events[at:at] = [{"type": "keepalive"}] * 16
    gateway.enqueue(sse_reply(events, delay=0.25))
    seen: list[tuple[float, float, str]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((time.monotonic(), progress, message or ""))

    async def main() -> Any:
        async with server(mode, env, out_dir, tmp_path / "err.txt", heartbeat=heartbeat) as client:
            return await client.call_tool(
                "generate_image",
                {"prompt": "slow", "out": "slow.png"},
                progress_callback=on_progress,
            )

    result = run(main)
    assert not result.is_error, texts(result)
    values = [p for _, p, _ in seen]
    assert values == sorted(set(values)), "progress must increase"
    generating = [t for t, _, m in seen if m.startswith("generating")]
    assert len(generating) >= 2, seen  # the phase change, then at least one heartbeat
    gaps = [b[0] - a[0] for a, b in zip(seen, seen[1:])]
    assert max(gaps) < 2 * heartbeat + 1, seen  # the heartbeat, plus the 1 s tick
    assert any(m.startswith("finalising") for _, _, m in seen), seen


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_bad_arguments_are_an_error_result_and_send_nothing(
    mode: str, gateway: Gateway, env: dict[str, str], out_dir: Path, tmp_path: Path
) -> None:
    async def main() -> list[Any]:
        async with server(mode, env, out_dir, tmp_path / "err.txt") as client:
            await client.list_tools()
            return [
                await client.call_tool("generate_image", arguments)
                for arguments in (
                    {"prompt": "x", "size": "100x100", "image_model": "gpt-image-2"},
                    {"prompt": "x", "quality": "ultra"},
                    {"prompt": "x", "images": ["missing.png"]},
                    {"prompt": "x", "n": 11},
                    {"prompt": ""},
                )
            ]

    results = run(main)
    for result in results:
        assert result.is_error, texts(result)
        assert "exit code 2" in texts(result)
        assert result.structured_content["exit_code"] == 2
    assert "missing.png" in texts(results[2])
    assert gateway.requests == []


def test_gateway_error_is_an_error_result(
    gateway: Gateway, env: dict[str, str], out_dir: Path, tmp_path: Path
) -> None:
    gateway.enqueue(error_reply(400, "Invalid value for 'model': no such model", param="model"))

    async def main() -> Any:
        async with server("auto", env, out_dir, tmp_path / "err.txt") as client:
            return await client.call_tool("generate_image", {"prompt": "x", "out": "x.png"})

    result = run(main)
    assert result.is_error
    assert "no such model" in texts(result) and "exit code 4" in texts(result)
    assert result.structured_content["exit_code"] == 4
    assert not (out_dir / "x.png").exists() and leftovers(out_dir) == []


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_two_calls_at_once(
    mode: str, gateway: Gateway, env: dict[str, str], out_dir: Path, tmp_path: Path
) -> None:
    for _ in range(2):
        gateway.enqueue(sse_reply(image_events(b64(IMAGE)), delay=0.3))
    results: dict[str, Any] = {}

    async def main() -> None:
        async with server(mode, env, out_dir, tmp_path / "err.txt") as client:

            async def call(name: str) -> None:
                results[name] = await client.call_tool(
                    "generate_image", {"prompt": name, "out": f"{name}.png"}
                )

            async with anyio.create_task_group() as tg:
                tg.start_soon(call, "one")
                tg.start_soon(call, "two")

    run(main)
    assert {k: v.is_error for k, v in results.items()} == {"one": False, "two": False}
    assert (out_dir / "one.png").read_bytes() == IMAGE == (out_dir / "two.png").read_bytes()
    first, second = gateway.posts()
    # each reply takes about 2 s (7 events, 0.3 s apart): one after the other would be 2 s apart
    assert abs(second.t_start - first.t_start) < 1.5, "the two requests must overlap in time"


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_cancellation_stops_the_request(
    mode: str, gateway: Gateway, env: dict[str, str], out_dir: Path, tmp_path: Path
) -> None:
    gateway.enqueue(sse_reply(image_events(b64(IMAGE)), stall_after=5))  # hangs mid-render
    gateway.enqueue(sse_reply(image_events(b64(IMAGE))))
    errlog = tmp_path / "err.txt"

    async def main() -> tuple[float, Any]:
        async with server(mode, env, out_dir, errlog) as client:
            with anyio.move_on_after(20):
                async with anyio.create_task_group() as tg:

                    async def call() -> None:
                        await client.call_tool(
                            "generate_image", {"prompt": "stall", "out": "stall.png"}
                        )

                    tg.start_soon(call)
                    await anyio.to_thread.run_sync(gateway.wait_for_requests, 1)
                    await anyio.sleep(0.5)
                    tg.cancel_scope.cancel()  # the SDK sends notifications/cancelled
            cancelled_at = time.monotonic()
            for _ in range(50):  # the server says so once the blocked read has returned
                if "cancelled: no answer" in errlog.read_text():
                    break
                await anyio.sleep(0.1)
            waited = time.monotonic() - cancelled_at
            after = await client.call_tool("generate_image", {"prompt": "next", "out": "n.png"})
            return waited, after

    waited, after = run(main)
    log = errlog.read_text()
    assert "cancelled by the client" in log and "cancelled: no answer" in log, log
    assert waited < 4, log  # not the 300 s idle timeout: the connection was shut down
    assert not (out_dir / "stall.png").exists() and leftovers(out_dir) == []
    assert not after.is_error, texts(after)  # the server goes on serving
    assert len(gateway.posts()) == 2  # the cancelled call was not retried


def test_check_gateway(
    gateway: Gateway, env: dict[str, str], out_dir: Path, tmp_path: Path
) -> None:
    async def main() -> Any:
        async with server("auto", env, out_dir, tmp_path / "err.txt") as client:
            return await client.call_tool("check_gateway", {})

    result = run(main)
    checks = {c["check"]: c["status"] for c in result.structured_content["checks"]}
    assert checks["config"] == "ok" and checks["tcp"] == "ok", texts(result)
    assert "ok     endpoint" in texts(result)
    assert TEST_KEY not in texts(result) + json.dumps(result.structured_content)
    assert gateway.posts() == []  # no image request without probe


def test_missing_key_says_which_variable_to_forward(
    gateway: Gateway, out_dir: Path, tmp_path: Path
) -> None:
    from tests.conftest import write_codex_home

    home = write_codex_home(
        tmp_path / "home", gateway.base_url, key=None, extra_provider='env_key = "GATEWAY_API_KEY"'
    )
    env = clean_env(CODEX_HOME=str(home))  # as Codex starts MCP servers: no GATEWAY_API_KEY

    async def main() -> Any:
        async with server("legacy", env, out_dir, tmp_path / "err.txt") as client:
            return await client.call_tool("generate_image", {"prompt": "x"})

    result = run(main)
    assert result.is_error and result.structured_content["exit_code"] == 3
    text = texts(result)
    assert "GATEWAY_API_KEY" in text
    assert 'env_vars = ["GATEWAY_API_KEY"]' in text and "claude mcp add" in text
    assert gateway.requests == []
    assert "GATEWAY_API_KEY" in (tmp_path / "err.txt").read_text()  # said at start, too


def test_partial_preview_is_the_image_block(
    gateway: Gateway, env: dict[str, str], out_dir: Path, tmp_path: Path
) -> None:
    partial = png_bytes(16, 16)
    gateway.enqueue(sse_reply(image_events(b64(IMAGE), partials=[b64(partial)])))

    async def main() -> Any:
        async with server("2026-07-28", env, out_dir, tmp_path / "err.txt") as client:
            return await client.call_tool(
                "generate_image", {"prompt": "p", "out": "p.png", "partial_images": 1}
            )

    result = run(main)
    assert not result.is_error, texts(result)
    (preview,) = [c for c in result.content if c.type == "image"]
    assert base64.b64decode(preview.data) == partial
    assert (out_dir / "p.png").read_bytes() == IMAGE


def test_big_image_comes_back_as_a_link_only(
    gateway: Gateway, env: dict[str, str], out_dir: Path, tmp_path: Path
) -> None:
    big = png_bytes(400, 300, noise=True)
    assert len(big) > 256 * 1024
    gateway.enqueue(sse_reply(image_events(b64(big))))

    async def main() -> Any:
        async with server("legacy", env, out_dir, tmp_path / "err.txt") as client:
            return await client.call_tool("generate_image", {"prompt": "big", "out": "big.png"})

    result = run(main)
    assert not result.is_error, texts(result)
    assert [c.type for c in result.content] == ["text", "resource_link"]
    assert (out_dir / "big.png").read_bytes() == big


def test_rescued_image_is_named_in_the_error(
    gateway: Gateway, env: dict[str, str], out_dir: Path, tmp_path: Path
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()

    def reply(_: Any) -> Any:  # someone else writes the file while the image renders
        (out_dir / "taken.png").write_bytes(b"theirs")
        return sse_reply(image_events(b64(IMAGE)))

    gateway.enqueue(reply)

    async def main() -> Any:
        async with server("2026-07-28", dict(env, TMPDIR=str(temp)), out_dir, tmp_path / "e") as c:
            return await c.call_tool("generate_image", {"prompt": "x", "out": "taken.png"})

    result = run(main)
    assert result.is_error
    data = result.structured_content
    rescued = Path(data["rescued_path"])
    assert rescued.parent == temp and rescued.read_bytes() == IMAGE
    assert data["exit_code"] == 7 and data["path"] == str(rescued)
    assert f"the paid image is safe at {rescued}" in texts(result)
    assert (out_dir / "taken.png").read_bytes() == b"theirs"


def test_calls_beyond_concurrency_wait_their_turn(
    gateway: Gateway, env: dict[str, str], out_dir: Path, tmp_path: Path
) -> None:
    for _ in range(2):
        gateway.enqueue(sse_reply(image_events(b64(IMAGE)), delay=0.2))
    messages: list[list[str]] = [[], []]  # each call's own progress messages

    async def main() -> list[Any]:
        found: list[Any] = []
        async with server("legacy", env, out_dir, tmp_path / "e", "--concurrency", "1") as client:

            async def call(mine: list[str]) -> None:
                async def on_progress(done: float, total: float | None, text: str | None) -> None:
                    mine.append(text or "")

                found.append(
                    await client.call_tool(
                        "generate_image", {"prompt": "same"}, progress_callback=on_progress
                    )
                )

            async with anyio.create_task_group() as tg:
                tg.start_soon(call, messages[0])
                tg.start_soon(call, messages[1])
        return found

    results = run(main)
    assert [r.is_error for r in results] == [False, False]
    # the same prompt at once: two names, reserved while the calls run
    assert {r.structured_content["path"] for r in results} == {
        str(out_dir / "same.png"),
        str(out_dir / "same-2.png"),
    }
    first, second = gateway.posts()
    assert second.t_start >= first.t_start + 1.0  # one at a time (a reply takes ~1.4 s)
    # the call that waited says so, then that it is sending once its turn came
    (waited,) = [m for m in messages if any(x.startswith("waiting: 1 calls") for x in m)]
    turn = next(i for i, x in enumerate(waited) if x.startswith("waiting: 1 calls"))
    assert any(x.startswith("sending") for x in waited[turn + 1 :]), waited


def test_start_flags_apply_to_every_call(
    gateway: Gateway, env: dict[str, str], out_dir: Path, tmp_path: Path
) -> None:
    gateway.enqueue(error_reply(500, "upstream broke"))
    gateway.enqueue(sse_reply(image_events(b64(IMAGE))))
    extra = ("--retries", "0", "--header", "X-Team: blue", "--size", "1536x1024")

    async def main() -> list[Any]:
        async with server("auto", env, out_dir, tmp_path / "err.txt", *extra) as client:
            return [
                await client.call_tool("generate_image", {"prompt": "a", "out": "a.png"}),
                await client.call_tool("generate_image", {"prompt": "b", "size": "1024x1024"}),
            ]

    failed, ok = run(main)
    assert failed.is_error and "upstream broke" in texts(failed)  # --retries 0: no retry
    assert not ok.is_error, texts(ok)
    first, second = gateway.posts()
    assert first.header("x-team") == second.header("x-team") == "blue"
    assert first.json["tools"][0]["size"] == "1536x1024"  # the server's default size
    assert second.json["tools"][0]["size"] == "1024x1024"  # the call's own


def test_resume_hint_reaches_the_same_gateway(
    gateway: Gateway, env: dict[str, str], out_dir: Path, tmp_path: Path
) -> None:
    from tests.stored_gateway import StoredGateway

    with StoredGateway() as sg:
        sg.plan(image_events(b64(IMAGE), resp_id="resp_mcp1"), cuts=[3, 0])
        base_url = sg.base_url
        extra = ("--base-url", base_url, "--resumable", "--retries", "0")

        async def main() -> Any:
            async with server("auto", env, out_dir, tmp_path / "err.txt", *extra) as client:
                return await client.call_tool("generate_image", {"prompt": "a", "out": "a.png"})

        failed = run(main)
    assert failed.is_error, texts(failed)
    assert f"--base-url {base_url} --resume resp_mcp1 --out" in texts(failed), texts(failed)
    assert gateway.requests == []  # everything went to --base-url


def test_calls_share_one_retry_policy(
    gateway: Gateway, env: dict[str, str], out_dir: Path, tmp_path: Path
) -> None:
    """A 429 with Retry-After seen by one call holds back the next call's request too."""
    gateway.enqueue(
        error_reply(429, "slow down", code="rate_limit_exceeded", headers={"Retry-After": "2"})
    )
    gateway.enqueue(sse_reply(image_events(b64(IMAGE))), sse_reply(image_events(b64(IMAGE))))

    async def main() -> list[Any]:
        found: list[Any] = []
        async with server("legacy", env, out_dir, tmp_path / "err.txt") as client:

            async def call(name: str) -> None:
                found.append(await client.call_tool("generate_image", {"prompt": name}))

            async with anyio.create_task_group() as tg:
                tg.start_soon(call, "first")
                await anyio.to_thread.run_sync(gateway.wait_for_requests, 1)
                await anyio.sleep(0.3)
                tg.start_soon(call, "second")
        return found

    results = run(main)
    assert [r.is_error for r in results] == [False, False], [texts(r) for r in results]
    limited, *later = gateway.posts()
    assert all(r.t_start - limited.t_start >= 1.8 for r in later), gateway.dump()


async def seconds_until_cancelled(errlog: Path) -> float:
    """How long after now the server logs that it dropped the cancelled call (at most 8 s)."""
    cancelled_at = time.monotonic()
    for _ in range(80):
        if "cancelled: no answer" in errlog.read_text():
            break
        await anyio.sleep(0.1)
    return time.monotonic() - cancelled_at


def test_cancellation_closes_an_image_url_download(
    gateway: Gateway, env: dict[str, str], out_dir: Path, tmp_path: Path
) -> None:
    """The answer gives only an image URL and that download hangs: a cancellation must close
    the download's connection too, not wait for the idle timeout, and the GET that broke
    off is not retried (no "retrying the download", one GET)."""
    from tests.gateway import image_item, json_reply, response_obj, stall_reply

    item = image_item(None)
    del item["result"]
    item["url"] = gateway.url + "/files/slow.png"
    gateway.enqueue(json_reply(response_obj([item])))
    gateway.enqueue(stall_reply(), path="/files/slow.png")
    errlog = tmp_path / "err.txt"

    async def main() -> float:
        async with server("legacy", env, out_dir, errlog, "--no-stream") as client:
            with anyio.move_on_after(20):
                async with anyio.create_task_group() as tg:

                    async def call() -> None:
                        await client.call_tool("generate_image", {"prompt": "u", "out": "u.png"})

                    tg.start_soon(call)
                    await anyio.to_thread.run_sync(gateway.wait_for_requests, 2)
                    await anyio.sleep(0.5)
                    tg.cancel_scope.cancel()
            return await seconds_until_cancelled(errlog)

    waited = run(main)
    log = errlog.read_text()
    assert "cancelled: no answer" in log and waited < 4, log
    assert "retrying the download" not in log, log
    assert [r.path for r in gateway.requests].count("/files/slow.png") == 1
    assert not (out_dir / "u.png").exists() and leftovers(out_dir) == []


def test_missing_codex_api_key_says_to_forward_it(
    gateway: Gateway, out_dir: Path, tmp_path: Path
) -> None:
    """A provider that takes the OpenAI login, with the key in CODEX_API_KEY (no auth.json):
    Codex does not pass that variable to MCP servers, so the first result must say so."""
    from tests.conftest import write_codex_home

    home = write_codex_home(tmp_path / "home", gateway.base_url, key=None)
    env = clean_env(CODEX_HOME=str(home))  # CODEX_API_KEY was not forwarded

    async def main() -> Any:
        async with server("auto", env, out_dir, tmp_path / "err.txt") as client:
            return await client.call_tool("generate_image", {"prompt": "x"})

    result = run(main)
    assert result.is_error and result.structured_content["exit_code"] == 3
    assert 'env_vars = ["CODEX_API_KEY"]' in texts(result), texts(result)
    assert gateway.requests == []


def test_a_call_held_by_another_calls_retry_after_can_be_cancelled(
    gateway: Gateway, env: dict[str, str], out_dir: Path, tmp_path: Path
) -> None:
    """The shared Retry-After wait (up to 120 s) is cancellable like a call's own waits."""
    gateway.enqueue(
        error_reply(429, "slow down", code="rate_limit_exceeded", headers={"Retry-After": "30"})
    )
    errlog = tmp_path / "err.txt"

    async def main() -> float:
        async with server("legacy", env, out_dir, errlog) as client:
            with anyio.move_on_after(20):
                async with anyio.create_task_group() as outer:
                    outer.start_soon(client.call_tool, "generate_image", {"prompt": "first"})
                    await anyio.to_thread.run_sync(gateway.wait_for_requests, 1)
                    await anyio.sleep(0.3)
                    held = anyio.CancelScope()

                    async def second() -> None:
                        with held:
                            await client.call_tool("generate_image", {"prompt": "second"})

                    outer.start_soon(second)
                    await anyio.sleep(1.0)  # the second call now waits on the 429's hold
                    held.cancel()
                    cancelled_at = time.monotonic()
                    for _ in range(80):
                        if "cancelled: no answer" in errlog.read_text():
                            break
                        await anyio.sleep(0.1)
                    waited = time.monotonic() - cancelled_at
                    outer.cancel_scope.cancel()
            return waited

    waited = run(main)
    log = errlog.read_text()
    assert "cancelled: no answer" in log and waited < 4, log
    assert len(gateway.posts()) == 1, gateway.dump()


def test_cancellation_during_a_stalled_tls_handshake(out_dir: Path, tmp_path: Path) -> None:
    """A gateway that accepts the TCP connection but never answers the TLS hello: cancelling
    shuts the half-open connection down instead of waiting for --connect-timeout."""
    import socket

    from tests.conftest import write_codex_home

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)  # never accepted: the kernel completes the handshake, nobody speaks TLS
    base_url = f"https://127.0.0.1:{listener.getsockname()[1]}/v1"
    env = clean_env(CODEX_HOME=str(write_codex_home(tmp_path / "home", base_url)))
    errlog = tmp_path / "err.txt"

    async def main() -> float:
        async with server("legacy", env, out_dir, errlog, "--connect-timeout", "25") as client:
            with anyio.move_on_after(30):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(
                        client.call_tool, "generate_image", {"prompt": "t", "out": "t.png"}
                    )
                    await anyio.sleep(1.5)
                    tg.cancel_scope.cancel()
            return await seconds_until_cancelled(errlog)

    try:
        waited = run(main)
    finally:
        listener.close()
    log = errlog.read_text()
    assert "cancelled: no answer" in log and waited < 4, log


def test_no_codex_home_says_to_pass_it(gateway: Gateway, out_dir: Path, tmp_path: Path) -> None:
    """CODEX_HOME did not reach the server (a minimal environment) and ~/.codex is empty: the
    result says how to give the server its Codex home."""
    home = tmp_path / "user"
    home.mkdir()
    env = clean_env(HOME=str(home), CODEX_IMAGEGEN_SYSTEM_CONFIG_DIR=str(tmp_path / "etc"))

    async def main() -> Any:
        async with server("legacy", env, out_dir, tmp_path / "err.txt") as client:
            return await client.call_tool("generate_image", {"prompt": "x"})

    result = run(main)
    assert result.is_error and result.structured_content["exit_code"] == 3, texts(result)
    assert "--codex-home DIR" in texts(result) and 'env_vars = ["CODEX_HOME"]' in texts(result)
    assert gateway.requests == []


def test_check_gateway_with_a_missing_key_variable_is_an_error_with_the_hint(
    gateway: Gateway, out_dir: Path, tmp_path: Path
) -> None:
    from tests.conftest import write_codex_home

    home = write_codex_home(
        tmp_path / "home", gateway.base_url, key=None, extra_provider='env_key = "GATEWAY_API_KEY"'
    )
    env = clean_env(CODEX_HOME=str(home))

    async def main() -> Any:
        async with server("auto", env, out_dir, tmp_path / "err.txt") as client:
            return await client.call_tool("check_gateway", {})

    result = run(main)
    assert result.is_error, texts(result)
    assert result.structured_content["ok"] is False
    (key,) = [c for c in result.structured_content["checks"] if c["check"] == "key"]
    assert key["status"] == "failed"
    assert 'env_vars = ["GATEWAY_API_KEY"]' in key["hint"] and "claude mcp add" in key["hint"]
    assert "hint: the MCP server was started without GATEWAY_API_KEY" in texts(result)


def test_check_gateway_that_passes_is_not_an_error(
    gateway: Gateway, env: dict[str, str], out_dir: Path, tmp_path: Path
) -> None:
    async def main() -> Any:
        async with server("legacy", env, out_dir, tmp_path / "err.txt") as client:
            return await client.call_tool("check_gateway", {})

    result = run(main)
    assert not result.is_error, texts(result)
    assert result.structured_content["ok"] is True
    assert result.structured_content["exit_code"] == 0
    assert "hint:" not in texts(result)


def test_plain_http_key_warning_reaches_the_tool_result(
    gateway: Gateway, out_dir: Path, tmp_path: Path
) -> None:
    """Through a loopback proxy that forwards to the test gateway whatever host is named."""
    from tests.conftest import write_codex_home
    from tests.gateway import ForwardProxy

    home = write_codex_home(tmp_path / "home", "http://gateway.example.com/v1")
    gateway.set_default(sse_reply(image_events(b64(IMAGE))))
    warning = "the API key will be sent unencrypted over http:// to gateway.example.com"
    with ForwardProxy(gateway) as proxy:
        env = clean_env(CODEX_HOME=str(home), HTTP_PROXY=proxy.url, NO_PROXY="")

        async def main() -> tuple[Any, Any]:
            async with server("auto", env, out_dir, tmp_path / "err.txt") as client:
                made = await client.call_tool("generate_image", {"prompt": "x", "out": "x.png"})
                return made, await client.call_tool("check_gateway", {})

        made, checked = run(main)
    assert not made.is_error, texts(made)
    assert f"warning: {warning}" in texts(made)
    assert warning in made.structured_content["warnings"]
    assert f"warning: {warning}" in texts(checked)
    assert TEST_KEY not in texts(made) + texts(checked)


def test_a_call_waiting_for_a_concurrency_slot_can_be_cancelled(
    gateway: Gateway, env: dict[str, str], out_dir: Path, tmp_path: Path
) -> None:
    """--concurrency 1 and the first call stalls: the second, waiting for the slot, ends as
    soon as it is cancelled, not when the first call lets the slot go."""
    from tests.gateway import stall_reply

    gateway.enqueue(stall_reply())
    errlog = tmp_path / "err.txt"

    async def main() -> float:
        async with server("legacy", env, out_dir, errlog, "--concurrency", "1") as client:
            with anyio.move_on_after(20):
                async with anyio.create_task_group() as outer:
                    outer.start_soon(client.call_tool, "generate_image", {"prompt": "first"})
                    await anyio.to_thread.run_sync(gateway.wait_for_requests, 1)
                    waiting = anyio.CancelScope()

                    async def second() -> None:
                        with waiting:
                            await client.call_tool("generate_image", {"prompt": "second"})

                    outer.start_soon(second)
                    for _ in range(50):  # until the second call is in the server's queue
                        if errlog.read_text().count("generate_image started") == 2:
                            break
                        await anyio.sleep(0.1)
                    await anyio.sleep(0.3)
                    waiting.cancel()
                    waited = await seconds_until_cancelled(errlog)
                    outer.cancel_scope.cancel()
            return waited

    waited = run(main)
    log = errlog.read_text()
    assert "cancelled: no answer" in log and waited < 4, log
    assert len(gateway.posts()) == 1, gateway.dump()  # the second never sent anything
