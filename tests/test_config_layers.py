"""Config layers, --doctor's account of them, and hostile configuration files.

* The layers Codex stacks (system < user < profile < managed) and where each setting came from.
* ``--doctor``: every file read with its layer, the layer that chose the provider, whether
  Codex's own image tool would be offered (and why not), ignored variables.
* Hostile files: deeply nested or huge ``config.toml`` / ``managed_config.toml`` / ``auth.json``
  are exit 3 with one line, never a traceback; ``auth.command`` ends inside ``--timeout``; a
  ``base_url`` that cannot be sent as written is exit 3 with the URL shown redacted.

System and managed files live in a temporary folder named by ``CODEX_IMAGEGEN_SYSTEM_CONFIG_DIR``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import generate_gateway_image as g
from tests.conftest import TEST_KEY, clean_env, image_reply, report, run_cli, write
from tests.gateway import Gateway

SECRET = "pw-SECRET-123456"


def setup(tmp_path: Path, config: str, auth: object = None) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (tmp_path / "system").mkdir(exist_ok=True)
    write(home / "config.toml", config)
    if auth is not None:
        path = write(home / "auth.json", auth if isinstance(auth, str) else json.dumps(auth))
        path.chmod(0o600)
    return clean_env(CODEX_HOME=str(home), **{g.SYSTEM_CONFIG_DIR_ENV: str(tmp_path / "system")})


def gw_config(url: str, extra: str = "", top: str = "") -> str:
    return (
        f'model_provider = "gw"\n{top}\n[model_providers.gw]\nname = "gw"\n'
        f'base_url = "{url}"\n{extra}\n'
    )


def generate(env: dict[str, str], tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    out = tmp_path / "o.png"
    return run_cli(["--prompt", "p", "--out", str(out), "--retries", "0", *extra], env)


def assert_refused(proc: subprocess.CompletedProcess[str], gateway: Gateway, *words: str) -> None:
    text = report(proc, gateway)
    assert proc.returncode == 3, text
    assert "Traceback" not in proc.stderr, text
    lines = proc.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, text
    for word in words:
        assert word in proc.stderr, (word, text)
    assert gateway.requests == [], text


# --- layers: pure loading ----------------------------------------------------------------------


def test_layers_stack_in_codex_order(tmp_path: Path) -> None:
    home = tmp_path / "home"
    system = write(tmp_path / "etc" / "config.toml", 'model = "s"\nmodel_provider = "sys"\na = 1\n')
    managed = write(tmp_path / "etc" / "managed_config.toml", 'model = "m"\nprofile = "x"\n')
    user = write(home / "config.toml", 'model = "u"\nb = 2\n')
    prof = write(home / "p.config.toml", 'model = "p"\nmodel_provider = "prof"\nc = 3\n')
    layers = g.load_config_layers(
        str(home), "p", system_config=str(system), managed_config=str(managed)
    )
    assert layers.config == {"model": "m", "model_provider": "prof", "a": 1, "b": 2, "c": 3}
    assert layers.labels == ["system", "user", "profile", "managed"]
    assert layers.files == [str(system), str(user), str(prof), str(managed)]
    assert layers.provider_layer == f"profile ({prof})"
    assert layers.profile == "p"


def test_missing_system_files_are_skipped(tmp_path: Path) -> None:
    layers = g.load_config_layers(
        str(tmp_path),
        None,
        system_config=str(tmp_path / "no" / "config.toml"),
        managed_config=str(tmp_path / "no" / "managed_config.toml"),
    )
    assert layers.files == []
    assert layers.provider_layer == "built-in default"


def test_system_layer_cannot_select_a_legacy_profile(tmp_path: Path) -> None:
    system = write(tmp_path / "etc" / "config.toml", 'profile = "w"\n[profiles.w]\nmodel = "w"\n')
    layers = g.load_config_layers(str(tmp_path / "home"), None, system_config=str(system))
    assert layers.profile is None
    assert "profiles" not in layers.config and "profile" not in layers.config


# --- hostile configuration files ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "text"),
    [
        ("config.toml", "a = " + "[" * 100_000 + "]" * 100_000 + "\n"),
        ("config.toml", "a = " + "[" * 200 + "]" * 200 + "\n"),  # below Python's limit
        ("config.toml", "a" + ".a" * 3000 + " = 1\n"),  # dotted keys: deep without recursion
        ("config.toml", "a = " + "{ b = " * 5000 + "1" + " }" * 5000 + "\n"),
        ("managed_config.toml", "a = " + "[" * 100_000 + "]" * 100_000 + "\n"),
        ("auth.json", "[" * 100_000 + "]" * 100_000),
        ("auth.json", '{"a": ' * 200 + "1" + "}" * 200),
    ],
    ids=["toml-arrays", "toml-200", "toml-dotted", "toml-inline", "managed", "json", "json-200"],
)
def test_deeply_nested_files_are_exit_3(
    tmp_path: Path, gateway: Gateway, where: str, text: str
) -> None:
    env = setup(tmp_path, gw_config(gateway.base_url, "requires_openai_auth = true"))
    target = {
        "config.toml": tmp_path / "home" / "config.toml",
        "managed_config.toml": tmp_path / "system" / "managed_config.toml",
        "auth.json": tmp_path / "home" / "auth.json",
    }[where]
    target.write_text(text, encoding="utf-8")
    target.chmod(0o600)
    proc = generate(env, tmp_path)
    assert_refused(proc, gateway, str(target))
    assert "deep" in proc.stderr


@pytest.mark.parametrize("where", ["config.toml", "auth.json", "work.config.toml"])
def test_huge_files_are_exit_3_with_bounded_memory(
    tmp_path: Path, gateway: Gateway, where: str
) -> None:
    env = setup(tmp_path, gw_config(gateway.base_url, "requires_openai_auth = true"))
    target = tmp_path / "home" / where
    with open(target, "wb") as f:  # a valid comment line, 40 MB of it
        f.write(b"#" + b"x" * (40 * 1024 * 1024) + b"\n")
    target.chmod(0o600)
    extra = ["--profile", "work"] if where.startswith("work") else []
    started = time.monotonic()
    proc = generate(env, tmp_path, *extra)
    assert_refused(proc, gateway, str(target), "larger than")
    assert time.monotonic() - started < 20


# --- auth.command inside the budget ---------------------------------------------------------------


def command_config(url: str, code: str, timeout_ms: int = 20_000) -> str:
    args = json.dumps(["-c", code])
    return gw_config(
        url,
        f"[model_providers.gw.auth]\ncommand = {json.dumps(sys.executable)}\n"
        f"args = {args}\ntimeout_ms = {timeout_ms}\n",
    )


def test_auth_command_ends_with_the_total_budget(tmp_path: Path, gateway: Gateway) -> None:
    env = setup(tmp_path, command_config(gateway.base_url, "import time; time.sleep(30)"))
    started = time.monotonic()
    proc = generate(env, tmp_path, "--timeout", "1")
    elapsed = time.monotonic() - started
    assert proc.returncode == 6, report(proc, gateway)
    assert "--timeout" in proc.stderr and "auth.command" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert elapsed < 10, elapsed
    assert gateway.requests == []


def test_auth_command_helpers_are_killed_too(tmp_path: Path, gateway: Gateway) -> None:
    """A helper that leaves a child holding its stdout must not stall the run."""
    code = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); "
        "time.sleep(30)"
    )
    env = setup(tmp_path, command_config(gateway.base_url, code, timeout_ms=500))
    started = time.monotonic()
    proc = generate(env, tmp_path)
    assert proc.returncode == 3, report(proc, gateway)
    assert "did not finish in 0.5s" in proc.stderr
    assert time.monotonic() - started < 10


def test_auth_command_timeout_ms_still_applies_under_a_long_budget(
    tmp_path: Path, gateway: Gateway
) -> None:
    env = setup(
        tmp_path, command_config(gateway.base_url, "import time; time.sleep(30)", timeout_ms=300)
    )
    proc = generate(env, tmp_path, "--timeout", "600")
    assert proc.returncode == 3, report(proc, gateway)
    assert "did not finish in 0.3s" in proc.stderr


# --- base_url that cannot be sent as written ------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "words"),
    [
        ("http://bob:{s}@127.0.0.1:{port}/v1#frag", ["#fragment"]),
        ("http://bob:{s}@127.0.0.1:{port}/v1 x", ["whitespace"]),
        ("http://bob:{s}@127.0.0.1:{port}/v1\\u0001", ["control"]),
        ("http://bob:{s}@127.0.0.1:{port}/v1\\t", ["whitespace"]),
        ("http://bob:{s}@127.0.0.1:70000/v1", ["port"]),
        ("http://bob:{s}@127.0.0.1:0/v1", ["port"]),
        ("http://bob:{s}@127.0.0.1:8x/v1", ["port"]),
        ("http://127.0.0.1:{port}/v1?api-key={s}#frag", ["#fragment"]),
    ],
)
def test_bad_base_url_is_exit_3_and_redacted(
    tmp_path: Path, gateway: Gateway, base: str, words: list[str]
) -> None:
    url = base.replace("{s}", SECRET).replace("{port}", str(gateway.port))
    env = setup(
        tmp_path, gw_config(url, "requires_openai_auth = true"), {"OPENAI_API_KEY": TEST_KEY}
    )
    proc = generate(env, tmp_path)
    assert_refused(proc, gateway, *words)
    assert SECRET not in proc.stderr + proc.stdout
    assert TEST_KEY not in proc.stderr + proc.stdout


def test_bad_base_url_flag_is_exit_3(tmp_path: Path, gateway: Gateway) -> None:
    env = setup(tmp_path, gw_config(gateway.base_url, "requires_openai_auth = true"))
    proc = generate(env, tmp_path, "--base-url", gateway.base_url + "#x")
    assert_refused(proc, gateway, "--base-url", "#fragment")


def test_query_inside_base_url_is_kept_with_a_warning(tmp_path: Path, gateway: Gateway) -> None:
    env = setup(
        tmp_path,
        gw_config(gateway.url + "/v1?tenant=t1", "requires_openai_auth = true"),
        {"OPENAI_API_KEY": TEST_KEY},
    )
    gateway.set_default(image_reply(), path="/v1")  # type: ignore[arg-type]
    proc = generate(env, tmp_path)
    assert proc.returncode == 0, report(proc, gateway)
    (rec,) = gateway.requests
    assert (rec.path, rec.raw_query) == ("/v1", "tenant=t1/responses")  # Codex's URL forming
    assert "warning:" in proc.stderr and "query_params" in proc.stderr


# --- --doctor: layers, provider, Codex's own image tool ----------------------------------------


def doctor(env: dict[str, str]) -> str:
    proc = run_cli(["--doctor", "--connect-timeout", "2"], env, timeout=30)
    assert "Traceback" not in proc.stderr
    return proc.stdout + proc.stderr


def line_of(text: str, name: str) -> str:
    found = [line for line in text.splitlines() if line[7:].startswith(name + " ")]
    assert found, (name, text)
    return found[0]


def test_doctor_lists_every_layer_and_who_chose_the_provider(
    tmp_path: Path, gateway: Gateway
) -> None:
    env = setup(tmp_path, gw_config(gateway.base_url), {"OPENAI_API_KEY": TEST_KEY})
    system = write(tmp_path / "system" / "config.toml", 'model = "sys"\n')
    managed = write(
        tmp_path / "system" / "managed_config.toml",
        'model_provider = "corp"\n[model_providers.corp]\nname = "corp"\n'
        f'base_url = "{gateway.url}/corp/v1"\nenv_key = "CORP_KEY"\n',
    )
    env["CORP_KEY"] = "sk-corp-key-0000aaaa"
    text = doctor(env)
    config = line_of(text, "config")
    home = tmp_path / "home"
    for label, path in [
        ("system", system),
        ("user", home / "config.toml"),
        ("managed", managed),
        ("auth", home / "auth.json"),
    ]:
        assert f"{label} {path}" in config, text
    assert config.index("system") < config.index("user") < config.index("managed")
    assert f"corp, chosen by the managed ({managed})" in line_of(text, "provider"), text
    assert gateway.url + "/corp/v1/responses" in line_of(text, "endpoint")
    assert "sk-corp-key-0000aaaa" not in text


def test_doctor_says_which_layer_files_are_absent(tmp_path: Path, gateway: Gateway) -> None:
    env = setup(tmp_path, gw_config(gateway.base_url, 'env_key = "K"'))
    env["K"] = "sk-some-key-1111bbbb"
    text = doctor(env)
    layers = line_of(text, "layers")
    assert str(tmp_path / "system" / "config.toml") in layers
    assert str(tmp_path / "system" / "managed_config.toml") in layers
    assert "user (" in line_of(text, "provider")


CHATGPT = {"tokens": {"access_token": "eyJ.at.sig-9999", "account_id": "acct-1"}}


@pytest.mark.parametrize(
    ("extra", "auth", "env_extra", "offered", "words"),
    [
        ("requires_openai_auth = true", CHATGPT, {}, True, ["ChatGPT login"]),
        (
            'env_key = "K"\nhttp_headers = { "X-OpenAI-Actor-Authorization" = "actor" }',
            None,
            {"K": "sk-k-2222cccc"},
            True,
            ["x-openai-actor-authorization"],
        ),
        ("requires_openai_auth = true", {"OPENAI_API_KEY": TEST_KEY}, {}, False, ["not ChatGPT"]),
        ('env_key = "K"', CHATGPT, {"K": "sk-k-2222cccc"}, False, ["requires_openai_auth"]),
        (
            "requires_openai_auth = true",
            CHATGPT,
            {"CODEX_API_KEY": "sk-codex-3333dddd"},
            False,
            ["not ChatGPT"],
        ),
    ],
    ids=["chatgpt", "actor-header", "api-key", "no-openai-auth", "codex-api-key"],
)
def test_doctor_says_whether_codex_offers_its_image_tool(
    tmp_path: Path,
    gateway: Gateway,
    extra: str,
    auth: object,
    env_extra: dict[str, str],
    offered: bool,
    words: list[str],
) -> None:
    env = setup(tmp_path, gw_config(gateway.base_url, extra, top="[features]\n"), auth)
    env.update(env_extra)
    line = line_of(doctor(env), "imagetool")
    assert ("would offer" in line) == offered, line
    assert ("offers no image tool" in line) == (not offered), line
    for word in words:
        assert word in line, line


def test_features_image_generation_alone_brings_no_codex_tool(tmp_path: Path) -> None:
    config = {
        "model_provider": "gw",
        "features": {"image_generation": True},
        "model_providers": {"gw": {"base_url": "http://127.0.0.1:9/v1", "env_key": "K"}},
    }
    gw = g.resolve_gateway(config, None, {"K": "sk-x"})
    assert gw.image_tool[0] is False


def test_doctor_explains_a_withheld_openai_key(tmp_path: Path, gateway: Gateway) -> None:
    env = setup(tmp_path, gw_config(gateway.base_url), {"OPENAI_API_KEY": TEST_KEY})
    proc = run_cli(["--doctor", "--connect-timeout", "2"], env, timeout=30)
    assert proc.returncode == 3, report(proc, gateway)
    key = line_of(proc.stdout, "key")
    assert key.startswith("failed") and "not sent" in key, proc.stdout
    assert "requires_openai_auth = true" in proc.stdout
    assert TEST_KEY not in proc.stdout + proc.stderr
    assert all(r.header("authorization") is None for r in gateway.requests)


def test_doctor_notes_an_ignored_openai_base_url(tmp_path: Path, gateway: Gateway) -> None:
    env = setup(tmp_path, f'openai_base_url = "{gateway.base_url}"\n', {"OPENAI_API_KEY": TEST_KEY})
    env["OPENAI_BASE_URL"] = "http://127.0.0.1:9/v1"
    text = doctor(env)
    assert "OPENAI_BASE_URL is ignored" not in text  # openai_base_url is set: nothing to say
    (tmp_path / "home" / "config.toml").write_text("", encoding="utf-8")
    text = run_cli(["--prompt", "p", "--out", "x.png", "--dry-run"], env, cwd=tmp_path).stderr
    assert "OPENAI_BASE_URL is ignored" in text


def test_dry_run_says_why_no_key_would_be_sent(tmp_path: Path, gateway: Gateway) -> None:
    env = setup(tmp_path, gw_config(gateway.base_url), {"OPENAI_API_KEY": TEST_KEY})
    proc = run_cli(["--prompt", "p", "--out", "x.png", "--dry-run"], env, cwd=tmp_path)
    assert proc.returncode == 0, report(proc, gateway)
    assert "requires_openai_auth" in proc.stdout and "exit 3" in proc.stdout
    assert "Authorization" not in proc.stdout
    assert TEST_KEY not in proc.stdout + proc.stderr
    assert gateway.requests == []
