"""Token usage. The main model's `usage`, the image model's
`tool_usage.image_gen` and the Images API's `usage` reach --json, the sidecar, the stderr
summary line and the MCP structuredContent, under names that say which model; totals for --n and
--batch; a field the answer did not carry stays absent (never zero)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import images
from tests.conftest import SCRIPT, run_cli
from tests.gateway import (
    DEFAULT_IMAGES_USAGE,
    DEFAULT_TOOL_USAGE,
    DEFAULT_USAGE,
    Gateway,
    image_events,
    image_item,
    images_answer,
    json_reply,
    response_obj,
    sse_reply,
)

PNG = images.png_bytes(40, 24)
IMAGE_GEN = DEFAULT_TOOL_USAGE["image_gen"]


def stream_with(**response_fields: Any) -> Any:
    """An image stream whose final response carries exactly these usage fields (None: absent)."""
    events = image_events(images.b64(PNG))
    final = events[-1]["response"]
    for key in ("usage", "tool_usage"):
        final.pop(key, None)
    final.update({k: v for k, v in response_fields.items() if v is not None})
    return sse_reply(events)


def json_run(tmp_path: Path, env: dict[str, str], *extra: str) -> tuple[Any, Any]:
    out = tmp_path / "o.png"
    proc = run_cli(["--json", "--prompt", "a fox", "--out", str(out), *extra], env)
    assert proc.returncode == 0, proc.stderr
    return proc, json.loads(proc.stdout)


def test_both_models_usage_in_json_sidecar_and_summary(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(sse_reply(image_events(images.b64(PNG))))
    proc, record = json_run(tmp_path, env, "--sidecar")
    assert record["main_model_usage"] == DEFAULT_USAGE
    assert record["image_model_usage"] == IMAGE_GEN
    sidecar = json.loads((tmp_path / "o.png.json").read_text(encoding="utf-8"))
    assert sidecar["main_model_usage"] == DEFAULT_USAGE
    assert sidecar["image_model_usage"] == IMAGE_GEN
    saved = [line for line in proc.stderr.splitlines() if line.startswith("saved ")]
    assert saved and saved[0].endswith(
        "tokens: main model 1,889 in + 1,434 out, image model 62 in + 4,160 out"
    ), proc.stderr


def test_absent_usage_stays_absent(tmp_path: Path, gateway: Gateway, env: dict[str, str]) -> None:
    gateway.set_default(stream_with())  # like the Mar-2026 recording without tool_usage, and less
    proc, record = json_run(tmp_path, env, "--sidecar")
    assert "main_model_usage" not in record and "image_model_usage" not in record
    sidecar = json.loads((tmp_path / "o.png.json").read_text(encoding="utf-8"))
    assert "main_model_usage" not in sidecar and "image_model_usage" not in sidecar
    assert "tokens" not in proc.stderr


def test_main_usage_without_tool_usage(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(stream_with(usage=DEFAULT_USAGE))
    proc, record = json_run(tmp_path, env)
    assert record["main_model_usage"] == DEFAULT_USAGE
    assert "image_model_usage" not in record
    assert "image model" not in proc.stderr and "main model 1,889 in" in proc.stderr


def test_hostile_usage_is_cut_to_token_counts(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    hostile = {
        "input_tokens": "12",  # a string is not a count
        "output_tokens": -5,
        "total_tokens": True,
        "cached": 7,
        "Bad Key\x1b[31m": 3,
        "input_tokens_details": {"cached_tokens": 4, "deep": {"x": 1}},
        **{f"k{i}": i for i in range(100)},
    }
    gateway.set_default(stream_with(usage=hostile, tool_usage={"image_gen": "lots"}))
    _, record = json_run(tmp_path, env)
    usage = record["main_model_usage"]
    assert usage["cached"] == 7 and usage["input_tokens_details"] == {"cached_tokens": 4}
    assert not {"input_tokens", "output_tokens", "total_tokens"} & set(usage)
    assert len(usage) <= 32
    assert "image_model_usage" not in record


def test_non_streamed_answer(tmp_path: Path, gateway: Gateway, env: dict[str, str]) -> None:
    gateway.set_default(json_reply(response_obj([image_item(images.b64(PNG))])))
    _, record = json_run(tmp_path, env, "--no-stream")
    assert record["main_model_usage"] == DEFAULT_USAGE
    assert record["image_model_usage"] == IMAGE_GEN


def test_images_api_usage_is_the_image_model_s(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(json_reply(images_answer(images.b64(PNG))), path="/v1/images/generations")
    proc, record = json_run(tmp_path, env, "--api", "images")
    assert record["image_model_usage"] == DEFAULT_IMAGES_USAGE
    assert "main_model_usage" not in record  # no main model on this route
    assert "image model 50 in + 4,160 out" in proc.stderr


def test_n_prints_totals(tmp_path: Path, gateway: Gateway, env: dict[str, str]) -> None:
    gateway.set_default(sse_reply(image_events(images.b64(PNG))))
    proc = run_cli(["--json", "--prompt", "p", "--n", "2", "--out", str(tmp_path / "o.png")], env)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(records) == 2
    assert all(r["image_model_usage"] == IMAGE_GEN for r in records)
    assert (
        "tokens in total for 2 images: main model 3,778 in + 2,868 out, "
        "image model 124 in + 8,320 out"
    ) in proc.stderr


def test_batch_summary_lines_and_totals(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(sse_reply(image_events(images.b64(PNG))))
    batch = tmp_path / "jobs.jsonl"
    batch.write_text('{"prompt": "a"}\n{"prompt": "b"}\n', encoding="utf-8")
    proc = run_cli(["--batch", str(batch), "--out-dir", str(tmp_path / "out")], env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and all("tokens: main model 1,889 in" in line for line in lines)
    assert "tokens in total for 2 images: main model 3,778 in" in proc.stderr


def test_mcp_structured_content_and_schema(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    pytest.importorskip("mcp")
    import anyio
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters, stdio_client

    gateway.set_default(sse_reply(image_events(images.b64(PNG))))
    out_dir = tmp_path / "work"
    out_dir.mkdir()
    params = StdioServerParameters(
        command=sys.executable, args=[str(SCRIPT), "--mcp", "--out-dir", str(out_dir)], env=env
    )

    async def main() -> Any:
        with open(tmp_path / "err.txt", "w", encoding="utf-8") as errlog:
            async with Client(stdio_client(params, errlog=errlog), mode="legacy") as client:  # type: ignore[arg-type]
                tools = await client.list_tools()
                result = await client.call_tool("generate_image", {"prompt": "fox", "n": 2})
                return tools, result

    tools, result = anyio.run(main)
    (generate,) = [t for t in tools.tools if t.name == "generate_image"]
    props = generate.output_schema["properties"]
    for name in ("main_model_usage", "image_model_usage"):
        assert name in props and name in props["images"]["items"]["properties"]
        assert name + "_total" in props
    data = result.structured_content
    assert not result.is_error
    assert [r["image_model_usage"] for r in data["images"]] == [IMAGE_GEN, IMAGE_GEN]
    assert data["image_model_usage_total"]["output_tokens"] == 8320
    assert data["main_model_usage_total"]["input_tokens_details"] == {"cached_tokens": 0}
    text = "\n".join(c.text for c in result.content if c.type == "text")
    assert "tokens: main model 1,889 in + 1,434 out, image model 62 in + 4,160 out" in text


def test_usage_that_comes_after_the_image_in_a_later_read(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    """The image is safe before response.completed arrives (a pause between events): the rest
    of the stream is still read for the usage."""
    big = images.png_bytes(160, 160, noise=True)  # the second copy is most of what follows
    gateway.set_default(sse_reply(image_events(images.b64(big)), delay=0.3))
    proc, record = json_run(tmp_path, env)
    assert (tmp_path / "o.png").read_bytes() == big
    assert record["main_model_usage"] == DEFAULT_USAGE
    assert record["image_model_usage"] == IMAGE_GEN


def test_a_stall_after_the_image_costs_at_most_the_grace(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    import time

    events = image_events(images.b64(PNG))
    done = max(i for i, ev in enumerate(events) if ev["type"] == "response.output_item.done")
    gateway.set_default(sse_reply(events, stall_after=done + 1))
    started = time.monotonic()
    proc, record = json_run(tmp_path, env, "--idle-timeout", "60")
    assert time.monotonic() - started < 30  # the grace (READ_TO_END_GRACE), not the idle timeout
    assert record["ok"] and "main_model_usage" not in record


def test_a_usage_with_only_a_total_is_summed_up_as_that(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    usage = {"total_tokens": 1234, "output_tokens_details": {"Not A Count": 1, "x": "y"}}
    gateway.set_default(stream_with(usage=usage))
    proc, record = json_run(tmp_path, env)
    assert record["main_model_usage"] == {"total_tokens": 1234}  # empty details: dropped
    saved = [line for line in proc.stderr.splitlines() if line.startswith("saved ")]
    assert saved and saved[0].endswith("tokens: main model 1,234"), proc.stderr


def test_totals_skip_a_field_whose_shape_changed_between_answers() -> None:
    import generate_gateway_image as g

    total: dict[str, Any] = {"input_tokens": 5, "input_tokens_details": {"cached_tokens": 1}}
    g.add_token_counts(
        total,
        {"input_tokens": {"odd": 1}, "input_tokens_details": 2, "output_tokens": 3},
    )
    assert total == {
        "input_tokens": 5,
        "input_tokens_details": {"cached_tokens": 1},
        "output_tokens": 3,
    }
    g.add_token_counts(total, {"input_tokens_details": {"cached_tokens": 2, "text_tokens": 4}})
    assert total["input_tokens_details"] == {"cached_tokens": 3, "text_tokens": 4}
