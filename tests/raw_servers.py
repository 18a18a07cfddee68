"""Loopback servers that misbehave on purpose, for the transport tests (standard library only).

``RawServer`` answers every connection with bytes a test writes itself (any status line,
framing, endless streams). ``ConnectProxy`` is an HTTP CONNECT proxy with Basic auth that
tunnels to loopback only, or refuses with a status of the test's choosing.
"""

from __future__ import annotations

import base64
import socket
import threading
import zlib
from collections.abc import Callable, Iterator
from typing import TypeVar

__all__ = ["ConnectProxy", "EarlyServer", "RawServer", "big_png", "endless", "gzip_bytes", "send"]

Answer = Callable[[socket.socket, bytes], None]


def read_head(conn: socket.socket) -> bytes:
    """Bytes up to and past the blank line that ends a request's head (whatever arrived with
    it), or what came before the client closed without one."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = conn.recv(65536)
        if not piece:
            break
        data += piece
    return data


def read_request(conn: socket.socket) -> bytes:
    """The request head plus a Content-Length body, as the raw bytes that arrived."""
    data = read_head(conn)
    if b"\r\n\r\n" not in data:
        return data
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


ListenerT = TypeVar("ListenerT", bound="_Listener")


class _Listener:
    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.connections = 0
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self: ListenerT) -> ListenerT:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(30)
                self._handle(conn)
            except OSError:
                pass  # the client gave up: expected for endless answers

    def _handle(self, conn: socket.socket) -> None:
        raise NotImplementedError


class RawServer(_Listener):
    """Reads each request, records it, then lets ``answer(conn, request)`` write anything."""

    def __init__(self, answer: Answer) -> None:
        super().__init__()
        self.answer = answer
        self.requests: list[bytes] = []

    def _handle(self, conn: socket.socket) -> None:
        request = read_request(conn)
        self.requests.append(request)
        self.answer(conn, request)


class EarlyServer(_Listener):
    """Answers ``answer`` as soon as a request's head has arrived, without reading its body,
    then closes (what a gateway does with a body it will not take: 413). Records the heads."""

    def __init__(self, answer: bytes) -> None:
        super().__init__()
        self.answer = answer
        self.heads: list[bytes] = []

    def _handle(self, conn: socket.socket) -> None:
        head = read_head(conn)
        if b"\r\n\r\n" not in head:
            return
        self.heads.append(head.partition(b"\r\n\r\n")[0])
        conn.sendall(self.answer)


def send(*parts: bytes) -> Answer:
    """An answer that writes these bytes, then closes."""

    def answer(conn: socket.socket, request: bytes) -> None:
        for part in parts:
            conn.sendall(part)

    return answer


def endless(head: bytes, piece: bytes) -> Answer:
    """An answer that writes ``head``, then ``piece`` again and again until the client leaves."""

    def answer(conn: socket.socket, request: bytes) -> None:
        conn.sendall(head)
        while True:
            conn.sendall(piece)

    return answer


def gzip_bytes(data: bytes, wbits: int = 31) -> bytes:
    """gzip (31), zlib (15) or raw deflate (-15) of data."""
    c = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return c.compress(data) + c.flush()


def big_png(size: int) -> bytes:
    """A well-formed PNG container of about ``size`` bytes (random IDAT data: the script
    checks the signature, the header and the end marker, not the pixels)."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", 4096, 4096, 8, 6, 0, 0, 0)
    body = b"".join(chunk(b"IDAT", _noise(1 << 20)) for _ in range(max(1, size >> 20)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + body + chunk(b"IEND", b"")


def _noise(n: int) -> bytes:
    import random

    return random.Random(n).randbytes(n)


class ConnectProxy(_Listener):
    """An HTTP CONNECT proxy on loopback. With ``credentials`` ("user:pass") it answers 407
    unless they come in Proxy-Authorization; with ``refuse`` it answers that status line to
    every CONNECT. Records each request line and Proxy-Authorization."""

    def __init__(self, credentials: str = "", refuse: bytes = b"") -> None:
        super().__init__()
        self.credentials = credentials
        self.refuse = refuse
        self.lines: list[str] = []
        self.auth: list[str | None] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            head = read_head(conn)
            if b"\r\n\r\n" not in head:
                return
            lines = head.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
            self.lines.append(lines[0])
            auth = None
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "proxy-authorization":
                    auth = value.strip()
            self.auth.append(auth)
            method, target, _ = lines[0].split(" ", 2)
            if self.refuse:
                conn.sendall(self.refuse + b"\r\nContent-Length: 0\r\n\r\n")
                return
            want = "Basic " + base64.b64encode(self.credentials.encode()).decode()
            if self.credentials and auth != want:
                conn.sendall(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b'Proxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\n\r\n'
                )
                return
            host, _, port = target.rpartition(":")
            if method != "CONNECT" or host not in ("127.0.0.1", "localhost"):
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return  # never a non-loopback address
            upstream = socket.create_connection(("127.0.0.1", int(port)), timeout=30)
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            with upstream:
                back = threading.Thread(target=_pump, args=(upstream, conn), daemon=True)
                back.start()
                _pump(conn, upstream)
                back.join(30)


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        for data in _recv_all(src):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _recv_all(sock: socket.socket) -> Iterator[bytes]:
    while True:
        data = sock.recv(65536)
        if not data:
            return
        yield data
