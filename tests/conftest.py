"""Shared fixtures and helpers: a loopback gateway, a Codex home pointing at it, a way to run the
script as a subprocess exactly as a user would, and the small helpers many test files use (a
successful image answer, a closed port, data: URLs, files)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests import images
from tests.gateway import Gateway, Recorded, Reply, image_events, sse_reply
from tests.stored_gateway import StoredGateway

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "generate_gateway_image.py"
TEST_KEY = "sk-test-KEY-4f9c2b7e1d0a"  # recognisable: tests assert it never leaks
PNG = images.png_bytes(40, 24)  # the image of image_reply() unless a test passes its own


def clean_env(**extra: str) -> dict[str, str]:
    """A minimal environment: no proxies, no CA or key variables from the developer's shell."""
    keep = ("PATH", "SYSTEMROOT", "TMPDIR", "TEMP", "TMP", "LANG", "LC_ALL", "PYTHONPATH")
    # coverage's subprocess measurement: its .pth starts coverage in the child when these are set
    keep += ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["NO_PROXY"] = "*"
    env["PYTHONIOENCODING"] = "utf-8"
    env.update(extra)
    return env


def permissions_bind() -> list[str]:
    """A command prefix under which file permission bits apply to the child, as root too: root
    runs without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH (util-linux setpriv). Skips only where
    neither is possible (Windows, or root without setpriv)."""
    if os.name != "posix":
        pytest.skip("POSIX permission bits")
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("root without setpriv: permission bits do not bind")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--"]


def run_cli(
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    input: str | None = None,
    cwd: str | Path | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run the script in a subprocess; returns the completed process (text mode)."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env=dict(env) if env is not None else clean_env(),
        input=input,
        capture_output=True,
        text=True,
        cwd=str(cwd) if cwd is not None else None,
        timeout=timeout,
        encoding="utf-8",
    )


def report(proc: subprocess.CompletedProcess[str], gw: Gateway | None = None) -> str:
    """Exit code, stdout, stderr and (if given) what the gateway saw: for assertion messages."""
    text = f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    return text + ("\ngateway:\n" + gw.dump() if gw is not None else "")


def write_codex_home(
    home: Path,
    base_url: str,
    *,
    key: str | None = TEST_KEY,
    provider: str = "gw",
    extra_provider: str = "",
    extra_top: str = "",
) -> Path:
    """A Codex home whose config.toml points at base_url; the key goes into auth.json."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'model_provider = "{provider}"\n{extra_top}\n'
        f"[model_providers.{provider}]\n"
        f'name = "test gateway"\nbase_url = "{base_url}"\nrequires_openai_auth = true\n'
        f"{extra_provider}\n",
        encoding="utf-8",
    )
    if key is not None:
        auth = home / "auth.json"
        auth.write_text(json.dumps({"OPENAI_API_KEY": key}), encoding="utf-8")
        if os.name == "posix":
            auth.chmod(0o600)
    return home


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    with Gateway() as gw:
        yield gw


@pytest.fixture
def codex_home(tmp_path: Path, gateway: Gateway) -> Path:
    return write_codex_home(tmp_path / "codex-home", gateway.base_url)


@pytest.fixture
def env(codex_home: Path) -> dict[str, str]:
    return clean_env(CODEX_HOME=str(codex_home))


def leftovers(folder: Path) -> list[str]:
    """Temporary files the script may have left in a folder (must be none)."""
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".part"))


def parse_json_stdout(proc: subprocess.CompletedProcess[str]) -> Any:
    import json

    return json.loads(proc.stdout)


def image_reply(data: bytes = PNG, **kw: Any) -> Reply:
    """A successful SSE image stream carrying ``data``."""
    return sse_reply(image_events(images.b64(data), **kw))


def cli(
    tmp_path: Path,
    env: Mapping[str, str],
    *extra: str,
    out: str | Path = "out.png",
    prompt: str = "a fox",
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """One generation: ``--prompt`` and ``--out`` (a name inside tmp_path, or a path), then
    ``extra``."""
    target = out if isinstance(out, Path) else tmp_path / out
    return run_cli(["--prompt", prompt, "--out", str(target), *extra], env, timeout=timeout)


def run_patched(
    patch: str, args: Sequence[str], env: Mapping[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The script run as a user runs it, with its module changed first by ``patch`` (Python
    that sees the script as ``g``): a planted bug, a full disk, a slow machine."""
    code = f"import sys, generate_gateway_image as g\n{patch}\nsys.exit(g.main(sys.argv[1:]))\n"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=dict(env, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def doctor_line(proc: subprocess.CompletedProcess[str], name: str) -> str:
    """The line of ``--doctor``/``--probe`` output whose check is ``name``."""
    return next(x for x in proc.stdout.splitlines() if x.split()[1:2] == [name])


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def decode_data_url(url: str, mime: str = "image/png") -> bytes:
    """The bytes of a base64 ``data:`` URL of that MIME type (which it must have)."""
    prefix = f"data:{mime};base64,"
    assert url.startswith(prefix), url[:80]
    return base64.b64decode(url[len(prefix) :], validate=True)


def write(path: Path, content: str | bytes) -> Path:
    """Write text (UTF-8) or bytes, creating the parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def assert_ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout: {proc.stdout}\n{proc.stderr}"


def assert_no_secret(proc: subprocess.CompletedProcess[str], secret: str = TEST_KEY) -> None:
    assert secret not in proc.stdout
    assert secret not in proc.stderr


def stdout_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stdout.splitlines() if line.strip()]


def slow(seconds: float, make: Callable[[Recorded], Reply]) -> Callable[[Recorded], Reply]:
    """A reply callable that waits ``seconds`` (after the request was recorded) first."""

    def reply(rec: Recorded) -> Reply:
        time.sleep(seconds)
        return make(rec)

    return reply


def prompt_of(rec: Recorded) -> str:
    """The prompt text of a recorded /responses request."""
    assert rec.json is not None, rec.body[:200]
    return str(rec.json["input"][0]["content"][0]["text"])


def content_of(rec: Recorded) -> list[dict[str, Any]]:
    """The content parts (prompt, images) of a recorded /responses request."""
    assert rec.json is not None
    return list(rec.json["input"][0]["content"])


def event_index(events: list[dict[str, Any]], etype: str) -> int:
    """Where the first event of that type is in a list of events."""
    return next(i for i, ev in enumerate(events) if ev["type"] == etype)


def only_post(gw: Gateway) -> Recorded:
    """The one request the gateway saw, which must be a POST."""
    posts = gw.posts()
    assert len(posts) == 1, gw.dump()
    assert len(gw.requests) == 1, gw.dump()
    return posts[0]


def write_auth(home: Path, obj: Any) -> None:
    """auth.json with this content, private as Codex writes it."""
    auth = home / "auth.json"
    auth.write_text(json.dumps(obj), encoding="utf-8")
    if os.name == "posix":
        auth.chmod(0o600)


def write_config(home: Path, text: str, name: str = "config.toml") -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / name).write_text(text, encoding="utf-8")


def home_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment whose home directory is an empty folder and with no CODEX_HOME."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return clean_env(HOME=str(home), USERPROFILE=str(home), **extra)


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    """A trustme CA and a server context with its certificate for 127.0.0.1 (CA PEM path)."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    pem = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    return ctx, pem


@pytest.fixture
def tls_gateway(tls_material: tuple[ssl.SSLContext, Path]) -> Iterator[Gateway]:
    """The loopback gateway over TLS; trusted only with CODEX_CA_CERTIFICATE=tls_material[1]."""
    with Gateway(tls=tls_material[0]) as gw:
        yield gw


def env_for(tmp_path: Path, base_url: str) -> dict[str, str]:
    """The environment of a run against base_url through a fresh Codex home."""
    home = write_codex_home(tmp_path / "codex-home", base_url)
    return clean_env(CODEX_HOME=str(home))


@pytest.fixture
def sg() -> Iterator[StoredGateway]:
    """A gateway that keeps responses (background mode), for --resumable and --resume."""
    with StoredGateway() as gw:
        yield gw


def run_until_sigterm(
    gateway: Gateway, env: Mapping[str, str], args: Sequence[str]
) -> subprocess.CompletedProcess[str]:
    """Start the script, wait until the gateway has its request (and, with --partial-images,
    the first preview is on disk), send SIGTERM, and return what the run printed."""
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    try:
        gateway.wait_for_requests(1, timeout=10)
        if "--partial-images" in args:  # wait until the preview is on disk
            out = Path(args[list(args).index("--out") + 1])
            preview = out.parent / (out.stem + ".partial-1" + out.suffix)
            deadline = time.monotonic() + 10
            while not preview.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert preview.exists(), gateway.dump()
        else:
            time.sleep(0.3)  # let it reach the read loop (not required for correctness)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            stdout, stderr = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
