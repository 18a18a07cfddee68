"""Self-tests of the test gateway and image builders (plain http.client, fast)."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from tests import images
from tests.gateway import (
    Gateway,
    Recorded,
    Reply,
    close_reply,
    error_event,
    error_reply,
    failed_events,
    format_sse,
    image_events,
    incomplete_events,
    json_reply,
    raw_reply,
    recorded_jpeg_response,
    recorded_stream_events,
    sse_reply,
    stall_reply,
    text_only_events,
)

EVENTS: list[dict[str, Any]] = [
    {"type": "a", "sequence_number": 0},
    {"type": "b", "sequence_number": 1},
    {"type": "c", "sequence_number": 2},
]


def post(
    gw: Gateway, body: dict[str, Any], path: str = "/v1/responses", timeout: float = 5.0
) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=timeout)
    conn.request(
        "POST",
        path,
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer sk-test"},
    )
    return conn.getresponse()


def raw_exchange(gw: Gateway, body: bytes = b"{}") -> bytes:
    """Send one POST on a raw socket and return every byte until the server closes."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5.0) as sock:
        head = (
            f"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        sock.sendall(head.encode() + body)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out


def test_json_round_trip_and_recording() -> None:
    with Gateway() as gw:
        gw.enqueue(json_reply({"ok": True}, headers={"x-request-id": "req_1"}))
        resp = post(gw, {"model": "m", "stream": False}, path="/v1/responses?a=1&a=2&b=")
        assert resp.status == 200
        assert resp.getheader("Content-Type") == "application/json"
        assert resp.getheader("x-request-id") == "req_1"
        assert json.loads(resp.read()) == {"ok": True}
        assert gw.base_url == f"http://127.0.0.1:{gw.port}/v1"
        (rec,) = gw.posts()
        assert isinstance(rec, Recorded)
        assert (rec.method, rec.path, rec.raw_query) == ("POST", "/v1/responses", "a=1&a=2&b=")
        assert rec.query == {"a": ["1", "2"], "b": [""]}
        assert rec.headers["authorization"] == "Bearer sk-test"
        assert rec.json == {"model": "m", "stream": False}
        assert rec.body == b'{"model": "m", "stream": false}'
        assert rec.index == 0
        assert rec.t_start <= rec.t_end
        assert "json 200" in gw.dump()


def test_unqueued_path_gets_500_and_callable_and_default() -> None:
    with Gateway() as gw:
        resp = post(gw, {})
        assert resp.status == 500
        assert json.loads(resp.read())["error"]["message"] == "test gateway: no reply queued"

        seen: list[int] = []

        def reply(rec: Recorded) -> Reply:
            seen.append(rec.index)
            return error_reply(429, "slow down", code="rate_limit_exceeded")

        gw.enqueue(reply)
        gw.set_default(raw_reply(b"<html>524</html>", status=524))
        resp = post(gw, {})
        assert resp.status == 429
        assert json.loads(resp.read())["error"]["code"] == "rate_limit_exceeded"
        resp = post(gw, {})
        assert (resp.status, resp.reason) == (524, "A Timeout Occurred")
        assert resp.read() == b"<html>524</html>"
        assert seen == [1]
        assert len(gw.wait_for_requests(3, timeout=1.0)) == 3


def test_sse_crlf_chunked_7_bytes() -> None:
    with Gateway() as gw:
        gw.enqueue(sse_reply(EVENTS, crlf=True, chunk_size=7, done=True))
        gw.enqueue(sse_reply(EVENTS, crlf=True, chunk_size=7, done=True))
        expected = format_sse(EVENTS, crlf=True, done=True)
        assert expected.startswith(b'event: a\r\ndata: {"type":"a","sequence_number":0}\r\n\r\n')
        assert expected.endswith(b"data: [DONE]\r\n\r\n")

        resp = post(gw, {})
        assert resp.getheader("Content-Type") == "text/event-stream; charset=utf-8"
        assert resp.getheader("Transfer-Encoding") == "chunked"
        assert resp.read() == expected

        raw = raw_exchange(gw)
        _, _, body = raw.partition(b"\r\n\r\n")
        sizes = []
        decoded = b""
        while True:
            line, _, body = body.partition(b"\r\n")
            size = int(line, 16)
            sizes.append(size)
            if size == 0:
                break
            decoded += body[:size]
            assert body[size : size + 2] == b"\r\n"
            body = body[size + 2 :]
        assert decoded == expected
        assert sizes[:-2] == [7] * (len(sizes) - 2) and sizes[-1] == 0


def test_sse_framing_options_and_split_at() -> None:
    body = format_sse(
        [EVENTS[0], "not json\nsecond line", b"raw\n\n"],
        comments=True,
        keepalive=True,
        event_lines=False,
    ).decode()
    assert body == (
        ': ping\n\ndata: {"type":"a","sequence_number":0}\n\n'
        ': ping\n\ndata: {"type":"keepalive"}\n\ndata: not json\ndata: second line\n\n'
        ': ping\n\ndata: {"type":"keepalive"}\n\nraw\n\n'
    )
    with Gateway() as gw:
        gw.enqueue(sse_reply(EVENTS, split_at=[1, 5, 40], chunked=False))
        resp = post(gw, {})
        assert resp.getheader("Connection") == "close"
        assert resp.getheader("Content-Length") is None
        assert resp.read() == format_sse(EVENTS)


def test_cut_after_ends_early() -> None:
    with Gateway() as gw:
        gw.enqueue(sse_reply(EVENTS, cut_after=1))
        resp = post(gw, {})
        got = b""
        with pytest.raises(http.client.IncompleteRead):
            while chunk := resp.read1(65536):
                got += chunk
        assert got == format_sse(EVENTS[:1])


def test_close_reply_raises_on_client() -> None:
    with Gateway() as gw:
        gw.enqueue(close_reply(), close_reply(reset=True))
        with pytest.raises(http.client.RemoteDisconnected):
            post(gw, {})
        with pytest.raises(ConnectionError):
            post(gw, {})
        assert len(gw.posts()) == 2


def test_stall_and_prompt_shutdown() -> None:
    t0 = time.monotonic()
    with Gateway() as gw:
        gw.enqueue(stall_reply(), sse_reply(EVENTS, stall_after=2))
        with pytest.raises(socket.timeout):
            post(gw, {}, timeout=0.2)
        resp = post(gw, {}, timeout=0.3)
        got = b""
        with pytest.raises(socket.timeout):
            while chunk := resp.read1(65536):
                got += chunk
        assert got == format_sse(EVENTS[:2])
    assert time.monotonic() - t0 < 2.0


def test_delay_between_events() -> None:
    with Gateway() as gw:
        gw.enqueue(sse_reply(EVENTS, delay=0.05))
        t0 = time.monotonic()
        assert post(gw, {}).read() == format_sse(EVENTS)
        assert time.monotonic() - t0 >= 0.1


def test_tls(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with Gateway(tls=server_ctx) as gw:
        assert gw.url.startswith("https://127.0.0.1:")
        gw.enqueue(json_reply({"tls": True}))
        client_ctx = ssl.create_default_context(cafile=str(bundle))
        conn = http.client.HTTPSConnection("127.0.0.1", gw.port, context=client_ctx, timeout=5)
        conn.request("POST", "/v1/responses", body=b"{}")
        assert json.loads(conn.getresponse().read()) == {"tls": True}
        conn.close()
        # A client that does not trust the CA fails; the gateway only notes it.
        with pytest.raises(ssl.SSLError):
            bad = http.client.HTTPSConnection(
                "127.0.0.1", gw.port, context=ssl.create_default_context(), timeout=5
            )
            bad.request("GET", "/")


# --- payload builders ---------------------------------------------------------


def test_image_events_shape() -> None:
    evs = image_events("QUJD", partials=["cA==", "cQ=="])
    types = [e["type"] for e in evs]
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.image_generation_call.in_progress",
        "response.image_generation_call.generating",
        "response.image_generation_call.partial_image",
        "response.image_generation_call.partial_image",
        "response.image_generation_call.completed",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in evs] == list(range(len(evs)))
    assert "result" not in evs[2]["item"]
    assert [e["partial_image_index"] for e in evs[5:7]] == [0, 1]
    assert evs[8]["item"]["result"] == "QUJD"
    assert evs[-1]["response"]["output"][0]["result"] == "QUJD"
    quirky = image_events(
        "QUJD", status_done="generating", include_completed_event=False, final_output=False
    )
    assert quirky[-2]["item"]["status"] == "generating"
    assert quirky[-1]["response"]["output"] == []
    full = image_events("QUJD", reasoning=True, message="here you go")
    assert [i["type"] for i in full[-1]["response"]["output"]] == [
        "reasoning",
        "image_generation_call",
        "message",
    ]
    assert text_only_events("no")[-1]["response"]["output"][0]["type"] == "message"
    assert failed_events("server_error", "boom")[-1]["response"]["error"]["code"] == "server_error"
    assert incomplete_events("content_filter")[-1]["type"] == "response.incomplete"
    assert error_event("c", "m")["code"] == "c"
    assert error_event("c", "m", nested=True)["error"]["code"] == "c"


def test_recorded_fixtures_load() -> None:
    evs = recorded_stream_events()
    assert len(evs) == 16
    assert [e["sequence_number"] for e in evs] == list(range(16))
    resp = recorded_jpeg_response()
    item = resp["output"][1]
    assert item["type"] == "image_generation_call"
    jpeg = base64.b64decode(item["result"])
    assert jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"


# --- images ---------------------------------------------------------------------


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, out = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        out.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return out


def test_png() -> None:
    for alpha in (False, True):
        data = images.png_bytes(13, 7, alpha=alpha)
        chunks = png_chunks(data)
        assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
        width, height, depth, colour = struct.unpack(">IIBB", chunks[0][1][:10])
        assert (width, height, depth, colour) == (13, 7, 8, 6 if alpha else 2)
        assert png_chunks(images.truncated_png(data))[-1][0] == b"IDAT"
    noisy = images.png_bytes(64, 64, noise=True, seed=1)
    assert len(noisy) > 64 * 64 * 3
    assert noisy == images.png_bytes(64, 64, noise=True, seed=1)
    assert noisy != images.png_bytes(64, 64, noise=True, seed=2)


def test_jpeg() -> None:
    data = images.jpeg_bytes(300, 200)
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
    sof = data.index(b"\xff\xc0")
    height, width = struct.unpack(">HH", data[sof + 5 : sof + 9])
    assert (width, height) == (300, 200)
    assert images.truncated_jpeg(data) == data[:-2]


def test_webp_gif_svg_b64() -> None:
    for kind in ("VP8X", "VP8L", "VP8"):
        data = images.webp_bytes(300, 200, kind=kind)
        assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
        assert struct.unpack("<I", data[4:8])[0] == len(data) - 8
    vp8x = images.webp_bytes(300, 200, kind="VP8X")
    assert int.from_bytes(vp8x[24:27], "little") + 1 == 300
    assert int.from_bytes(vp8x[27:30], "little") + 1 == 200
    vp8l = images.webp_bytes(300, 200, kind="VP8L")
    bits = int.from_bytes(vp8l[21:25], "little")
    assert vp8l[20] == 0x2F and (bits & 0x3FFF) + 1 == 300 and ((bits >> 14) & 0x3FFF) + 1 == 200
    vp8 = images.webp_bytes(300, 200, kind="VP8")
    assert vp8[23:26] == b"\x9d\x01\x2a"
    assert struct.unpack("<HH", vp8[26:30]) == (300, 200)
    gif = images.gif_bytes(300, 200)
    assert gif[:6] == b"GIF89a" and struct.unpack("<HH", gif[6:10]) == (300, 200)
    assert gif[-1:] == b"\x3b"
    assert b'width="300"' in images.svg_bytes(300, 200)
    assert images.b64(b"\x00\xff") == "AP8="
