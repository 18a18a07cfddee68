"""Real relays in front of the fake upstream.

A real LiteLLM proxy (``litellm[proxy]``, with its own retries on: ``num_retries: 2``, a common
setting) and openai-forward, both from the test extras, are started once per module on loopback
in front of the project's fake upstream (``StoredGateway``); the script runs through each as a
user would. Upstream POSTs are counted: each is a paid render.

Not installed (the Python 3.9 leg of CI installs no extras): the module is skipped with that
reason. Installed but unable to start: every test here fails, with the relay's log.
Portkey's and claude-relay-service's behaviours are reproduced by tests/relays.py instead
(tests/test_relay_policy.py): one is Node with a header bug of its own, the other needs Redis.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import images
from tests.conftest import clean_env, report, run_cli
from tests.gateway import error_reply, image_events
from tests.stored_gateway import StoredGateway

MISSING = [m for m in ("litellm", "openai_forward") if importlib.util.find_spec(m) is None]
if MISSING:  # the test extras are not installed here (CI's Python 3.9 leg): nothing to run
    pytest.skip(
        f"not installed: {', '.join(MISSING)} (in the test extras on Python 3.10+)",
        allow_module_level=True,
    )

PNG = images.png_bytes(48, 32)
RELAY_KEY = "sk-relay-master-5150"  # what the script sends to the relay
UPSTREAM_KEY = "sk-upstream-key-8088"  # what LiteLLM sends upstream
START_TIMEOUT = 120.0  # LiteLLM imports a lot: about 8 s on an idle machine of 2 cores
RELAYS = ("litellm", "openai-forward")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RelayProcess:
    """A relay started as its own process on loopback; its log is kept for failures."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.name = name
        self.port = free_port()
        self.log_path = cwd / f"{name}.log"
        self.log = open(self.log_path, "wb")  # closed in stop()
        argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv, env=env, cwd=str(cwd), stdout=self.log, stderr=subprocess.STDOUT
        )
        self.startup = 0.0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def log_text(self) -> str:
        self.log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]

    def wait_ready(self, path: str) -> None:
        deadline = self.started + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2).close()
                self.startup = time.monotonic() - self.started
                return
            except urllib.error.HTTPError:  # it answers: it is up
                self.startup = time.monotonic() - self.started
                return
            except OSError:
                time.sleep(0.25)
        self.stop()
        pytest.fail(
            f"{self.name} is installed but did not start within {START_TIMEOUT:g}s "
            f"(exit {self.proc.returncode}):\n{self.log_text()}"
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


def relay_env(home: Path, **extra: str) -> dict[str, str]:
    """No proxy, no key of the developer's, a home of its own (caches), offline model prices."""
    keep = ("PATH", "LANG", "LC_ALL", "SYSTEMROOT", "TMPDIR")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(HOME=str(home), NO_PROXY="*", no_proxy="*", PYTHONUNBUFFERED="1", **extra)
    return env


@pytest.fixture(scope="module")
def upstream() -> Iterator[StoredGateway]:
    with StoredGateway() as sg:
        yield sg


@pytest.fixture(scope="module")
def litellm_relay(
    upstream: StoredGateway, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RelayProcess]:
    folder = tmp_path_factory.mktemp("litellm")
    config = folder / "config.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: gpt-5.5\n"
        "    litellm_params:\n"
        "      model: openai/gpt-5.5\n"
        f"      api_base: {upstream.base_url}\n"
        f"      api_key: {UPSTREAM_KEY}\n"
        "general_settings:\n"
        f"  master_key: {RELAY_KEY}\n"
        "litellm_settings:\n"
        "  num_retries: 2\n"
        "  telemetry: false\n",
        encoding="utf-8",
    )
    argv = [
        sys.executable,
        "-c",
        "import litellm; litellm.run_server()",
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
    ]
    env = relay_env(folder, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR")
    relay = RelayProcess("litellm", argv, env, folder)
    relay.wait_ready("/health/liveliness")
    print(f"litellm proxy started in {relay.startup:.1f}s")
    yield relay
    relay.stop()


@pytest.fixture(scope="module")
def forward_relay(
    upstream: StoredGateway, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RelayProcess]:
    folder = tmp_path_factory.mktemp("openai-forward")
    route = [{"base_url": upstream.gw.url, "route": "/", "type": "openai"}]
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "openai_forward.app:app",
        "--host",
        "127.0.0.1",  # not its own `aifd run`, which listens on every address
        "--port",
        "{port}",
    ]
    env = relay_env(folder, FORWARD_CONFIG=json.dumps(route), TZ="UTC")
    relay = RelayProcess("openai-forward", argv, env, folder)
    relay.wait_ready("/")
    print(f"openai-forward started in {relay.startup:.1f}s")
    yield relay
    relay.stop()


@pytest.fixture(params=RELAYS)
def relay(request: pytest.FixtureRequest, upstream: StoredGateway) -> Iterator[RelayProcess]:
    """Each relay in turn, in front of an upstream emptied for the test."""
    name = "litellm_relay" if request.param == "litellm" else "forward_relay"
    started: RelayProcess = request.getfixturevalue(name)
    reset(upstream)
    yield started
    reset(upstream)


def reset(sg: StoredGateway) -> None:
    sg.plans.clear()
    sg.stored.clear()
    gw = sg.gw
    with gw._lock:
        gw.requests.clear()
        gw._queues.clear()
        gw._defaults.clear()


def env_for(tmp_path: Path, relay: RelayProcess) -> dict[str, str]:
    home = tmp_path / "codex-home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        'model_provider = "relay"\n[model_providers.relay]\nname = "relay"\n'
        f'base_url = "{relay.base_url}"\nenv_key = "RELAY_KEY"\n',
        encoding="utf-8",
    )
    return clean_env(CODEX_HOME=str(home), RELAY_KEY=RELAY_KEY)


def cli(tmp_path: Path, relay: RelayProcess, *extra: str) -> subprocess.CompletedProcess[str]:
    out = tmp_path / "out.png"
    return run_cli(["--prompt", "a fox", "--out", str(out), *extra], env_for(tmp_path, relay))


def upstream_posts(sg: StoredGateway) -> list[Any]:
    return [r for r in sg.gw.requests if r.method == "POST" and r.path == "/v1/responses"]


def events(rid: str = "resp_up1", partials: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    return image_events(images.b64(PNG), resp_id=rid, partials=partials)


def leaked(proc: subprocess.CompletedProcess[str]) -> bool:
    text = proc.stdout + proc.stderr
    return RELAY_KEY in text or RELAY_KEY[-12:] in text


def test_streamed_image(tmp_path: Path, relay: RelayProcess, upstream: StoredGateway) -> None:
    upstream.plan(events(), delay=0.05)
    proc = cli(tmp_path, relay, "--json")
    assert proc.returncode == 0, report(proc) + relay.log_text()
    assert (tmp_path / "out.png").read_bytes() == PNG
    (post,) = upstream_posts(upstream)
    assert post.json["stream"] is True and post.json["tools"][0]["type"] == "image_generation"
    assert not leaked(proc)


def test_no_stream(tmp_path: Path, relay: RelayProcess, upstream: StoredGateway) -> None:
    upstream.plan(events())
    proc = cli(tmp_path, relay, "--no-stream")
    assert proc.returncode == 0, report(proc) + relay.log_text()
    assert (tmp_path / "out.png").read_bytes() == PNG
    (post,) = upstream_posts(upstream)
    assert post.json["stream"] is False


def test_partial_images(tmp_path: Path, relay: RelayProcess, upstream: StoredGateway) -> None:
    previews = (images.b64(images.png_bytes(12, 8)), images.b64(images.png_bytes(24, 16)))
    upstream.plan(events(partials=previews), delay=0.05)
    proc = cli(tmp_path, relay, "--partial-images", "2")
    assert proc.returncode == 0, report(proc) + relay.log_text()
    assert (tmp_path / "out.png").read_bytes() == PNG
    assert sorted(p.name for p in tmp_path.glob("out.partial-*.png")) == [
        "out.partial-1.png",
        "out.partial-2.png",
    ]
    (post,) = upstream_posts(upstream)
    assert post.json["tools"][0]["partial_images"] == 2


def test_an_edit(tmp_path: Path, relay: RelayProcess, upstream: StoredGateway) -> None:
    source = tmp_path / "room.png"
    source.write_bytes(images.png_bytes(32, 32))
    upstream.plan(events())
    proc = cli(tmp_path, relay, "--image", str(source))
    assert proc.returncode == 0, report(proc) + relay.log_text()
    (post,) = upstream_posts(upstream)
    parts = post.json["input"][0]["content"]
    assert [p["type"] for p in parts] == ["input_text", "input_image"]
    assert parts[1]["image_url"].startswith("data:image/png;base64,")
    assert (tmp_path / "out.png").read_bytes() == PNG


def test_resumable_cut_stream_is_resumed_with_one_post(
    tmp_path: Path, relay: RelayProcess, upstream: StoredGateway
) -> None:
    upstream.plan(events("resp_bg1"), cuts=[4], delay=0.2)  # the upstream stream breaks
    # LiteLLM turns the cut into its own response.failed; openai-forward keeps the client's
    # stream open, silent: the idle timeout ends that wait
    proc = cli(tmp_path, relay, "--resumable", "--json", "--idle-timeout", "4")
    assert proc.returncode == 0, report(proc) + relay.log_text()
    assert len(upstream_posts(upstream)) == 1, upstream.dump()  # never a second, paid POST
    assert [r.path for r in upstream.gets()] == ["/v1/responses/resp_bg1"]
    record = json.loads(proc.stdout)
    assert record["resumes"] == 1 and record["stored"] is True
    assert (tmp_path / "out.png").read_bytes() == PNG


def test_resumable_no_stream_polls_the_queued_response(
    tmp_path: Path, relay: RelayProcess, upstream: StoredGateway
) -> None:
    # before: LiteLLM's long id was ignored, the queued answer taken for the final one (exit 5)
    upstream.plan(events("resp_bg3"), polls=1, retry_after_ms=10)
    proc = cli(tmp_path, relay, "--resumable", "--no-stream", "--json")
    assert proc.returncode == 0, report(proc) + relay.log_text()
    assert len(upstream_posts(upstream)) == 1
    assert [r.path for r in upstream.gets()] == ["/v1/responses/resp_bg3"] * 2
    assert json.loads(proc.stdout)["stored"] is True
    assert (tmp_path / "out.png").read_bytes() == PNG


def test_resume_with_the_relays_own_id(
    tmp_path: Path, relay: RelayProcess, upstream: StoredGateway
) -> None:
    upstream.plan(events("resp_bg2"))
    first = cli(tmp_path, relay, "--resumable", "--json")
    assert first.returncode == 0, report(first) + relay.log_text()
    rid = json.loads(first.stdout)["response_id"]
    if relay.name == "litellm":
        assert len(rid) > 200 and rid != "resp_bg2"  # LiteLLM's own long id
    got = tmp_path / "got.png"
    proc = run_cli(["--resume", rid, "--out", str(got)], env_for(tmp_path / "again", relay))
    assert proc.returncode == 0, report(proc) + relay.log_text()
    assert got.read_bytes() == PNG
    assert len(upstream_posts(upstream)) == 1
    assert "/v1/responses/resp_bg2" in [r.path for r in upstream.gets()]


def test_upstream_429_then_success(
    tmp_path: Path, relay: RelayProcess, upstream: StoredGateway
) -> None:
    limited = error_reply(
        429,
        "Rate limit reached for gpt-image-2",
        code="rate_limit_exceeded",
        type_="requests",
        headers={"retry-after-ms": "50", "retry-after": "1"},
    )
    upstream.gw.enqueue(limited)
    upstream.plan(events())
    proc = cli(tmp_path, relay)
    assert proc.returncode == 0, report(proc) + relay.log_text()
    assert len(upstream_posts(upstream)) == 2  # the relay's retry or the script's: one each
    assert (tmp_path / "out.png").read_bytes() == PNG


def test_upstream_500_always_is_bounded(
    tmp_path: Path, relay: RelayProcess, upstream: StoredGateway
) -> None:
    failing = error_reply(500, "The server had an error", type_="server_error")
    upstream.gw.enqueue(*[failing] * 12)
    proc = cli(tmp_path, relay)
    assert proc.returncode == 4, report(proc) + relay.log_text()
    # at most 1 + --retries paid attempts: LiteLLM tries 3 times itself (not 3 x 3 = 9), and
    # the script's 3 attempts through openai-forward, which does not retry
    assert len(upstream_posts(upstream)) == 3, upstream.dump()
    assert "The server had an error" in proc.stderr
    if relay.name == "litellm":
        assert "already retried this request itself" in proc.stderr


def test_doctor_probe_vouches_for_resume_only_where_it_works(
    tmp_path: Path, relay: RelayProcess, upstream: StoredGateway
) -> None:
    upstream.plan(events("resp_probe"), delay=0.05)
    proc = run_cli(["--doctor", "--probe"], env_for(tmp_path, relay))
    lines = {x.split()[1]: x for x in proc.stdout.splitlines() if len(x.split()) > 1}
    assert lines["probe"].startswith("ok"), proc.stdout + relay.log_text()
    assert lines["store"].startswith("ok"), proc.stdout  # and a run resumes there (above)
    assert "/v1/responses/resp_probe" in [r.path for r in upstream.gets()]
