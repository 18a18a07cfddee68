"""--doctor and --doctor --probe: the gateway check, what it prints for a healthy, unauthenticated
or unreachable gateway and for a refused probe, and that it sends no paid request unless asked."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import images
from tests.conftest import (
    PNG,
    TEST_KEY,
    assert_no_secret,
    assert_ok,
    clean_env,
    closed_port,
    image_reply,
    run_cli,
    write_codex_home,
)
from tests.gateway import (
    Gateway,
    Reply,
    close_reply,
    error_reply,
    failed_events,
    format_sse,
    image_events,
    image_item,
    json_reply,
    raw_reply,
    response_obj,
    sse_reply,
    text_only_events,
)
from tests.raw_servers import RawServer, send


def doctor_lines(proc: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """{check name: status} from the doctor's stdout lines 'STATUS  NAME  detail'."""
    found: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] in ("ok", "failed", "note"):
            found.setdefault(words[1], words[0])
    return found


def models_reply() -> Reply:
    return json_reply({"object": "list", "data": [{"id": "gpt-5.5", "object": "model"}]})


def test_doctor_healthy(gateway: Gateway, env: dict[str, str]) -> None:
    gateway.set_default(models_reply(), path="/v1/models")
    proc = run_cli(["--doctor"], env)
    assert_ok(proc)
    checks = doctor_lines(proc)
    for name in ("config", "endpoint", "key", "dns", "tcp", "models"):
        assert checks.get(name) == "ok", (name, proc.stdout)
    assert "failed" not in checks.values()
    assert_no_secret(proc)
    assert gateway.url + "/v1/responses" in proc.stdout
    assert [(r.method, r.path) for r in gateway.requests] == [("GET", "/v1/models")]
    assert gateway.requests[0].header("authorization") == "Bearer " + TEST_KEY
    assert gateway.posts() == []


def test_doctor_unauthenticated(gateway: Gateway, env: dict[str, str]) -> None:
    gateway.set_default(
        error_reply(401, "Incorrect API key provided", code="invalid_api_key"), path="/v1/models"
    )
    proc = run_cli(["--doctor"], env)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert doctor_lines(proc).get("models") == "failed", proc.stdout
    assert "401" in proc.stdout
    assert_no_secret(proc)
    assert gateway.posts() == []


def test_doctor_unreachable(tmp_path: Path) -> None:
    port = closed_port()
    home = write_codex_home(tmp_path / "ch", f"http://127.0.0.1:{port}/v1")
    proc = run_cli(["--doctor"], clean_env(CODEX_HOME=str(home)))
    assert proc.returncode == 6, proc.stdout + proc.stderr
    checks = doctor_lines(proc)
    assert checks.get("tcp") == "failed", proc.stdout
    assert checks.get("dns") == "ok"
    assert f"127.0.0.1:{port}" in proc.stdout
    assert_no_secret(proc)


def test_doctor_probe_ok(gateway: Gateway, env: dict[str, str]) -> None:
    gateway.set_default(models_reply(), path="/v1/models")
    gateway.set_default(image_reply())
    proc = run_cli(["--doctor", "--probe"], env)
    assert_ok(proc)
    assert doctor_lines(proc).get("probe") == "ok", proc.stdout
    (rec,) = gateway.posts()
    assert rec.json is not None
    assert rec.json["stream"] is True
    assert rec.json["tool_choice"] == {"type": "image_generation"}
    assert rec.json["tools"][0]["type"] == "image_generation"
    assert_no_secret(proc)


def test_doctor_probe_tool_choice_rejected(gateway: Gateway, env: dict[str, str]) -> None:
    gateway.set_default(models_reply(), path="/v1/models")
    gateway.set_default(
        error_reply(
            400, "tool_choice of type 'image_generation' is not supported", param="tool_choice"
        )
    )
    proc = run_cli(["--doctor", "--probe"], env)
    assert proc.returncode != 0
    assert doctor_lines(proc).get("probe") == "failed", proc.stdout
    probe_line = next(line for line in proc.stdout.splitlines() if "probe" in line.split()[:2])
    assert "tool_choice" in probe_line
    assert len(gateway.posts()) == 1


def test_doctor_probe_sends_nothing_where_codex_would_not(tmp_path: Path, gateway: Gateway) -> None:
    """env_key names an unset variable: Codex refuses and sends nothing, so the probe (an image
    request) is skipped instead of going out without a credential."""
    home = write_codex_home(
        tmp_path / "h", gateway.base_url, key=None, extra_provider='env_key = "GW_UNSET_KEY"'
    )
    gateway.set_default(models_reply(), path="/v1/models")
    gateway.set_default(image_reply())
    proc = run_cli(["--doctor", "--probe"], clean_env(CODEX_HOME=str(home)))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert doctor_lines(proc).get("key") == "failed", proc.stdout
    assert doctor_lines(proc).get("probe") == "note", proc.stdout
    assert gateway.posts() == []


def test_doctor_without_probe_sends_no_post(gateway: Gateway, env: dict[str, str]) -> None:
    gateway.set_default(models_reply(), path="/v1/models")
    gateway.set_default(image_reply())
    assert_ok(run_cli(["--doctor"], env))
    assert gateway.posts() == []


def test_probe_without_doctor_says_so(gateway: Gateway, env: dict[str, str]) -> None:
    for extra in ([], ["--prompt", "p", "--out", "p.png"]):
        proc = run_cli(["--probe", *extra], env)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: --probe needs --doctor"), proc.stderr
    assert gateway.requests == []


# --- what the doctor says when a step fails ---------------------------------------------------


def test_doctor_tls_verified_and_untrusted(
    tmp_path: Path, tls_gateway: Gateway, tls_material: tuple[ssl.SSLContext, Path]
) -> None:
    tls_gateway.set_default(models_reply(), path="/v1/models")
    home = write_codex_home(tmp_path / "ch", tls_gateway.base_url)
    trusted = run_cli(
        ["--doctor"], clean_env(CODEX_HOME=str(home), CODEX_CA_CERTIFICATE=str(tls_material[1]))
    )
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr
    assert doctor_lines(trusted)["tls"] == "ok"
    assert "with 127.0.0.1, certificate verified" in trusted.stdout
    untrusted = run_cli(["--doctor"], clean_env(CODEX_HOME=str(home)))
    assert untrusted.returncode == 6, untrusted.stdout + untrusted.stderr
    assert doctor_lines(untrusted)["tls"] == "failed"
    assert "CODEX_CA_CERTIFICATE" in untrusted.stdout
    assert tls_gateway.posts() == []


def test_doctor_tls_handshake_with_something_that_is_not_tls(tmp_path: Path) -> None:
    with RawServer(send(b"HTTP/1.1 400 Bad Request\r\n\r\n")) as server:
        home = write_codex_home(tmp_path / "ch", f"https://127.0.0.1:{server.port}/v1")
        # the server waits for an HTTP head that a ClientHello never ends: the handshake fails
        # at --connect-timeout
        args = ["--doctor", "--connect-timeout", "3"]
        proc = run_cli(args, clean_env(CODEX_HOME=str(home)))
    assert proc.returncode == 6, proc.stdout + proc.stderr
    assert doctor_lines(proc)["tls"] == "failed", proc.stdout
    assert "Traceback" not in proc.stderr
    assert_no_secret(proc)


def test_doctor_connect_step_fails_when_the_server_hangs_up(tmp_path: Path) -> None:
    # TCP is accepted, then the connection is reset before HTTP: the "connect" step, not tcp
    with RawServer(send()) as server:
        home = write_codex_home(tmp_path / "ch", f"http://127.0.0.1:{server.port}/v1")
        proc = run_cli(["--doctor"], clean_env(CODEX_HOME=str(home)))
    checks = doctor_lines(proc)
    assert checks["tcp"] == "ok", proc.stdout
    assert proc.returncode != 0 and "failed" in checks.values(), proc.stdout
    assert "Traceback" not in proc.stderr


def test_doctor_models_404_is_a_note_and_a_broken_answer_a_failure(
    gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.set_default(error_reply(404, "no such route"), path="/v1/models")
    missing = run_cli(["--doctor"], env)
    assert missing.returncode == 0, missing.stdout + missing.stderr
    assert "GET /models: 404 (this gateway has no model list; not required)" in missing.stdout
    gateway.set_default(close_reply(), path="/v1/models")
    broken = run_cli(["--doctor"], env)
    assert doctor_lines(broken)["models"] == "failed", broken.stdout


def test_doctor_with_an_unusable_proxy_is_a_configuration_failure(
    gateway: Gateway, env: dict[str, str]
) -> None:
    proxied = dict(env, ALL_PROXY="socks5://user:pw-proxy-secret@127.0.0.1:1080", NO_PROXY="")
    proc = run_cli(["--doctor"], proxied)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "failed proxy     proxy 'socks5://***@127.0.0.1:1080' is not supported" in proc.stdout
    assert "pw-proxy-secret" not in proc.stdout + proc.stderr
    assert gateway.requests == []


def test_doctor_with_a_broken_config_fails_the_config_step(tmp_path: Path) -> None:
    home = tmp_path / "broken-home"
    home.mkdir()
    (home / "config.toml").write_text('model_provider = "gw\n', encoding="utf-8")
    proc = run_cli(["--doctor"], clean_env(CODEX_HOME=str(home)))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert doctor_lines(proc)["config"] == "failed", proc.stdout
    assert "dns" not in doctor_lines(proc)  # it stops there: nothing is looked up


def test_doctor_names_where_the_credential_goes(tmp_path: Path, gateway: Gateway) -> None:
    gateway.set_default(models_reply(), path="/v1/models")
    home = write_codex_home(
        tmp_path / "ch",
        gateway.base_url,
        key=None,
        extra_provider='http_headers = { "api-key" = "hdr-cred-0123456789" }',
    )
    header = run_cli(["--doctor"], clean_env(CODEX_HOME=str(home)))
    assert "none in Authorization; header api-key carries it" in header.stdout, header.stdout
    assert "hdr-cred-0123456789" not in header.stdout + header.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    base = run_cli(["--doctor", "--base-url", gateway.base_url], clean_env(CODEX_HOME=str(empty)))
    assert "none: no Authorization header will be sent (--base-url)" in base.stdout, base.stdout


def probe_answers() -> dict[str, tuple[Reply, str, str]]:
    """{case: (the answer to the probe's POST, the probe line's status, words in it)}"""
    text = text_only_events("I cannot draw.")
    failed = failed_events("server_error", "the renderer fell over")
    image_json = json_reply(response_obj([image_item(images.b64(PNG))]))
    no_id = [e for e in image_events(images.b64(PNG)) if "response" not in e]
    return {
        "text": (sse_reply(text), "failed", "the model answered in text"),
        "error-event": (sse_reply(failed), "failed", "response.failed"),
        "stream-refused": (
            error_reply(400, "stream=true is not supported by this deployment"),
            "failed",
            "streaming is refused",
        ),
        "other-refusal": (error_reply(400, "unknown model gpt-5.5"), "failed", "unknown model"),
        "json-image": (image_json, "ok", "forced tool_choice accepted"),
        "no-response-id": (sse_reply(no_id), "ok", "forced tool_choice accepted"),
    }


@pytest.mark.parametrize("case", sorted(probe_answers()))
def test_doctor_probe_reads_each_kind_of_answer(
    gateway: Gateway, env: dict[str, str], case: str
) -> None:
    reply, status, words = probe_answers()[case]
    gateway.set_default(models_reply(), path="/v1/models")
    gateway.set_default(reply)
    proc = run_cli(["--doctor", "--probe"], env)
    probe_line = next(line for line in proc.stdout.splitlines() if line.split()[1:2] == ["probe"])
    assert probe_line.split()[0] == status, proc.stdout
    assert words in proc.stdout, proc.stdout
    assert (proc.returncode == 0) == (status == "ok"), proc.stdout + proc.stderr
    if case == "json-image":
        assert "answered application/json to a streaming request" in proc.stdout
    if case == "no-response-id":
        assert "background mode accepted, but the answer gave no response id" in proc.stdout
    assert_no_secret(proc)


def test_doctor_says_models_listed(gateway: Gateway, env: dict[str, str]) -> None:
    gateway.set_default(json_reply({"object": "list", "data": []}), path="/v1/models")
    proc = run_cli(["--doctor"], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    models = [line for line in proc.stdout.splitlines() if line.split()[1:2] == ["models"]]
    assert models and "models listed" in models[0], proc.stdout
    assert "key accepted" not in proc.stdout


# --- the probe against gateways that fail part-way ----------------------------------------------


def http_answer(status: str, ctype: str, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"Connection: close\r\n\r\n" + body


NO_MODELS = http_answer("404 Not Found", "application/json", b'{"error": {"message": "none"}}')


def routed(routes: dict[bytes, Callable[[socket.socket], None] | bytes | None]) -> Any:
    """A RawServer answer by request line prefix (b"GET /v1/models"): bytes to send, a
    callable to run on the connection, or None to hang up without a word."""

    def answer(conn: socket.socket, request: bytes) -> None:
        for prefix, what in routes.items():
            if request.startswith(prefix):
                if callable(what):
                    what(conn)
                elif what is not None:
                    conn.sendall(what)
                return

    return answer


def probe_on(server: RawServer, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    home = write_codex_home(tmp_path / "ch", server.base_url)
    return run_cli(["--doctor", "--probe", *extra], clean_env(CODEX_HOME=str(home)))


def probe_line(proc: subprocess.CompletedProcess[str], name: str = "probe") -> str:
    return next(x for x in proc.stdout.splitlines() if x.split()[1:2] == [name])


def test_probe_cannot_connect_after_the_checks_did(tmp_path: Path) -> None:
    """The gateway goes away between the doctor's GET /models and the probe's POST: the probe
    says it cannot connect (exit 6), without a traceback."""
    holder: list[RawServer] = []

    def models_then_gone(conn: socket.socket) -> None:
        # stop listening before answering: the probe's connection is refused (shutdown, as a
        # close alone would not stop the kernel queueing connections while accept() waits)
        holder[0].sock.shutdown(socket.SHUT_RDWR)
        conn.sendall(NO_MODELS)

    with RawServer(routed({b"GET /v1/models": models_then_gone})) as server:
        holder.append(server)
        proc = probe_on(server, tmp_path)
    assert proc.returncode == 6, proc.stdout + proc.stderr
    line = probe_line(proc)
    assert line.startswith("failed probe     cannot connect: "), line
    assert "refused" in line, line
    assert "Traceback" not in proc.stderr
    assert_no_secret(proc)


def sse_head() -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


CREATED = b'data: {"type": "response.created", "response": {"id": "resp_1"}}\n\n'


@pytest.mark.parametrize(
    ("post", "extra", "words"),
    [
        # the chunked framing is cut: http.client's IncompleteRead
        (sse_head() + chunk(CREATED) + b"40\r\ndata: {", [], "IncompleteRead"),
        # nothing more arrives: the idle limit
        (None, ["--idle-timeout", "1"], "no data from the gateway for 1s (--idle-timeout)"),
        # a body that claims gzip and is not: the script's own error for it
        (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Encoding: gzip\r\n"
            b"Content-Length: 20\r\n\r\nthis is not gzip....",
            [],
            "the gateway's compressed answer cannot be decoded",
        ),
    ],
    ids=["cut", "stalled", "not-gzip"],
)
def test_probe_connection_lost_while_reading(
    tmp_path: Path, post: bytes | None, extra: list[str], words: str
) -> None:
    def stall(conn: socket.socket) -> None:
        conn.sendall(sse_head() + chunk(CREATED))
        time.sleep(5)

    answer = stall if post is None else post
    with RawServer(routed({b"GET /v1/models": NO_MODELS, b"POST /v1/responses": answer})) as s:
        proc = probe_on(s, tmp_path, *extra)
    assert proc.returncode == 6, proc.stdout + proc.stderr
    line = probe_line(proc)
    assert line.startswith("failed probe     "), line
    assert words in line, line
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("ctype", ["text/event-stream", "application/json"])
def test_probe_answer_that_ends_without_the_image_tool(tmp_path: Path, ctype: str) -> None:
    """A complete answer (either kind) in which the image tool never shows."""
    body = CREATED if "event-stream" in ctype else json.dumps(response_obj([])).encode()
    post = http_answer("200 OK", ctype, body)
    with RawServer(routed({b"GET /v1/models": NO_MODELS, b"POST /v1/responses": post})) as s:
        proc = probe_on(s, tmp_path)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "no image tool activity in the answer" in probe_line(proc), proc.stdout


def test_probe_skips_events_it_cannot_read(gateway: Gateway, env: dict[str, str]) -> None:
    """Events that are not JSON, or not JSON objects, are passed over; an image call whose
    first sign is its (long) image data still counts."""
    big = images.b64(images.png_bytes(260, 260, noise=True))
    assert len(big) > 64 * 1024  # spooled as a long string, not parsed in memory
    done = {
        "type": "response.output_item.done",
        "output_index": 0,
        "item": {"type": "image_generation_call", "id": "ig_1", "result": big},
    }
    body = b"data: {not json\n\ndata: [1, 2]\n\ndata: " + json.dumps(done).encode() + b"\n\n"
    gateway.set_default(models_reply(), path="/v1/models")
    gateway.set_default(raw_reply(body, content_type="text/event-stream"))
    proc = run_cli(["--doctor", "--probe"], env)
    assert probe_line(proc).startswith("ok     probe     forced tool_choice accepted"), proc.stdout


def test_probe_store_check_when_the_fetch_fails(tmp_path: Path) -> None:
    """The probe's stored response cannot be fetched (the connection drops), nor cancelled:
    a note that a cut stream cannot be resumed here, and the doctor still passes."""
    post = http_answer("200 OK", "text/event-stream", format_sse(image_events(images.b64(PNG))))
    routes = {
        b"GET /v1/models": NO_MODELS,
        b"POST /v1/responses/resp_test1/cancel": None,
        b"POST /v1/responses": post,
        b"GET /v1/responses/resp_test1": None,
    }
    with RawServer(routed(routes)) as server:
        proc = probe_on(server, tmp_path)
        seen = [r.split(b" HTTP/")[0] for r in server.requests]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert probe_line(proc).startswith("ok     probe     "), proc.stdout
    store = probe_line(proc, "store")
    assert store.startswith("note   store     background mode accepted, but GET /responses/{id}"), (
        store
    )
    assert "a cut stream cannot be resumed here" in store
    assert b"POST /v1/responses/resp_test1/cancel" in seen, seen


# --- steps a loopback test cannot reach as a subprocess: notes, a failing name lookup ----------


def test_doctor_shows_the_configuration_notes(capsys: pytest.CaptureFixture[str]) -> None:
    """OPENAI_BASE_URL is ignored for the built-in provider (as by Codex): the doctor says so
    as a note. In-process, as the default provider is not a loopback address."""
    import generate_gateway_image as g

    gw = g.resolve_gateway({}, {"OPENAI_API_KEY": TEST_KEY}, {"OPENAI_BASE_URL": "http://x"})
    check = g.Check(g.Console())
    g._doctor_image_tool(gw, check)
    notes = [e for e in check.entries if e["check"] == "env"]
    assert len(notes) == 1 and notes[0]["status"] == "note"
    assert notes[0]["detail"].startswith("OPENAI_BASE_URL is ignored")
    assert check.failures == []
    assert "note   env       OPENAI_BASE_URL is ignored" in capsys.readouterr().out


@pytest.mark.parametrize("how", ["unknown", "silent"])
def test_doctor_dns_step_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    """A name that does not resolve, or a resolver that never answers: the dns step fails with
    the network's exit code and nothing is connected. getaddrinfo is replaced (a test may not
    ask a real resolver about a name)."""
    from urllib.parse import urlsplit

    import generate_gateway_image as g

    def getaddrinfo(host: str, *args: Any, **kw: Any) -> Any:
        if how == "silent":
            time.sleep(2)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    settings = g.Settings({})
    settings.connect_timeout = 0.3
    gw = g.resolve_gateway({}, None, {}, base_url="https://gw.invalid/v1")
    check = g.Check(g.Console())
    parts = urlsplit(gw.base_url)
    assert g._doctor_connect(gw, settings, check, parts, 443, None) == g.EXIT_NETWORK
    (entry,) = check.entries
    assert entry["check"] == "dns" and entry["status"] == "failed"
    if how == "silent":
        assert entry["detail"] == "looking up gw.invalid took longer than 0.3s"
    else:
        assert entry["detail"] == "gw.invalid: [Errno -2] Name or service not known"
    assert entry["hint"]
    assert f"failed dns       {entry['detail']}\n" in capsys.readouterr().out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's listen backlog")
def test_doctor_connect_step_of_an_http_gateway(tmp_path: Path) -> None:
    """TCP works once, then the gateway takes no more connections (its one-place queue is
    full, so the second connection is never answered): the step after tcp fails, named
    "connect" for an http:// URL (no TLS there, as the README's table says)."""
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)  # never accepted: the doctor's tcp check takes the only place
        home = write_codex_home(tmp_path / "ch", f"http://127.0.0.1:{full.getsockname()[1]}/v1")
        args = ["--doctor", "--connect-timeout", "1"]
        proc = run_cli(args, clean_env(CODEX_HOME=str(home)))
    checks = doctor_lines(proc)
    assert proc.returncode == 6, proc.stdout + proc.stderr
    assert (checks["tcp"], checks.get("connect")) == ("ok", "failed"), proc.stdout
    assert "tls" not in checks and "models" not in checks, proc.stdout
    assert "timed out after 1s" in proc.stdout


def test_a_bug_while_the_probe_reads_is_not_called_a_broken_connection(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only transport failures become the probe's "broken" line: a programming error inside
    the reading loop propagates (main() reports it as an internal error)."""
    import generate_gateway_image as g

    def feed(self: Any, chunk: bytes) -> None:
        raise RuntimeError("a bug in the parser")

    gateway.set_default(image_reply())
    monkeypatch.setattr(g.SSEParser, "feed", feed)
    gw = g.resolve_gateway({}, None, {}, base_url=gateway.base_url)
    payload = {"model": "gpt-5.5", "input": "p", "stream": True}
    with pytest.raises(RuntimeError, match="a bug in the parser"):
        g.probe_post(gw, g.Settings({}), payload)
    monkeypatch.undo()
    # the same reading, without the bug, sees the image tool
    assert g.probe_post(gw, g.Settings({}), payload)["seen"]["item"] == "image_generation_call"
