"""The minimal HTTP/1.1 client: ``Response``, ``Connection``, ``open_connection``.

Every answer comes from a raw loopback TCP server written here (``Server``): it reads the
request, then plays a script of exact bytes, pauses and gates, then closes (or waits for the
client to close). Framing edge cases whose outcome depends on exactly where ``recv`` cuts the
bytes are also replayed through ``ScriptedSocket``, a stand-in whose ``recv`` returns exactly
the pieces it was given, so every split position is tested deterministically.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Union

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import generate_gateway_image as g

CLIENT_TIMEOUT = 5.0  # a client that blocks when it should not fails with socket.timeout
REQUEST = b"GET /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
OK_CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)

# A script step: bytes are written with one sendall, a float is a pause in seconds, an Event
# is waited for (the test sets it to let the server go on).
Step = Union[bytes, float, threading.Event]


# --- helpers ------------------------------------------------------------------------------------


def read_request(conn: socket.socket) -> bytes:
    """The request head plus a Content-Length body, as the raw bytes that arrived."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = conn.recv(65536)
        if not piece:
            return data
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        piece = conn.recv(65536)
        if not piece:
            break
        body += piece
    return head + b"\r\n\r\n" + body


class Server:
    """One-connection raw TCP server on 127.0.0.1: reads the request, plays ``script``."""

    def __init__(self, script: Sequence[Step], *, keep_open: bool = False) -> None:
        self.script = list(script)
        self.keep_open = keep_open
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.port: int = self.listener.getsockname()[1]
        self.request = b""
        self.sent = threading.Event()  # the whole script was written
        self.client_closed = threading.Event()  # keep_open: the client closed its end
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(10)
        self.listener.close()

    def _run(self) -> None:
        try:
            conn, _ = self.listener.accept()
            with conn:
                conn.settimeout(10)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.request = read_request(conn)
                for step in self.script:
                    if isinstance(step, bytes):
                        conn.sendall(step)
                    elif isinstance(step, float):
                        time.sleep(step)
                    else:
                        step.wait(10)
                self.sent.set()
                if self.keep_open:  # hold the connection until the client closes it
                    while conn.recv(65536):
                        pass
                    self.client_closed.set()
        except (OSError, ValueError) as exc:
            self.error = exc


@contextlib.contextmanager
def served(
    script: Sequence[Step], *, keep_open: bool = False
) -> Iterator[tuple[socket.socket, Server]]:
    """A client socket connected to a ``Server`` playing ``script``; the request is sent."""
    with Server(script, keep_open=keep_open) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=CLIENT_TIMEOUT)
        try:
            sock.sendall(REQUEST)
            yield sock, server
        finally:
            sock.close()


def wait_buffered(sock: socket.socket, size: int) -> None:
    """Wait until ``size`` bytes sit in the socket's receive buffer (so one recv gets them)."""
    for _ in range(500):
        if len(sock.recv(size + 1, socket.MSG_PEEK)) >= size:
            return
        time.sleep(0.01)
    raise AssertionError(f"{size} bytes never arrived")


def read_all(resp: g.Response, n: int | Sequence[int]) -> bytes:
    """read1 until b"" (n, or cycling through a list of sizes); checks each piece's size."""
    sizes = [n] if isinstance(n, int) else list(n)
    out = bytearray()
    for i in range(1_000_000):
        size = sizes[i % len(sizes)]
        piece = resp.read1(size)
        assert len(piece) <= size
        if not piece:
            assert resp.read1(size) == b"", "the body ended, then went on"
            return bytes(out)
        out += piece
    raise AssertionError("read1 never returned b''")


def read_until_error(resp: g.Response, n: int) -> tuple[bytes, BaseException]:
    out = bytearray()
    for _ in range(1_000_000):
        try:
            piece = resp.read1(n)
        except Exception as exc:  # the test inspects what was raised
            return bytes(out), exc
        if not piece:
            raise AssertionError(f"the body ended normally after {bytes(out)!r}")
        out += piece
    raise AssertionError("read1 never raised")


class WouldBlock(AssertionError):
    """ScriptedSocket ran out of pieces in a test where the client must not ask for more."""


class ScriptedSocket:
    """recv() returns the next piece (never more than asked for), then b"" (or WouldBlock)."""

    def __init__(self, pieces: Sequence[bytes], *, then_block: bool = False) -> None:
        self.pieces = [p for p in pieces if p]
        self.then_block = then_block

    def recv(self, n: int) -> bytes:
        if not self.pieces:
            if self.then_block:
                raise WouldBlock("the client waited for data it did not need")
            return b""
        piece = self.pieces.pop(0)
        if len(piece) > n:
            self.pieces.insert(0, piece[n:])
            piece = piece[:n]
        return piece


def split_at(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


def chunked(body: bytes, sizes: Sequence[int], *, upper: bool = False, ext: bool = False) -> bytes:
    """``body`` as chunked transfer encoding with chunk sizes cycling through ``sizes``."""
    out = bytearray()
    pos = 0
    i = 0
    while pos < len(body):
        data = body[pos : pos + sizes[i % len(sizes)]]
        pos += len(data)
        i += 1
        out += format(len(data), "X" if upper else "x").encode()
        out += b";name=value" if ext else b""
        out += b"\r\n" + data + b"\r\n"
    return bytes(out) + b"0\r\n\r\n"


# --- status line and headers --------------------------------------------------------------------


def test_status_reason_and_headers() -> None:
    head = (
        b"HTTP/1.1 429 Too Many Requests\r\n"
        b"Content-Type: application/json\r\n"
        b"retry-after:7\r\n"
        b"X-Request-Id:   abc-123  \r\n"
        b"Location: http://127.0.0.1:1/a?b=c:d\r\n"
        b"Set-Cookie: a=1\r\n"
        b"set-cookie: b=2\r\n"
        b"SET-COOKIE: c=3\r\n"
        b"Content-Length: 2\r\n\r\n{}"
    )
    with served([head]) as (sock, _):
        resp = g.Response(sock)
        assert resp.status == 429
        assert resp.reason == "Too Many Requests"
        assert resp.get("content-type") == "application/json"
        assert resp.getheader("CONTENT-TYPE") == "application/json"
        assert resp.getheader("Retry-After") == "7"
        assert resp.get("x-request-id") == "abc-123"
        assert resp.get("location") == "http://127.0.0.1:1/a?b=c:d"
        assert resp.getheader("Set-Cookie") == "a=1, b=2, c=3"
        assert resp.get("x-missing") is None
        assert resp.getheader("x-missing", "fallback") == "fallback"
        assert read_all(resp, 65536) == b"{}"


@pytest.mark.parametrize(
    ("status_line", "status", "reason"),
    [
        (b"HTTP/1.1 200 OK", 200, "OK"),
        (b"HTTP/1.1 200", 200, ""),
        (b"HTTP/1.0 502 Bad Gateway", 502, "Bad Gateway"),
        (
            b"HTTP/1.1 520 Web Server Returned an Unknown Error",
            520,
            "Web Server Returned an Unknown Error",
        ),
    ],
)
def test_status_line_variants(status_line: bytes, status: int, reason: str) -> None:
    with served([status_line + b"\r\nContent-Length: 0\r\n\r\n"]) as (sock, _):
        resp = g.Response(sock)
        assert (resp.status, resp.reason) == (status, reason)
        assert read_all(resp, 100) == b""


def test_the_head_split_into_many_writes() -> None:
    head = b"HTTP/1.1 201 Created\r\nX-A: 1\r\nContent-Length: 5\r\n\r\n"
    script: list[Step] = []
    for i in range(0, len(head), 7):
        script += [head[i : i + 7], 0.005]
    with served([*script, b"hello"]) as (sock, _):
        resp = g.Response(sock)
        assert (resp.status, resp.get("x-a")) == (201, "1")
        assert read_all(resp, 3) == b"hello"


# --- 1xx interim answers ------------------------------------------------------------------------


@pytest.mark.parametrize("separate_writes", [False, True])
def test_100_continue_then_the_real_answer(separate_writes: bool) -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    final = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{"a":1}'
    script: list[Step] = [interim, 0.02, final] if separate_writes else [interim + final]
    with served(script) as (sock, _):
        resp = g.Response(sock)
        assert (resp.status, resp.reason) == (200, "OK")
        assert resp.get("content-type") == "application/json"
        assert read_all(resp, 65536) == b'{"a":1}'


def test_several_interim_answers_do_not_leak_headers() -> None:
    script: list[Step] = [
        b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
        OK_CHUNKED + b"3\r\nabc\r\n0\r\n\r\n",
    ]
    with served(script) as (sock, _):
        resp = g.Response(sock)
        assert resp.status == 200
        assert resp.get("link") is None
        assert resp.get("x-interim") is None
        assert read_all(resp, 65536) == b"abc"


# --- Content-Length bodies ----------------------------------------------------------------------

BIG_BODY = bytes(range(256)) * 700  # 179,200 bytes: several recv()s at any n


@pytest.mark.parametrize("n", [1, 7, 64 * 1024])
@pytest.mark.parametrize("body", [b"hello world", BIG_BODY], ids=["small", "big"])
def test_content_length_body(body: bytes, n: int) -> None:
    if n == 1 and len(body) > 1000:
        body = body[:5000]  # one byte per call: keep the test quick
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    with served([head, body[: len(body) // 3], 0.01, body[len(body) // 3 :]]) as (sock, _):
        resp = g.Response(sock)
        assert read_all(resp, n) == body


def test_content_length_body_ends_without_waiting_for_close() -> None:
    """The server keeps the connection open: the body is complete at Content-Length bytes."""
    with served([b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"], keep_open=True) as (
        sock,
        _,
    ):
        resp = g.Response(sock)
        assert read_all(resp, 65536) == b"hello"  # a blocking read would time out


def test_content_length_ignores_bytes_past_the_body() -> None:
    with served([b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloGARBAGE"]) as (sock, _):
        resp = g.Response(sock)
        assert read_all(resp, 3) == b"hello"


def test_content_length_zero() -> None:
    with served([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"], keep_open=True) as (sock, _):
        assert read_all(g.Response(sock), 10) == b""


@pytest.mark.parametrize("n", [1, 7, 64 * 1024])
def test_content_length_connection_closes_early(n: int) -> None:
    with served([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello"]) as (sock, _):
        got, exc = read_until_error(g.Response(sock), n)
    assert got == b"hello"
    assert isinstance(exc, g.ProtocolError)
    assert "5 bytes early" in str(exc)


def test_content_length_closed_before_any_body_byte() -> None:
    with served([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"]) as (sock, _):
        got, exc = read_until_error(g.Response(sock), 100)
    assert got == b""
    assert isinstance(exc, g.ProtocolError)


@pytest.mark.parametrize("value", [b"abc", b"\xb2", b"\xb9\xb9", b"-1"])
def test_unusable_content_length_is_not_a_crash(value: bytes) -> None:
    """A Content-Length that is not a decimal number: either a ProtocolError or the body up to
    the close; never a bare ValueError (latin-1 '\\xb2' is '²', which str.isdigit() accepts)."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: " + value + b"\r\n\r\n"
    with served([head + b"hello"]) as (sock, _):
        try:
            body = read_all(g.Response(sock), 100)
        except g.ProtocolError:
            return
    assert body == b"hello"


# --- close-delimited bodies ---------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 7, 64 * 1024])
def test_close_delimited_body(n: int) -> None:
    parts = [b"data: one\n\n", b"data: two\n\n", b"data: three\n\n"]
    script: list[Step] = [b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"]
    for part in parts:
        script += [part, 0.01]
    with served(script) as (sock, _):
        resp = g.Response(sock)
        assert read_all(resp, n) == b"".join(parts)
        assert resp.read1(n) == b""


def test_http10_answer_without_length_reads_to_close() -> None:
    with served([b"HTTP/1.0 200 OK\r\n\r\n", BIG_BODY]) as (sock, _):
        assert read_all(g.Response(sock), 65536) == BIG_BODY


# --- read1 returns what has arrived, and only blocks when nothing has -----------------------


@pytest.mark.parametrize(
    ("head", "first", "rest"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n", b"hello", b" world"),
        (b"HTTP/1.1 200 OK\r\n\r\n", b"hello", b" world"),
        (OK_CHUNKED, b"5\r\nhello\r\n", b"6\r\n world\r\n0\r\n\r\n"),
        (OK_CHUNKED, b"3\r\nhel\r\n2\r\nlo\r\n", b"6\r\n world\r\n0\r\n\r\n"),
        (OK_CHUNKED, b"5\r\nhello", b"\r\n6\r\n world\r\n0\r\n\r\n"),
        (OK_CHUNKED, b"b\r\nhello", b" world\r\n0\r\n\r\n"),
    ],
    ids=["length", "close", "chunked", "two-chunks", "chunk-no-crlf", "half-chunk"],
)
def test_read1_returns_what_arrived_without_waiting_for_n(
    head: bytes, first: bytes, rest: bytes
) -> None:
    go = threading.Event()
    with served([head, 0.01, first, go, rest]) as (sock, _):
        try:
            resp = g.Response(sock)
            got = bytearray()
            while len(got) < 5:  # the server holds the rest back until go is set
                piece = resp.read1(65536)
                assert piece, "the body ended early"
                got += piece
            assert got == b"hello"
        finally:
            go.set()
        assert read_all(resp, 65536) == b" world"


@pytest.mark.parametrize(
    ("head", "body"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", b"hello"),
        (b"HTTP/1.1 200 OK\r\n\r\n", b"hello"),
        (OK_CHUNKED, b"5\r\nhello\r\n0\r\n\r\n"),
    ],
    ids=["length", "close", "chunked"],
)
def test_read1_zero_returns_nothing_and_keeps_the_body(head: bytes, body: bytes) -> None:
    """read1(0) is "no bytes please", not end of file (recv(0) returns b"" on any socket)."""
    go = threading.Event()
    with served([head, go, body]) as (sock, _):
        try:
            resp = g.Response(sock)
            assert resp.read1(0) == b""
        finally:
            go.set()
        assert read_all(resp, 65536) == b"hello"


# --- chunked bodies -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "wire",
    [
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        b'5;foo=bar\r\nhello\r\n6;a=1;b="x;y"\r\n world\r\n0;last\r\n\r\n',
        b"5 ;foo=bar\r\nhello\r\n6\t\r\n world\r\n0\r\n\r\n",
        b"B\r\nhello world\r\n0\r\n\r\n",
        b"b\r\nhello world\r\n0\r\n\r\n",
        b"0000B\r\nhello world\r\n000\r\n\r\n",
        b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: 123\r\nX-Other: 4\r\n\r\n",
    ],
    ids=[
        "plain",
        "extensions",
        "whitespace",
        "upper-hex",
        "lower-hex",
        "leading-zeros",
        "trailers",
    ],
)
@pytest.mark.parametrize("n", [1, 7, 64 * 1024])
def test_chunked_body(wire: bytes, n: int) -> None:
    with served([OK_CHUNKED + wire], keep_open=True) as (sock, _):
        resp = g.Response(sock)
        assert read_all(resp, n) == b"hello world"  # also: no wait for the close after 0


@pytest.mark.parametrize("encoding", [b"chunked", b"CHUNKED", b"Chunked", b"gzip, chunked"])
def test_transfer_encoding_names(encoding: bytes) -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + encoding + b"\r\nContent-Length: 99\r\n\r\n"
    with served([head + b"3\r\nabc\r\n0\r\n\r\n"], keep_open=True) as (sock, _):
        assert read_all(g.Response(sock), 65536) == b"abc"  # chunked wins over Content-Length


def test_big_chunks_across_many_recvs() -> None:
    wire = chunked(BIG_BODY, [70_000, 1, 100_000])
    with served([OK_CHUNKED, wire[:50_000], 0.01, wire[50_000:]]) as (sock, _):
        assert read_all(g.Response(sock), [65536, 3, 100_000]) == BIG_BODY


# The wire below, and split points inside it that matter to the chunk state machine.
SPLIT_BODY = b"abcdefghijklmnopqrstuvwxyz"
SPLIT_WIRE = (
    b"1A;name=value\r\n" + SPLIT_BODY + b"\r\n" + b"5\r\nhello\r\n" + b"0\r\nX-Trailer: yes\r\n\r\n"
)
_DATA_AT = SPLIT_WIRE.index(b"abc")
_END_AT = _DATA_AT + len(SPLIT_BODY)
SPLIT_POINTS = {
    "in-size": 1,
    "in-extension": 5,
    "before-size-crlf": _DATA_AT - 2,
    "in-size-crlf": _DATA_AT - 1,
    "at-data": _DATA_AT,
    "in-data": _DATA_AT + 10,
    "before-data-crlf": _END_AT,
    "in-data-crlf": _END_AT + 1,
    "after-data-crlf": _END_AT + 2,
    "in-second-size-crlf": _END_AT + 3,
    "in-last-chunk": SPLIT_WIRE.index(b"0\r\nX") + 1,
    "in-trailers": SPLIT_WIRE.index(b"Trailer"),
    "before-final-crlf": len(SPLIT_WIRE) - 2,
    "in-final-crlf": len(SPLIT_WIRE) - 1,
}


@pytest.mark.parametrize("n", [1, 7, 64 * 1024])
@pytest.mark.parametrize("cut", list(SPLIT_POINTS.values()), ids=list(SPLIT_POINTS))
def test_chunked_split_across_tcp_writes(cut: int, n: int) -> None:
    script: list[Step] = [OK_CHUNKED + SPLIT_WIRE[:cut], 0.02, SPLIT_WIRE[cut:]]
    with served(script) as (sock, _):
        assert read_all(g.Response(sock), n) == SPLIT_BODY + b"hello"


def test_chunked_every_split_position_exactly() -> None:
    """recv() boundaries at every position (one and two cuts, and one byte at a time), for
    several read sizes: the same body every time."""
    wire = OK_CHUNKED + SPLIT_WIRE
    splits = [[c] for c in range(1, len(wire))]
    splits += [[c, c + d] for c in range(len(OK_CHUNKED) - 2, len(wire)) for d in (1, 2, 3)]
    splits.append(list(range(1, len(wire))))
    for cuts in splits:
        for n in (1, 2, 3, 7, 27, 65536):
            resp = g.Response(ScriptedSocket(split_at(wire, cuts)))
            assert read_all(resp, n) == SPLIT_BODY + b"hello", (cuts, n)


def test_many_tiny_chunks_come_back_in_one_read1() -> None:
    body = bytes(range(48, 48 + 75)) * 4  # 300 one-byte chunks
    wire = OK_CHUNKED + chunked(body, [1])
    with served([wire], keep_open=True) as (sock, server):
        assert server.sent.wait(5)
        wait_buffered(sock, len(wire))
        resp = g.Response(sock)
        assert resp.read1(65536) == body  # one call, across 300 chunk boundaries
        assert resp.read1(65536) == b""


def test_tiny_chunks_already_received_never_wait_for_more() -> None:
    body = b"".join(b"%d," % i for i in range(100))
    wire = OK_CHUNKED + chunked(body, [1, 2, 3])
    for n in (1, 10, 50, 65536):
        resp = g.Response(ScriptedSocket([wire[:-5]], then_block=True))  # no "0\r\n\r\n" yet
        got = bytearray()
        while len(got) < len(body):
            piece = resp.read1(n)  # WouldBlock if it asks the socket for more
            assert piece and len(piece) == min(n, len(body) - len(got))
            got += piece
        assert got == body


@pytest.mark.parametrize("size", [b"zz", b"", b"-1", b"-5", b"1 2", b"\xb2"], ids=repr)
def test_bad_chunk_size(size: bytes) -> None:
    wire = OK_CHUNKED + size + b"\r\nab\r\n0\r\n\r\n"
    with served([wire]) as (sock, _):
        resp = g.Response(sock)
        with pytest.raises(g.ProtocolError):
            resp.read1(65536)


@pytest.mark.parametrize(
    "wire",
    [b"3\r\nhello\r\n0\r\n\r\n", b"5\r\nhelloXY\r\n0\r\n\r\n", b"5\r\nhelloXY0\r\n\r\n"],
    ids=["size-too-small", "junk-after-data", "junk-instead-of-crlf"],
)
def test_chunk_data_not_followed_by_crlf(wire: bytes) -> None:
    """A chunk whose data does not end where its size says is broken framing."""
    with served([OK_CHUNKED + wire]) as (sock, _):
        got, exc = read_until_error(g.Response(sock), 65536)
    assert isinstance(exc, g.ProtocolError)
    assert len(got) <= 5


@pytest.mark.parametrize(
    ("wire", "before"),
    [
        (b"a\r\nhel", b"hel"),
        (b"5\r\nhello", b"hello"),
        (b"5\r\nhello\r", b"hello"),
        (b"5\r\nhello\r\n", b"hello"),
        (b"5\r\nhello\r\n6", b"hello"),
        (b"5\r\nhello\r\n6\r\n wo", b"hello wo"),
        (b"", b""),
        (b"5", b""),
    ],
    ids=[
        "mid-data",
        "before-crlf",
        "in-crlf",
        "between-chunks",
        "in-size",
        "second-chunk",
        "no-chunk",
        "first-size",
    ],
)
@pytest.mark.parametrize("n", [1, 65536])
def test_chunked_connection_closed_early(wire: bytes, before: bytes, n: int) -> None:
    with served([OK_CHUNKED + wire]) as (sock, _):
        got, exc = read_until_error(g.Response(sock), n)
    assert got == before
    assert isinstance(exc, g.ProtocolError)


# --- answers that are not HTTP, or no answer at all ---------------------------------------------


def test_server_closes_without_answering() -> None:
    with served([]) as (sock, server):
        with pytest.raises(g.RemoteClosed) as info:
            g.Response(sock)
    assert not isinstance(info.value, g.ProtocolError)
    assert isinstance(info.value, ConnectionError)
    assert server.request == REQUEST  # the request did arrive


@pytest.mark.parametrize(
    "answer",
    [
        b"garbage\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        b"<html><body>Login</body></html>\r\n\r\n",
        b"HTTP/1.1 OK 200\r\n\r\n",
        b"HTTP/1.1  200 OK\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
        b"HTTP/1.1 \xb2\xb2\xb2 Odd\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Le",
        b"HTTP/1.1 200 OK\r\n",
        b"garbage without a blank line",
    ],
    ids=repr,
)
def test_not_an_http_answer(answer: bytes) -> None:
    with served([answer]) as (sock, _):
        with pytest.raises(g.ProtocolError):
            g.Response(sock)


def test_endless_headers() -> None:
    pad: Step = b"X-Pad: " + b"a" * 1000 + b"\r\n"
    script: list[Step] = [b"HTTP/1.1 200 OK\r\n", *[pad] * 300]
    with served(script) as (sock, _):
        with pytest.raises(g.ProtocolError, match="too long"):
            g.Response(sock)


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(status: int) -> None:
    head = b"HTTP/1.1 %d Nothing\r\nContent-Length: 5\r\n\r\n" % status
    with served([head], keep_open=True) as (sock, _):
        resp = g.Response(sock)
        assert resp.status == status
        assert resp.read1(65536) == b""  # at once: the server never sends a body or closes
        assert resp.read1(1) == b""


# --- Connection.send and open_connection --------------------------------------------------------


def test_send_writes_host_headers_close_and_body() -> None:
    with Server([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]) as server:
        url = f"http://127.0.0.1:{server.port}/v1/responses?api-version=2"
        conn, target, extra = g.open_connection(url, g.Settings({"NO_PROXY": "*"}), 5)
        try:
            assert target == "/v1/responses?api-version=2"
            assert extra == {}
            headers = {
                "Authorization": "Bearer TEST_KEY",
                "Content-Type": "application/json",
                "Content-Length": "12",
            }
            conn.send("POST", target, headers, iter([b'{"a":', b"", b' "bc"}', b"\n"]))
            resp = conn.response()
            assert (resp.status, read_all(resp, 65536)) == (200, b"ok")
        finally:
            conn.close()
        conn.close()  # closing twice is harmless
    assert server.request == (
        b"POST /v1/responses?api-version=2 HTTP/1.1\r\n"
        b"Host: 127.0.0.1:%d\r\n"
        b"Authorization: Bearer TEST_KEY\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: 12\r\n"
        b"Connection: close\r\n"
        b"\r\n"
        b'{"a": "bc"}\n' % server.port
    )


def test_send_with_a_big_body_in_many_chunks() -> None:
    body = [bytes([i]) * 10_000 for i in range(30)]
    with Server([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"]) as server:
        url = f"http://127.0.0.1:{server.port}/v1/responses"
        conn, target, _ = g.open_connection(url, g.Settings({"NO_PROXY": "*"}), 5)
        try:
            conn.send("POST", target, {"Content-Length": "300000"}, body)
            assert conn.response().status == 200
        finally:
            conn.close()
    assert server.request.endswith(b"\r\nConnection: close\r\n\r\n" + b"".join(body))


def test_plain_http_through_a_proxy() -> None:
    with Server([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]) as proxy:
        env = {"HTTP_PROXY": f"http://bob:p%40ss@127.0.0.1:{proxy.port}", "NO_PROXY": ""}
        url = "http://127.0.0.1:1/v1/responses"  # only the proxy is dialled
        conn, target, extra = g.open_connection(url, g.Settings(env), 5)
        try:
            assert target == url
            auth = "Basic " + base64.b64encode(b"bob:p@ss").decode()
            assert extra == {"Proxy-Authorization": auth}
            conn.send("GET", target, extra, ())
            assert read_all(conn.response(), 100) == b"ok"
        finally:
            conn.close()
    assert proxy.request == (
        b"GET http://127.0.0.1:1/v1/responses HTTP/1.1\r\nHost: 127.0.0.1:1\r\n"
        b"Proxy-Authorization: " + auth.encode() + b"\r\nConnection: close\r\n\r\n"
    )


def test_connect_proxy_refuses_the_tunnel() -> None:
    answer = (
        b"HTTP/1.1 407 Proxy Authentication Required\r\n"
        b'Proxy-Authenticate: Basic realm="corp"\r\nContent-Length: 0\r\n\r\n'
    )
    with Server([answer], keep_open=True) as proxy:
        env = {"HTTPS_PROXY": f"http://alice:s%3Acret@127.0.0.1:{proxy.port}", "NO_PROXY": ""}
        url = "https://127.0.0.1:8443/v1/responses"  # only the proxy is dialled
        with pytest.raises(OSError, match="Tunnel connection failed") as info:
            g.open_connection(url, g.Settings(env), 5)
        assert proxy.client_closed.wait(5), "the socket to the proxy was left open"
    assert "407 Proxy Authentication Required" in str(info.value)
    err = g.describe_network_error(info.value, url)
    assert "proxy refused the tunnel" in err.message
    assert proxy.request == (
        b"CONNECT 127.0.0.1:8443 HTTP/1.1\r\nHost: 127.0.0.1:8443\r\n"
        b"Proxy-Authorization: Basic " + base64.b64encode(b"alice:s:cret") + b"\r\n\r\n"
    )


def test_connect_proxy_closes_without_answering() -> None:
    with Server([], keep_open=False) as proxy:
        env = {"https_proxy": f"127.0.0.1:{proxy.port}", "NO_PROXY": "example.invalid"}
        with pytest.raises(g.RemoteClosed):
            g.open_connection("https://localhost/v1/responses", g.Settings(env), 5)
    assert proxy.request == b"CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\n\r\n"


# --- property: any body, any chunking, any TCP split, any read sizes -----------------------


@st.composite
def framed_answers(draw: st.DrawFn) -> tuple[bytes, bytes, list[int], list[int]]:
    """(body, the whole answer on the wire, cut positions, read sizes)."""
    body = draw(st.binary(max_size=3000))
    framing = draw(st.sampled_from(["chunked", "chunked", "chunked", "length", "close"]))
    if framing == "chunked":
        sizes = draw(st.lists(st.integers(1, 700), min_size=1, max_size=12))
        payload = chunked(body, sizes, upper=draw(st.booleans()), ext=draw(st.booleans()))
        if draw(st.booleans()):
            payload = payload[:-2] + b"X-Trailer: 1\r\n\r\n"
        head = OK_CHUNKED
    elif framing == "length":
        payload = body
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    else:
        payload = body
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
    if draw(st.booleans()):
        head = b"HTTP/1.1 100 Continue\r\n\r\n" + head
    wire = head + payload
    cuts = draw(st.lists(st.integers(1, max(1, len(wire) - 1)), max_size=8))
    reads = draw(st.lists(st.integers(1, 5000), min_size=1, max_size=8))
    return body, wire, cuts, reads


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(framed_answers())
def test_any_framing_over_tcp(case: tuple[bytes, bytes, list[int], list[int]]) -> None:
    body, wire, cuts, reads = case
    script: list[Step] = []
    for piece in split_at(wire, cuts):
        script += [piece, 0.002]
    with served(script) as (sock, _):
        assert read_all(g.Response(sock), reads) == body


@settings(max_examples=300, deadline=None)
@given(framed_answers())
def test_any_framing_exact_recv_boundaries(
    case: tuple[bytes, bytes, list[int], list[int]],
) -> None:
    body, wire, cuts, reads = case
    assert read_all(g.Response(ScriptedSocket(split_at(wire, cuts))), reads) == body


@pytest.mark.parametrize("split", [0, 5, 17, 30, 31])
def test_bare_lf_head_is_accepted(split: int) -> None:
    raw = b"HTTP/1.1 200 OK\nContent-Type: text/plain\nContent-Length: 3\n\nabc"
    resp = g.Response(ScriptedSocket([raw[:split], raw[split:]]))
    assert resp.status == 200
    assert resp.get("content-type") == "text/plain"
    assert resp.read1(10) == b"abc"
