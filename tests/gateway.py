"""A fault-injecting loopback gateway for end-to-end tests (standard library only).

It imitates an OpenAI-Responses-compatible gateway well enough to drive
``generate_gateway_image.py`` as a subprocess. It records every request and answers
from a FIFO queue of replies per path::

    with Gateway() as gw:
        gw.enqueue(sse_reply(image_events(b64(png_bytes(8, 8)))))
        run_cli("--base-url", gw.base_url, ...)
        (req,) = gw.posts()
        assert req.json["tools"][0]["type"] == "image_generation"

A reply may also be a callable ``f(recorded) -> Reply``; it is called when the
request arrives, after it has been recorded.

HTTPS: pass an ``ssl.SSLContext`` for the server side. In tests, build one with
trustme (only the tests depend on it)::

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))  # bundle for the client
    with Gateway(tls=ctx) as gw:  # gw.url starts with https://
        ...

The TLS handshake runs in the handler thread, so a client that rejects the
certificate only produces an entry in ``gw.errors``.
"""

from __future__ import annotations

import http.client
import http.server
import json
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union, cast, final

__all__ = [
    "FIXTURES",
    "Gateway",
    "Recorded",
    "Reply",
    "ReplyLike",
    "close_reply",
    "error_event",
    "error_reply",
    "failed_events",
    "format_sse",
    "image_events",
    "image_item",
    "incomplete_events",
    "json_reply",
    "message_item",
    "raw_reply",
    "recorded_jpeg_response",
    "recorded_stream_events",
    "renumber",
    "response_obj",
    "sse_reply",
    "stall_reply",
    "text_only_events",
]

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RESPONSES_PATH = "/v1/responses"
MAX_STALL = 600.0  # seconds; a stall always ends at Gateway shutdown anyway

# Status codes that http.server has no reason phrase for (Cloudflare and friends).
_EXTRA_REASONS = {
    520: "Web Server Returned an Unknown Error",
    521: "Web Server Is Down",
    522: "Connection Timed Out",
    523: "Origin Is Unreachable",
    524: "A Timeout Occurred",
    529: "Site is overloaded",
}


# --- recording ---------------------------------------------------------------


@dataclass
class Recorded:
    """One request as the gateway saw it."""

    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    raw_query: str
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    body: bytes
    json: Any | None  # parsed body when the content type mentions json, else None
    t_start: float  # time.monotonic() when the request line arrived
    t_end: float  # time.monotonic() just before the last byte / close; nan until then
    index: int  # 0-based arrival order
    reply: str = ""  # short description of the reply used

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


# --- replies -----------------------------------------------------------------


class Reply:
    """How the gateway answers one request. Build them with the ``*_reply`` functions."""

    def describe(self) -> str:
        return type(self).__name__

    def send(self, h: _Handler, rec: Recorded) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


ReplyLike = Union[Reply, Callable[[Recorded], Reply]]


def _merge_headers(
    defaults: Sequence[tuple[str, str]], extra: Mapping[str, str] | None
) -> list[tuple[str, str]]:
    """``defaults`` with any same-named (case-insensitive) entry replaced by ``extra``."""
    extra = dict(extra or {})
    names = {k.lower() for k in extra}
    merged = [(k, v) for k, v in defaults if k.lower() not in names]
    merged.extend(extra.items())
    return merged


class _BodyReply(Reply):
    def __init__(
        self,
        status: int,
        body: bytes,
        content_type: str | None,
        headers: Mapping[str, str] | None,
        delay: float,
        cut_at: int | None,
        stall_at: int | None,
        label: str,
    ) -> None:
        self.status = status
        self.body = body
        self.delay = delay
        self.cut_at = cut_at
        self.stall_at = stall_at
        self.label = label
        defaults = [("Content-Length", str(len(body)))]
        if content_type is not None:
            defaults.insert(0, ("Content-Type", content_type))
        self.headers = _merge_headers(defaults, headers)

    def describe(self) -> str:
        return f"{self.label} {self.status} ({len(self.body)} bytes)"

    def send(self, h: _Handler, rec: Recorded) -> None:
        if self.delay and h.wait(self.delay):
            h.abort(rec)
            return
        h.start(self.status, self.headers)
        if self.cut_at is not None:
            h.write(self.body[: self.cut_at])
            h.abort(rec)
        elif self.stall_at is not None:
            h.write(self.body[: self.stall_at])
            h.wait(MAX_STALL)
            h.abort(rec)
        else:
            h.write(self.body, last=True, rec=rec)


def json_reply(
    obj: Any,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    delay: float = 0.0,
    *,
    cut_at: int | None = None,
    stall_at: int | None = None,
) -> Reply:
    """JSON body with Content-Length.

    ``delay``: wait before the status line. ``cut_at=n``: send only the first n body
    bytes and close (client sees a short read). ``stall_at=n``: send n body bytes and
    hang until shutdown.
    """
    body = json.dumps(obj).encode("utf-8")
    return _BodyReply(status, body, "application/json", headers, delay, cut_at, stall_at, "json")


def raw_reply(
    body: bytes,
    status: int = 200,
    content_type: str | None = "text/html",
    headers: Mapping[str, str] | None = None,
    delay: float = 0.0,
    *,
    cut_at: int | None = None,
    stall_at: int | None = None,
) -> Reply:
    """Any body with Content-Length, e.g. an HTML 502/524 page from a proxy.

    ``content_type=None`` sends no Content-Type header at all.
    """
    return _BodyReply(status, body, content_type, headers, delay, cut_at, stall_at, "raw")


def error_reply(
    status: int,
    message: str,
    code: str | None = None,
    type_: str = "invalid_request_error",
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Reply:
    """An OpenAI error body ``{"error": {message, type, param, code, **extra}}``."""
    err: dict[str, Any] = {"message": message, "type": type_, "param": param, "code": code}
    err.update(extra)
    return json_reply({"error": err}, status=status, headers=headers)


class _SseReply(Reply):
    def __init__(
        self,
        segments: list[bytes],
        tail: bytes,
        *,
        chunk_size: int | None,
        split_at: Sequence[int] | None,
        delay: float,
        cut_after: int | None,
        stall_after: int | None,
        reset: bool,
        chunked: bool,
        status: int,
        headers: Mapping[str, str] | None,
    ) -> None:
        if chunk_size is not None and chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        if cut_after is not None and stall_after is not None:
            raise ValueError("use cut_after or stall_after, not both")
        self.segments = segments
        self.tail = tail
        self.chunk_size = chunk_size
        self.split_at = sorted(set(split_at or ()))
        self.delay = delay
        self.cut_after = cut_after
        self.stall_after = stall_after
        self.reset = reset
        self.chunked = chunked
        self.status = status
        defaults = [
            ("Content-Type", "text/event-stream; charset=utf-8"),
            ("Cache-Control", "no-cache"),
        ]
        if chunked:
            defaults.append(("Transfer-Encoding", "chunked"))
        else:
            defaults.append(("Connection", "close"))
        self.headers = _merge_headers(defaults, headers)

    @property
    def body(self) -> bytes:
        """The bytes a complete (uncut) stream carries, without transfer framing."""
        return b"".join(self.segments) + self.tail

    def describe(self) -> str:
        how = "chunked" if self.chunked else "close-delimited"
        extra = ""
        if self.cut_after is not None:
            extra = f", cut after {self.cut_after}"
        elif self.stall_after is not None:
            extra = f", stall after {self.stall_after}"
        return f"sse {self.status} ({len(self.segments)} events, {how}{extra})"

    def _pieces(self) -> tuple[list[tuple[bytes, bool]], bool]:
        """(piece, wait_before) writes, and whether the stream is complete."""
        limit = self.cut_after if self.cut_after is not None else self.stall_after
        segments = self.segments if limit is None else self.segments[:limit]
        complete = limit is None
        stream = b"".join(segments) + (self.tail if complete else b"")
        bounds: list[int] = []
        pos = 0
        for seg in segments:
            bounds.append(pos)
            pos += len(seg)
        event_starts = set(bounds[1:])  # delay *between* events
        cuts: set[int] = set()
        if self.chunk_size is not None or self.split_at:
            if self.chunk_size is not None:
                cuts.update(range(self.chunk_size, len(stream), self.chunk_size))
            cuts.update(o for o in self.split_at if 0 < o < len(stream))
        else:
            cuts.update(bounds[1:])
            if complete and self.tail:
                cuts.add(pos)
        if self.delay:
            cuts.update(event_starts)
        points = [0, *sorted(c for c in cuts if 0 < c < len(stream)), len(stream)]
        pieces = [
            (stream[a:b], self.delay > 0 and a in event_starts)
            for a, b in zip(points, points[1:])
            if b > a
        ]
        return pieces, complete

    def send(self, h: _Handler, rec: Recorded) -> None:
        h.start(self.status, self.headers, close=not self.chunked)
        pieces, complete = self._pieces()
        for i, (piece, wait_first) in enumerate(pieces):
            if wait_first and h.wait(self.delay):
                h.abort(rec)
                return
            last = complete and i == len(pieces) - 1 and not self.chunked
            h.write(self._frame(piece), last=last, rec=rec)
        if not complete:
            if self.stall_after is not None:
                h.wait(MAX_STALL)
            h.abort(rec, reset=self.reset)
        elif self.chunked:
            h.write(b"0\r\n\r\n", last=True, rec=rec)
        elif not pieces:
            h.write(b"", last=True, rec=rec)

    def _frame(self, data: bytes) -> bytes:
        if not self.chunked:
            return data
        return b"%x\r\n" % len(data) + data + b"\r\n"


SseEvent = Union[Mapping[str, Any], str, bytes]


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _event_block(payload: str, etype: str | None, nl: str, event_lines: bool) -> str:
    lines = []
    if event_lines and etype:
        lines.append(f"event: {etype}")
    lines.extend(f"data: {line}" for line in payload.split("\n"))
    return nl.join(lines) + nl + nl


def _sse_parts(
    events: Iterable[SseEvent],
    *,
    crlf: bool,
    comments: bool,
    keepalive: bool,
    done: bool,
    event_lines: bool,
) -> tuple[list[bytes], bytes]:
    nl = "\r\n" if crlf else "\n"
    segments: list[bytes] = []
    for i, ev in enumerate(events):
        parts: list[str] = []
        if comments:
            parts.append(f": ping{nl}{nl}")
        if keepalive and i > 0:
            parts.append(_event_block(_dumps({"type": "keepalive"}), "keepalive", nl, event_lines))
        if isinstance(ev, bytes):
            segments.append("".join(parts).encode("utf-8") + ev)
            continue
        if isinstance(ev, str):
            payload = ev
            etype: str | None = None
            try:
                parsed = json.loads(ev)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict) and isinstance(parsed.get("type"), str):
                etype = parsed["type"]
        else:
            payload = _dumps(ev)
            etype = ev.get("type") if isinstance(ev.get("type"), str) else None
        parts.append(_event_block(payload, etype, nl, event_lines))
        segments.append("".join(parts).encode("utf-8"))
    tail = f"data: [DONE]{nl}{nl}".encode() if done else b""
    return segments, tail


def format_sse(
    events: Iterable[SseEvent],
    *,
    crlf: bool = False,
    comments: bool = False,
    keepalive: bool = False,
    done: bool = False,
    event_lines: bool = True,
) -> bytes:
    """The SSE body ``sse_reply`` sends for the same arguments (no transfer framing)."""
    segments, tail = _sse_parts(
        events,
        crlf=crlf,
        comments=comments,
        keepalive=keepalive,
        done=done,
        event_lines=event_lines,
    )
    return b"".join(segments) + tail


def sse_reply(
    events: Iterable[SseEvent],
    *,
    crlf: bool = False,
    comments: bool = False,
    keepalive: bool = False,
    done: bool = False,
    event_lines: bool = True,
    chunk_size: int | None = None,
    split_at: Sequence[int] | None = None,
    delay: float = 0.0,
    cut_after: int | None = None,
    stall_after: int | None = None,
    reset: bool = False,
    chunked: bool = True,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """A ``text/event-stream; charset=utf-8`` reply.

    ``events`` items: a dict (sent as compact JSON), a str (sent verbatim as the data
    payload; a str with newlines becomes several ``data:`` lines), or bytes (sent
    exactly as given, no framing, e.g. garbage or a hand-made block).

    Framing per event is ``event: <type>\\ndata: <json>\\n\\n``. ``event_lines=False``
    drops the event line, ``crlf=True`` uses ``\\r\\n``. ``comments=True`` puts a
    ``: ping`` comment block before every event. ``keepalive=True`` puts a
    ``{"type":"keepalive"}`` event between events. ``done=True`` ends with
    ``data: [DONE]``.

    Writes: one per event by default; ``chunk_size=n`` writes n-byte pieces and
    ``split_at=[offsets]`` splits at those stream offsets (both ignore event
    boundaries). ``delay`` waits that long before each event after the first.

    Faults: ``cut_after=k`` sends k events then closes with no terminal chunk
    (``reset=True`` sends a TCP RST instead of a FIN). ``stall_after=k`` sends k events
    then hangs without closing until the gateway shuts down.

    ``chunked=True`` uses HTTP/1.1 chunked encoding; ``chunked=False`` sends no
    Content-Length, ``Connection: close``, and ends the body by closing.
    """
    segments, tail = _sse_parts(
        events,
        crlf=crlf,
        comments=comments,
        keepalive=keepalive,
        done=done,
        event_lines=event_lines,
    )
    return _SseReply(
        segments,
        tail,
        chunk_size=chunk_size,
        split_at=split_at,
        delay=delay,
        cut_after=cut_after,
        stall_after=stall_after,
        reset=reset,
        chunked=chunked,
        status=status,
        headers=headers,
    )


class _StallReply(Reply):
    def describe(self) -> str:
        return "stall"

    def send(self, h: _Handler, rec: Recorded) -> None:
        h.wait(MAX_STALL)
        h.abort(rec)


class _CloseReply(Reply):
    def __init__(self, reset: bool) -> None:
        self.reset = reset

    def describe(self) -> str:
        return "close (RST)" if self.reset else "close"

    def send(self, h: _Handler, rec: Recorded) -> None:
        h.abort(rec, reset=self.reset)


def stall_reply() -> Reply:
    """Read the request, never answer; the connection stays open until shutdown."""
    return _StallReply()


def close_reply(*, reset: bool = False) -> Reply:
    """Read the request, then close without a response (``reset=True``: TCP RST)."""
    return _CloseReply(reset)


# --- server ------------------------------------------------------------------


def read_request_body(rfile: Any, headers: Any) -> bytes:
    """The body of a request being served (Content-Length or chunked); shared with the bench."""
    if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
        out = bytearray()
        while True:
            size_line = rfile.readline(65537)
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(out)
            out += rfile.read(size)
            rfile.readline(65537)
    length = int(headers.get("Content-Length") or 0)
    return bytes(rfile.read(length)) if length > 0 else b""


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    gateway: Gateway

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if exc is not None:
            self.gateway._note_error(exc)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "TestGateway/1.0"
    sys_version = ""

    @property
    def gw(self) -> Gateway:
        return cast(_Server, self.server).gateway

    # connection tracking, so shutdown can unblock threads stuck on a socket
    def setup(self) -> None:
        self.gw._track(self.request, True)
        try:
            if isinstance(self.request, ssl.SSLSocket):
                self.request.settimeout(10.0)
                self.request.do_handshake()
                self.request.settimeout(None)
        except BaseException:
            self.gw._track(self.request, False)
            raise
        super().setup()

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.gw._track(self.request, False)

    def log_message(self, fmt: str, *args: Any) -> None:
        self.gw._log("http: " + (fmt % args))

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    # request dispatch
    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _read_body(self) -> bytes:
        return read_request_body(self.rfile, self.headers)

    def _handle(self) -> None:
        t_start = time.monotonic()
        gw = self.gw
        path, _, raw_query = self.path.partition("?")
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        body = self._read_body()
        parsed: Any | None = None
        if "json" in headers.get("content-type", "").lower():
            try:
                parsed = json.loads(body.decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                parsed = None
        rec = gw._record(
            method=self.command,
            path=path,
            query=urllib.parse.parse_qs(raw_query, keep_blank_values=True),
            raw_query=raw_query,
            headers=headers,
            body=body,
            json=parsed,
            t_start=t_start,
        )
        reply = gw._next_reply(path, rec)
        rec.reply = reply.describe()
        gw._log(f"#{rec.index} {self.command} {self.path} -> {rec.reply}")
        try:
            reply.send(self, rec)
        except OSError as exc:  # client went away mid-reply
            gw._log(f"#{rec.index} client error: {exc!r}")
            self.close_connection = True
        finally:
            if rec.t_end != rec.t_end:  # nan: the reply did not mark its end
                rec.t_end = time.monotonic()
            gw._finished(rec)

    # primitives used by Reply.send
    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if the gateway is shutting down."""
        return self.gw._stop.wait(seconds)

    def start(self, status: int, headers: Sequence[tuple[str, str]], close: bool = False) -> None:
        self.send_response(status, _EXTRA_REASONS.get(status))
        for name, value in headers:
            self.send_header(name, value)
        if close:
            self.close_connection = True
        self.end_headers()

    def write(self, data: bytes, *, last: bool = False, rec: Recorded | None = None) -> None:
        if last and rec is not None:
            rec.t_end = time.monotonic()
        if data:
            self.wfile.write(data)
            self.wfile.flush()

    def abort(self, rec: Recorded, *, reset: bool = False) -> None:
        """Close the connection now, without finishing any response."""
        self.close_connection = True
        rec.t_end = time.monotonic()
        sock = self.connection
        try:
            if reset:
                linger = struct.pack("ii", 1, 0)  # on, 0 s: close() sends RST
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            else:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            sock.close()
        except OSError:
            pass


@final
class Gateway:
    """Loopback HTTP(S) server with per-path reply queues. Use as a context manager."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.requests: list[Recorded] = []
        self.errors: list[BaseException] = []
        self._lines: list[str] = []
        self._queues: dict[str, deque[ReplyLike]] = {}
        self._defaults: dict[str, ReplyLike] = {}
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._t0 = time.monotonic()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle
    def start(self) -> Gateway:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.gateway = self
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name=f"test-gateway-{self.port}",
        )
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        server = self._server
        if server is None:
            return
        server.shutdown()
        with self._lock:
            conns = list(self._conns)
        for sock in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._server = None

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # addresses
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("gateway not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    # replies
    def enqueue(self, *replies: ReplyLike, path: str = RESPONSES_PATH) -> None:
        """Append replies to the FIFO for ``path`` (exact path, no query)."""
        with self._lock:
            self._queues.setdefault(path, deque()).extend(replies)

    def set_default(self, reply: ReplyLike | None, path: str = RESPONSES_PATH) -> None:
        """Reply used for ``path`` whenever its queue is empty (None removes it)."""
        with self._lock:
            if reply is None:
                self._defaults.pop(path, None)
            else:
                self._defaults[path] = reply

    def pending(self, path: str = RESPONSES_PATH) -> int:
        """How many queued replies for ``path`` have not been used yet."""
        with self._lock:
            return len(self._queues.get(path, ()))

    def _next_reply(self, path: str, rec: Recorded) -> Reply:
        with self._lock:
            queue = self._queues.get(path)
            chosen: ReplyLike | None = queue.popleft() if queue else self._defaults.get(path)
        if chosen is None:
            return error_reply(
                500, "test gateway: no reply queued", code="no_reply", type_="server_error"
            )
        if isinstance(chosen, Reply):
            return chosen
        try:
            result = chosen(rec)
        except Exception as exc:  # noqa: BLE001 - report a broken test callback as a 500
            self._note_error(exc)
            return error_reply(
                500, f"test gateway: reply callable raised {exc!r}", type_="server_error"
            )
        if not isinstance(result, Reply):
            raise TypeError(f"reply callable returned {result!r}, not a Reply")
        return result

    # recording
    def _record(self, **fields: Any) -> Recorded:
        with self._cond:
            rec = Recorded(**fields, t_end=float("nan"), index=len(self.requests))
            self.requests.append(rec)
            self._cond.notify_all()
        return rec

    def _finished(self, rec: Recorded) -> None:
        with self._cond:
            self._cond.notify_all()

    def posts(self, path_suffix: str = "/responses") -> list[Recorded]:
        """Recorded POST requests whose path ends with ``path_suffix``."""
        with self._lock:
            return [r for r in self.requests if r.method == "POST" and r.path.endswith(path_suffix)]

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[Recorded]:
        """Block until at least ``n`` requests arrived; raises TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self.requests)} of {n} requests after {timeout}s")
                self._cond.wait(left)
            return list(self.requests)

    # diagnostics
    def _log(self, line: str) -> None:
        with self._lock:
            self._lines.append(f"{time.monotonic() - self._t0:8.3f} {line}")

    def _note_error(self, exc: BaseException) -> None:
        with self._lock:
            self.errors.append(exc)
        self._log(f"error: {exc!r}")

    def _track(self, sock: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(sock)
            else:
                self._conns.discard(sock)

    def log_lines(self) -> list[str]:
        """Timestamped debug lines: each request, the reply used, errors."""
        with self._lock:
            return list(self._lines)

    def dump(self) -> str:
        """``log_lines()`` as one string, handy in assertion messages."""
        return "\n".join(self.log_lines())


# --- payload builders (shapes follow the real API and tests/fixtures) ---------

DEFAULT_MODEL = "gpt-5.5"
DEFAULT_USAGE: dict[str, Any] = {
    "input_tokens": 1889,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 1434,
    "output_tokens_details": {"reasoning_tokens": 1280},
    "total_tokens": 3323,
}
# the image model's tokens as current models report them beside `usage` (an undocumented
# top-level tool_usage; see reference/responses-image-generation.md section 3): 1024x1024 high
DEFAULT_TOOL_USAGE: dict[str, Any] = {
    "image_gen": {
        "input_tokens": 62,
        "input_tokens_details": {"image_tokens": 0, "text_tokens": 62},
        "output_tokens": 4160,
        "output_tokens_details": {"image_tokens": 4160, "text_tokens": 0},
        "total_tokens": 4222,
    },
    "web_search": {"num_requests": 0},
}
# the Images API's usage (gpt-image-1): the image model's own tokens
DEFAULT_IMAGES_USAGE: dict[str, Any] = {
    "input_tokens": 50,
    "input_tokens_details": {"image_tokens": 0, "text_tokens": 50},
    "output_tokens": 4160,
    "total_tokens": 4210,
}


def image_item(
    b64: str | None,
    *,
    item_id: str = "ig_test1",
    status: str = "completed",
    revised_prompt: str | None = "a revised prompt",
    size: str = "1024x1024",
    output_format: str = "png",
    quality: str = "high",
    background: str = "opaque",
    action: str | None = None,
) -> dict[str, Any]:
    """An ``image_generation_call`` output item. ``b64=None`` gives ``result: null``."""
    item: dict[str, Any] = {
        "id": item_id,
        "type": "image_generation_call",
        "status": status,
        "background": background,
        "output_format": output_format,
        "quality": quality,
        "result": b64,
        "revised_prompt": revised_prompt,
        "size": size,
    }
    if action is not None:
        item["action"] = action
    return item


def message_item(
    text: str, *, item_id: str = "msg_test1", status: str = "completed"
) -> dict[str, Any]:
    """An assistant ``message`` item with one ``output_text`` part."""
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}],
        "role": "assistant",
    }


def reasoning_item(item_id: str = "rs_test1") -> dict[str, Any]:
    return {"id": item_id, "type": "reasoning", "summary": []}


def response_obj(
    output: list[dict[str, Any]],
    *,
    resp_id: str = "resp_test1",
    status: str = "completed",
    error: dict[str, Any] | None = None,
    incomplete_details: dict[str, Any] | None = None,
    model: str = DEFAULT_MODEL,
    usage: dict[str, Any] | None = None,
    tools: list[dict[str, Any]] | None = None,
    tool_usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``Response`` object. ``usage`` and ``tool_usage`` default to sample numbers when
    completed (as a real answer from a current model); ``tool_usage`` is absent otherwise."""
    if usage is None and status == "completed":
        usage = dict(DEFAULT_USAGE)
    if tool_usage is None and status == "completed":
        tool_usage = dict(DEFAULT_TOOL_USAGE)
    if tools is None:
        tools = [
            {
                "type": "image_generation",
                "background": "auto",
                "moderation": "auto",
                "n": 1,
                "output_compression": 100,
                "output_format": "png",
                "quality": "auto",
                "size": "auto",
            }
        ]
    return {
        "id": resp_id,
        "object": "response",
        "created_at": 1759354093,
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": incomplete_details,
        "instructions": None,
        "max_output_tokens": None,
        "max_tool_calls": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": "medium", "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": {"type": "image_generation"},
        "tools": tools,
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
        **({"tool_usage": tool_usage} if tool_usage is not None else {}),
    }


def images_answer(
    b64: str, *, usage: dict[str, Any] | None = None, revised_prompt: str | None = None
) -> dict[str, Any]:
    """An Images API answer (``/images/generations``, ``/images/edits``) carrying ``usage``."""
    entry: dict[str, Any] = {"b64_json": b64}
    if revised_prompt is not None:
        entry["revised_prompt"] = revised_prompt
    return {
        "created": 1759354093,
        "data": [entry],
        "usage": dict(DEFAULT_IMAGES_USAGE) if usage is None else usage,
    }


def renumber(events: Iterable[dict[str, Any]], start: int = 0) -> list[dict[str, Any]]:
    """Copies of ``events`` with ``sequence_number`` = start, start+1, ...

    Use after concatenating builder outputs so the numbers increase again.
    """
    return [{**ev, "sequence_number": start + i} for i, ev in enumerate(events)]


def _head(resp_id: str, model: str) -> list[dict[str, Any]]:
    started = response_obj([], resp_id=resp_id, status="in_progress", model=model)
    return [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
    ]


def _message_events(
    text: str, output_index: int, item_id: str = "msg_test1"
) -> list[dict[str, Any]]:
    part_empty = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
    part_full = {**part_empty, "text": text}
    common = {"item_id": item_id, "output_index": output_index, "content_index": 0}
    events: list[dict[str, Any]] = [
        {
            "type": "response.output_item.added",
            "output_index": output_index,
            "item": {
                "id": item_id,
                "type": "message",
                "status": "in_progress",
                "content": [],
                "role": "assistant",
            },
        },
        {"type": "response.content_part.added", **common, "part": part_empty},
    ]
    half = len(text) // 2
    for delta in (text[:half], text[half:]):
        if delta:
            events.append(
                {"type": "response.output_text.delta", **common, "delta": delta, "logprobs": []}
            )
    events += [
        {"type": "response.output_text.done", **common, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **common, "part": part_full},
        {
            "type": "response.output_item.done",
            "output_index": output_index,
            "item": message_item(text, item_id=item_id),
        },
    ]
    return events


def image_events(
    b64: str | None,
    *,
    partials: Sequence[str] = (),
    item_id: str = "ig_test1",
    status_done: str = "completed",
    include_completed_event: bool = True,
    final_output: bool = True,
    revised_prompt: str | None = "a revised prompt",
    size: str = "1024x1024",
    output_format: str = "png",
    quality: str = "high",
    background: str = "opaque",
    reasoning: bool = False,
    message: str | None = None,
    resp_id: str = "resp_test1",
    model: str = DEFAULT_MODEL,
) -> list[dict[str, Any]]:
    """A complete, successful image stream in the real event order.

    response.created, response.in_progress, [reasoning added/done if ``reasoning``],
    output_item.added (image call, in_progress, no ``result``),
    image_generation_call.in_progress, .generating, .partial_image per ``partials``,
    .completed (if ``include_completed_event``), output_item.done (item with
    ``result`` and ``status_done``), [message events if ``message`` is not None],
    response.completed (full output; ``final_output=False`` gives ``output: []``).
    Azure's quirk is ``status_done="generating", include_completed_event=False``.
    """
    idx = 1 if reasoning else 0
    meta = {
        "size": size,
        "quality": quality,
        "background": background,
        "output_format": output_format,
    }
    final = image_item(
        b64, item_id=item_id, status=status_done, revised_prompt=revised_prompt, **meta
    )
    events = _head(resp_id, model)
    output: list[dict[str, Any]] = []
    if reasoning:
        events += [
            {"type": "response.output_item.added", "output_index": 0, "item": reasoning_item()},
            {"type": "response.output_item.done", "output_index": 0, "item": reasoning_item()},
        ]
        output.append(reasoning_item())
    ref = {"output_index": idx, "item_id": item_id}
    events += [
        {
            "type": "response.output_item.added",
            "output_index": idx,
            "item": {"id": item_id, "type": "image_generation_call", "status": "in_progress"},
        },
        {"type": "response.image_generation_call.in_progress", **ref},
        {"type": "response.image_generation_call.generating", **ref},
    ]
    for n, partial in enumerate(partials):
        events.append(
            {
                "type": "response.image_generation_call.partial_image",
                **ref,
                "partial_image_index": n,
                "partial_image_b64": partial,
                **meta,
            }
        )
    if include_completed_event:
        events.append({"type": "response.image_generation_call.completed", **ref})
    events.append({"type": "response.output_item.done", "output_index": idx, "item": final})
    output.append(final)
    if message is not None:
        events += _message_events(message, idx + 1)
        output.append(message_item(message))
    done = response_obj(output if final_output else [], resp_id=resp_id, model=model)
    events.append({"type": "response.completed", "response": done})
    return renumber(events)


def text_only_events(
    text: str, *, resp_id: str = "resp_test1", model: str = DEFAULT_MODEL
) -> list[dict[str, Any]]:
    """The model answered with a message only: no image_generation_call at all."""
    events = _head(resp_id, model) + _message_events(text, 0)
    done = response_obj([message_item(text)], resp_id=resp_id, model=model)
    events.append({"type": "response.completed", "response": done})
    return renumber(events)


def _image_started(item_id: str) -> list[dict[str, Any]]:
    ref = {"output_index": 0, "item_id": item_id}
    return [
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {"id": item_id, "type": "image_generation_call", "status": "in_progress"},
        },
        {"type": "response.image_generation_call.in_progress", **ref},
        {"type": "response.image_generation_call.generating", **ref},
    ]


def failed_events(
    code: str,
    message: str,
    *,
    started_image: bool = False,
    resp_id: str = "resp_test1",
    model: str = DEFAULT_MODEL,
) -> list[dict[str, Any]]:
    """created, in_progress, [image call started], then ``response.failed``."""
    events = _head(resp_id, model)
    if started_image:
        events += _image_started("ig_test1")
    failed = response_obj(
        [], resp_id=resp_id, status="failed", model=model, error={"code": code, "message": message}
    )
    events.append({"type": "response.failed", "response": failed})
    return renumber(events)


def incomplete_events(
    reason: str = "max_output_tokens",
    *,
    started_image: bool = False,
    resp_id: str = "resp_test1",
    model: str = DEFAULT_MODEL,
) -> list[dict[str, Any]]:
    """created, in_progress, [image call started], then ``response.incomplete``."""
    events = _head(resp_id, model)
    if started_image:
        events += _image_started("ig_test1")
    incomplete = response_obj(
        [], resp_id=resp_id, status="incomplete", model=model, incomplete_details={"reason": reason}
    )
    events.append({"type": "response.incomplete", "response": incomplete})
    return renumber(events)


def error_event(
    code: str | None,
    message: str,
    nested: bool = False,
    *,
    type_: str = "image_generation_user_error",
    param: str | None = None,
    sequence_number: int = 0,
) -> dict[str, Any]:
    """An ``error`` stream event.

    ``nested=False``: the SPEC shape ``{type, code, message, param, sequence_number}``.
    ``nested=True``: the shape seen on real image streams,
    ``{type: "error", error: {type, code, message, param}, sequence_number}``.
    """
    if nested:
        err = {"type": type_, "code": code, "message": message, "param": param}
        return {"type": "error", "error": err, "sequence_number": sequence_number}
    return {
        "type": "error",
        "code": code,
        "message": message,
        "param": param,
        "sequence_number": sequence_number,
    }


# --- recorded fixtures -------------------------------------------------------

RECORDED_STREAM = "vercel-ai_openai-image-generation-tool_stream.chunks.jsonl"
RECORDED_JPEG = "pydantic-ai_image_generation_jpeg_gpt-5_nonstream.json"


def recorded_stream_events() -> list[dict[str, Any]]:
    """The 16 real stream events (vercel/ai recording). Its base64 is truncated:
    use it for event order and field names, never as image bytes."""
    text = (FIXTURES / RECORDED_STREAM).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def recorded_jpeg_response() -> dict[str, Any]:
    """A real non-streaming Response (pydantic-ai, gpt-5) with a complete 1536x1024
    JPEG in ``output[1].result``."""
    data = json.loads((FIXTURES / RECORDED_JPEG).read_text(encoding="utf-8"))
    return cast("dict[str, Any]", data)


class LoopbackServer:
    """An http.server on 127.0.0.1 (port 0) served from a daemon thread: the shared frame of
    the test's small servers (a forward proxy, misbehaving relays). Use as a context manager."""

    def serve(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return "http://127.0.0.1:{}".format(self.server.server_address[1])

    def __enter__(self) -> Any:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class ForwardProxy(LoopbackServer):
    """A tiny plain-HTTP forward proxy on loopback: records each request line and
    Proxy-Authorization, and forwards the request to ``upstream`` (whatever host the absolute
    URI names)."""

    def __init__(self, upstream: Gateway) -> None:
        self.upstream = upstream
        self.lines: list[str] = []
        self.proxy_auth: list[str | None] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                proxy.lines.append(self.requestline)
                proxy.proxy_auth.append(self.headers.get("Proxy-Authorization"))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                parts = urllib.parse.urlsplit(self.path)
                target = parts.path + ("?" + parts.query if parts.query else "")
                skip = {"host", "connection", "proxy-authorization", "proxy-connection"}
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream.port, timeout=20)
                try:
                    conn.request("POST", target, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    hop = {"transfer-encoding", "content-length", "connection"}
                    self.send_response(resp.status, resp.reason)
                    for name, value in resp.getheaders():
                        if name.lower() not in hop:
                            self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    conn.close()
                self.close_connection = True

        self.serve(Handler)
