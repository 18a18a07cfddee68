"""The benchmark still runs: a quick pass over scenarios a, e and a small memory series (m), and
its HTTP framing helper.

No timing assertions: only that it completes, verifies its outputs and prints its table.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.bench.bench import sse_wire

BENCH = Path(__file__).resolve().parent / "bench.py"


def _dechunk(wire: bytes) -> tuple[bytes, bytes]:
    head, _, rest = wire.partition(b"\r\n\r\n")
    body = bytearray()
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            assert rest == b"\r\n"
            return head, bytes(body)
        body += rest[:size]
        assert rest[size : size + 2] == b"\r\n"
        rest = rest[size + 2 :]


def test_sse_wire_chunked_round_trip() -> None:
    body = bytes(range(256)) * 100 + b"tail"
    head, decoded = _dechunk(sse_wire(body, 1000))
    assert decoded == body
    assert b"Transfer-Encoding: chunked" in head
    plain = sse_wire(body, 0)
    assert plain.endswith(b"\r\n\r\n" + body)
    assert f"Content-Length: {len(body)}".encode() in plain


def test_quick_run_prints_a_verified_table() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--quick",
            "--scenarios",
            "a,e,m",
            "--mem-sizes",
            "1,3,4",
            "--rounds",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert any(line.startswith("scenario") and "wall s" in line for line in lines), proc.stdout
    rows = [line for line in lines if line.startswith(("a ", "e "))]
    assert any(" ours " in f" {row} " for row in rows), proc.stdout
    assert any("ours --help" in row for row in rows), proc.stdout
    assert "FAILED" not in proc.stdout
    assert "WARNING" not in proc.stderr
    assert "(a) SDK / ours" in proc.stdout or "openai SDK skipped" in proc.stdout
    series = [line for line in lines if line.split("  ")[0].strip() in ("1.0", "3.0", "4.0")]
    assert any("ours, 4 MB" in row for row in series), proc.stdout
    assert any("ours --no-stream, 4 MB" in row for row in series), proc.stdout
    assert "(m) peak RSS 4 MB / 3 MB image, streaming" in proc.stdout
