"""Small misbehaving relays on loopback, in front of the fake upstream (``tests.gateway.Gateway``),
reproducing what real relays do to a client (see ../shared/reference/relays-2026.md, section 4):

* ``portkey``: every *streamed* pass-through request ends in the relay's own
  ``HTTP 500 {"status":"failure","message":"Something went wrong"}`` after the upstream delivered
  the whole image (a bug in @portkey-ai/gateway 1.15's header handling); non-streamed requests
  pass through.
* ``claude_relay``: like claude-relay-service 1.1, after an upstream 429 (or 500) it parks its
  upstream account and answers ``HTTP 400 Internal server error`` to every request meanwhile,
  without asking the upstream; it has no ``GET /responses/{id}`` (404). Streams pass through
  live, and it records whether the client was still there when ``response.completed`` came:
  a client that hung up before is logged as an abort, with no usage recorded.

    with Gateway() as upstream, Relay(upstream, "portkey") as relay:
        run_cli([...], env_for(relay.base_url))
        assert len(upstream.posts()) == 2
"""

from __future__ import annotations

import http.client
import http.server
import json
import select
import socket
from typing import Any

from tests.gateway import Gateway, LoopbackServer

__all__ = ["Relay"]

HOP = {"transfer-encoding", "content-length", "connection", "keep-alive", "host"}


class Relay(LoopbackServer):
    """A relay with one of the behaviours above. Use as a context manager."""

    def __init__(self, upstream: Gateway, behaviour: str) -> None:
        if behaviour not in ("portkey", "claude_relay"):
            raise ValueError(behaviour)
        self.upstream = upstream
        self.behaviour = behaviour
        self.parked = ""  # claude_relay: why the upstream account is parked ("" = not parked)
        self.completed = 0  # streams whose response.completed reached a connected client
        self.aborted = 0  # streams whose client hung up before response.completed
        self.answers: list[int] = []  # the status of each answer the relay gave
        relay = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                relay._handle(self)

            do_POST = do_GET

        self.serve(Handler)

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    # -- answers ---------------------------------------------------------------------------

    def _reply(self, h: http.server.BaseHTTPRequestHandler, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode("utf-8")
        self.answers.append(status)
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(data)
        h.close_connection = True

    def _handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            payload = {}
        streamed = isinstance(payload, dict) and bool(payload.get("stream"))
        if self.behaviour == "claude_relay":
            if h.command == "GET":
                self._reply(h, 404, {"error": {"message": "Not found"}})
                return
            if self.parked:
                # its own generic answer while the upstream account is parked
                self._reply(h, 400, {"error": {"message": "Internal server error"}})
                return
        headers = {k: v for k, v in h.headers.items() if k.lower() not in HOP}
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream.port, timeout=30)
        try:
            conn.request(h.command, h.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            if self.behaviour == "portkey" and streamed and resp.status < 400:
                resp.read()  # the upstream delivered (and billed) the whole image...
                self._reply(h, 500, {"status": "failure", "message": "Something went wrong"})
                return
            if self.behaviour == "claude_relay" and resp.status in (429, 500):
                self.parked = f"upstream {resp.status}"
            if "event-stream" in (resp.getheader("content-type") or ""):
                self._stream(h, resp)
                return
            data = resp.read()
            self.answers.append(resp.status)
            h.send_response(resp.status, resp.reason)
            for name, value in resp.getheaders():
                if name.lower() not in HOP:
                    h.send_header(name, value)
            h.send_header("Content-Length", str(len(data)))
            h.send_header("Connection", "close")
            h.end_headers()
            h.wfile.write(data)
            h.close_connection = True
        finally:
            conn.close()

    def _stream(self, h: http.server.BaseHTTPRequestHandler, resp: Any) -> None:
        """Pass the upstream's SSE through event by event, noting whether the client was still
        connected when response.completed came (a relay records usage only then)."""
        self.answers.append(resp.status)
        h.send_response(resp.status, resp.reason)
        h.send_header("Content-Type", resp.getheader("content-type"))
        h.send_header("Connection", "close")
        h.end_headers()
        h.close_connection = True
        block = b""
        while True:
            line = resp.readline()
            if not line:
                break
            block += line
            if line.strip():
                continue
            if b"response.completed" in block:
                if client_gone(h.connection):
                    self.aborted += 1
                    return
                self.completed += 1
            try:
                h.wfile.write(block)
                h.wfile.flush()
            except OSError:
                self.aborted += 1
                return
            block = b""


def client_gone(sock: socket.socket) -> bool:
    """The client closed its end (a readable socket with nothing to read)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0.2)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True
