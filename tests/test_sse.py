"""The streaming parser and the response handling.

Unit tests of ``SSEParser``, ``parse_json_span`` / ``Blob``, ``Collector`` + ``ImageSink``
(with hypothesis properties for any chunking and any valid JSON encoding), replays of the real
recordings, and end-to-end runs of the script against the loopback gateway with every SSE
framing the gateway can produce.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import generate_gateway_image as g
from tests.conftest import leftovers, run_cli
from tests.gateway import (
    Gateway,
    error_event,
    failed_events,
    format_sse,
    image_events,
    image_item,
    incomplete_events,
    json_reply,
    message_item,
    recorded_jpeg_response,
    recorded_stream_events,
    response_obj,
    sse_reply,
    text_only_events,
)
from tests.images import b64, jpeg_bytes, png_bytes, truncated_jpeg, truncated_png


def parse_json_span(buf: bytes | bytearray, start: int, end: int) -> Any:
    """json.loads of buf[start:end] through one JsonSpool, long strings as Blobs."""
    spool = g.JsonSpool()
    spool.feed(buf[start:end])
    return spool.parse()


def handle_response(collector: g.Collector, resp: Any) -> None:
    """A whole Response object handed to the collector, as an answer's final event does."""
    collector._response(g.canonical_response(resp))


SMALL_PNG = png_bytes(16, 16)
OTHER_PNG = png_bytes(8, 8, alpha=True)

# =============================================================================================
# helpers
# =============================================================================================


def parse_chunks(chunks: Iterable[bytes]) -> list[tuple[str, bytes]]:
    """Feed ``chunks`` to a fresh SSEParser, close it, return (event name, data) pairs."""
    out: list[tuple[str, bytes]] = []

    def on_event(name: str, spool: g.JsonSpool) -> None:
        out.append((name, spool_bytes(spool)))  # the spool is only valid during the call

    parser = g.SSEParser(on_event)
    for chunk in chunks:
        parser.feed(chunk)
    parser.close()
    return out


def spool_bytes(spool: g.JsonSpool) -> bytes:
    """The data of one event as sent (exact for long strings without JSON escapes)."""
    text = spool.text()
    for token, blob in spool.blobs.items():
        text = text.replace(token.encode("ascii"), blob_bytes(blob))
    return text


BIG = 4 * g.BLOB_MIN  # a payload size with room for long strings


def split(data: bytes, points: Iterable[int]) -> list[bytes]:
    cuts = sorted({p for p in points if 0 < p < len(data)})
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def fixed_chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def unblob(obj: Any) -> Any:
    """``obj`` with every Blob turned back into the str it stands for."""
    if isinstance(obj, g.Blob):
        return blob_bytes(obj).decode("utf-8")
    if isinstance(obj, dict):
        return {k: unblob(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unblob(v) for v in obj]
    return obj


def blob_bytes(blob: g.Blob) -> bytes:
    return b"".join(bytes(p) for p in blob.pieces())


def escape_slashes(text: str) -> str:
    """A JSON text re-encoded with every ``/`` as ``\\/`` (valid JSON, same value: outside
    strings JSON has no ``/``), as some gateways' encoders emit it."""
    return text.replace("/", "\\/")


def dumps(obj: Any, *, slashes: bool = False) -> str:
    text = json.dumps(obj, separators=(",", ":"))
    return escape_slashes(text) if slashes else text


def sink_for(folder: Path, name: str = "out.png") -> tuple[g.ImageSink, g.Collector]:
    sink = g.ImageSink(str(folder / name), force=False)
    return sink, g.Collector(sink)


def feed_events(collector: g.Collector, events: Iterable[dict[str, Any]]) -> None:
    for ev in events:
        collector.handle_event(ev, str(ev.get("type", "")))


def feed_sse(collector: g.Collector, stream: bytes, chunk_size: int | None = None) -> None:
    """Feed an SSE byte stream the way exchange() does (stop once the collector finished)."""
    parser = g.SSEParser(collector.on_sse)
    for chunk in fixed_chunks(stream, chunk_size or len(stream) or 1):
        if collector.finished:
            break
        parser.feed(chunk)
    if not collector.finished:
        parser.close()


def saved_bytes(sink: g.ImageSink) -> bytes:
    """Commit the sink's image to --out and return the bytes written there."""
    image = sink.commit()
    assert image.path == sink.out
    return Path(sink.out).read_bytes()


def assert_nothing_written(folder: Path) -> None:
    assert leftovers(folder) == []
    assert sorted(p.name for p in folder.iterdir()) == []


def without_image_done(events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        ev
        for ev in events
        if not (
            ev["type"] == "response.output_item.done"
            and ev["item"].get("type") == "image_generation_call"
        )
    ]


# =============================================================================================
# SSEParser: unit tests
# =============================================================================================


def test_sse_lf_framing_with_event_lines() -> None:
    stream = b'event: a\ndata: {"x":1}\n\nevent: b\ndata: {"y":2}\n\n'
    assert parse_chunks([stream]) == [("a", b'{"x":1}'), ("b", b'{"y":2}')]


def test_sse_crlf_framing() -> None:
    stream = b'event: a\r\ndata: {"x":1}\r\n\r\ndata: {"y":2}\r\n\r\n'
    assert parse_chunks([stream]) == [("a", b'{"x":1}'), ("", b'{"y":2}')]


def test_sse_crlf_split_between_cr_and_lf() -> None:
    stream = b"event: a\r\ndata: 1\r\n\r\ndata: 2\r\n\r\n"
    for cut in range(1, len(stream)):
        assert parse_chunks([stream[:cut], stream[cut:]]) == [("a", b"1"), ("", b"2")], cut


def test_sse_comment_lines_are_ignored() -> None:
    stream = b": ping\n\n:another comment\ndata: 1\n: inside an event\ndata: 2\n\n: tail\n"
    assert parse_chunks([stream]) == [("", b"1\n2")]


def test_sse_event_name_applies_to_one_event_only() -> None:
    stream = b"event: first\ndata: 1\n\ndata: 2\n\nevent: lost\n\ndata: 3\n\n"
    assert parse_chunks([stream]) == [("first", b"1"), ("", b"2"), ("", b"3")]


def test_sse_multi_line_data_joined_with_newline() -> None:
    stream = b"event: m\ndata: line one\ndata:line two\ndata: \ndata\ndata:  spaced\n\n"
    assert parse_chunks([stream]) == [("m", b"line one\nline two\n\n\n spaced")]


def test_sse_data_without_space_after_colon() -> None:
    stream = b'data:{"type":"x"}\n\nevent:named\ndata:[DONE]\n\n'
    assert parse_chunks([stream]) == [("", b'{"type":"x"}'), ("named", b"[DONE]")]


def test_sse_missing_final_blank_line_is_flushed_by_close() -> None:
    assert parse_chunks([b"data: 1\n\ndata: 2\n"]) == [("", b"1"), ("", b"2")]
    assert parse_chunks([b"data: 1\n\ndata: 2"]) == [("", b"1"), ("", b"2")]
    assert parse_chunks([b"event: e\r\ndata: 3\r"]) == [("e", b"3")]


def test_sse_nothing_dispatched_before_the_blank_line() -> None:
    got: list[bytes] = []
    parser = g.SSEParser(lambda name, spool: got.append(spool_bytes(spool)))
    parser.feed(b"data: 1\n")
    assert got == []
    parser.feed(b"\n")
    assert got == [b"1"]


def test_sse_keepalive_events_and_done() -> None:
    stream = (
        b'event: keepalive\ndata: {"type":"keepalive"}\n\n'
        b'event: response.completed\ndata: {"type":"response.completed"}\n\n'
        b"data: [DONE]\n\n"
    )
    assert parse_chunks([stream]) == [
        ("keepalive", b'{"type":"keepalive"}'),
        ("response.completed", b'{"type":"response.completed"}'),
        ("", b"[DONE]"),
    ]


def test_sse_empty_lines_between_events_and_other_fields() -> None:
    stream = b"\n\n\ndata: 1\n\n\n\n\r\n\nid: 7\nretry: 1000\nunknown: x\ndata: 2\n\n\n"
    assert parse_chunks([stream]) == [("", b"1"), ("", b"2")]


def test_sse_empty_stream() -> None:
    assert parse_chunks([]) == []
    assert parse_chunks([b""]) == []
    assert parse_chunks([b"\n\n: only a comment\n\n"]) == []


@pytest.mark.parametrize("chunk_size", [7, 64 * 1024])
def test_sse_very_large_data_line(chunk_size: int) -> None:
    body = base64.b64encode(random.Random(1).randbytes(3 * 1024 * 1024 * 3 // 4))
    payload = b'{"type":"response.output_item.done","item":{"result":"' + body + b'"}}'
    stream = b"event: big\ndata: " + payload + b"\n\ndata: after\n\n"
    got = parse_chunks(fixed_chunks(stream, chunk_size))
    assert [name for name, _ in got] == ["big", ""]
    assert got[0][1] == payload
    assert got[1][1] == b"after"


# =============================================================================================
# SSEParser: any split of a valid stream parses to the same events (hypothesis)
# =============================================================================================

LONG_B64 = st.binary(min_size=0, max_size=600).map(lambda b: base64.b64encode(b).decode())
TEXT = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["/", "\\/", "\\", '"', '\\"', "é", "\u2028", "😀", "\n", "\r\n", "data: x"]),
    LONG_B64,
)
JSONABLE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12,
)
EVENT = st.fixed_dictionaries(
    {"type": st.sampled_from(["response.created", "response.output_item.done", "x.y"])},
    optional={"payload": JSONABLE, "result": LONG_B64},
)


@st.composite
def sse_streams(draw: st.DrawFn) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A valid SSE byte stream with random framing, and the events it must parse to."""
    nl = draw(st.sampled_from(["\n", "\r\n"]))
    event_lines = draw(st.booleans())
    space = draw(st.booleans())  # "data: x" or "data:x"
    comments = draw(st.booleans())
    keepalive = draw(st.booleans())
    done = draw(st.booleans())
    ascii_only = draw(st.booleans())
    slashes = draw(st.booleans())
    events = draw(st.lists(EVENT, max_size=6))
    out: list[str] = []
    expected: list[tuple[str, bytes]] = []
    sep = "data: " if space else "data:"

    def block(name: str, lines: list[str]) -> None:
        if event_lines and name:
            out.append(f"event: {name}{nl}")
        for line in lines:
            out.append(f"{sep}{line}{nl}")
        out.append(nl * draw(st.integers(1, 3)))
        value = [line[1:] if not space and line.startswith(" ") else line for line in lines]
        expected.append((name if event_lines else "", "\n".join(value).encode("utf-8")))

    for i, ev in enumerate(events):
        if comments:
            out.append(f": ping {i}{nl}{nl}")
        if keepalive and i:
            block("keepalive", ['{"type":"keepalive"}'])
        text = json.dumps(ev, ensure_ascii=ascii_only, separators=(",", ":"))
        if slashes:
            text = escape_slashes(text)
        # a payload may be spread over several data: lines (cut anywhere)
        cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=2)))
        bounds = [0, *cuts, len(text)]
        block(str(ev["type"]), [text[a:b] for a, b in zip(bounds, bounds[1:])])
    if done:
        block("", ["[DONE]"])
    return "".join(out).encode("utf-8"), expected


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=sse_streams(), data=st.data())
def test_sse_any_split_gives_the_same_events(
    case: tuple[bytes, list[tuple[str, bytes]]], data: st.DataObject
) -> None:
    stream, expected = case
    whole = parse_chunks([stream])
    assert whole == expected
    points = data.draw(st.lists(st.integers(0, len(stream)), max_size=30), label="split points")
    assert parse_chunks(split(stream, points)) == whole
    size = data.draw(st.integers(1, 64), label="chunk size")
    assert parse_chunks(fixed_chunks(stream, size)) == whole


@settings(max_examples=60, deadline=None)
@given(case=sse_streams())
def test_sse_byte_by_byte_gives_the_same_events(
    case: tuple[bytes, list[tuple[str, bytes]]],
) -> None:
    stream, expected = case
    assert parse_chunks([stream[i : i + 1] for i in range(len(stream))]) == expected


# =============================================================================================
# parse_json_span / Blob
# =============================================================================================


def long_b64(n: int, seed: int = 0) -> str:
    """A base64 string of about ``n`` characters (contains '/' and '+')."""
    return base64.b64encode(random.Random(seed).randbytes(n * 3 // 4 + 3)).decode()[:n]


def test_parse_json_span_small_payloads_equal_json_loads() -> None:
    docs = [
        {"type": "response.created", "response": {"id": "resp_1", "output": []}},
        {"a": 'x\\/y / \n \u00e9 " \\', "b": [1, 2.5, None, True], "c": {"d": "é😀"}},
        [1, "two", {"three": 3}],
        "just a string",
        12,
    ]
    for doc in docs:
        for raw in (json.dumps(doc), json.dumps(doc, ensure_ascii=False), dumps(doc, slashes=True)):
            data = b"  prefix" + raw.encode("utf-8") + b"suffix "
            start, end = 8, 8 + len(raw.encode("utf-8"))
            assert parse_json_span(data, start, end) == json.loads(raw)
            assert parse_json_span(bytearray(data), start, end) == json.loads(raw)


def test_parse_json_span_short_strings_stay_strings_in_a_big_payload() -> None:
    texts = [long_b64(g.BLOB_MIN - 10, seed) for seed in range(6)]
    raw = json.dumps({"parts": texts}).encode()
    assert len(raw) > BIG
    assert parse_json_span(raw, 0, len(raw)) == {"parts": texts}


def check_big(raw: bytes, long_paths: Sequence[tuple[Any, ...]] = ()) -> Any:
    """parse_json_span over raw (embedded in a larger buffer) equals json.loads after the Blobs
    are turned back into strings; the values at ``long_paths`` are Blobs."""
    assert len(raw) >= BIG
    buf = bytearray(b"data: " + raw + b"\n\n")
    obj = parse_json_span(buf, 6, 6 + len(raw))
    expected = json.loads(raw)
    for path in long_paths:
        value, want = obj, expected
        for key in path:
            value, want = value[key], want[key]
        assert isinstance(value, g.Blob), path
        assert blob_bytes(value) == want.encode("utf-8"), path
    assert unblob(obj) == expected
    return obj


def test_parse_json_span_big_payload_long_strings_become_blobs() -> None:
    result = long_b64(300_000, seed=1)
    doc = {
        "type": "response.output_item.done",
        "sequence_number": 9,
        "item": {"id": "ig_1", "type": "image_generation_call", "result": result, "n": None},
    }
    obj = check_big(json.dumps(doc).encode(), [("item", "result")])
    assert obj["item"]["id"] == "ig_1"
    assert len(obj["item"]["result"]) == len(result)


@pytest.mark.parametrize("slashes", [False, True], ids=["plain", "escaped-slashes"])
def test_parse_json_span_escaped_slashes_inside_long_string(slashes: bool) -> None:
    result = long_b64(300_000, seed=2)
    assert "/" in result
    raw = dumps({"item": {"result": result, "url": "https://x/y"}}, slashes=slashes).encode()
    assert (b"\\/" in raw) is slashes
    check_big(raw, [("item", "result")])


def test_parse_json_span_other_escapes_inside_long_string() -> None:
    text = long_b64(150_000, seed=3) + '\n\u00e9"quoted" \\ back\\slash \t' + long_b64(150_000)
    for ensure_ascii in (True, False):
        raw = json.dumps({"text": text}, ensure_ascii=ensure_ascii).encode("utf-8")
        assert (b"\\u00e9" in raw) is ensure_ascii
        check_big(raw, [("text",)])


def test_parse_json_span_literal_backslash_slash_inside_long_string() -> None:
    # The string holds a backslash followed by a slash; json.dumps writes it as "\\/".
    text = long_b64(150_000, seed=4) + "C:\\/dir \\\\/ \\/" + long_b64(150_000, seed=5)
    raw = json.dumps({"text": text}).encode()
    assert b"\\\\/" in raw
    check_big(raw, [("text",)])
    check_big(escape_slashes(json.dumps({"text": text})).encode(), [("text",)])


def test_parse_json_span_long_string_with_escaped_quotes_and_result_lookalikes() -> None:
    decoy = long_b64(100_000, seed=6) + '", "result": "not this' + '\\"' + long_b64(100_000)
    result = long_b64(200_000, seed=7)
    doc = {
        "revised_prompt": decoy,
        "note": '{"result": "fake"} \\"',
        "item": {"type": "image_generation_call", "result": result},
        "after": "ends with a backslash \\",
    }
    obj = check_big(json.dumps(doc).encode(), [("revised_prompt",), ("item", "result")])
    assert obj["note"] == '{"result": "fake"} \\"'
    assert obj["after"] == "ends with a backslash \\"


def test_parse_json_span_several_long_strings_and_whitespace() -> None:
    a, b, c = long_b64(100_000, 8), long_b64(120_000, 9), long_b64(70_000, 10)
    doc = {
        "output": [
            {"type": "image_generation_call", "result": a, "revised_prompt": "short"},
            {"type": "image_generation_call", "result": b},
        ],
        "partial": c,
        "short": "x" * 100,
    }
    raw = json.dumps(doc, indent=3).replace(": ", " :\t\r\n ").encode()
    obj = check_big(raw, [("output", 0, "result"), ("output", 1, "result"), ("partial",)])
    assert obj["short"] == "x" * 100


def test_parse_json_span_long_string_exactly_at_the_blob_threshold() -> None:
    at, below = long_b64(g.BLOB_MIN, 11), long_b64(g.BLOB_MIN - 1, 12)
    doc = {"at": at, "below": below, "pad": long_b64(BIG, 13)}
    obj = check_big(json.dumps(doc).encode(), [("at",), ("pad",)])
    assert obj["below"] == below


def test_parse_json_span_big_invalid_json_raises_value_error() -> None:
    raw = json.dumps({"result": long_b64(300_000)}).encode()[:-2]
    with pytest.raises(ValueError):
        parse_json_span(raw, 0, len(raw))


LONG_FRAGMENTS = st.sampled_from(
    ["/", "\\/", "\\", "\\\\/", '"', '\\"', "é", "😀", "\n", "\t", '"result":"', "\u0000", "+="]
)
# A long string is described by a small spec (fragments, filler length and seed, where the
# filler goes) so that a falsifying example prints short.
LONG_SPEC = st.tuples(
    st.lists(st.one_of(LONG_FRAGMENTS, st.text(max_size=8)), max_size=8),
    st.integers(g.BLOB_MIN, g.BLOB_MIN + 2000),
    st.integers(0, 99),
    st.integers(0, 8),
)


def long_string(spec: tuple[list[str], int, int, int]) -> str:
    parts, length, seed, where = spec
    where = min(where, len(parts))
    return "".join(parts[:where]) + long_b64(length, seed) + "".join(parts[where:])


def build_doc(spec: Any) -> Any:
    """Turn ("long", spec) markers into long strings."""
    if isinstance(spec, tuple) and len(spec) == 2 and spec[0] == "long":
        return long_string(spec[1])
    if isinstance(spec, dict):
        return {k: build_doc(v) for k, v in spec.items()}
    if isinstance(spec, list):
        return [build_doc(v) for v in spec]
    return spec


LONG_VALUE = LONG_SPEC.map(lambda spec: ("long", spec))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=st.dictionaries(
        st.text(max_size=10),
        st.one_of(LONG_VALUE, JSONABLE, st.lists(LONG_VALUE, max_size=2)),
        min_size=1,
        max_size=6,
    ),
    pad=st.integers(0, 3),
    ensure_ascii=st.booleans(),
    slashes=st.booleans(),
    indent=st.sampled_from([None, 0, 2]),
)
def test_parse_json_span_property(
    spec: dict[str, Any], pad: int, ensure_ascii: bool, slashes: bool, indent: int | None
) -> None:
    doc = build_doc(spec)
    doc["padding"] = ["x" * 1000] * 260 if pad == 0 else long_b64(BIG, pad)
    text = json.dumps(doc, ensure_ascii=ensure_ascii, indent=indent)
    raw = (escape_slashes(text) if slashes else text).encode("utf-8")
    buf = bytearray(b"data: " + raw + b"\n")
    obj = parse_json_span(buf, 6, 6 + len(raw))
    expected = json.loads(raw)
    back = unblob(obj)
    if back != expected:  # a short message instead of two 300 kB reprs
        bad = [k for k in expected if back.get(k) != expected[k]]
        assert back == expected, f"values differ under keys {bad!r}"

    def walk(value: Any) -> Iterable[Any]:
        yield value
        if isinstance(value, dict):
            for v in value.values():
                yield from walk(v)
        elif isinstance(value, list):
            for v in value:
                yield from walk(v)

    # Strings of at least BLOB_MIN characters are Blobs; short strings stay str.
    for value in walk(obj):
        if isinstance(value, str):
            assert len(value) < g.BLOB_MIN
        if isinstance(value, g.Blob):
            assert len(blob_bytes(value).decode("utf-8")) * 12 >= g.BLOB_MIN


# =============================================================================================
# Collector + ImageSink
# =============================================================================================


def test_collector_saves_the_image(tmp_path: Path) -> None:
    sink, collector = sink_for(tmp_path)
    feed_events(collector, image_events(b64(SMALL_PNG), revised_prompt="a red square"))
    collector.verdict(False)
    assert collector.finished
    assert collector.response_id == "resp_test1"
    assert collector.revised_prompt == "a red square"
    assert sink.image is not None and sink.image.kind == "png" and sink.image.dims == (16, 16)
    assert saved_bytes(sink) == SMALL_PNG
    assert leftovers(tmp_path) == []


def test_collector_never_takes_a_partial_image(tmp_path: Path) -> None:
    sink, collector = sink_for(tmp_path)
    partials = [b64(OTHER_PNG), b64(png_bytes(4, 4))]
    feed_events(collector, image_events(None, partials=partials))
    assert not sink.has_image
    with pytest.raises(g.NoImageError):
        collector.verdict(False)
    sink.discard()
    assert_nothing_written(tmp_path)


def test_collector_final_image_wins_over_partials(tmp_path: Path) -> None:
    sink, collector = sink_for(tmp_path)
    feed_events(collector, image_events(b64(SMALL_PNG), partials=[b64(OTHER_PNG)]))
    collector.verdict(False)
    assert saved_bytes(sink) == SMALL_PNG


def test_collector_partial_then_stream_cut_is_an_error(tmp_path: Path) -> None:
    sink, collector = sink_for(tmp_path)
    events = image_events(b64(SMALL_PNG), partials=[b64(OTHER_PNG)])
    cut = [ev["type"] for ev in events].index("response.image_generation_call.partial_image")
    feed_events(collector, events[: cut + 1])
    with pytest.raises(g.GatewayError, match="ended before the image arrived"):
        collector.verdict(True)
    sink.discard()
    assert_nothing_written(tmp_path)


def test_collector_azure_generating_status_with_result_is_success(tmp_path: Path) -> None:
    sink, collector = sink_for(tmp_path)
    events = image_events(b64(SMALL_PNG), status_done="generating", include_completed_event=False)
    done = [ev for ev in events if ev["type"] == "response.output_item.done"]
    assert done[0]["item"]["status"] == "generating"
    feed_events(collector, events)
    collector.verdict(False)
    assert saved_bytes(sink) == SMALL_PNG


def test_collector_image_only_in_response_completed(tmp_path: Path) -> None:
    sink, collector = sink_for(tmp_path)
    events = without_image_done(image_events(b64(SMALL_PNG)))
    assert not any(ev["type"] == "response.output_item.done" for ev in events)
    feed_events(collector, events[:-1])
    assert not sink.has_image
    feed_events(collector, events[-1:])
    collector.verdict(False)
    assert saved_bytes(sink) == SMALL_PNG


def test_collector_completed_with_empty_output_after_item_done(tmp_path: Path) -> None:
    sink, collector = sink_for(tmp_path)
    events = image_events(b64(SMALL_PNG), final_output=False)
    assert events[-1]["response"]["output"] == []
    feed_events(collector, events)
    collector.verdict(False)
    assert saved_bytes(sink) == SMALL_PNG


def test_collector_image_with_a_message_and_reasoning(tmp_path: Path) -> None:
    sink, collector = sink_for(tmp_path)
    feed_events(collector, image_events(b64(SMALL_PNG), reasoning=True, message="Here it is."))
    collector.verdict(False)
    assert saved_bytes(sink) == SMALL_PNG


def test_collector_json_response_object(tmp_path: Path) -> None:
    sink, collector = sink_for(tmp_path)
    handle_response(
        collector,
        response_obj([message_item("ok"), image_item(b64(SMALL_PNG))], resp_id="resp_json"),
    )
    collector.verdict(False)
    assert collector.response_id == "resp_json"
    assert saved_bytes(sink) == SMALL_PNG


def stream_error(err: dict[str, Any]) -> list[dict[str, Any]]:
    """created + in_progress + image call started, then ``err``."""
    head = image_events(None)[:5]
    return [*head, err]


ERROR_CASES = [
    pytest.param(
        failed_events("server_error", "The server had an error processing your request."),
        g.GatewayError,
        "The server had an error processing your request.",
        id="response.failed",
    ),
    pytest.param(
        failed_events("moderation_blocked", "Your request was rejected by the safety system."),
        g.NoImageError,
        "Your request was rejected by the safety system.",
        id="response.failed-moderation",
    ),
    pytest.param(
        incomplete_events("max_output_tokens", started_image=True),
        g.GatewayError,
        "max_output_tokens",
        id="response.incomplete",
    ),
    pytest.param(
        stream_error(error_event("moderation_blocked", "Blocked by moderation, flat.")),
        g.NoImageError,
        "Blocked by moderation, flat.",
        id="error-flat-moderation",
    ),
    pytest.param(
        stream_error(error_event("moderation_blocked", "Blocked by moderation, nested.", True)),
        g.NoImageError,
        "Blocked by moderation, nested.",
        id="error-nested-moderation",
    ),
    pytest.param(
        stream_error(error_event("server_error", "Upstream exploded, flat.", type_="server_error")),
        g.GatewayError,
        "Upstream exploded, flat.",
        id="error-flat",
    ),
    pytest.param(
        stream_error(
            error_event("rate_limit_exceeded", "Slow down, nested.", True, type_="requests")
        ),
        g.GatewayError,
        "Slow down, nested.",
        id="error-nested",
    ),
    pytest.param(
        stream_error(
            {
                "type": "response.output_item.done",
                "output_index": 0,
                "item": {
                    "id": "ig_1",
                    "type": "image_generation_call",
                    "status": "failed",
                    "result": None,
                    "error": {"code": "moderation_blocked", "message": "Item blocked."},
                },
            }
        ),
        g.NoImageError,
        "Item blocked.",
        id="item-failed-moderation",
    ),
]


@pytest.mark.parametrize(("events", "error", "message"), ERROR_CASES)
def test_collector_stream_errors(
    tmp_path: Path, events: list[dict[str, Any]], error: type[Exception], message: str
) -> None:
    sink, collector = sink_for(tmp_path)
    feed_events(collector, events)
    assert collector.finished or events[-1]["type"] == "response.output_item.done"
    with pytest.raises(error) as info:
        collector.verdict(False)
    assert type(info.value) is error
    assert message in str(info.value)
    sink.discard()
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize(("events", "error", "message"), ERROR_CASES)
def test_collector_stream_errors_through_sse(
    tmp_path: Path, events: list[dict[str, Any]], error: type[Exception], message: str
) -> None:
    sink, collector = sink_for(tmp_path)
    feed_sse(collector, format_sse(events, crlf=True, comments=True), chunk_size=5)
    with pytest.raises(error) as info:
        collector.verdict(not collector.finished)
    assert type(info.value) is error
    assert message in str(info.value)
    sink.discard()
    assert_nothing_written(tmp_path)


def test_collector_text_only_answer(tmp_path: Path) -> None:
    sink, collector = sink_for(tmp_path)
    text = "I can't create that image, but here is a description: a quiet harbour."
    feed_events(collector, text_only_events(text))
    with pytest.raises(g.NoImageError) as info:
        collector.verdict(False)
    assert text in str(info.value)
    assert_nothing_written(tmp_path)


def _bad_results() -> list[Any]:
    png = png_bytes(64, 64, noise=True)
    good = b64(png)
    return [
        pytest.param(good[: len(good) // 2], id="truncated-base64"),
        pytest.param(good[: len(good) // 4 * 4 - 3], id="truncated-base64-mid-symbol"),
        pytest.param(good[:100] + "..." + good[-100:], id="corrupt-base64-dots"),
        pytest.param(good[:100] + "!@#$" + good[100:], id="corrupt-base64-symbols"),
        pytest.param(good[:-8] + "====" + good[-4:], id="corrupt-base64-padding"),
        pytest.param(b64(truncated_png(png)), id="truncated-png"),
        pytest.param(b64(truncated_jpeg(jpeg_bytes(64, 48))), id="truncated-jpeg"),
        pytest.param(b64(b"not an image at all, just text" * 10), id="not-an-image"),
    ]


@pytest.mark.parametrize("result", _bad_results())
def test_collector_bad_results_never_saved(tmp_path: Path, result: str) -> None:
    sink, collector = sink_for(tmp_path)
    feed_events(collector, image_events(result))
    assert not sink.has_image
    with pytest.raises(g.GatewayError) as info:
        collector.verdict(False)
    assert type(info.value) is g.GatewayError
    sink.discard()
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("result", _bad_results())
def test_collector_bad_results_via_blob_path_never_saved(tmp_path: Path, result: str) -> None:
    # The same faults inside a payload big enough to take the Blob path.
    sink, collector = sink_for(tmp_path)
    events = image_events(result, revised_prompt="p" * BIG)
    feed_sse(collector, format_sse(events, done=True), chunk_size=100_000)
    with pytest.raises(g.GatewayError) as info:
        collector.verdict(not collector.finished)
    assert type(info.value) is g.GatewayError
    sink.discard()
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("chunk_size", [7, 4096, None])
@pytest.mark.parametrize("slashes", [False, True], ids=["plain", "escaped-slashes"])
def test_collector_big_image_through_sse_blob_path(
    tmp_path: Path, chunk_size: int | None, slashes: bool
) -> None:
    png = png_bytes(300, 300, noise=True)
    data = b64(png)
    assert len(data) > BIG and "/" in data
    events = [dumps(ev, slashes=slashes) for ev in image_events(data, partials=[b64(OTHER_PNG)])]
    stream = format_sse(events, crlf=True, keepalive=True)
    assert (b"\\/" in stream) is slashes
    sink, collector = sink_for(tmp_path)
    feed_sse(collector, stream, chunk_size)
    collector.verdict(not collector.finished)
    assert saved_bytes(sink) == png
    assert leftovers(tmp_path) == []


# =============================================================================================
# The real recordings
# =============================================================================================


def test_recorded_jpeg_response(tmp_path: Path) -> None:
    resp = recorded_jpeg_response()
    sink, collector = sink_for(tmp_path, "out.jpg")
    handle_response(collector, resp)
    collector.verdict(False)
    assert collector.response_id == resp["id"] and resp["id"].startswith("resp_")
    data = saved_bytes(sink)
    assert len(data) == 140_908
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
    assert data == base64.b64decode(resp["output"][1]["result"])
    with open(sink.out, "rb") as f:
        assert g.image_dimensions(f, "jpeg") == (1536, 1024)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("slashes", [False, True], ids=["plain", "escaped-slashes"])
def test_recorded_jpeg_response_as_json_body_and_as_stream(tmp_path: Path, slashes: bool) -> None:
    resp = recorded_jpeg_response()
    expected = base64.b64decode(resp["output"][1]["result"])
    raw = dumps(resp, slashes=slashes).encode()
    sink, collector = sink_for(tmp_path / "body", "out.jpg")
    handle_response(collector, parse_json_span(raw, 0, len(raw)))
    collector.verdict(False)
    assert saved_bytes(sink) == expected
    # the same response as the final event of a stream, with a big padding so it takes the
    # Blob path
    padded = {**resp, "instructions": "x" * BIG}
    stream = format_sse([dumps({"type": "response.completed", "response": padded}, slashes=True)])
    sink, collector = sink_for(tmp_path / "stream", "out.jpg")
    feed_sse(collector, stream, chunk_size=65_536)
    collector.verdict(not collector.finished)
    assert saved_bytes(sink) == expected


def test_recorded_stream_truncated_base64_is_never_written(tmp_path: Path) -> None:
    events = recorded_stream_events()
    resp_id = events[0]["response"]["id"]
    assert resp_id.startswith("resp_")
    sink, collector = sink_for(tmp_path)
    feed_events(collector, events)
    assert collector.response_id == resp_id
    assert collector.finished and not sink.has_image
    with pytest.raises(g.GatewayError) as info:
        collector.verdict(False)
    assert type(info.value) is g.GatewayError
    sink.discard()
    assert_nothing_written(tmp_path)


def recorded_with(result: str, partial: str) -> list[dict[str, Any]]:
    """The recorded events with the truncated base64 replaced (item, partial and final)."""
    events: list[dict[str, Any]] = json.loads(json.dumps(recorded_stream_events()))
    replaced = 0
    for ev in events:
        if "partial_image_b64" in ev:
            ev["partial_image_b64"] = partial
            replaced += 1
        items = [ev.get("item")] + list((ev.get("response") or {}).get("output") or [])
        for item in items:
            if isinstance(item, dict) and item.get("type") == "image_generation_call":
                if item.get("result"):
                    item["result"] = result
                    item["output_format"] = "png"
                    replaced += 1
    assert replaced == 3  # partial, output_item.done, response.completed
    return events


def test_recorded_stream_with_a_real_png(tmp_path: Path) -> None:
    events = recorded_with(b64(SMALL_PNG), b64(OTHER_PNG))
    sink, collector = sink_for(tmp_path)
    feed_events(collector, events)
    collector.verdict(False)
    assert collector.response_id == events[0]["response"]["id"]
    assert saved_bytes(sink) == SMALL_PNG
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("chunk_size", [1, 1000])
def test_recorded_stream_with_a_real_png_as_sse(tmp_path: Path, chunk_size: int) -> None:
    events = recorded_with(b64(SMALL_PNG), b64(OTHER_PNG))
    stream = format_sse([dumps(ev, slashes=True) for ev in events], crlf=True, done=True)
    sink, collector = sink_for(tmp_path)
    feed_sse(collector, stream, chunk_size)
    collector.verdict(not collector.finished)
    assert collector.response_id == events[0]["response"]["id"]
    assert saved_bytes(sink) == SMALL_PNG


# =============================================================================================
# End to end: the script as a subprocess against the loopback gateway
# =============================================================================================


def run_ok(
    gateway: Gateway, env: dict[str, str], out: Path, *extra: str, stream: bool = True
) -> None:
    args = ["--prompt", "a test image", "--out", str(out), "--timeout", "60", *extra]
    proc = run_cli(args, env)
    assert proc.returncode == 0, (proc.stdout, proc.stderr, gateway.dump())
    assert proc.stdout.strip() == str(out)
    posts = gateway.posts()
    assert len(posts) == 1, gateway.dump()
    assert posts[0].json is not None and posts[0].json["stream"] is stream
    assert leftovers(out.parent) == []


SSE_VARIANTS = [
    pytest.param({"chunk_size": 1}, id="chunk-size-1"),
    pytest.param({"crlf": True, "comments": True, "keepalive": True, "done": True}, id="noisy"),
    pytest.param({"event_lines": False}, id="no-event-lines"),
    pytest.param({"chunked": False}, id="close-delimited"),
    pytest.param({"split_at": list(range(0, 20_000, 13)), "crlf": True}, id="split-13"),
]


@pytest.mark.parametrize("variant", SSE_VARIANTS)
def test_e2e_sse_variants(
    gateway: Gateway, env: dict[str, str], tmp_path: Path, variant: dict[str, Any]
) -> None:
    gateway.enqueue(sse_reply(image_events(b64(SMALL_PNG), partials=[b64(OTHER_PNG)]), **variant))
    out = tmp_path / "img" / "out.png"
    run_ok(gateway, env, out)
    assert out.read_bytes() == SMALL_PNG


def test_e2e_json_body_answered_to_a_streaming_request(
    gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> None:
    gateway.enqueue(json_reply(response_obj([image_item(b64(SMALL_PNG))])))
    out = tmp_path / "out.png"
    run_ok(gateway, env, out)
    assert out.read_bytes() == SMALL_PNG


def test_e2e_no_stream_json(gateway: Gateway, env: dict[str, str], tmp_path: Path) -> None:
    gateway.enqueue(json_reply(response_obj([message_item("ok"), image_item(b64(SMALL_PNG))])))
    out = tmp_path / "out.png"
    run_ok(gateway, env, out, "--no-stream", stream=False)
    assert out.read_bytes() == SMALL_PNG


def test_e2e_large_image_with_escaped_slashes_and_splits_inside_base64(
    gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> None:
    png = png_bytes(1400, 1400, noise=True)
    events = [dumps(ev, slashes=True) for ev in image_events(b64(png))]
    stream = format_sse(events)
    first = stream.index(b'"result":"') + len(b'"result":"')
    last = stream.index(b'"', first)
    escape = stream.index(b"\\/", first)
    assert first < escape < last and last - first > 7_000_000
    # Inside the base64 of the first copy: right after the opening quote, between a backslash
    # and its slash, in the middle, one byte before the closing quote; and the same in the
    # second copy (response.completed).
    second = stream.index(b'"result":"', last) + len(b'"result":"')
    points = [
        first + 1,
        escape + 1,
        (first + last) // 2,
        last - 1,
        last + 1,
        second + 3,
        stream.index(b"\\/", second) + 1,
        stream.index(b"\\/", second + 3_000_000) + 1,
    ]
    assert all(stream[p - 1 : p + 1] == b"\\/" for p in (points[1], points[6], points[7]))
    gateway.enqueue(sse_reply(events, split_at=points))
    out = tmp_path / "big.png"
    run_ok(gateway, env, out, "--idle-timeout", "30")
    assert out.read_bytes() == png


def test_a_unicode_escape_split_across_two_reads_inside_a_long_string() -> None:
    # the string is a Blob by the time the escape arrives; a cut anywhere inside "\u00e9" or a
    # surrogate pair must neither drop nor garble the character
    for escape, char in (("\\u00e9", "é"), ("\\ud83d\\ude00", "😀"), ("\\\\", "\\")):
        value_raw = "A" * (g.BLOB_MIN + 10) + escape + "B" * 10
        raw = ('{"result":"' + value_raw + '"}').encode("ascii")
        at = raw.index(escape.encode("ascii"))
        for cut in range(at, at + len(escape) + 1):
            spool = g.JsonSpool()
            spool.feed(raw[:cut])
            spool.feed(raw[cut:])
            value = spool.parse()["result"]
            assert isinstance(value, g.Blob), cut
            expected = "A" * (g.BLOB_MIN + 10) + char + "B" * 10
            assert blob_bytes(value) == expected.encode("utf-8"), (escape, cut - at)
            spool.close()


def test_a_stream_line_that_is_not_data_is_capped_at_max_event_bytes() -> None:
    # an event name, or a line without a colon, is kept while it is read: at most the cap
    # (comments and id lines are skipped, never kept)
    for field in (b"event: ", b""):
        at_cap = field + b"x" * g.MAX_EVENT_BYTES
        g.SSEParser(lambda event, data: None).feed(at_cap + b"\n\n")  # at the cap: read
        parser = g.SSEParser(lambda event, data: None)
        with pytest.raises(g.GatewayError, match="stream line of more than"):
            for start in range(0, len(at_cap) + 1, 1 << 20):  # one past it, in 1 MB reads
                parser.feed((at_cap + b"x")[start : start + (1 << 20)])


def test_one_event_holds_at_most_max_long_strings() -> None:
    value = '"' + "A" * g.BLOB_MIN + '"'
    for count, ok in ((g.MAX_LONG_STRINGS, True), (g.MAX_LONG_STRINGS + 1, False)):
        raw = ("[" + ",".join([value] * count) + "]").encode()
        spool = g.JsonSpool()
        try:
            if ok:
                spool.feed(raw)
                assert len(spool.parse()) == count
            else:
                with pytest.raises(g.GatewayError, match=f"more than {g.MAX_LONG_STRINGS} long"):
                    spool.feed(raw)
        finally:
            spool.close()


def test_bare_image_links_are_searched_in_the_first_max_link_search_characters() -> None:
    url = "https://img.example/a.png"
    inside = "x " * ((g.MAX_LINK_SEARCH - 100) // 2) + url  # ends just inside the window
    assert g.image_links(inside) == [url]
    outside = "x" * g.MAX_LINK_SEARCH + " " + url
    assert g.image_links(outside) == []
    assert g.image_links(outside.replace(url, f"![image]({url})")) == [url]  # markdown: anywhere


# =============================================================================================
# Odd lines and odd events
# =============================================================================================


def test_an_event_line_without_a_colon_clears_the_event_name() -> None:
    # "event" alone is the field with an empty value (the SSE rules for a line without a colon)
    assert parse_chunks([b"event: named\nevent\ndata: 1\n\n"]) == [("", b"1")]
    assert parse_chunks([b"event: named\r\nevent\r\ndata: 2\r\n\r\n"]) == [("", b"2")]


def test_a_cr_inside_a_line_stays_data_wherever_the_reads_split() -> None:
    # only CRLF and LF end a line here; a CR held back at the end of one read (it may be the
    # first half of a CRLF) goes back into the line when the next read does not start with LF
    stream = b'data: {"a":\r1}\n\ndata: 2\n\n'
    want = [("", b'{"a":\r1}'), ("", b"2")]
    for cut in range(1, len(stream)):
        assert parse_chunks([stream[:cut], stream[cut:]]) == want, cut
    at = stream.index(b"\r") + 1
    assert parse_chunks([stream[:at], b"", stream[at:]]) == want
    assert parse_chunks([stream[:at], stream[at : at + 1], stream[at + 1 :]]) == want


def test_a_literal_backslash_before_u_d83d_is_not_taken_for_a_cut_escape() -> None:
    # "\\uD83D" in JSON is a backslash and the letters uD83D, not half of a surrogate pair: a
    # read that ends right after it must not hold it back as an unfinished escape
    tail = "\\\\uD83D"
    value_raw = "A" * (g.BLOB_MIN + 10) + tail + "B" * 10
    raw = ('{"result":"' + value_raw + '"}').encode("ascii")
    cut = raw.index(tail.encode("ascii")) + len(tail)
    assert g._escape_cut(raw[:cut]) == cut
    assert g._escape_cut(raw[: cut - 7] + b"\\uD83D") == cut - 7  # a real high surrogate
    spool = g.JsonSpool()
    try:
        spool.feed(raw[:cut])
        spool.feed(raw[cut:])
        value = spool.parse()["result"]
        expected = "A" * (g.BLOB_MIN + 10) + "\\uD83D" + "B" * 10
        assert blob_bytes(value) == expected.encode("ascii")
    finally:
        spool.close()


def test_events_that_are_not_json_objects_are_counted_or_skipped(tmp_path: Path) -> None:
    sink, collector = sink_for(tmp_path)
    stream = (
        b"data: {not json\n\n"  # unreadable: counted
        b"data: [1, 2]\n\n"  # JSON, but not an event: skipped
        b'data: "text"\n\n'
    )
    feed_sse(collector, stream)
    assert (collector.unreadable, collector.events) == (1, 0)
    feed_events(collector, [{"type": "response.completed", "response": response_obj([])}])
    with pytest.raises(g.NoImageError, match=r"contained no image \(1 unreadable events\)"):
        collector.verdict(False)
    assert_nothing_written(tmp_path)


def test_unusable_response_ids_are_named_in_verbose_output(
    gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> None:
    gateway.enqueue(sse_reply(image_events(b64(SMALL_PNG), resp_id="resp with spaces")))
    out = tmp_path / "o.png"
    proc = run_cli(["--prompt", "p", "--out", str(out), "--verbose"], env)
    assert proc.returncode == 0, (proc.stderr, gateway.dump())
    assert "ignored a response id that cannot be fetched" in proc.stderr
    assert out.read_bytes() == SMALL_PNG


def test_a_resumed_stream_replayed_from_the_start_handles_each_event_once(
    gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> None:
    # a gateway that ignores starting_after and replays the stored stream from its first event:
    # the events already handled (here a preview, written once) are skipped by sequence number
    preview = b64(OTHER_PNG)
    events = image_events(b64(SMALL_PNG), partials=[preview], resp_id="resp_replay1")
    at = next(i for i, ev in enumerate(events) if ev["type"].endswith("partial_image"))
    gateway.enqueue(sse_reply(events, cut_after=at + 2))
    gateway.enqueue(sse_reply(events), path="/v1/responses/resp_replay1")
    out = tmp_path / "o.png"
    args = ["--prompt", "p", "--out", str(out), "--resumable", "--partial-images", "1"]
    proc = run_cli(args, env)
    assert proc.returncode == 0, (proc.stderr, gateway.dump())
    assert [r.method for r in gateway.requests] == ["POST", "GET"]
    assert gateway.requests[1].query["starting_after"] == [str(at + 1)]
    assert proc.stderr.count("preview 1 saved") == 1, proc.stderr
    assert out.read_bytes() == SMALL_PNG
    assert (tmp_path / "o.partial-1.png").read_bytes() == OTHER_PNG
