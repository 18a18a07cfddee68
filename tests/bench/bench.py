#!/usr/bin/env python3
"""Benchmark: how much ``generate_gateway_image.py`` adds on top of the gateway's own time.

Run from the repository root (not part of the pytest run)::

    python tests/bench/bench.py                 # all scenarios, 5 rounds (a few minutes on 2 cores)
    python tests/bench/bench.py --quick         # 1 round, no warm-up
    python tests/bench/bench.py --scenarios a,b --rounds 9 --json bench.json
    python tests/bench/bench.py --scenarios m --mem-sizes 3,60   # the memory series only

A loopback server inside this process answers every contender with the same prebuilt bytes and
no generation delay (scenario d excepted), so the wall time is what the client adds: interpreter
start, imports, building and uploading the request, reading and parsing the answer, decoding the
base64, writing the file.

Contenders (alternated round by round, each a real child process):

* ``ours``: ``python generate_gateway_image.py --prompt ... --out F --base-url URL --quiet --force``
* ``ours --no-stream``: the same with ``--no-stream`` (the server answers one JSON document)
* ``ours, installed`` (scenarios a, e; for information): what the ``codex-imagegen`` command of
  ``pip install .`` runs, ``from generate_gateway_image import main``, whose bytecode Python caches;
  ``python generate_gateway_image.py`` compiles the whole file on every run
* ``floor``: ``curl`` saves the response to a file, then a minimal ``python -c`` finds the first
  ``"result":"`` and base64-decodes it (scenario c: a minimal ``python -c`` builds the request
  JSON first). Skipped, with a note, when curl is missing.
* ``openai SDK``: ``client.responses.create(..., stream=True)``, the result of the
  ``response.output_item.done`` event, b64decode, write. Only when ``import openai`` works
  (``pip install -e '.[bench]'``).

Scenarios:

a. a 1024x1024 PNG of about 1.5 MB (half noise, half gradient: about what a real 1024x1024
   render weighs; a pure gradient would compress to a few kB and measure nothing)
b. a 3840x2160 PNG with incompressible pixels (~25 MB, ~33 MB base64, twice in the stream)
c. an edit with four 8 MB reference PNGs (request building and a ~45 MB upload)
d. a batch of 16 jobs, 1 s simulated generation each, at concurrency 4 (ideal: 4 s)
e. start-up: ``--help`` and ``--dry-run`` against ``python -c pass`` and the stdlib work they
   cannot avoid (``import argparse`` and formatting a help text; plus ``json``, ``urllib.parse``),
   also with ``python -S`` (no site-packages ``.pth`` hooks, which some machines run at start-up)
m. the memory series: incompressible noise PNGs of about 1, 3, 8, 24 and 60 MB (``--mem-sizes``),
   streamed (SSE) at every size and as one ``--no-stream`` JSON body at 3 MB and the largest
   size: the child's peak RSS and its user + system CPU seconds, also per MB of image. Target:
   peak RSS for the largest image at most 1.5x the peak for the 3 MB one, measured in one run

Peak memory and CPU: every child is started by a small runner process (``python -I -S``) and
reaped with ``os.wait4``, whose ``ru_maxrss``, ``ru_utime`` and ``ru_stime`` are that child's own
(RUSAGE_CHILDREN would mix all children). Children are not forked from this process on
purpose: Linux carries the parent's peak RSS into a child's ``ru_maxrss`` across ``exec``, and this
process holds the served streams (hundreds of MB).

The SSE answer is sent with HTTP/1.1 chunked encoding in ``--chunk-size`` pieces (default 16 KiB,
like a proxy re-chunking TLS records); ``--chunk-size 0`` sends one body with Content-Length.
Every output file is compared with the served image; a mismatch is reported loudly and the run
does not count.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.server
import json
import math
import os
import platform
import random
import re
import select
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, cast

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "generate_gateway_image.py"
KEY = "sk-bench-0000"
MODEL = "gpt-5.5"
PROMPT = "a lighthouse at dusk, oil painting"
MB = 1024 * 1024

# targets from issue 5
TARGET_FLOOR_RATIO = 1.25  # ours / floor in a and b
TARGET_SDK_SPEEDUP = 6.0  # SDK / ours in a
TARGET_RSS_FACTOR = 3.0  # peak RSS in b / decoded image size
TARGET_BATCH_SLACK = 0.15  # d within 15% of the ideal wall time
TARGET_HELP_RATIO = 1.5  # --help / (interpreter + the stdlib imports it needs)
# target from issue 10
TARGET_MEM_FLAT = 1.5  # memory series: peak RSS for the largest image / for the 3 MB one
MEM_SIZES = (1, 3, 8, 24, 60)  # memory series: noise PNGs of about this many MB
MEM_REFERENCE_MB = 3  # the series' ratio is taken against this size

BATCH_JOBS = 16
BATCH_CONCURRENCY = 4
BATCH_DELAY = 1.0


# --- test images ---------------------------------------------------------------------------


def _png(width: int, height: int, rows: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows, 6))
        + chunk(b"IEND", b"")
    )


def half_noise_png(width: int, height: int, seed: int = 1) -> bytes:
    """RGB PNG whose left half is noise and right half a gradient: ~width*height*1.5 bytes."""
    rng = random.Random(seed)
    row_len = width * 3
    noisy = row_len // 2
    rows = bytearray()
    for y in range(height):
        rows.append(0)
        rows += rng.randbytes(noisy)
        rows += bytes((y * 255 // max(height - 1, 1),)) * (row_len - noisy)
    return _png(width, height, bytes(rows))


def noise_png(width: int, height: int, seed: int = 0) -> bytes:
    """The incompressible PNG of tests/images.py (imported from there)."""
    sys.path.insert(0, str(ROOT))
    from tests.images import png_bytes

    return png_bytes(width, height, noise=True, seed=seed)


# --- the server ----------------------------------------------------------------------------

_STREAM_RE = re.compile(rb'"stream"\s*:\s*(true|false)')


@dataclass
class Seen:
    """One request as the bench server saw it."""

    nbytes: int
    stream: bool
    images: int  # data:image/ URLs in the body
    t_arrived: float  # time.monotonic() when the body had been read
    t_answered: float = float("nan")  # ... and when the answer had been sent


def sse_wire(body: bytes, chunk_size: int) -> bytes:
    """Status line, headers and the SSE body, chunk-framed (or with Content-Length)."""
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
        "Cache-Control: no-cache\r\nConnection: close\r\n"
    )
    if chunk_size <= 0:
        return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    view = memoryview(body)
    parts: list[bytes | memoryview] = [(head + "Transfer-Encoding: chunked\r\n\r\n").encode()]
    for pos in range(0, len(body), chunk_size):
        piece = view[pos : pos + chunk_size]
        parts += [b"%x\r\n" % len(piece), piece, b"\r\n"]
    parts.append(b"0\r\n\r\n")
    return b"".join(parts)


def json_wire(body: bytes) -> bytes:
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass

    def _body(self) -> bytes:
        sys.path.insert(0, str(ROOT))
        from tests.gateway import read_request_body

        return read_request_body(self.rfile, self.headers)

    def do_POST(self) -> None:
        server = cast("BenchServer", getattr(self.server, "bench"))  # noqa: B009
        body = self._body()
        pos = body.find(b'"stream"')  # fast (memchr); a regex over 45 MB would not be
        match = _STREAM_RE.match(body, pos) if pos >= 0 else None
        stream = bool(match and match.group(1) == b"true")
        seen = Seen(len(body), stream, body.count(b"data:image/"), time.monotonic())
        server.record(seen)
        del body
        if server.delay:
            time.sleep(server.delay)
        self.close_connection = True
        try:
            self.connection.sendall(server.sse if stream else server.json)
        except (BrokenPipeError, ConnectionResetError):
            pass  # a client may hang up once it has the image (the stream carries it twice)
        seen.t_answered = time.monotonic()

    def do_GET(self) -> None:
        self.close_connection = True
        self.connection.sendall(
            json_wire(b'{"error":{"message":"not here"}}').replace(b"200 OK", b"404 Not Found", 1)
        )


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


class BenchServer:
    """Loopback HTTP server that answers POST /v1/responses with prebuilt bytes.

    The request is read (and counted), then discarded; the answer is SSE when the body says
    ``"stream": true``, else the JSON Response object. Both are built once per scenario, so a
    70 MB answer costs one ``sendall``.
    """

    def __init__(self) -> None:
        self.sse = b""
        self.json = b""
        self.delay = 0.0
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._http = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._http.bench = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def __enter__(self) -> BenchServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/v1"

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def count(self) -> int:
        with self._lock:
            return len(self.seen)

    def since(self, n: int) -> list[Seen]:
        with self._lock:
            return self.seen[n:]


def build_answers(image: bytes, size: str, chunk_size: int) -> tuple[bytes, bytes, int]:
    """(SSE wire bytes, JSON wire bytes, SSE body size) for one image."""
    sys.path.insert(0, str(ROOT))
    from tests.gateway import format_sse, image_events, image_item, response_obj

    b64 = base64.b64encode(image).decode("ascii")
    sse_body = format_sse(image_events(b64, size=size))
    json_body = json.dumps(
        response_obj([image_item(b64, size=size)]), separators=(",", ":")
    ).encode()
    return sse_wire(sse_body, chunk_size), json_wire(json_body), len(sse_body)


# --- running children ------------------------------------------------------------------------

# A small, long-lived process that spawns each child and reaps it with wait4, so ru_maxrss is
# that child's own peak (see the module docstring). Protocol: one JSON command per line in,
# {"pid": N} per spawned step and one final {"rc", "wall", "maxrss", "cpu", "walls"} line out
# (cpu: user + system seconds of the steps, each reaped child's own rusage, summed).
RUNNER = r"""
import json, os, sys, time
OUT = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
scale = 1 if sys.platform == "darwin" else 1024
def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
for line in sys.stdin:
    cmd = json.loads(line)
    os.chdir(cmd["cwd"])
    rc, maxrss, cpu, walls, err = 0, 0, 0.0, [], ""
    t0 = time.perf_counter()
    for step in cmd["steps"]:
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, step["stdout"], OUT, 0o644),
            (os.POSIX_SPAWN_OPEN, 2, step["stderr"], OUT, 0o644),
        ]
        t1 = time.perf_counter()
        try:
            pid = os.posix_spawnp(step["argv"][0], step["argv"], cmd["env"], file_actions=actions)
        except OSError as exc:
            rc, err = 127, str(exc)
            break
        say({"pid": pid})
        _, status, usage = os.wait4(pid, 0)
        walls.append(time.perf_counter() - t1)
        maxrss = max(maxrss, usage.ru_maxrss * scale)
        cpu += usage.ru_utime + usage.ru_stime
        rc = os.waitstatus_to_exitcode(status)
        if rc:
            break
    say({"rc": rc, "wall": time.perf_counter() - t0, "maxrss": maxrss, "cpu": cpu,
         "walls": walls, "error": err})
"""


@dataclass
class Step:
    argv: list[str]
    name: str = ""


@dataclass
class Result:
    rc: int
    wall: float
    maxrss: int | None  # bytes
    walls: list[float]
    stdout: str
    stderr: str
    error: str = ""
    t_sent: float = 0.0  # time.monotonic() in this process when the run was started
    t_done: float = 0.0  # ... and when its result arrived
    cpu: float | None = None  # user + system seconds of the child(ren), from wait4


class Runner:
    """Runs steps through the runner process (POSIX) or plainly (no peak RSS then)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self._buf = b""
        if hasattr(os, "posix_spawnp") and hasattr(os, "wait4"):
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", RUNNER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )

    def close(self) -> None:
        if self.proc is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(10)
            self.proc = None

    def _readline(self, deadline: float) -> dict[str, Any] | None:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                data = os.read(fd, 65536)
                if not data:
                    raise RuntimeError("the runner process died")
                self._buf += data
        line, _, self._buf = self._buf.partition(b"\n")
        return cast("dict[str, Any]", json.loads(line))

    def run(
        self, steps: Sequence[Step], env: dict[str, str], cwd: Path, timeout: float = 180.0
    ) -> Result:
        outs = [(cwd / f".step{i}.out", cwd / f".step{i}.err") for i in range(len(steps))]
        if self.proc is None:
            return self._run_plain(steps, env, cwd, outs, timeout)
        assert self.proc.stdin is not None
        cmd = {
            "cwd": str(cwd),
            "env": env,
            "steps": [
                {"argv": s.argv, "stdout": str(o), "stderr": str(e)}
                for s, (o, e) in zip(steps, outs)
            ],
        }
        t_sent = time.monotonic()
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        timed_out = False
        pid = 0
        while True:
            msg = self._readline(deadline)
            if msg is None:  # timeout: kill the child it is waiting for, then read on
                timed_out = True
                if pid:
                    try:
                        os.kill(pid, 9)
                    except OSError:
                        pass
                deadline = time.monotonic() + 30
                continue
            if "pid" in msg:
                pid = int(msg["pid"])
                continue
            break
        result = Result(
            rc=int(msg["rc"]),
            wall=float(msg["wall"]),
            maxrss=int(msg["maxrss"]),
            walls=[float(w) for w in msg["walls"]],
            stdout="",
            stderr="",
            error=str(msg.get("error") or ""),
            t_sent=t_sent,
            t_done=time.monotonic(),
            cpu=float(msg["cpu"]),
        )
        if timed_out:
            result.error = f"timed out after {timeout:g}s"
        self._collect(result, outs)
        return result

    def _run_plain(
        self,
        steps: Sequence[Step],
        env: dict[str, str],
        cwd: Path,
        outs: list[tuple[Path, Path]],
        timeout: float,
    ) -> Result:
        t0 = time.perf_counter()
        t_sent = time.monotonic()
        walls: list[float] = []
        rc = 0
        for step, (o, e) in zip(steps, outs):
            t1 = time.perf_counter()
            with open(o, "wb") as fo, open(e, "wb") as fe:
                rc = subprocess.run(
                    step.argv, env=env, cwd=cwd, stdout=fo, stderr=fe, timeout=timeout
                ).returncode
            walls.append(time.perf_counter() - t1)
            if rc:
                break
        result = Result(rc, time.perf_counter() - t0, None, walls, "", "")
        result.t_sent, result.t_done = t_sent, time.monotonic()
        self._collect(result, outs)
        return result

    @staticmethod
    def _collect(result: Result, outs: list[tuple[Path, Path]]) -> None:
        for o, e in outs:
            for path, attr in ((o, "stdout"), (e, "stderr")):
                if path.exists():
                    text = path.read_text("utf-8", "replace")
                    setattr(result, attr, getattr(result, attr) + text[-4000:])
                    path.unlink()


# --- contenders and scenarios ------------------------------------------------------------------

# What the console script of `pip install .` (codex-imagegen) runs: an import, so the module's
# bytecode is cached in __pycache__, unlike `python generate_gateway_image.py`, which compiles
# the whole file on every run.
INSTALLED = "import sys; from generate_gateway_image import main; sys.exit(main())"
INSTALLED_LABEL = "ours, installed (cached bytecode)"
PYC_ENV = {"PYTHONPATH": str(ROOT)}

FLOOR_DECODE = (
    "import base64,sys\n"
    "b=open(sys.argv[1],'rb').read()\n"
    'i=b.index(b\'"result":"\')+10\n'
    "open(sys.argv[2],'wb').write(base64.b64decode(b[i:b.index(b'\"',i)]))\n"
)

FLOOR_BUILD = (
    "import base64,json,sys\n"
    "out,prompt,*imgs=sys.argv[1:]\n"
    "c=[{'type':'input_text','text':prompt}]\n"
    "for p in imgs:\n"
    " c.append({'type':'input_image','image_url':'data:image/png;base64,'"
    "+base64.b64encode(open(p,'rb').read()).decode()})\n"
    "b={'model':'" + MODEL + "','input':[{'role':'user','content':c}],"
    "'tools':[{'type':'image_generation'}],'stream':True}\n"
    "open(out,'w').write(json.dumps(b))\n"
)

SDK_SCRIPT = """\
import base64
import sys

from openai import OpenAI

base_url, key, model, prompt, out, *images = sys.argv[1:]
client = OpenAI(base_url=base_url, api_key=key, max_retries=0)
content = [{"type": "input_text", "text": prompt}]
for path in images:
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode()
    content.append({"type": "input_image", "image_url": "data:image/png;base64," + data})
stream = client.responses.create(
    model=model,
    input=[{"role": "user", "content": content}],
    tools=[{"type": "image_generation"}],
    stream=True,
)
result = None
for event in stream:
    if event.type == "response.output_item.done" and event.item.type == "image_generation_call":
        result = event.item.result
if not result:
    sys.exit("no image in the stream")
with open(out, "wb") as f:
    f.write(base64.b64decode(result))
"""


@dataclass
class Contender:
    name: str
    kind: str  # ours | floor | sdk | baseline
    steps: Callable[[Path], list[Step]]  # out path -> steps
    produces: bool = True  # writes an image to the out path
    requests: int = 1  # POSTs the server must see per run
    env: dict[str, str] = field(default_factory=dict)  # added to the child's environment


@dataclass
class Stats:
    name: str
    kind: str
    walls: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)  # bytes
    failures: list[str] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # user + system seconds per run
    image_mb: float | None = None  # the served image's size (memory series)
    nominal_mb: int | None = None  # ... as asked for with --mem-sizes

    @property
    def wall(self) -> float | None:
        return statistics.median(self.walls) if self.walls else None

    @property
    def rss_mb(self) -> float | None:
        return statistics.median(self.rss) / MB if self.rss else None

    @property
    def cpu_s(self) -> float | None:
        return statistics.median(self.cpu) if self.cpu else None


@dataclass
class ScenarioResult:
    key: str
    title: str
    info: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    stats: dict[str, Stats] = field(default_factory=dict)


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.home = tmp / "home"
        self.home.mkdir()
        self.runner = Runner(tmp)
        self.server = BenchServer()
        self.py = sys.executable
        self.curl = shutil.which("curl")
        self.sdk = self._has_openai()
        self.sdk_script = tmp / "sdk_client.py"
        self.sdk_script.write_text(SDK_SCRIPT, encoding="utf-8")
        self.help_text = ""
        self.results: list[ScenarioResult] = []

    # environment of every child: clean, no proxies, an empty HOME (no Codex config)
    def env(self) -> dict[str, str]:
        keep = ("PATH", "SYSTEMROOT", "TMPDIR", "TEMP", "TMP", "LANG", "LC_ALL", "PYTHONPATH")
        env = {k: v for k, v in os.environ.items() if k in keep}
        env.update(
            HOME=str(self.home),
            CODEX_API_KEY=KEY,
            NO_PROXY="*",
            no_proxy="*",
            PYTHONIOENCODING="utf-8",
        )
        return env

    def _has_openai(self) -> bool:
        proc = subprocess.run([self.py, "-c", "import openai"], env=self.env(), capture_output=True)
        return proc.returncode == 0

    def ours(self, *extra: str) -> list[str]:
        return [self.py, str(SCRIPT), *extra]

    # -- one scenario ---------------------------------------------------------------------
    def measure(
        self,
        res: ScenarioResult,
        contenders: list[Contender],
        rounds: int,
        expect: bytes | None,
        check: Callable[[list[Seen]], str] | None = None,
        out_is_dir: bool = False,
        observe: Callable[[Result, list[Seen]], None] | None = None,
    ) -> None:
        digest = hashlib.sha256(expect).hexdigest() if expect is not None else ""
        for c in contenders:
            res.stats[c.name] = Stats(c.name, c.kind)
        warmup = 0 if self.args.quick else 1
        workdir = self.tmp / res.key
        workdir.mkdir(exist_ok=True)
        for r in range(-warmup, rounds):
            order = contenders[r % len(contenders) :] + contenders[: r % len(contenders)]
            for c in order:
                out = workdir / (f"out-{c.kind}-{r}" + ("" if out_is_dir else ".png"))
                n0 = self.server.count()
                result = self.runner.run(c.steps(out), {**self.env(), **c.env}, workdir)
                seen = self.server.since(n0)
                problem = self._verify(c, result, out, digest, seen, check, out_is_dir)
                if out_is_dir:
                    shutil.rmtree(out, ignore_errors=True)
                else:
                    out.unlink(missing_ok=True)
                if r < 0:
                    if problem:
                        warn(f"{res.key} {c.name} (warm-up): {problem}")
                    continue
                stats = res.stats[c.name]
                if problem:
                    stats.failures.append(problem)
                    warn(f"{res.key} {c.name} round {r + 1}: {problem}")
                    continue
                stats.walls.append(result.wall)
                if result.maxrss is not None:
                    stats.rss.append(result.maxrss)
                if result.cpu is not None:
                    stats.cpu.append(result.cpu)
                if observe is not None:
                    observe(result, seen)
            progress(f"  {res.key}: round {r + 1}/{rounds}" if r >= 0 else f"  {res.key}: warm-up")

    def _verify(
        self,
        c: Contender,
        result: Result,
        out: Path,
        digest: str,
        seen: list[Seen],
        check: Callable[[list[Seen]], str] | None,
        out_is_dir: bool,
    ) -> str:
        if result.error or result.rc != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            return "exit {} {}: {}".format(result.rc, result.error, " | ".join(tail))
        if len(seen) != c.requests:
            return f"the server saw {len(seen)} requests, expected {c.requests}"
        if check is not None and seen:
            problem = check(seen)
            if problem:
                return problem
        if not c.produces:
            return ""
        files = sorted(out.iterdir()) if out_is_dir and out.is_dir() else [out]
        if out_is_dir and len(files) != c.requests:
            return f"{len(files)} files in the output folder, expected {c.requests}"
        for f in files:
            if not f.is_file():
                return f"no output file {f.name}"
            if sha256_file(f) != digest:
                return f"OUTPUT DIFFERS from the served image: {f.name}"
        return ""

    # -- contenders for the one-image scenarios -------------------------------------------
    def image_contenders(
        self, key: str, images: list[Path], req_json: Path | None
    ) -> tuple[list[Contender], list[str]]:
        url = self.server.base_url
        img_args = [a for p in images for a in ("--image", str(p))]
        notes: list[str] = []
        common = ["--prompt", PROMPT, "--base-url", url, "--quiet", "--force", *img_args]

        def ours(out: Path) -> list[Step]:
            return [Step(self.ours(*common, "--out", str(out)))]

        def ours_json(out: Path) -> list[Step]:
            return [Step(self.ours(*common, "--no-stream", "--out", str(out)))]

        contenders = [
            Contender("ours", "ours", ours),
            Contender("ours --no-stream", "ours-json", ours_json),
        ]
        if key == "a":

            def ours_pyc(out: Path) -> list[Step]:
                return [Step([self.py, "-c", INSTALLED, *common, "--out", str(out)])]

            contenders.append(Contender(INSTALLED_LABEL, "ours-pyc", ours_pyc, env=PYC_ENV))
        if self.curl:
            work = self.tmp / key

            def floor(out: Path) -> list[Step]:
                req = req_json or work / "req.json"
                steps = []
                if req_json is None:
                    steps.append(
                        Step([self.py, "-c", FLOOR_BUILD, str(req), PROMPT, *map(str, images)])
                    )
                steps.append(
                    Step(
                        [
                            self.curl or "curl",
                            "-s",
                            "-S",
                            "-o",
                            str(work / "body.sse"),
                            "--data-binary",
                            f"@{req}",
                            "-H",
                            "Content-Type: application/json",
                            "-H",
                            f"Authorization: Bearer {KEY}",
                            "-H",
                            "Accept: text/event-stream",
                            "-H",
                            "Expect:",
                            url + "/responses",
                        ]
                    )
                )
                steps.append(Step([self.py, "-c", FLOOR_DECODE, str(work / "body.sse"), str(out)]))
                return steps

            label = "floor (py+curl+py)" if req_json is None else "floor (curl+py)"
            contenders.append(Contender(label, "floor", floor))
        else:
            notes.append("floor skipped: curl is not installed")
        if self.sdk:

            def sdk(out: Path) -> list[Step]:
                argv = [self.py, str(self.sdk_script), url, KEY, MODEL, PROMPT, str(out)]
                return [Step(argv + [str(p) for p in images])]

            contenders.append(Contender("openai SDK", "sdk", sdk))
        else:
            notes.append("openai SDK skipped: not installed (pip install -e '.[bench]')")
        return contenders, notes

    def request_json(self, path: Path) -> Path:
        body = {
            "model": MODEL,
            "input": [{"role": "user", "content": [{"type": "input_text", "text": PROMPT}]}],
            "tools": [{"type": "image_generation", "size": "1024x1024", "output_format": "png"}],
            "tool_choice": {"type": "image_generation"},
            "store": False,
            "stream": True,
        }
        path.write_text(json.dumps(body), encoding="utf-8")
        return path

    def serve(self, image: bytes, size: str, delay: float = 0.0) -> int:
        self.server.sse, self.server.json, n = build_answers(image, size, self.args.chunk_size)
        self.server.delay = delay
        return n

    # -- scenarios ----------------------------------------------------------------------
    def scenario_a(self) -> ScenarioResult:
        res = ScenarioResult("a", "1024x1024 image")
        image = half_noise_png(1024, 1024)
        sse_len = self.serve(image, "1024x1024")
        res.info.update(image_mb=len(image) / MB, stream_mb=sse_len / MB)
        (self.tmp / "a").mkdir()
        contenders, res.notes = self.image_contenders(
            "a", [], self.request_json(self.tmp / "a" / "req.json")
        )
        self.measure(res, contenders, self.args.rounds, image)
        return res

    def scenario_b(self) -> ScenarioResult:
        res = ScenarioResult("b", "3840x2160 noise image")
        image = noise_png(3840, 2160)
        sse_len = self.serve(image, "3840x2160")
        res.info.update(
            image_mb=len(image) / MB,
            base64_mb=len(base64.b64encode(image)) / MB,
            stream_mb=sse_len / MB,
        )
        (self.tmp / "b").mkdir()
        contenders, res.notes = self.image_contenders(
            "b", [], self.request_json(self.tmp / "b" / "req.json")
        )
        self.measure(res, contenders, self.args.rounds, image)
        self.server.sse = self.server.json = b""
        return res

    def scenario_c(self) -> ScenarioResult:
        res = ScenarioResult("c", "edit, 4 x 8 MB references")
        refs_dir = self.tmp / "refs"
        refs_dir.mkdir()
        refs = []
        for i in range(4):
            path = refs_dir / f"ref{i}.png"
            path.write_bytes(noise_png(1672, 1672, seed=10 + i))
            refs.append(path)
        image = half_noise_png(1024, 1024)
        self.serve(image, "1024x1024")
        res.info.update(
            references_mb=sum(p.stat().st_size for p in refs) / MB,
            upload_mb=4 * (refs[0].stat().st_size * 4 / 3) / MB,
        )
        (self.tmp / "c").mkdir()
        contenders, res.notes = self.image_contenders("c", refs, None)

        def check(seen: list[Seen]) -> str:
            n = seen[0].images
            return "" if n == 4 else f"the request carried {n} images, expected 4"

        self.measure(res, contenders, self.args.rounds, image, check)
        return res

    def scenario_d(self) -> ScenarioResult:
        res = ScenarioResult("d", f"batch {BATCH_JOBS} x {BATCH_DELAY:g}s, concurrency 4")
        ideal = BATCH_JOBS / BATCH_CONCURRENCY * BATCH_DELAY
        res.info.update(ideal_s=ideal)
        if "--batch" not in self.help_text:
            res.notes.append("skipped: --batch not available in generate_gateway_image.py")
            return res
        image = half_noise_png(1024, 1024)
        self.serve(image, "1024x1024", delay=BATCH_DELAY)
        jobs = self.tmp / "jobs.jsonl"
        jobs.write_text(
            "".join(json.dumps(f"{PROMPT} {i + 1}") + "\n" for i in range(BATCH_JOBS)),
            encoding="utf-8",
        )
        url = self.server.base_url

        def ours(out: Path) -> list[Step]:
            args = ["--batch", str(jobs), "--out-dir", str(out)]
            args += ["--concurrency", str(BATCH_CONCURRENCY), "--base-url", url, "--quiet"]
            return [Step(self.ours(*args))]

        contenders = [Contender("ours --batch", "ours", ours, requests=BATCH_JOBS)]
        rounds = max(1, min(self.args.rounds, 3))  # 4+ s each; 3 rounds are plenty
        timing: dict[str, list[float]] = {}

        def observe(result: Result, seen: list[Seen]) -> None:
            # where the time goes: start-up until the first request, the slot turnaround (an
            # answer sent -> the next request on the freed slot), the exit after the last answer
            arrivals = sorted(x.t_arrived for x in seen)
            answers = sorted(x.t_answered for x in seen)
            turn = [a - b for a, b in zip(arrivals[BATCH_CONCURRENCY:], answers)]
            for name, value in (
                ("startup_s", arrivals[0] - result.t_sent),
                ("first_wave_spread_s", arrivals[BATCH_CONCURRENCY - 1] - arrivals[0]),
                ("turnaround_s", statistics.median(turn) if turn else 0.0),
                ("last_request_s", arrivals[-1] - result.t_sent),
                ("exit_after_last_answer_s", result.t_done - answers[-1]),
            ):
                timing.setdefault(name, []).append(value)

        self.measure(res, contenders, rounds, image, out_is_dir=True, observe=observe)
        res.info.update({k: statistics.median(v) for k, v in timing.items()})
        self.server.delay = 0.0
        return res

    def scenario_e(self) -> ScenarioResult:
        res = ScenarioResult("e", "start-up")
        dry = ["--prompt", "x", "--out", "x.png", "--base-url", "http://127.0.0.1:9/v1"]
        py = self.py

        def cmd(*argv: str) -> Callable[[Path], list[Step]]:
            return lambda out: [Step(list(argv))]

        # the stdlib work --help cannot avoid: import argparse and format a help text (which
        # imports shutil, gettext and locale); --dry-run adds json and urllib.parse
        help_base = "import argparse; argparse.ArgumentParser().print_help()"
        dry_base = "import argparse, json, urllib.parse; argparse.ArgumentParser().parse_args([])"
        contenders = [
            Contender("python -c pass", "bare", cmd(py, "-c", "pass"), False, 0),
            Contender("stdlib: argparse help", "help-base", cmd(py, "-c", help_base), False, 0),
            Contender("ours --help", "help", cmd(*self.ours("--help")), False, 0),
            Contender(
                "ours --help, installed",
                "help-pyc",
                cmd(py, "-c", INSTALLED, "--help"),
                False,
                0,
                PYC_ENV,
            ),
            Contender(
                "python: only compile the script",
                "compile",
                cmd(py, "-c", f"compile(open({str(SCRIPT)!r}, 'rb').read(), 'x', 'exec')"),
                False,
                0,
            ),
            Contender("stdlib: +json, urllib.parse", "dry-base", cmd(py, "-c", dry_base), False, 0),
            Contender("ours --dry-run", "dry", cmd(*self.ours(*dry, "--dry-run")), False, 0),
            Contender("python -S -c pass", "bare-S", cmd(py, "-S", "-c", "pass"), False, 0),
            Contender(
                "python -S: argparse help",
                "help-base-S",
                cmd(py, "-S", "-c", help_base),
                False,
                0,
            ),
            Contender(
                "python -S ours --help", "help-S", cmd(py, "-S", str(SCRIPT), "--help"), False, 0
            ),
        ]
        if self.sdk:
            contenders.append(
                Contender(
                    "import openai (SDK)",
                    "sdk-import",
                    cmd(py, "-c", "from openai import OpenAI"),
                    False,
                    0,
                )
            )
        rounds = self.args.rounds * (1 if self.args.quick else 3)  # cheap: more rounds
        self.measure(res, contenders, rounds, None)
        # what running by path costs over the installed command, next to what compiling the
        # file alone costs: a script run by path is compiled on every run, never cached
        walls = {
            kind: s.wall
            for kind in ("bare", "compile", "help", "help-pyc")
            if (s := _by_kind(res, kind)) is not None and s.wall is not None
        }
        if len(walls) == 4:
            res.info["compile_ms"] = (walls["compile"] - walls["bare"]) * 1000
            res.info["by_path_minus_installed_ms"] = (walls["help"] - walls["help-pyc"]) * 1000
        return res

    def scenario_m(self) -> ScenarioResult:
        """Peak RSS and CPU per MB against the image size: one noise PNG per --mem-sizes entry.

        Streaming (SSE, the default) for every size; ``--no-stream`` (one JSON body) for the
        reference size and the largest one. Each child's own peak RSS and user + system CPU
        come from ``os.wait4`` in the runner process.
        """
        sizes = sorted(set(self.args.mem_sizes))
        big = sizes[-1]
        res = ScenarioResult("m", "memory and CPU against image size, noise PNGs")
        res.info.update(sizes_mb=",".join(map(str, sizes)))
        (self.tmp / "m").mkdir(exist_ok=True)
        common = ["--prompt", PROMPT, "--base-url", self.server.base_url, "--quiet", "--force"]

        def ours(*extra: str) -> Callable[[Path], list[Step]]:
            return lambda out: [Step(self.ours(*common, *extra, "--out", str(out)))]

        for mb in sizes:
            width, height = noise_dims(mb)
            image = noise_png(width, height, seed=100 + mb)
            self.serve(image, f"{width}x{height}")
            contenders = [Contender(f"ours, {mb} MB", "mem", ours())]
            if mb in (MEM_REFERENCE_MB, big):
                contenders.append(
                    Contender(f"ours --no-stream, {mb} MB", "mem-json", ours("--no-stream"))
                )
            progress(f"  m: {mb} MB ({width}x{height}, {len(image) / MB:.1f} MB)")
            self.measure(res, contenders, self.args.rounds, image)
            for c in contenders:
                res.stats[c.name].image_mb = len(image) / MB
                res.stats[c.name].nominal_mb = mb
            del image
        self.server.sse = self.server.json = b""
        for kind, label in (("mem", "stream"), ("mem-json", "json")):
            ref, top = _series(res, kind, MEM_REFERENCE_MB), _series(res, kind, big)
            if ref is None or top is None or top is ref:
                continue
            if ref.rss_mb is not None and top.rss_mb is not None:
                assert top.image_mb is not None and ref.image_mb is not None
                # how much peak RSS each further MB of image costs (1.0: the image is held once)
                slope = (top.rss_mb - ref.rss_mb) / (top.image_mb - ref.image_mb)
                res.info[f"{label}_rss_mb_per_image_mb"] = slope
            if ref.cpu_s is not None and top.cpu_s is not None:
                assert top.image_mb is not None and ref.image_mb is not None
                # CPU each further MB costs, without the fixed start-up
                slope = (top.cpu_s - ref.cpu_s) / (top.image_mb - ref.image_mb)
                res.info[f"{label}_cpu_ms_per_extra_mb"] = slope * 1000
        return res


def noise_dims(mb: float) -> tuple[int, int]:
    """Width and height of a roughly square RGB noise PNG of about ``mb`` MB."""
    row_bytes = 3 * max(16, round(math.sqrt(mb * MB / 3)))
    width = row_bytes // 3
    return width, max(1, round(mb * MB / (row_bytes + 1)))


def _series(res: ScenarioResult, kind: str, mb: int) -> Stats | None:
    for s in res.stats.values():
        if s.kind == kind and s.nominal_mb == mb and s.walls:
            return s
    return None


# --- report ----------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def warn(message: str) -> None:
    print(f"!!! WARNING: {message}", file=sys.stderr, flush=True)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _by_kind(res: ScenarioResult, kind: str) -> Stats | None:
    for s in res.stats.values():
        if s.kind == kind and s.walls:
            return s
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def table(results: list[ScenarioResult]) -> list[str]:
    head = ("scenario", "contender", "wall s", "peak RSS MB", "ours/floor", "ours/SDK", "runs")
    rows: list[tuple[str, ...]] = [head]
    for res in results:
        if res.key == "m":  # its own table: series_table()
            continue
        floor = _by_kind(res, "floor")
        sdk = _by_kind(res, "sdk")
        for s in res.stats.values():
            vs_floor = vs_sdk = ""
            if s.kind in ("ours", "ours-json", "ours-pyc") and res.key in "abc":
                r = _ratio(s.wall, floor.wall if floor else None)
                vs_floor = f"{r:.2f}x" if r is not None else ""
                r = _ratio(s.wall, sdk.wall if sdk else None)
                vs_sdk = f"{r:.2f}x ({1 / r:.1f}x faster)" if r else ""
            runs = f"{len(s.walls)}" + (f" ({len(s.failures)} FAILED)" if s.failures else "")
            rows.append(
                (
                    f"{res.key} {res.title}",
                    s.name,
                    _fmt(s.wall),
                    _fmt(s.rss_mb, ".1f"),
                    vs_floor,
                    vs_sdk,
                    runs,
                )
            )
        if not res.stats:
            rows.append((f"{res.key} {res.title}", "; ".join(res.notes), "", "", "", "", ""))
    return _columns(rows)


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def series_table(res: ScenarioResult) -> list[str]:
    """The memory series: one row per image size and mode."""
    head = ("image MB", "contender", "wall s", "peak RSS MB", "CPU s", "CPU s/MB", "runs")
    rows: list[tuple[str, ...]] = [head]
    for s in res.stats.values():
        per_mb = s.cpu_s / s.image_mb if s.cpu_s is not None and s.image_mb else None
        runs = f"{len(s.walls)}" + (f" ({len(s.failures)} FAILED)" if s.failures else "")
        rows.append(
            (
                _fmt(s.image_mb, ".1f"),
                s.name,
                _fmt(s.wall),
                _fmt(s.rss_mb, ".1f"),
                _fmt(s.cpu_s),
                _fmt(per_mb, ".4f"),
                runs,
            )
        )
    return _columns(rows)


@dataclass
class Target:
    name: str
    value: float | None
    limit: float
    unit: str
    higher_is_better: bool = False
    info: bool = False  # not one of the targets: shown in lower case

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "n/a"
        ok = self.value >= self.limit if self.higher_is_better else self.value <= self.limit
        word = "PASS" if ok else "MISS"
        return word.lower() if self.info else word

    def line(self) -> str:
        sign = ">=" if self.higher_is_better else "<="
        value = "-" if self.value is None else f"{self.value:.2f}{self.unit}"
        return f"{self.verdict:4}  {self.name}: {value} (target {sign} {self.limit:g}{self.unit})"


def targets(results: list[ScenarioResult]) -> list[Target]:
    by = {r.key: r for r in results}
    out: list[Target] = []

    def wall(key: str, kind: str) -> float | None:
        res = by.get(key)
        s = _by_kind(res, kind) if res else None
        return s.wall if s else None

    if "a" in by:
        r = _ratio(wall("a", "ours"), wall("a", "floor"))
        out.append(Target("(a) ours / floor wall time", r, TARGET_FLOOR_RATIO, "x"))
        r = _ratio(wall("a", "ours-pyc"), wall("a", "floor"))
        out.append(Target("(a) same, installed", r, TARGET_FLOOR_RATIO, "x", info=True))
        r = _ratio(wall("a", "sdk"), wall("a", "ours"))
        out.append(Target("(a) SDK / ours wall time", r, TARGET_SDK_SPEEDUP, "x", True))
    if "b" in by:
        r = _ratio(wall("b", "ours"), wall("b", "floor"))
        out.append(Target("(b) ours / floor wall time", r, TARGET_FLOOR_RATIO, "x"))
        s = _by_kind(by["b"], "ours")
        image_mb = float(by["b"].info.get("image_mb", 0.0))
        r = s.rss_mb / image_mb if s and s.rss_mb is not None and image_mb else None
        out.append(Target("(b) ours peak RSS / decoded image size", r, TARGET_RSS_FACTOR, "x"))
    if "d" in by:
        ideal = float(by["d"].info["ideal_s"])
        out.append(
            Target("(d) batch wall time", wall("d", "ours"), ideal * (1 + TARGET_BATCH_SLACK), " s")
        )
    if "m" in by:
        big = max(s.nominal_mb or 0 for s in by["m"].stats.values()) if by["m"].stats else 0
        for kind, label, info in (("mem", "streaming", False), ("mem-json", "--no-stream", True)):
            ref = _series(by["m"], kind, MEM_REFERENCE_MB)
            top = _series(by["m"], kind, big)
            if big <= MEM_REFERENCE_MB or ref is None or top is None:
                continue
            r = _ratio(top.rss_mb, ref.rss_mb)
            name = f"(m) peak RSS {big} MB / {MEM_REFERENCE_MB} MB image, {label}"
            out.append(Target(name, r, TARGET_MEM_FLAT, "x", info=info))
    if "e" in by:
        r = _ratio(wall("e", "help"), wall("e", "help-base"))
        out.append(Target("(e) --help / stdlib argparse help", r, TARGET_HELP_RATIO, "x"))
        r = _ratio(wall("e", "help-pyc"), wall("e", "help-base"))
        out.append(Target("(e) same, installed", r, TARGET_HELP_RATIO, "x", info=True))
        r = _ratio(wall("e", "help-S"), wall("e", "help-base-S"))
        out.append(Target("(e) same, python -S (no site)", r, TARGET_HELP_RATIO, "x", info=True))
    return out


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
    }


def to_json(results: list[ScenarioResult], args: argparse.Namespace) -> dict[str, Any]:
    return {
        "machine": machine(),
        "settings": {
            "rounds": args.rounds,
            "quick": args.quick,
            "chunk_size": args.chunk_size,
            "scenarios": args.scenarios,
            "mem_sizes": args.mem_sizes,
        },
        "scenarios": [
            {
                "key": r.key,
                "title": r.title,
                "info": r.info,
                "notes": r.notes,
                "contenders": [
                    {
                        "name": s.name,
                        "kind": s.kind,
                        "median_wall_s": s.wall,
                        "median_peak_rss_mb": s.rss_mb,
                        "walls_s": s.walls,
                        "peak_rss_bytes": s.rss,
                        "median_cpu_s": s.cpu_s,
                        "cpu_s": s.cpu,
                        "image_mb": s.image_mb,
                        "failures": s.failures,
                    }
                    for s in r.stats.values()
                ],
            }
            for r in results
        ],
        "targets": [
            {
                "name": t.name,
                "value": t.value,
                "limit": t.limit,
                "verdict": t.verdict,
                "info_only": t.info,
            }
            for t in targets(results)
        ],
    }


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--json", metavar="PATH", help="also write all results as JSON")
    p.add_argument("--rounds", type=int, help="rounds per scenario (default 5, --quick 1)")
    p.add_argument(
        "--scenarios", default="a,b,c,d,e,m", help="comma-separated subset of a,b,c,d,e,m"
    )
    p.add_argument(
        "--mem-sizes",
        default=",".join(map(str, MEM_SIZES)),
        help="image sizes in MB of the memory series m (default %(default)s; the ratio target "
        f"needs {MEM_REFERENCE_MB} and a larger one)",
    )
    p.add_argument("--quick", action="store_true", help="1 round, no warm-up")
    p.add_argument(
        "--chunk-size",
        type=int,
        default=16384,
        help="HTTP chunk size of the SSE answer (0: Content-Length, one body)",
    )
    args = p.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 5
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in args.scenarios if s not in "abcdem" or len(s) != 1]
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(unknown)}")
    try:
        args.mem_sizes = [int(x) for x in args.mem_sizes.split(",") if x.strip()]
    except ValueError:
        p.error("--mem-sizes: comma-separated whole numbers of MB")
    if not args.mem_sizes or min(args.mem_sizes) < 1 or max(args.mem_sizes) > 100:
        p.error("--mem-sizes: between 1 and 100 MB each")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="imagegen-bench-") as tmpname:
        bench = Bench(args, Path(tmpname))
        try:
            with bench.server:
                help_run = subprocess.run(
                    bench.ours("--help"), env=bench.env(), capture_output=True, text=True
                )
                bench.help_text = help_run.stdout
                for key in args.scenarios:
                    progress(f"scenario {key} ...")
                    res = getattr(bench, f"scenario_{key}")()
                    bench.results.append(res)
                    for note in res.notes:
                        progress(f"  note: {note}")
        finally:
            bench.runner.close()
    results = bench.results
    m = machine()
    print(f"\nmachine: {m['cpu']}, {m['cpus']} CPUs, Python {m['python']}, {m['platform']}")
    print(
        f"rounds: {args.rounds}{' (quick)' if args.quick else ''}; medians; SSE chunk size "
        f"{args.chunk_size or 'none (Content-Length)'}; total {time.monotonic() - t0:.0f} s\n"
    )
    for res in results:
        if res.info:
            info = ", ".join(
                f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in res.info.items()
            )
            print(f"({res.key}) {res.title}: {info}")
    if any(r.key != "m" for r in results):
        print()
        for line in table(results):
            print(line)
    for res in results:
        if res.key == "m" and res.stats:
            print("\n(m) peak RSS and CPU (user + system) of the child against the image size:")
            for line in series_table(res):
                print(line)
    print()
    for t in targets(results):
        print(t.line())
    notes = [f"({r.key}) {n}" for r in results for n in r.notes]
    failures = [
        f"({r.key}) {s.name}: {len(s.failures)} failed run(s): {s.failures[0]}"
        for r in results
        for s in r.stats.values()
        if s.failures
    ]
    if notes:
        print()
        for n in notes:
            print(f"note: {n}")
    if failures:
        print()
        for f in failures:
            print(f"!!! FAILED RUNS (not counted): {f}")
    if args.json:
        Path(args.json).write_text(json.dumps(to_json(results, args), indent=2) + "\n", "utf-8")
        print(f"\nwrote {args.json}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
