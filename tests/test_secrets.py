"""The key never leaves the process, whatever a hostile gateway, proxy or credential helper does.

Each test runs the script as a subprocess against the loopback gateway and checks everything it
printed and wrote (stdout, stderr, --json, the sidecar, every file in the output folder) for the
key, its URL-encoded and JSON-escaped forms and any 12-character piece of it (tests/hostile.py).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest

import generate_gateway_image as g
from tests import images
from tests.conftest import (
    PNG,
    TEST_KEY,
    clean_env,
    cli,
    closed_port,
    image_reply,
    leftovers,
    report,
    run_cli,
    write_codex_home,
)
from tests.gateway import ForwardProxy, Gateway, error_reply, image_events, raw_reply, sse_reply
from tests.hostile import files_text, leaks

# A key whose URL-encoded and JSON-escaped forms differ from it ('/', '+', '=', '\\').
ODD_KEY = "sk-live/Ab+cD=eF\\gH-0123456789abcdefXYZ"


def setup(tmp_path: Path, gateway: Gateway, key: str = TEST_KEY) -> dict[str, str]:
    home = write_codex_home(tmp_path / "codex-home", gateway.base_url, key=key)
    (tmp_path / "tmp").mkdir()
    return clean_env(CODEX_HOME=str(home), TMPDIR=str(tmp_path / "tmp"))


def everything(tmp_path: Path, proc: subprocess.CompletedProcess[str]) -> str:
    """All the run printed, and every file it may have written (not the Codex home)."""
    files = files_text(tmp_path, skip=[tmp_path / "codex-home"])
    return "\n".join([proc.stdout, proc.stderr, files])


# --- 1. what the gateway sends back ------------------------------------------------------------


def test_key_across_the_8k_cut_of_a_non_json_answer_is_masked(
    tmp_path: Path, gateway: Gateway
) -> None:
    """The spaces collapse, so the 20 characters before the cut would be the shown text."""
    env = setup(tmp_path, gateway)
    body = b" " * (8192 - 20) + TEST_KEY.encode() + b" is not a valid key"
    gateway.set_default(raw_reply(body, content_type="application/json"))
    proc = run_cli(["--prompt", "p", "--out", str(tmp_path / "o.png"), "--retries", "0"], env)
    assert proc.returncode == 4, report(proc, gateway)
    assert "not JSON" in proc.stderr, proc.stderr
    assert leaks(TEST_KEY, everything(tmp_path, proc)) == [], report(proc)


def test_ids_and_words_from_the_gateway_are_masked_in_sidecar_json_and_verbose(
    tmp_path: Path, gateway: Gateway
) -> None:
    env = setup(tmp_path, gateway)
    events = image_events(
        images.b64(PNG),
        resp_id=TEST_KEY,
        item_id="ig_" + quote(TEST_KEY, safe=""),
        revised_prompt="echo " + TEST_KEY[:20],
    )
    gateway.enqueue(sse_reply(events))
    out = tmp_path / "out" / "o.png"
    args = ["--prompt", "p", "--out", str(out), "--sidecar", "--json", "--verbose"]
    proc = run_cli(args, env)
    assert proc.returncode == 0, report(proc, gateway)
    record = json.loads(proc.stdout)
    sidecar = json.loads((tmp_path / "out" / "o.png.json").read_text(encoding="utf-8"))
    assert record["response_id"] and sidecar["response_id"]  # kept, only masked
    assert sidecar["image_call_id"].startswith("ig_")
    assert leaks(TEST_KEY, everything(tmp_path, proc)) == [], report(proc)


@pytest.mark.parametrize(
    "form",
    [
        ODD_KEY,
        quote(ODD_KEY, safe=""),
        quote(ODD_KEY),
        json.dumps(ODD_KEY)[1:-1],
        ODD_KEY[:20],  # a prefix echoed back
        ODD_KEY[9:21],  # any 12 characters of it
    ],
    ids=["plain", "url-encoded", "url-path", "json-escaped", "prefix-20", "piece-12"],
)
def test_every_form_of_the_key_in_a_gateway_error_is_masked(
    tmp_path: Path, gateway: Gateway, form: str
) -> None:
    env = setup(tmp_path, gateway, key=ODD_KEY)
    gateway.set_default(error_reply(400, f"bad request from key={form}; check it"))
    proc = run_cli(["--prompt", "p", "--out", str(tmp_path / "o.png"), "--json"], env)
    assert proc.returncode == 4, report(proc, gateway)
    assert "bad request from key=" in proc.stderr, proc.stderr  # the message is still shown
    assert leaks(ODD_KEY, everything(tmp_path, proc)) == [], report(proc)


def test_the_mask_shows_nothing_of_the_key(tmp_path: Path, gateway: Gateway) -> None:
    env = setup(tmp_path, gateway)
    proc = run_cli(["--prompt", "p", "--out", str(tmp_path / "o.png"), "--dry-run"], env)
    assert proc.returncode == 0, report(proc)
    assert "Authorization: Bearer ***\n" in proc.stdout, proc.stdout
    assert TEST_KEY[-4:] not in proc.stdout + proc.stderr  # not even its last characters
    assert g.mask_secret("plain-key-without-prefix-wxyz") == "***"


def test_a_key_percent_encoded_in_lower_case_is_masked(tmp_path: Path, gateway: Gateway) -> None:
    import re
    from urllib.parse import quote

    lower = re.sub("%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote(ODD_KEY, safe=""))
    assert lower != quote(ODD_KEY, safe="")
    env = setup(tmp_path, gateway, key=ODD_KEY)
    gateway.set_default(error_reply(401, f"invalid key {lower}"))
    proc = run_cli(["--prompt", "p", "--out", str(tmp_path / "o.png"), "--retries", "0"], env)
    assert proc.returncode == 3, report(proc, gateway)
    assert "invalid key ***" in proc.stderr, proc.stderr
    assert lower not in proc.stderr and lower[:12] not in proc.stderr


@pytest.mark.parametrize("key", ["short-key-123", "nineteen-chars-1234"])
def test_a_key_under_20_characters_is_shown_as_stars(
    tmp_path: Path, gateway: Gateway, key: str
) -> None:
    env = setup(tmp_path, gateway, key=key)
    gateway.set_default(error_reply(401, f"invalid key {key}"))
    proc = run_cli(["--prompt", "p", "--out", str(tmp_path / "o.png"), "--retries", "0"], env)
    assert proc.returncode == 3, report(proc, gateway)
    assert "invalid key ***" in proc.stderr, proc.stderr
    assert key[-4:] + " " not in proc.stderr and key not in proc.stderr
    dry = run_cli(["--prompt", "p", "--out", str(tmp_path / "o.png"), "--dry-run"], env)
    assert "Authorization: Bearer ***\n" in dry.stdout, dry.stdout


# --- 1. the credential helper and the proxy ------------------------------------------------------


def command_home(tmp_path: Path, gateway: Gateway, code: str) -> dict[str, str]:
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text(
        f'model_provider = "gw"\n[model_providers.gw]\nbase_url = "{gateway.base_url}"\n'
        f"[model_providers.gw.auth]\ncommand = {json.dumps(sys.executable)}\n"
        f"args = {json.dumps(['-c', code])}\n",
        encoding="utf-8",
    )
    return clean_env(CODEX_HOME=str(home))


def test_auth_command_stderr_holding_the_key_is_masked(tmp_path: Path, gateway: Gateway) -> None:
    code = f"import sys; sys.exit('token {TEST_KEY} expired, run corp-login')"
    env = command_home(tmp_path, gateway, code)
    proc = run_cli(["--prompt", "p", "--out", str(tmp_path / "o.png")], env)
    assert proc.returncode == 3, report(proc)
    assert "exited with 1: token *** expired, run corp-login" in proc.stderr, proc.stderr
    assert leaks(TEST_KEY, everything(tmp_path, proc)) == [], report(proc)
    assert gateway.requests == []


def test_what_a_failing_auth_command_printed_on_stdout_is_masked_everywhere(
    tmp_path: Path, gateway: Gateway
) -> None:
    """It printed the key and then failed: a later message that shows the key masks it."""
    code = f"import sys; print({TEST_KEY!r}); sys.exit('cannot refresh {TEST_KEY[:16]}')"
    env = command_home(tmp_path, gateway, code)
    proc = run_cli(["--prompt", "p", "--out", str(tmp_path / "o.png")], env)
    assert proc.returncode == 3, report(proc)
    assert "cannot refresh" in proc.stderr, proc.stderr
    assert leaks(TEST_KEY, everything(tmp_path, proc)) == [], report(proc)


def test_proxy_credentials_echoed_by_the_gateway_are_masked(
    tmp_path: Path, gateway: Gateway
) -> None:
    password = "pr0xy-Pa55word-for-tests"
    basic = base64.b64encode(f"alice:{password}".encode()).decode()
    env = setup(tmp_path, gateway)
    message = f"proxy said {password} / {quote(password, safe='')} / {basic} / {password[4:17]}"
    gateway.set_default(error_reply(400, message))
    with ForwardProxy(gateway) as proxy:
        env.update(HTTP_PROXY=proxy.url.replace("://", f"://alice:{password}@"), NO_PROXY="")
        proc = run_cli(["--prompt", "p", "--out", str(tmp_path / "o.png"), "--verbose"], env)
    assert proc.returncode == 4, report(proc, gateway)
    assert proxy.proxy_auth == ["Basic " + basic]  # it was used, only never shown
    assert "proxy said" in proc.stderr
    text = everything(tmp_path, proc)
    assert leaks(password, text) == [] and leaks(basic, text) == [], report(proc)


# --- the one redaction function ------------------------------------------------------------------


def test_redact_masks_pieces_in_a_large_text_quickly() -> None:
    """The MCP server and every output path call redact() on whole strings (2 MB error bodies
    included): it must find a 12-character piece anywhere and stay fast."""
    secret = "rk-" + base64.b32encode(b"redact-test-secret-value").decode()
    g.add_secret(secret)
    text = ("x" * 1_000_000) + secret[5:19] + ("y" * 1_000_000) + quote(secret, safe="")
    started = time.monotonic()
    masked = g.redact(text)
    assert time.monotonic() - started < 2.0
    assert leaks(secret, masked) == []
    assert len(masked) < len(text) and masked.startswith("x" * 1000)
    assert g.redact_obj({"a": [secret, 1]}) == {"a": [g.mask_secret(secret), 1]}


# --- proxy credentials, *-Auth headers and secret query values ------------------------------------


PROXY_PASSWORD = "PROXYPW-secret"


PROXY_USERINFO = "bob:" + PROXY_PASSWORD


PROXY_BASIC = base64.b64encode(PROXY_USERINFO.encode("ascii")).decode("ascii")


def assert_no_proxy_secret(text: str) -> None:
    assert PROXY_PASSWORD not in text, text
    assert PROXY_USERINFO not in text, text
    assert PROXY_BASIC not in text, text


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
        proc = cli(tmp_path, {**env, "HTTP_PROXY": proxy_url, "NO_PROXY": ""}, "--verbose", out=out)
    assert proc.returncode == 0, report(proc, gateway)
    assert out.read_bytes() == PNG
    assert proxy.proxy_auth == ["Basic " + PROXY_BASIC]  # it was sent...
    assert "Proxy-Authorization" in proc.stderr  # ...and logged, masked
    assert_no_proxy_secret(proc.stdout + proc.stderr)
    assert TEST_KEY not in proc.stdout + proc.stderr
    assert len(gateway.posts()) == 1
    assert gateway.posts()[0].header("proxy-authorization") is None


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


@pytest.mark.parametrize("mode", [["--dry-run", "--prompt", "p", "--out", "x.png"], ["--doctor"]])
def test_password_in_the_base_url_is_never_printed(
    tmp_path: Path, gateway: Gateway, mode: list[str]
) -> None:
    host = gateway.base_url.split("://", 1)[1]
    url = f"http://bob:pw-SECRET-123@{host}?api-key=qk-SECRET-456"
    home = write_codex_home(tmp_path / "home", url)
    proc = run_cli([*mode, "--verbose"], clean_env(CODEX_HOME=str(home)))
    text = proc.stdout + proc.stderr
    assert "pw-SECRET-123" not in text, text
    assert "qk-SECRET-456" not in text, text
    assert TEST_KEY not in text


# --- the edges of redaction (each test fails when one edge moves) -----------------------------


@pytest.fixture
def no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Empty redaction tables for one in-process test (the worker's tables stay as they were)."""
    monkeypatch.setattr(g, "SECRETS", [])
    monkeypatch.setattr(g, "SECRET_FORMS", [])
    monkeypatch.setattr(g, "SECRET_BLOCKS", {})


@pytest.mark.usefixtures("no_secrets")
def test_a_piece_of_the_key_at_the_very_start_of_a_string_is_masked_whole() -> None:
    secret = "sk-start-" + "Q7wE4rT1yU8i"
    g.add_secret(secret)
    for start in range(0, 5):  # the piece begins the string, wherever it starts in the key
        piece = secret[start : start + 13]
        assert g.redact(piece + " was refused") == "*** was refused", start
        assert g.redact("refused: " + piece) == "refused: ***", start


@pytest.mark.usefixtures("no_secrets")
def test_a_credential_of_exactly_the_minimum_length_is_masked() -> None:
    shortest = "k" * (g.SECRET_MIN_LENGTH - 1) + "9"
    too_short = shortest[1:]  # shorter values would mask ordinary words
    g.add_secret(shortest)
    g.add_secret(too_short)
    assert g.redact(f"key {shortest}.") == "key ***."
    assert g.redact(f"id {too_short[:-1]}Z") == f"id {too_short[:-1]}Z"


@pytest.mark.parametrize(
    "word", ["auth", "key", "token", "secret", "cookie", "password", "session", "credential", "sig"]
)
def test_every_secret_header_word_marks_a_value_as_secret(word: str) -> None:
    assert g.looks_secret(f"X-Gw-{word.title()}-Value")
    assert g.looks_secret(word.upper())
    assert not g.looks_secret("X-Request-Id", "plain-value")
    assert g.looks_secret("X-Anything", "Bearer abc") and g.looks_secret("X-Any", "basic abc")


@pytest.mark.parametrize("word", ["auth", "key", "token", "secret", "cookie"])
def test_every_credential_header_word_is_a_credential(word: str) -> None:
    assert g.is_credential_header(f"X-My-{word.upper()}-Thing")
    assert not g.is_credential_header("X-Request-Id")


def test_auth_command_errors_mask_tokens_from_16_characters() -> None:
    token = "abcdefgh1234567"  # 15 characters with a digit: shown
    assert g.mask_tokens(f"denied {token} here") == f"denied {token} here"
    assert g.mask_tokens(f"denied {token}8 here") == "denied *** here"
    long_word = "a" * (2 * g.TOKEN_LIKE_LENGTH)  # no digit but very long: masked
    assert g.mask_tokens(f"x {long_word} y") == "x *** y"
    assert g.mask_tokens(f"x {long_word[1:]} y") == f"x {long_word[1:]} y"


def test_short_lines_of_a_failing_auth_command_are_secrets_too(
    tmp_path: Path, gateway: Gateway
) -> None:
    # each line of the output counts as a key: one under 12 characters (no piece of the whole
    # output) and under 16 (mask_tokens lets it through) is masked only as a line of its own
    line = "pw-abcdefg"
    code = f"import sys; print('user\\n{line}'); sys.exit('bad password {line} for user')"
    env = command_home(tmp_path, gateway, code)
    proc = run_cli(["--prompt", "p", "--out", str(tmp_path / "o.png")], env)
    assert proc.returncode == 3, report(proc)
    assert "bad password *** for user" in proc.stderr, proc.stderr
    assert line not in proc.stdout + proc.stderr


@pytest.mark.usefixtures("no_secrets")
def test_a_piece_of_exactly_secret_piece_characters_is_masked_one_less_is_not() -> None:
    secret = "sk-edge-" + "Hq4Jw9Lm2Np7Rt5V"
    g.add_secret(secret)
    for start in range(0, len(secret) - g.SECRET_PIECE + 1):
        piece = secret[start : start + g.SECRET_PIECE]
        assert g.redact(f"x {piece} y") == "x *** y", start
        shorter = piece[:-1]
        assert g.redact(f"x {shorter} y") == f"x {shorter} y", start
