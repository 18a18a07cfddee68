"""The dialect table pinned: each entry of DIALECTS turns one gateway shape into the canonical
Responses shape the Collector knows (the end-to-end runs of these shapes are in
test_answers.py and test_sse.py)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from typing import Any

import pytest

import generate_gateway_image as g
from tests import images

PNG_B64 = images.b64(images.png_bytes(8, 8))
DATA_URL = "data:image/png;base64," + PNG_B64
PREVIEW = g.PARTIAL_IMAGE
CALL = "image_generation_call"


def payload_text(value: Any) -> str:
    """What a sink would decode: a Payload's pieces, or the value itself."""
    if isinstance(value, g.Payload):
        return b"".join(value.pieces()).decode("ascii")
    assert isinstance(value, str)
    return value


def event(ev: dict[str, Any], name: str = "") -> Mapping[str, Any]:
    return g.canonical_event(ev, name)


def item(it: dict[str, Any]) -> Mapping[str, Any]:
    return g.canonical("item", it)


# dialect name -> (how the gateway says it, the canonical shape; Payloads shown as their text)
PINS: dict[str, tuple[Callable[[], Mapping[str, Any]], dict[str, Any]]] = {
    "Azure's name for a preview event": (
        lambda: event({"type": "response.image_gen_call.partial_image", "partial_image_b64": "QQ"}),
        {"type": PREVIEW, "partial_image_b64": "QQ"},
    ),
    "LiteLLM's preview under b64_json": (
        lambda: event({"type": PREVIEW, "b64_json": "QQ"}),
        {"type": PREVIEW, "b64_json": "QQ", "partial_image_b64": "QQ"},
    ),
    "a preview as a data: URL": (
        lambda: event({"type": PREVIEW, "partial_image_b64": DATA_URL}),
        {"type": PREVIEW, "partial_image_b64": PNG_B64},
    ),
    "response.done for response.completed": (
        lambda: event({"type": "response.done", "response": {"id": "r"}}),
        {"type": "response.completed", "response": {"id": "r"}},
    ),
    "an error in an event of another type (or none)": (
        lambda: event({"error": {"message": "m"}}, name="message"),
        {"type": "error", "error": {"message": "m"}},
    ),
    "an error event with its fields at the top, or its error a string": (
        lambda: event({"type": "error", "code": "server_error", "message": "m"}),
        {
            "type": "error",
            "code": "server_error",
            "message": "m",
            "error": {"type": "error", "code": "server_error", "message": "m"},
        },
    ),
    "the image as a data: URL in `url`": (
        lambda: item({"type": CALL, "url": DATA_URL}),
        {"type": CALL, "url": DATA_URL, "result": PNG_B64},
    ),
    "a hosted image: an http(s) URL in `url` instead of the result": (
        lambda: item({"type": CALL, "status": "completed", "url": "https://h.example/i.png"}),
        {"type": "image_url", "url": "https://h.example/i.png"},
    ),
    "the result as a data: URL": (
        lambda: item({"type": CALL, "id": "ig", "result": DATA_URL}),
        {"type": CALL, "id": "ig", "result": PNG_B64},
    ),
    "Images API results as data: URLs": (
        lambda: g.canonical_answer({"created": 1, "data": [{"b64_json": DATA_URL}, {"url": "u"}]}),
        {"created": 1, "data": [{"b64_json": PNG_B64}, {"url": "u"}]},
    ),
    "an error answer whose error is a string": (
        lambda: g.canonical_answer({"error": "boom"}),
        {"error": {"message": "boom"}},
    ),
}


def shown(shape: Any) -> Any:
    """`shape` with each Payload replaced by the base64 it reads."""
    if isinstance(shape, Mapping):
        return {k: shown(v) for k, v in shape.items()}
    if isinstance(shape, list):
        return [shown(v) for v in shape]
    return payload_text(shape) if isinstance(shape, g.Payload) else shape


def test_every_dialect_is_pinned() -> None:
    assert [d.name for d in g.DIALECTS] == list(PINS)


@pytest.mark.parametrize("name", list(PINS))
def test_dialect_becomes_the_canonical_shape(name: str) -> None:
    make, expected = PINS[name]
    assert shown(make()) == expected


@pytest.mark.parametrize(
    "shape",
    [
        {"type": "response.completed", "response": {"id": "r", "output": []}},
        {"type": PREVIEW, "partial_image_b64": PNG_B64, "partial_image_index": 0},
        {"type": "error", "error": {"message": "m"}},
        {"type": "response.failed", "error": "a response event keeps its own error field"},
        {"type": "response.output_item.done", "item": {"type": CALL, "result": PNG_B64}},
    ],
)
def test_canonical_events_pass_unchanged(shape: dict[str, Any]) -> None:
    assert event(shape) == shape


def test_a_data_url_in_a_blob_is_read_in_place() -> None:
    big = "data:image/png;base64," + base64.b64encode(b"\x00" * 70_000).decode()
    spool = g.JsonSpool()
    spool.feed(json.dumps({"result": big}).encode())
    value = spool.parse()["result"]
    assert isinstance(value, g.Blob) and not isinstance(value, g.Payload)
    payload = g.data_url_payload(value)
    assert isinstance(payload, g.Payload)
    assert b"".join(payload.pieces()) == big.split(",", 1)[1].encode()
    assert len(payload) == len(big) - len("data:image/png;base64,")
    spool.close()


def test_an_empty_data_url_is_still_an_answer() -> None:
    payload = g.data_url_payload("data:image/png;base64,")
    assert isinstance(payload, g.Payload) and bool(payload) and len(payload) == 0
    assert g.data_url_payload("data:image/png;base64") == "data:image/png;base64"  # no comma
