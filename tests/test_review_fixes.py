"""Regression tests for the review fixes (commit "Review fixes: proxy credentials, ...").

Each test fails on the script as it was before that commit: credentials in proxy URLs, ``*-Auth``
headers and secret query values are never printed; redaction happens before truncation; DNS and
trickling answers are bounded by ``--timeout``; reading stops once the image is safe; SIGTERM
cleans up; a disk-full rescue failure is exit 7; output is UTF-8/ASCII-safe; redirects are
reported; quirks match the gateway's words only; sink errors are per attempt; batch outputs stay
inside ``--out-dir``.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import generate_gateway_image as g
from tests import images
from tests.conftest import (
    PNG,
    SCRIPT,
    TEST_KEY,
    clean_env,
    closed_port,
    image_reply,
    leftovers,
    parse_json_stdout,
    report,
    run_cli,
    write_codex_home,
)
from tests.gateway import (
    ForwardProxy,
    Gateway,
    Reply,
    error_event,
    error_reply,
    format_sse,
    image_events,
    image_item,
    json_reply,
    message_item,
    raw_reply,
    renumber,
    response_obj,
    sse_reply,
)

PROXY_PASSWORD = "PROXYPW-secret"
PROXY_USERINFO = "bob:" + PROXY_PASSWORD
PROXY_BASIC = base64.b64encode(PROXY_USERINFO.encode("ascii")).decode("ascii")


# --- helpers -------------------------------------------------------------------------------


def cli(
    tmp_path: Path, env: dict[str, str], *extra: str, out: Path | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    target = out if out is not None else tmp_path / "out" / "image.png"
    return run_cli(
        ["--prompt", "a fox in snow", "--out", str(target), *extra], env, timeout=timeout
    )


def event_index(events: list[dict[str, Any]], etype: str) -> int:
    return next(i for i, ev in enumerate(events) if ev["type"] == etype)


def assert_no_proxy_secret(text: str) -> None:
    assert PROXY_PASSWORD not in text, text
    assert PROXY_USERINFO not in text, text
    assert PROXY_BASIC not in text, text


# --- 1. proxy credentials ------------------------------------------------------------------


def test_unsupported_socks_proxy_error_hides_credentials(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(image_reply())
    socks = f"socks5://{PROXY_USERINFO}@127.0.0.1:1080"
    proc = cli(tmp_path, {**env, "ALL_PROXY": socks, "NO_PROXY": ""}, "--retries", "0")
    assert proc.returncode == 3, report(proc, gateway)
    assert "not supported" in proc.stderr, proc.stderr
    assert "proxy" in proc.stderr.lower()
    assert "127.0.0.1:1080" in proc.stderr  # still says which proxy
    assert_no_proxy_secret(proc.stdout + proc.stderr)
    assert gateway.requests == []
    assert leftovers(tmp_path) == []


def test_doctor_proxy_line_hides_password(tmp_path: Path, gateway: Gateway) -> None:
    port = closed_port()
    home = write_codex_home(tmp_path / "home", f"http://127.0.0.1:{closed_port()}/v1")
    env = clean_env(
        CODEX_HOME=str(home),
        HTTP_PROXY=f"http://{PROXY_USERINFO}@127.0.0.1:{port}",
        NO_PROXY="",
    )
    proc = run_cli(["--doctor", "--connect-timeout", "2"], env, timeout=20)
    assert proc.returncode != 0, report(proc)  # nothing listens on the proxy port
    proxy_lines = [line for line in proc.stdout.splitlines() if line.split()[1:2] == ["proxy"]]
    assert len(proxy_lines) == 1, proc.stdout
    assert f"127.0.0.1:{port}" in proxy_lines[0], proxy_lines[0]
    assert_no_proxy_secret(proc.stdout + proc.stderr)
    assert gateway.requests == []


def test_verbose_run_through_proxy_hides_proxy_authorization(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(image_reply())
    out = tmp_path / "out" / "image.png"
    with ForwardProxy(gateway) as proxy:
        proxy_url = proxy.url.replace("http://", f"http://{PROXY_USERINFO}@")
        proc = cli(tmp_path, {**env, "HTTP_PROXY": proxy_url, "NO_PROXY": ""}, "--verbose")
    assert proc.returncode == 0, report(proc, gateway)
    assert out.read_bytes() == PNG
    assert proxy.proxy_auth == ["Basic " + PROXY_BASIC]  # it was sent...
    assert "Proxy-Authorization" in proc.stderr  # ...and logged, masked
    assert_no_proxy_secret(proc.stdout + proc.stderr)
    assert TEST_KEY not in proc.stdout + proc.stderr
    assert len(gateway.posts()) == 1
    assert gateway.posts()[0].header("proxy-authorization") is None


# --- 2. *-Auth headers in --dry-run --------------------------------------------------------


def test_dry_run_masks_auth_named_provider_header(tmp_path: Path, gateway: Gateway) -> None:
    token = "sk-helicone-0123456789"
    home = write_codex_home(
        tmp_path / "home",
        gateway.base_url,
        extra_provider=f'http_headers = {{ "Helicone-Auth" = "Bearer {token}" }}',
    )
    proc = run_cli(
        ["--prompt", "a fox", "--out", str(tmp_path / "x.png"), "--dry-run"],
        clean_env(CODEX_HOME=str(home)),
    )
    assert proc.returncode == 0, report(proc)
    header = [line for line in proc.stdout.splitlines() if line.startswith("Helicone-Auth:")]
    assert len(header) == 1, proc.stdout
    assert token not in proc.stdout + proc.stderr
    assert token[:8] not in proc.stdout + proc.stderr
    assert TEST_KEY not in proc.stdout + proc.stderr
    assert gateway.requests == []


# --- 3. secret query values ----------------------------------------------------------------


def test_secret_query_value_is_not_in_the_404_hint(tmp_path: Path, gateway: Gateway) -> None:
    secret = "QSECRET-123456789"
    home = write_codex_home(
        tmp_path / "home",
        gateway.base_url,
        extra_provider=f'query_params = {{ key = "{secret}" }}',
    )
    gateway.set_default(error_reply(404, "Not Found", "not_found"))
    proc = cli(tmp_path, clean_env(CODEX_HOME=str(home)), "--retries", "0")
    assert proc.returncode == 4, report(proc, gateway)
    assert "/responses" in proc.stderr and "hint" in proc.stderr, proc.stderr  # the URL is shown
    assert secret not in proc.stdout + proc.stderr
    (req,) = gateway.posts()
    assert req.query == {"key": [secret]}  # it was sent, only not printed


# --- 4. redaction before truncation --------------------------------------------------------


def test_key_at_the_end_of_a_long_401_message_is_not_partly_shown(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    message = "Incorrect API key provided " + "x" * 453 + TEST_KEY
    gateway.set_default(error_reply(401, message, "invalid_api_key"))
    proc = cli(tmp_path, env, "--retries", "0")
    assert proc.returncode == 3, report(proc, gateway)
    assert "Incorrect API key provided" in proc.stderr
    assert TEST_KEY[:12] not in proc.stdout + proc.stderr
    assert TEST_KEY[:9] not in proc.stdout + proc.stderr  # no prefix longer than 8 characters
    assert len(gateway.posts()) == 1


# --- 5. trickling answers are bounded by --timeout -----------------------------------------


class TrickleServer:
    """Raw TCP: reads the request head, sends ``head``, then one byte of ``trickle`` every
    0.3 s, forever (until the test ends)."""

    def __init__(self, head: bytes, trickle: bytes, request_end: bytes = b"\r\n\r\n") -> None:
        self.head = head
        self.trickle = trickle
        self.request_end = request_end  # b"": answer after the first bytes (a TLS ClientHello)
        self.stop = threading.Event()
        self.connections = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.threads: list[threading.Thread] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.connections += 1
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            data = b""
            while not data or self.request_end not in data:
                piece = conn.recv(65536)
                if not piece:
                    return
                data += piece
            conn.sendall(self.head)
            i = 0
            while not self.stop.wait(0.3):
                conn.sendall(self.trickle[i % len(self.trickle) : i % len(self.trickle) + 1])
                i += 1
        except OSError:
            pass
        finally:
            conn.close()

    def __enter__(self) -> TrickleServer:
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(2)
        self.sock.close()


TRICKLES = {
    "headers": (b"HTTP/1.1 200 OK\r\n", b"X-Slow: " + b"a" * 10_000),
    "chunk-size-line": (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"a;ext=" + b"x" * 10_000,
    ),
}


@pytest.mark.parametrize("case", list(TRICKLES))
def test_trickling_answer_ends_at_the_total_timeout(case: str, tmp_path: Path) -> None:
    head, trickle = TRICKLES[case]
    out = tmp_path / "out" / "image.png"
    with TrickleServer(head, trickle) as server:
        home = write_codex_home(tmp_path / "home", server.base_url)
        proc = cli(
            tmp_path,
            clean_env(CODEX_HOME=str(home)),
            "--timeout",
            "2",
            "--idle-timeout",
            "1",
            "--retries",
            "0",
            out=out,
            timeout=15,
        )
        connections = server.connections
    assert proc.returncode == 6, report(proc)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert "--timeout" in errors[0], errors[0]
    assert connections == 1
    assert not out.exists()
    assert leftovers(tmp_path) == []


# The proxy tunnel's answer used to be bounded per receive only: a proxy trickling a byte every
# 0.3 s held the run open past --connect-timeout and --timeout. The TLS handshake is bounded as a
# whole by ssl itself (the socket timeout is a deadline there); the second case keeps it so.
SETUP_TRICKLES = {
    # the proxy answers CONNECT with a header block that never ends
    "connect-tunnel": (b"HTTP/1.1 200 Connection established\r\n", b"X-Slow: " + b"a" * 10_000),
    # the gateway answers the ClientHello with a 16 KB TLS record, one byte at a time
    "tls-handshake": (b"\x16\x03\x03\x40\x00", b"\x02" * 20_000),
}


@pytest.mark.parametrize("case", list(SETUP_TRICKLES))
def test_trickling_connection_setup_ends_at_the_connect_timeout(case: str, tmp_path: Path) -> None:
    head, trickle = SETUP_TRICKLES[case]
    out = tmp_path / "out" / "image.png"
    request_end = b"\r\n\r\n" if case == "connect-tunnel" else b""
    with TrickleServer(head, trickle, request_end) as server:
        if case == "connect-tunnel":
            base_url = f"https://127.0.0.1:{closed_port()}/v1"  # only the proxy is dialled
            env = clean_env(HTTPS_PROXY=f"http://127.0.0.1:{server.port}", NO_PROXY="")
        else:
            base_url = f"https://127.0.0.1:{server.port}/v1"
            env = clean_env()
        env["CODEX_HOME"] = str(write_codex_home(tmp_path / "home", base_url))
        started = time.monotonic()
        proc = cli(
            tmp_path, env, "--connect-timeout", "1", "--timeout", "120", "--retries", "0", out=out
        )
        elapsed = time.monotonic() - started
        connections = server.connections
    assert proc.returncode == 6, report(proc)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert "timed out after 1s" in errors[0], errors[0]
    assert elapsed < 20, elapsed  # the fault would otherwise hold it for --timeout (120 s)
    assert connections == 1
    assert not out.exists()
    assert leftovers(tmp_path) == []


# --- 6. DNS bounded by the timeout ---------------------------------------------------------


def test_resolve_gives_up_on_a_hanging_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow_getaddrinfo(*args: Any, **kwargs: Any) -> Any:
        time.sleep(2)
        raise socket.gaierror("too late")

    monkeypatch.setattr(socket, "getaddrinfo", slow_getaddrinfo)
    started = time.monotonic()
    with pytest.raises(g.NetworkError) as info:
        g.resolve("example.invalid", 80, 0.3)
    elapsed = time.monotonic() - started
    assert "looking up example.invalid" in info.value.message
    assert info.value.exit_code == 6
    assert elapsed < 1.5  # hang guard: the lookup is abandoned, not waited for


# --- 7. stop reading once the image is safe ------------------------------------------------


def test_stall_after_the_image_item_does_not_hold_up_the_result(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    events = image_events(images.b64(PNG))
    done = event_index(events, "response.output_item.done")
    assert events[done]["item"]["result"]
    gateway.set_default(sse_reply(events, stall_after=done + 1))
    out = tmp_path / "out" / "image.png"
    proc = cli(tmp_path, env, "--idle-timeout", "60", "--json", out=out, timeout=15)
    assert proc.returncode == 0, report(proc, gateway)
    assert out.read_bytes() == PNG
    record = parse_json_stdout(proc)
    assert record["ok"] is True and record["path"] == str(out)
    assert len(gateway.posts()) == 1
    assert leftovers(tmp_path) == []


# --- 8. SIGTERM ----------------------------------------------------------------------------


def sigterm_run(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], *extra: str
) -> tuple[int, str, Path]:
    out = tmp_path / "out" / "image.png"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--prompt", "a fox", "--out", str(out), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    try:
        gateway.wait_for_requests(1, timeout=10)
        preview = out.parent / "image.partial-1.png"
        if "--partial-images" in extra:  # wait until the preview is on disk
            deadline = time.monotonic() + 10
            while not preview.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert preview.exists(), gateway.dump()
        else:
            time.sleep(0.3)  # let it reach the read loop (not required for correctness)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, stderr, out


@pytest.mark.skipif(os.name != "posix", reason="SIGTERM is POSIX")
def test_sigterm_while_waiting_exits_143(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    events = image_events(images.b64(PNG))
    gateway.set_default(sse_reply(events, stall_after=1))
    code, stderr, out = sigterm_run(tmp_path, gateway, env)
    assert code == 143, stderr
    assert "terminated" in stderr
    assert "Traceback" not in stderr
    assert not out.exists()
    assert leftovers(tmp_path) == []
    assert len(gateway.posts()) == 1


@pytest.mark.skipif(os.name != "posix", reason="SIGTERM is POSIX")
def test_sigterm_after_a_partial_image_leaves_no_part_file(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    events = image_events(images.b64(PNG), partials=[images.b64(images.png_bytes(8, 8))])
    partial = event_index(events, "response.image_generation_call.partial_image")
    gateway.set_default(sse_reply(events, stall_after=partial + 1))
    code, stderr, out = sigterm_run(tmp_path, gateway, env, "--partial-images", "1")
    assert code == 143, stderr
    assert "terminated" in stderr
    assert not out.exists()
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in out.parent.iterdir()) == ["image.partial-1.png"]


# --- 9. disk full, no rescue possible ------------------------------------------------------


def test_disk_full_without_rescue_is_an_output_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def full(folder: str, prefix: str, suffix: str, mode: int = 0o666) -> tuple[int, str]:
        calls.append(folder)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(g, "create_unique", full)
    out = tmp_path / "out" / "image.png"
    sink = g.ImageSink(str(out), force=False)
    try:
        with pytest.raises(g.OutputError) as info:
            sink.save(images.b64(PNG))
    finally:
        sink.discard()
    assert info.value.exit_code == 7
    assert "No space left on device" in info.value.message
    assert len(calls) == 2  # beside --out, then the rescue folder
    assert not sink.has_image
    assert not out.exists()
    assert leftovers(tmp_path) == []


# --- 10. non-UTF-8 stdout ------------------------------------------------------------------


@pytest.mark.parametrize("as_json", [True, False])
def test_cp1252_stdout_can_print_any_prompt_and_path(
    as_json: bool, tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(image_reply())
    out = tmp_path / "狐狸.png"
    args = ["--prompt", "一只狐狸", "--out", str(out)] + (["--json"] if as_json else [])
    proc = run_cli(args, {**env, "PYTHONIOENCODING": "cp1252"})
    assert proc.returncode == 0, report(proc, gateway)
    assert out.read_bytes() == PNG
    if as_json:
        record = json.loads(proc.stdout)
        assert record["path"] == str(out)
        assert record["prompt"] == "一只狐狸"
        assert record["ok"] is True
    else:
        assert proc.stdout == str(out) + "\n"
    (req,) = gateway.posts()
    assert "一只狐狸" in json.dumps(req.json, ensure_ascii=False)


# --- 11. redirects -------------------------------------------------------------------------


def test_redirect_is_reported_not_followed_nor_retried(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(
        raw_reply(
            b"",
            status=308,
            content_type=None,
            headers={"Location": "https://elsewhere.invalid/v1/responses"},
        )
    )
    out = tmp_path / "out" / "image.png"
    proc = cli(tmp_path, env, out=out)
    assert proc.returncode == 4, report(proc, gateway)
    assert "redirect" in proc.stderr.lower()
    assert "base_url" in proc.stderr
    assert "elsewhere.invalid" in proc.stderr
    assert len(gateway.requests) == 1
    assert not out.exists()
    assert leftovers(tmp_path) == []


# --- 12. quirks match the gateway's words only ---------------------------------------------


def quirk(detail: str) -> tuple[str, str] | None:
    exc = g.GatewayError("HTTP 400 from stream.example.com: " + detail, status=400, detail=detail)
    return g.detect_quirk(
        exc, stream=True, force_tool=True, size="1024x1024", strict_size=False, used=set()
    )


def test_host_name_does_not_trigger_the_stream_quirk() -> None:
    assert quirk("this option is unsupported") is None


def test_gateway_words_still_trigger_the_stream_quirk() -> None:
    found = quirk("streaming is not supported")
    assert found is not None and found[0] == "stream"


# --- 13. sink errors are per attempt -------------------------------------------------------


def test_bad_result_of_an_earlier_attempt_does_not_decide_a_later_one(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    head = image_events(images.b64(PNG))[:2]
    corrupt = renumber(
        [
            *head,
            {
                "type": "response.output_item.done",
                "output_index": 0,
                "item": image_item("!!!notbase64"),
            },
            error_event("server_error", "upstream hiccup"),
        ]
    )
    gateway.enqueue(
        sse_reply(corrupt),
        # close-delimited and cut: the stream just ends, so the verdict decides the error
        sse_reply(image_events(images.b64(PNG)), cut_after=3, chunked=False),
        image_reply(),
    )
    out = tmp_path / "out" / "image.png"
    proc = cli(tmp_path, env, "--retries", "2", "--json", out=out)
    assert proc.returncode == 0, report(proc, gateway)
    assert out.read_bytes() == PNG
    assert len(gateway.posts()) == 3
    assert parse_json_stdout(proc)["retries"] == 2
    assert leftovers(tmp_path) == []


# --- 14. batch outputs stay inside --out-dir -----------------------------------------------


def test_batch_out_outside_out_dir_is_refused_per_line(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(image_reply())
    bad = ["../x.png", "/tmp/x.png", "sub/../../x.png", "\\evil.png", "sub/..", "."]
    lines = ['{"prompt": "fine", "out": "fine.png"}']
    lines += [json.dumps({"prompt": f"job {i}", "out": name}) for i, name in enumerate(bad)]
    batch = tmp_path / "jobs.jsonl"
    batch.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out_dir = tmp_path / "renders"
    proc = run_cli(["--batch", str(batch), "--out-dir", str(out_dir)], env)
    assert proc.returncode == 2, report(proc, gateway)
    assert f"{len(bad)} bad line(s)" in proc.stderr, proc.stderr
    for lineno, name in enumerate(bad, 2):
        matching = [line for line in proc.stderr.splitlines() if f"{batch}:{lineno}:" in line]
        assert len(matching) == 1, proc.stderr
        assert repr(name) in matching[0] and "inside --out-dir" in matching[0], matching[0]
    assert f"{batch}:1:" not in proc.stderr
    assert gateway.requests == []
    assert not out_dir.exists() or not any(out_dir.rglob("*"))


def test_batch_out_in_a_subfolder_is_accepted(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(image_reply())
    batch = tmp_path / "jobs.jsonl"
    batch.write_text('{"prompt": "a fox", "out": "sub/ok.png"}\n', encoding="utf-8")
    out_dir = tmp_path / "renders"
    proc = run_cli(["--batch", str(batch), "--out-dir", str(out_dir)], env)
    assert proc.returncode == 0, report(proc, gateway)
    assert (out_dir / "sub" / "ok.png").read_bytes() == PNG
    assert len(gateway.posts()) == 1
    assert leftovers(tmp_path) == []


# --- second review: answers that are odd but must not lose an image or crash -----------------

B64 = base64.b64encode(PNG).decode("ascii")


def run_against(
    tmp_path: Path, gateway: Gateway, replies: list[Reply], *extra: str
) -> subprocess.CompletedProcess[str]:
    for reply in replies:
        gateway.enqueue(reply)
    home = write_codex_home(tmp_path / "home", gateway.base_url)
    return cli(tmp_path, clean_env(CODEX_HOME=str(home)), "--retries", "2", *extra)


def test_failed_image_call_shows_the_models_explanation(tmp_path: Path, gateway: Gateway) -> None:
    failed = image_item(None, status="failed")
    said = "I can't create that image because it depicts a real person."
    reply = json_reply(response_obj([failed, message_item(said)]))
    proc = run_against(tmp_path, gateway, [reply], "--no-stream")
    assert proc.returncode == 5, report(proc, gateway)
    assert "the image generation call failed; the model answered in text: " + said in proc.stderr
    assert len(gateway.posts()) == 1


def test_failed_image_call_without_text_still_says_so(tmp_path: Path, gateway: Gateway) -> None:
    reply = json_reply(response_obj([image_item(None, status="failed")]))
    proc = run_against(tmp_path, gateway, [reply], "--no-stream")
    assert proc.returncode == 5, report(proc, gateway)
    assert "the image generation call failed without a reason" in proc.stderr


@pytest.mark.parametrize("bad", [12345, True, ["x"], {"b64": "x"}])
def test_result_that_is_not_a_string_is_exit_4_not_a_crash(
    tmp_path: Path, gateway: Gateway, bad: Any
) -> None:
    events = image_events(B64)
    for ev in events:
        items = [ev.get("item")] + list(ev.get("response", {}).get("output", []))
        for item in items:
            if isinstance(item, dict) and item.get("type") == "image_generation_call":
                item["result"] = bad
    proc = run_against(tmp_path, gateway, [sse_reply(events)], "--retries", "0")
    assert proc.returncode == 4, report(proc, gateway)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert "not base64 text" in proc.stderr


def test_bad_result_then_a_good_copy_saves_the_image(tmp_path: Path, gateway: Gateway) -> None:
    events = image_events(B64)
    for ev in events:
        if ev["type"] == "response.output_item.done" and "result" in ev["item"]:
            # the copy in response.completed (a separate object) stays fine
            ev["item"] = {**ev["item"], "result": 12345}
    proc = run_against(tmp_path, gateway, [sse_reply(events)])
    assert proc.returncode == 0, report(proc, gateway)
    assert (tmp_path / "out" / "image.png").read_bytes() == PNG


def test_preview_that_is_not_a_string_is_skipped(tmp_path: Path, gateway: Gateway) -> None:
    events = image_events(B64, partials=[B64])
    for ev in events:
        if ev["type"].endswith("partial_image"):
            ev["partial_image_b64"] = 123
    proc = run_against(tmp_path, gateway, [sse_reply(events)], "--partial-images", "1")
    assert proc.returncode == 0, report(proc, gateway)
    assert (tmp_path / "out" / "image.png").read_bytes() == PNG


def test_key_across_the_cut_of_a_non_json_answer_is_masked(
    tmp_path: Path, gateway: Gateway
) -> None:
    body = b"x" * 180 + b" key " + TEST_KEY.encode() + b" rejected"
    reply = raw_reply(body, content_type="application/json")
    proc = run_against(tmp_path, gateway, [reply], "--retries", "0")
    assert proc.returncode == 4, report(proc, gateway)
    for n in range(9, len(TEST_KEY) + 1):
        assert TEST_KEY[:n] not in proc.stdout + proc.stderr, n


def test_json_answer_labelled_as_a_stream_is_read_as_json(tmp_path: Path, gateway: Gateway) -> None:
    body = json.dumps(response_obj([image_item(B64)])).encode()
    proc = run_against(tmp_path, gateway, [raw_reply(body, content_type="text/event-stream")])
    assert proc.returncode == 0, report(proc, gateway)
    assert (tmp_path / "out" / "image.png").read_bytes() == PNG
    assert len(gateway.posts()) == 1  # not re-sent (and re-billed)


def test_moderation_error_labelled_as_a_stream_is_exit_5_once(
    tmp_path: Path, gateway: Gateway
) -> None:
    err = {
        "error": {
            "message": "Your request was rejected by the safety system.",
            "type": "image_generation_user_error",
            "code": "moderation_blocked",
            "param": None,
        }
    }
    reply = raw_reply(json.dumps(err).encode(), content_type="text/event-stream")
    proc = run_against(tmp_path, gateway, [reply] * 3)
    assert proc.returncode == 5, report(proc, gateway)
    assert "rejected by the safety system" in proc.stderr
    assert len(gateway.posts()) == 1


def test_stream_labelled_as_json_is_read_as_a_stream(tmp_path: Path, gateway: Gateway) -> None:
    body = format_sse(image_events(B64))
    proc = run_against(tmp_path, gateway, [raw_reply(body, content_type="application/json")])
    assert proc.returncode == 0, report(proc, gateway)
    assert (tmp_path / "out" / "image.png").read_bytes() == PNG


def test_error_given_as_a_string_in_a_200_answer_is_shown(tmp_path: Path, gateway: Gateway) -> None:
    reply = json_reply({"error": "upstream quota exhausted"})
    proc = run_against(tmp_path, gateway, [reply], "--no-stream", "--retries", "0")
    assert proc.returncode in (4, 5), report(proc, gateway)
    assert "upstream quota exhausted" in proc.stderr
    assert "contained no image" not in proc.stderr


@pytest.mark.parametrize(
    ("label", "first", "kind"),
    [
        ("text/event-stream", b'{"id": 1}', "json"),
        ("text/event-stream", b"  \n[1]", "json"),
        ("application/json", b"event: response.created\n", "event-stream"),
        ("application/json", b"data: {}\n\n", "event-stream"),
        ("application/json", b": keep-alive\n", "event-stream"),
        ("application/json", b"", "json"),
        ("application/json", b"<html>", "json"),
        ("", b"", "event-stream"),
        ("text/plain", b"da", "event-stream"),
        ("text/event-stream", b"\n\n", "event-stream"),
    ],
)
def test_answer_kind(label: str, first: bytes, kind: str) -> None:
    assert g.answer_kind(label, first) == kind
