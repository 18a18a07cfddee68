"""Hostile answers for the loopback test gateway, and the checks that nothing secret leaked.

``raw_head_reply`` writes a status line and headers byte for byte (a reason phrase or a
``Location`` with escape sequences in it, which ``http.server`` would not send);
``on_arrival`` runs an action in the test process when the request arrives (e.g. a file that
appears at ``--out`` while the image renders) and then answers. ``leaks`` lists every form of a
secret found in a text: the secret itself, its URL-encoded and JSON-escaped forms, and any run
of 12 of its characters.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from urllib.parse import quote, quote_plus

from tests.gateway import Recorded, Reply

PIECE = 12  # the script masks every run of this many characters of a secret


class _RawHeadReply(Reply):
    def __init__(self, head: bytes, body: bytes) -> None:
        self.head = head
        self.body = body

    def describe(self) -> str:
        return f"raw head {self.head[:40]!r}"

    def send(self, h: object, rec: Recorded) -> None:
        wfile = h.wfile  # type: ignore[attr-defined]
        wfile.write(self.head + b"\r\n\r\n" + self.body)
        wfile.flush()
        rec.t_end = time.monotonic()
        h.close_connection = True  # type: ignore[attr-defined]


def raw_head_reply(
    status: int, reason: bytes, headers: Mapping[str, bytes] | None = None, body: bytes = b""
) -> Reply:
    """An answer whose status line and header values are sent exactly as given (bytes)."""
    lines = [b"HTTP/1.1 %d %s" % (status, reason)]
    merged = {"Content-Length": str(len(body)).encode(), "Connection": b"close"}
    merged.update(headers or {})
    lines += [name.encode("ascii") + b": " + value for name, value in merged.items()]
    return _RawHeadReply(b"\r\n".join(lines), body)


def on_arrival(action: Callable[[], None], reply: Reply) -> Callable[[Recorded], Reply]:
    """A reply callable: run ``action`` when the request arrives, then answer with ``reply``."""

    def make(rec: Recorded) -> Reply:
        action()
        return reply

    return make


def secret_forms(secret: str) -> list[str]:
    """Every spelling of ``secret`` that must never be printed or written."""
    forms = {
        secret,
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
    }
    forms.update(secret[i : i + PIECE] for i in range(len(secret) - PIECE + 1))
    return sorted(forms, key=len, reverse=True)


def leaks(secret: str, *texts: str) -> list[str]:
    """The forms of ``secret`` found in any of ``texts`` (empty: nothing leaked)."""
    joined = "\n".join(texts)
    return [form for form in secret_forms(secret) if form in joined]


def files_text(*roots: Path, skip: Iterable[Path] = ()) -> str:
    """The text of every file under ``roots`` (binary files decoded leniently), for leak checks;
    ``skip`` holds folders that are allowed to hold the key (the Codex home)."""
    skipped = [p.resolve() for p in skip]
    parts = []
    for root in roots:
        for path in sorted(root.rglob("*")):
            resolved = path.resolve()
            if any(resolved == s or s in resolved.parents for s in skipped):
                continue
            if path.is_file() and not path.is_symlink():
                parts.append(f"--- {path}\n" + path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(parts)
