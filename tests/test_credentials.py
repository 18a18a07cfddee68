"""Where the key comes from, as Codex takes it: auth.json (an API key or ChatGPT tokens), the
provider's env_key, CODEX_API_KEY, experimental_bearer_token, auth.command, or none at all; and
what each run sends (or says) when a source is missing, failing or slow."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import generate_gateway_image as g
from tests.conftest import (
    PNG,
    SCRIPT,
    TEST_KEY,
    assert_no_secret,
    assert_ok,
    clean_env,
    home_env,
    image_reply,
    only_post,
    report,
    run_cli,
    write_auth,
    write_codex_home,
    write_config,
)
from tests.gateway import Gateway, error_reply


@pytest.mark.parametrize(
    ("extra_provider", "extra_env", "expected"),
    [
        (
            'env_key = "GW_TEST_KEY"',
            {"GW_TEST_KEY": "sk-envkey-1111aaaa2222"},
            "sk-envkey-1111aaaa2222",
        ),
        ("", {"CODEX_API_KEY": "sk-codexkey-3333bbbb4444"}, "sk-codexkey-3333bbbb4444"),
        (
            'env_key = "GW_TEST_KEY"',
            {"GW_TEST_KEY": "sk-envkey-1111aaaa2222", "CODEX_API_KEY": "sk-codexkey-3333bbbb4444"},
            "sk-envkey-1111aaaa2222",
        ),
    ],
    ids=["env_key-beats-auth.json", "CODEX_API_KEY-beats-auth.json", "env_key-beats-CODEX_API_KEY"],
)
def test_key_precedence(
    tmp_path: Path,
    gateway: Gateway,
    extra_provider: str,
    extra_env: dict[str, str],
    expected: str,
) -> None:
    # auth.json holds TEST_KEY as well: the environment must win over it
    home = write_codex_home(tmp_path / "ch", gateway.base_url, extra_provider=extra_provider)
    gateway.enqueue(image_reply())
    out = tmp_path / "o.png"
    proc = run_cli(
        ["--prompt", "p", "--out", str(out)], clean_env(CODEX_HOME=str(home), **extra_env)
    )
    assert_ok(proc)
    rec = only_post(gateway)
    assert rec.header("authorization") == f"Bearer {expected}"
    assert TEST_KEY not in json.dumps(rec.headers)
    assert_no_secret(proc, expected)


def test_chatgpt_tokens_in_auth_json(tmp_path: Path, gateway: Gateway) -> None:
    home = write_codex_home(tmp_path / "ch", gateway.base_url, key=None)
    access = "eyJhbGciOiJSUzI1NiJ9.access-token-payload.sig-5e6f"
    write_auth(
        home,
        {
            "OPENAI_API_KEY": None,
            "tokens": {
                "id_token": "eyJ.id-token.sig",
                "access_token": access,
                "refresh_token": "rt-refresh-0000",
                "account_id": "acct-1234-abcd",
            },
            "last_refresh": "2025-01-01T00:00:00Z",
        },
    )
    gateway.enqueue(image_reply())
    out = tmp_path / "o.png"
    proc = run_cli(["--prompt", "p", "--out", str(out)], clean_env(CODEX_HOME=str(home)))
    assert_ok(proc)
    rec = only_post(gateway)
    assert rec.header("authorization") == f"Bearer {access}"
    assert rec.header("chatgpt-account-id") == "acct-1234-abcd"
    assert_no_secret(proc, access)


def test_base_url_without_any_key_sends_no_authorization(tmp_path: Path, gateway: Gateway) -> None:
    gateway.enqueue(image_reply())
    out = tmp_path / "o.png"
    proc = run_cli(
        ["--prompt", "p", "--out", str(out), "--base-url", gateway.base_url],
        home_env(tmp_path),
    )
    assert_ok(proc)
    rec = only_post(gateway)
    assert rec.header("authorization") is None
    assert "warning" in proc.stderr.lower()
    assert "no api key" in proc.stderr.lower()
    assert out.read_bytes() == PNG
    assert proc.stdout == f"{out}\n"


def test_base_url_with_an_authorization_header_says_it_is_sent(
    tmp_path: Path, gateway: Gateway
) -> None:
    gateway.enqueue(image_reply())
    out = tmp_path / "o.png"
    args = ["--base-url", gateway.base_url, "--header", f"Authorization: Bearer {TEST_KEY}"]
    proc = run_cli(["--prompt", "p", "--out", str(out), *args], home_env(tmp_path))
    assert_ok(proc)
    assert only_post(gateway).header("authorization") == f"Bearer {TEST_KEY}"
    assert "no api key" not in proc.stderr.lower(), proc.stderr
    dry = run_cli(
        ["--prompt", "p", "--out", str(out), "--force", "--dry-run", *args], home_env(tmp_path)
    )
    assert dry.returncode == 0 and "no Authorization header would be sent" not in dry.stdout
    doctor = run_cli(["--doctor", *args], home_env(tmp_path))
    assert "no Authorization header will be sent" not in doctor.stdout, doctor.stdout
    assert TEST_KEY not in proc.stderr + dry.stdout + doctor.stdout
    gateway.enqueue(error_reply(401, "bad key", code="invalid_api_key"))
    refused = run_cli(
        ["--prompt", "p", "--out", str(tmp_path / "r.png"), *args], home_env(tmp_path)
    )
    assert refused.returncode == 3, refused.stderr
    assert "none was sent" not in refused.stderr
    assert "sent in the Authorization header" in refused.stderr


@pytest.mark.parametrize("store", ["keyring", "auto", "file"])
def test_keyring_credentials_are_explained(tmp_path: Path, gateway: Gateway, store: str) -> None:
    """Codex can keep its login in the OS keyring; the script cannot read it and says so."""
    home = write_codex_home(
        tmp_path / "ch",
        gateway.base_url,
        key=None,
        extra_top=f'cli_auth_credentials_store = "{store}"',
    )
    out = tmp_path / "o.png"
    proc = run_cli(["--prompt", "p", "--out", str(out)], clean_env(CODEX_HOME=str(home)))
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.startswith("error: no API key found"), proc.stderr
    assert ("OS keyring" in proc.stderr) == (store != "file"), proc.stderr
    assert gateway.requests == []
    doctor = run_cli(["--doctor"], clean_env(CODEX_HOME=str(home)))
    assert doctor.returncode == 3, doctor.stdout + doctor.stderr
    assert ("OS keyring" in doctor.stdout + doctor.stderr) == (store != "file")


def command_provider(home: Path, gateway: Gateway, code: str, **extra: str) -> None:
    """A provider whose key comes from `auth.command` (this Python running ``code``)."""
    args = json.dumps(["-c", code])
    lines = "".join(f"{k} = {v}\n" for k, v in extra.items())
    write_config(
        home,
        f'model_provider = "gw"\n[model_providers.gw]\nbase_url = "{gateway.base_url}"\n'
        f"[model_providers.gw.auth]\ncommand = {json.dumps(sys.executable)}\nargs = {args}\n"
        + lines,
    )
    write_auth(home, {"OPENAI_API_KEY": TEST_KEY})  # must not be used for this provider


def test_auth_command_supplies_the_key(tmp_path: Path, gateway: Gateway) -> None:
    home = tmp_path / "ch"
    command_provider(home, gateway, "print('  tok-from-command-123456  ')")
    gateway.enqueue(image_reply())
    out = tmp_path / "o.png"
    env = clean_env(CODEX_HOME=str(home), CODEX_API_KEY="sk-openai-not-for-the-gateway")
    proc = run_cli(["--prompt", "p", "--out", str(out), "--verbose"], env)
    assert_ok(proc)
    assert only_post(gateway).header("authorization") == "Bearer tok-from-command-123456"
    assert_no_secret(proc, "tok-from-command-123456")


def test_failing_auth_command_is_exit_3(tmp_path: Path, gateway: Gateway) -> None:
    home = tmp_path / "ch"
    command_provider(home, gateway, "import sys; sys.exit('token expired, run corp-login')")
    proc = run_cli(
        ["--prompt", "p", "--out", str(tmp_path / "o.png")], clean_env(CODEX_HOME=str(home))
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.startswith("error: auth.command "), proc.stderr
    assert "exited with 1: token expired, run corp-login" in proc.stderr
    assert gateway.requests == []


def test_slow_auth_command_times_out(tmp_path: Path, gateway: Gateway) -> None:
    home = tmp_path / "ch"
    command_provider(home, gateway, "import time; time.sleep(30)", timeout_ms="300")
    proc = run_cli(
        ["--prompt", "p", "--out", str(tmp_path / "o.png")], clean_env(CODEX_HOME=str(home))
    )
    assert proc.returncode == 3, proc.stderr
    assert "did not finish in 0.3s" in proc.stderr
    assert gateway.requests == []


def test_dry_run_does_not_run_the_auth_command(tmp_path: Path, gateway: Gateway) -> None:
    home = tmp_path / "ch"
    marker = tmp_path / "ran"
    command_provider(home, gateway, f"open({str(marker)!r}, 'w'); print('tok')")
    proc = run_cli(
        ["--prompt", "p", "--out", str(tmp_path / "o.png"), "--dry-run"],
        clean_env(CODEX_HOME=str(home)),
    )
    assert proc.returncode == 0, proc.stderr
    assert "auth.command" in proc.stdout + proc.stderr
    assert not marker.exists()


def test_missing_env_key_still_allows_dry_run_and_doctor(tmp_path: Path, gateway: Gateway) -> None:
    home = write_codex_home(
        tmp_path / "ch",
        gateway.base_url,
        key=None,
        extra_provider='env_key = "GW_TEST_KEY"\nenv_key_instructions = "export GW_TEST_KEY=..."',
    )
    env = clean_env(CODEX_HOME=str(home))
    dry = run_cli(["--prompt", "p", "--out", str(tmp_path / "o.png"), "--dry-run"], env)
    assert dry.returncode == 0, dry.stderr
    assert gateway.base_url + "/responses" in dry.stdout + dry.stderr
    doctor = run_cli(["--doctor"], env)
    text = doctor.stdout + doctor.stderr
    assert doctor.returncode == 3, text
    key_lines = [line for line in text.splitlines() if " key " in f" {line} "]
    assert key_lines and "failed" in key_lines[0], text
    assert "export GW_TEST_KEY=..." in text
    assert any(line.startswith("ok") and "endpoint" in line for line in text.splitlines()), text


@pytest.mark.parametrize("extra", [0, 1])
def test_auth_command_output_is_capped_at_64_kb(
    tmp_path: Path, gateway: Gateway, extra: int
) -> None:
    # output of exactly the cap is read (the token, then blank padding); one byte more is not
    # a token: exit 3, nothing sent
    token = "tok-cap-0123456789"
    pad = g.MAX_KEY_COMMAND_OUTPUT - len(token) + extra
    home = tmp_path / "ch"
    command_provider(home, gateway, f"import sys; sys.stdout.write({token!r} + ' ' * {pad})")
    gateway.enqueue(image_reply())
    env = clean_env(CODEX_HOME=str(home))
    proc = run_cli(["--prompt", "p", "--out", str(tmp_path / "o.png")], env)
    if extra == 0:
        assert_ok(proc)
        assert only_post(gateway).header("authorization") == f"Bearer {token}"
    else:
        assert proc.returncode == 3, report(proc, gateway)
        assert "printed more than 64 KB" in proc.stderr
        assert gateway.requests == []


def test_auth_cwd_that_does_not_exist_is_exit_3(tmp_path: Path, gateway: Gateway) -> None:
    home = tmp_path / "ch"
    command_provider(home, gateway, "print('tok-never-used-123456')", **{"cwd": '"no-such-dir"'})
    proc = run_cli(
        ["--prompt", "p", "--out", str(tmp_path / "o.png")], clean_env(CODEX_HOME=str(home))
    )
    assert proc.returncode == 3, report(proc, gateway)
    assert "no-such-dir: no such directory" in proc.stderr
    assert gateway.requests == []


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to one process is POSIX")
def test_ctrl_c_while_auth_command_runs_stops_the_helper(tmp_path: Path, gateway: Gateway) -> None:
    import os
    import signal
    import subprocess
    import time

    pid_file = tmp_path / "helper.pid"
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    home = tmp_path / "ch"
    command_provider(home, gateway, code)
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--prompt", "p", "--out", str(tmp_path / "o.png")],
        env=clean_env(CODEX_HOME=str(home)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline and proc.poll() is None, "the helper never started"
        time.sleep(0.05)
    helper = int(pid_file.read_text())
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    for _ in range(100):  # the helper was killed with the run (it would sleep 60 s)
        try:
            os.kill(helper, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(helper, signal.SIGKILL)
        raise AssertionError("auth.command's helper outlived the interrupted run")
    assert gateway.requests == []


def test_auth_json_that_is_not_an_object_is_refused(tmp_path: Path, gateway: Gateway) -> None:
    # a list where the login should be: refused (exit 3), not read as "no login"
    home = write_codex_home(tmp_path / "ch", gateway.base_url, key=None)
    write_auth(home, [TEST_KEY])
    proc = run_cli(
        ["--prompt", "p", "--out", str(tmp_path / "o.png")], clean_env(CODEX_HOME=str(home))
    )
    assert proc.returncode == 3, report(proc, gateway)
    assert proc.stderr.startswith(f"error: {home / 'auth.json'}: expected a JSON object")
    assert_no_secret(proc)
    as_json = run_cli(
        ["--prompt", "p", "--out", str(tmp_path / "o.png"), "--json"],
        clean_env(CODEX_HOME=str(home)),
    )
    assert as_json.returncode == 3, as_json.stderr
    # the error brought no hint of its own: --json still gives one, the configuration's
    assert json.loads(as_json.stdout) == {
        "ok": False,
        "exit_code": 3,
        "error": f"{home / 'auth.json'}: expected a JSON object",
        "hint": "run --doctor: it shows the config files read, the provider and the key's source",
    }
    assert gateway.requests == []


def test_auth_command_by_name_runs_from_path_in_its_cwd(tmp_path: Path, gateway: Gateway) -> None:
    # a bare command name with auth.cwd is looked up on PATH, not joined to the cwd; it runs
    # in the cwd (resolved against the Codex home)
    home = tmp_path / "ch"
    (home / "keys").mkdir(parents=True)
    (home / "keys" / "token.txt").write_text("tok-from-cwd-file-98765\n", encoding="utf-8")
    write_config(
        home,
        f'model_provider = "gw"\n[model_providers.gw]\nbase_url = "{gateway.base_url}"\n'
        '[model_providers.gw.auth]\ncommand = "sh"\nargs = ["-c", "cat token.txt"]\n'
        'cwd = "keys"\n',
    )
    gateway.enqueue(image_reply())
    proc = run_cli(
        ["--prompt", "p", "--out", str(tmp_path / "o.png")], clean_env(CODEX_HOME=str(home))
    )
    assert_ok(proc)
    assert only_post(gateway).header("authorization") == "Bearer tok-from-cwd-file-98765"


@pytest.mark.skipif(sys.platform == "win32", reason="process groups and setsid are POSIX")
def test_auth_command_whose_helper_escaped_its_group_cannot_stall_the_run(
    tmp_path: Path, gateway: Gateway
) -> None:
    """The command times out; a helper it started in its own session survives the group kill
    and keeps the pipes open. The run still ends at once (exit 3), not when the helper does."""
    import os
    import signal
    import time

    pid_file = tmp_path / "helper.pid"
    code = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'], "
        "start_new_session=True)\n"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(30)\n"
    )
    home = tmp_path / "ch"
    command_provider(home, gateway, code, timeout_ms="1500")
    started = time.monotonic()
    try:
        proc = run_cli(
            ["--prompt", "p", "--out", str(tmp_path / "o.png")],
            clean_env(CODEX_HOME=str(home)),
            timeout=25,
        )
        took = time.monotonic() - started
    finally:
        if pid_file.exists() and pid_file.read_text():
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert proc.returncode == 3, report(proc, gateway)
    assert "did not finish in 1.5s" in proc.stderr
    assert took < 20, took  # the helper sleeps 30 s: the run did not wait for it
    assert gateway.requests == []


@pytest.mark.skipif(sys.platform == "win32", reason="killpg is POSIX")
def test_stopping_an_auth_command_that_already_ended() -> None:
    """Its process group is gone (killpg fails): stopping it is quiet and still reaps it."""
    import subprocess

    proc = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    proc.wait()
    g._stop_process(proc)
    assert proc.returncode == 0


def test_stopping_an_auth_command_on_windows_kills_the_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Windows has no process groups to kill: the process itself is killed (the branch taken
    when os.name is "nt", run here on a real child)."""
    import subprocess

    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)"], stdout=subprocess.PIPE
    )
    try:
        monkeypatch.setattr(g.os, "name", "nt")
        try:
            g._stop_process(proc)
        finally:
            monkeypatch.undo()  # os.name is global: pytest itself must not see "nt"
        assert proc.returncode is not None and proc.returncode != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_world_readable_auth_json_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Mode 644 is warned about on POSIX; a file that vanished, or Windows (no mode bits), is
    not."""
    import io
    import os

    auth = tmp_path / "auth.json"
    auth.write_text("{}", encoding="utf-8")
    os.chmod(auth, 0o644)
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    g.warn_if_world_readable(str(auth), g.Console())
    if os.name == "posix":
        assert f"{auth} is readable by other users (mode 644)" in err.getvalue()
    err.seek(0)
    err.truncate(0)
    g.warn_if_world_readable(str(tmp_path / "gone.json"), g.Console())
    monkeypatch.setattr(g.os, "name", "nt")
    try:
        g.warn_if_world_readable(str(auth), g.Console())
    finally:
        monkeypatch.undo()  # os.name is global: pytest itself must not see "nt"
    assert err.getvalue() == ""


# --- how a credential is remembered for redaction ----------------------------------------------


def test_a_credential_cut_short_by_a_cap_is_still_masked() -> None:
    """An answer that echoes the key's first characters (too short a run for redact()), cut
    by a length cap inside them: the cut's tail is masked (from SECRET_EDGE characters on;
    fewer could be any word)."""
    import secrets

    key = "sk-cut-" + secrets.token_hex(12)
    g.add_secret(key)
    said = "the gateway said: "
    text = said + key[: g.SECRET_PIECE - 2] + " and more words after it"
    assert g.redact(text) == text  # whole, that run is not masked
    assert g.clip(text, len(said) + 8) == said + "***"
    assert g.clip(text, len(said) + g.SECRET_EDGE) == said + "***"
    assert g.clip(text, len(said) + g.SECRET_EDGE - 1) == said + key[: g.SECRET_EDGE - 1]
    assert g.text_of(text, len(said) + 8 + 3) == said + "***..."


def test_two_credentials_sharing_a_spelling_are_remembered_once() -> None:
    """A token with spaces, and the same token as a form would encode it (quote_plus): the
    shared spelling is one entry, and both are masked."""
    import secrets

    spaced = f"tok {secrets.token_hex(6)} {secrets.token_hex(6)}"
    plus = spaced.replace(" ", "+")
    g.add_secret(spaced)
    g.add_secret(plus)
    forms = [form for form, _ in g.SECRET_FORMS]
    assert forms.count(plus) == 1
    assert len(forms) == len(set(forms))
    assert g.redact(f"a={plus} b={spaced}") == "a=*** b=***"
