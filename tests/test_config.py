"""Configuration resolution, as Codex CLI does it (pure functions, no network).

Codex home (``--codex-home`` > ``$CODEX_HOME`` > ``~/.codex``), profiles (``NAME.config.toml``
deep-merged over ``config.toml``, and the legacy ``profile =`` / ``[profiles.NAME]`` scheme),
provider resolution (built-in openai/ollama, custom providers, query parameters, static and
environment headers), the credential precedence chain, ``--header`` overrides, malformed
``config.toml`` / ``auth.json`` errors, and the small helpers (``parse_header_arg``,
``proxy_for``, ``mask_secret``, ``is_loopback_host``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

import generate_gateway_image as g
from tests.conftest import write


def load_codex_config(
    home: str, profile: str | None, **files: str | None
) -> tuple[dict[str, Any], list[str], str | None]:
    """(merged config, files read, profile used), as load_config_layers stacks them."""
    layers = g.load_config_layers(home, profile, **files)
    return layers.config, layers.files, layers.profile


GW_URL = "https://gw.example.test/v1"


def custom(**provider: Any) -> dict[str, Any]:
    """A config.toml (as a dict) whose provider ``gw`` has ``provider`` keys."""
    return {"model_provider": "gw", "model_providers": {"gw": {"base_url": GW_URL, **provider}}}


def header(headers: dict[str, str], name: str) -> list[str]:
    """All values of a header, matched case-insensitively."""
    return [v for k, v in headers.items() if k.lower() == name.lower()]


# --- Codex home -------------------------------------------------------------------------------


@pytest.fixture
def fake_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "user"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USERPROFILE", str(home))  # expanduser on Windows
    return home


def test_home_defaults_to_dot_codex(fake_home: Path) -> None:
    assert g.find_codex_home(None, {}) == str(fake_home / ".codex")


def test_home_dot_codex_need_not_exist(fake_home: Path) -> None:
    assert not (fake_home / ".codex").exists()
    found = g.find_codex_home(None, {"CODEX_HOME": ""})
    assert found == str(fake_home / ".codex")


def test_home_blank_codex_home_is_ignored(fake_home: Path) -> None:
    assert g.find_codex_home(None, {"CODEX_HOME": "   "}) == str(fake_home / ".codex")


def test_home_from_codex_home_env(fake_home: Path, tmp_path: Path) -> None:
    home = tmp_path / "elsewhere"
    home.mkdir()
    assert Path(g.find_codex_home(None, {"CODEX_HOME": str(home)})) == home


def test_home_codex_home_missing_is_an_error(fake_home: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(g.ConfigError) as err:
        g.find_codex_home(None, {"CODEX_HOME": str(missing)})
    assert "CODEX_HOME" in err.value.message
    assert str(missing) in err.value.message


def test_home_codex_home_that_is_a_file_is_an_error(fake_home: Path, tmp_path: Path) -> None:
    file = write(tmp_path / "file", "x")
    with pytest.raises(g.ConfigError, match="CODEX_HOME"):
        g.find_codex_home(None, {"CODEX_HOME": str(file)})


def test_home_flag_beats_codex_home(fake_home: Path, tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    env_home = tmp_path / "env"
    flag.mkdir()
    env_home.mkdir()
    assert Path(g.find_codex_home(str(flag), {"CODEX_HOME": str(env_home)})) == flag


def test_home_flag_is_made_absolute(
    fake_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "rel").mkdir()
    monkeypatch.chdir(tmp_path)
    found = g.find_codex_home("rel", {})
    assert os.path.isabs(found)
    assert Path(found) == tmp_path / "rel"


def test_home_flag_missing_is_an_error(fake_home: Path, tmp_path: Path) -> None:
    with pytest.raises(g.ConfigError, match="--codex-home"):
        g.find_codex_home(str(tmp_path / "missing"), {"CODEX_HOME": str(tmp_path)})


# --- config.toml and profiles -------------------------------------------------------------------

BASE_TOML = """\
model_provider = "gw"
model = "base-model"

[model_providers.gw]
name = "gateway"
base_url = "https://base.example.test/v1"
env_key = "GW_KEY"

[model_providers.gw.http_headers]
X-One = "1"
X-Two = "2"
"""


def test_no_config_toml_is_an_empty_config(tmp_path: Path) -> None:
    assert load_codex_config(str(tmp_path), None) == ({}, [], None)


def test_config_toml_is_read(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", BASE_TOML)
    config, files, profile = load_codex_config(str(tmp_path), None)
    assert files == [str(path)]
    assert profile is None
    assert config["model_provider"] == "gw"
    assert config["model_providers"]["gw"]["http_headers"] == {"X-One": "1", "X-Two": "2"}


def test_profile_file_is_deep_merged(tmp_path: Path) -> None:
    write(tmp_path / "config.toml", BASE_TOML)
    write(
        tmp_path / "work.config.toml",
        'model = "work-model"\n'
        "[model_providers.gw]\n"
        'base_url = "https://work.example.test/v1"\n'
        "[model_providers.gw.http_headers]\n"
        'X-Two = "two"\nX-Three = "3"\n',
    )
    config, files, profile = load_codex_config(str(tmp_path), "work")
    assert profile == "work"
    assert files == [str(tmp_path / "config.toml"), str(tmp_path / "work.config.toml")]
    assert config["model"] == "work-model"
    gw = config["model_providers"]["gw"]
    assert gw["base_url"] == "https://work.example.test/v1"
    assert gw["name"] == "gateway"  # kept from config.toml
    assert gw["env_key"] == "GW_KEY"
    assert gw["http_headers"] == {"X-One": "1", "X-Two": "two", "X-Three": "3"}
    resolved = g.resolve_gateway(config, None, {"GW_KEY": "k"})
    assert resolved.url("/responses") == "https://work.example.test/v1/responses"


def test_profile_file_without_config_toml(tmp_path: Path) -> None:
    write(tmp_path / "solo.config.toml", 'model_provider = "ollama"\n')
    config, files, profile = load_codex_config(str(tmp_path), "solo")
    assert config == {"model_provider": "ollama"}
    assert files == [str(tmp_path / "solo.config.toml")]
    assert profile == "solo"


def test_legacy_profile_selector_and_table(tmp_path: Path) -> None:
    write(
        tmp_path / "config.toml",
        'profile = "work"\n' + BASE_TOML + "\n[profiles.work]\n"
        'model = "legacy-model"\n'
        "[profiles.work.model_providers.gw.http_headers]\n"
        'X-One = "uno"\n'
        "[profiles.home]\n"
        'model = "home-model"\n',
    )
    config, files, profile = load_codex_config(str(tmp_path), None)
    assert profile == "work"
    assert config["model"] == "legacy-model"
    assert config["model_providers"]["gw"]["http_headers"] == {"X-One": "uno", "X-Two": "2"}
    assert config["model_providers"]["gw"]["base_url"] == "https://base.example.test/v1"
    assert "profile" not in config and "profiles" not in config
    assert files[0] == str(tmp_path / "config.toml")
    assert any("profiles.work" in f for f in files)


def test_profile_flag_selects_a_legacy_table(tmp_path: Path) -> None:
    write(
        tmp_path / "config.toml",
        'profile = "work"\n' + BASE_TOML + '\n[profiles.work]\nmodel = "w"\n'
        '[profiles.home]\nmodel = "h"\n',
    )
    config, _, profile = load_codex_config(str(tmp_path), "home")
    assert profile == "home"
    assert config["model"] == "h"


def test_profile_file_wins_over_legacy_table(tmp_path: Path) -> None:
    write(tmp_path / "config.toml", BASE_TOML + '\n[profiles.work]\nmodel = "legacy"\n')
    write(tmp_path / "work.config.toml", 'model = "file"\n')
    config, files, _ = load_codex_config(str(tmp_path), "work")
    assert config["model"] == "file"
    assert files[-1] == str(tmp_path / "work.config.toml")


def test_legacy_table_without_selector_is_ignored(tmp_path: Path) -> None:
    write(tmp_path / "config.toml", BASE_TOML + '\n[profiles.work]\nmodel = "legacy"\n')
    config, _, profile = load_codex_config(str(tmp_path), None)
    assert profile is None
    assert config["model"] == "base-model"


@pytest.mark.parametrize("legacy", [False, True])
def test_profile_not_found(tmp_path: Path, legacy: bool) -> None:
    write(tmp_path / "config.toml", ('profile = "ghost"\n' if legacy else "") + BASE_TOML)
    with pytest.raises(g.ConfigError) as err:
        load_codex_config(str(tmp_path), None if legacy else "ghost")
    assert "ghost" in err.value.message
    assert str(tmp_path / "ghost.config.toml") in err.value.message + err.value.hint


# --- malformed files ----------------------------------------------------------------------------


def test_malformed_config_toml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", 'model_provider = "gw"\n\nbase_url = \n')
    with pytest.raises(g.ConfigError) as err:
        load_codex_config(str(tmp_path), None)
    assert str(path) in err.value.message
    assert "line 3" in err.value.message
    assert err.value.exit_code == g.EXIT_CONFIG


def test_malformed_profile_toml_names_file_and_line(tmp_path: Path) -> None:
    write(tmp_path / "config.toml", BASE_TOML)
    path = write(tmp_path / "p.config.toml", 'model = "x"\n[broken\n')
    with pytest.raises(g.ConfigError) as err:
        load_codex_config(str(tmp_path), "p")
    assert str(path) in err.value.message
    assert "line 2" in err.value.message


def test_duplicate_toml_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", 'model = "a"\nmodel = "b"\n')
    with pytest.raises(g.ConfigError) as err:
        g.load_toml(str(path))
    assert str(path) in err.value.message
    assert "line 2" in err.value.message


def test_unreadable_config_toml(tmp_path: Path) -> None:
    (tmp_path / "config.toml").mkdir()  # a directory where the file should be
    with pytest.raises(g.ConfigError) as err:
        g.load_toml(str(tmp_path / "config.toml"))
    assert str(tmp_path / "config.toml") in err.value.message


def test_malformed_auth_json_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "auth.json", '{\n  "OPENAI_API_KEY": "sk-x",\n  oops\n}\n')
    with pytest.raises(g.ConfigError) as err:
        g.load_json_file(str(path))
    assert str(path) in err.value.message
    assert "line 3" in err.value.message
    assert "sk-x" not in err.value.message


def test_auth_json_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    path.write_bytes(b'{"OPENAI_API_KEY": "\xff\xfe"}')
    with pytest.raises(g.ConfigError) as err:
        g.load_json_file(str(path))
    assert str(path) in err.value.message


def test_auth_json_with_bom_is_read(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    path.write_bytes(b'\xef\xbb\xbf{"OPENAI_API_KEY": "sk-bom"}')
    assert g.load_json_file(str(path)) == {"OPENAI_API_KEY": "sk-bom"}


def test_missing_json_file(tmp_path: Path) -> None:
    with pytest.raises(g.ConfigError, match="no such file"):
        g.load_json_file(str(tmp_path / "auth.json"))


# --- provider and endpoint ----------------------------------------------------------------------


def test_default_provider_is_openai() -> None:
    gw = g.resolve_gateway({}, None, {})
    assert gw.provider == "openai"
    assert gw.url("/responses") == "https://api.openai.com/v1/responses"
    assert gw.api_key is None


def test_openai_base_url_env_is_ignored_as_by_codex() -> None:
    # Codex 0.119+ ignores OPENAI_BASE_URL (D1); a note says so
    gw = g.resolve_gateway({}, None, {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
    assert gw.url("/responses") == "https://api.openai.com/v1/responses"
    assert any("OPENAI_BASE_URL" in note for note in gw.notes)


def test_openai_base_url_key_beats_env() -> None:
    gw = g.resolve_gateway(
        {"openai_base_url": "https://cfg.example.test/v1/"},
        None,
        {"OPENAI_BASE_URL": "https://env.example.test/v1"},
    )
    assert gw.url("/responses") == "https://cfg.example.test/v1/responses"


def test_explicit_openai_provider_id() -> None:
    gw = g.resolve_gateway({"model_provider": "openai"}, {"OPENAI_API_KEY": "sk-a"}, {})
    assert gw.url("/responses") == "https://api.openai.com/v1/responses"
    assert gw.api_key == "sk-a"


def test_openai_organization_and_project_headers() -> None:
    env = {"OPENAI_ORGANIZATION": "org-1", "OPENAI_PROJECT": "proj-2"}
    gw = g.resolve_gateway({}, None, env)
    headers = gw.request_headers()
    assert header(headers, "OpenAI-Organization") == ["org-1"]
    assert header(headers, "OpenAI-Project") == ["proj-2"]


def test_openai_organization_blank_is_skipped() -> None:
    gw = g.resolve_gateway({}, None, {"OPENAI_ORGANIZATION": "  ", "OPENAI_PROJECT": ""})
    headers = gw.request_headers()
    assert header(headers, "OpenAI-Organization") == []
    assert header(headers, "OpenAI-Project") == []


def test_custom_provider_gets_no_openai_org_headers() -> None:
    env = {"OPENAI_ORGANIZATION": "org-1", "OPENAI_PROJECT": "proj-2"}
    gw = g.resolve_gateway(custom(), None, env)
    headers = gw.request_headers()
    assert header(headers, "OpenAI-Organization") == []
    assert header(headers, "OpenAI-Project") == []


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        (GW_URL, GW_URL + "/responses"),
        (GW_URL + "/", GW_URL + "/responses"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/responses"),
        ("https://gw.example.test/openai/v1//", "https://gw.example.test/openai/v1/responses"),
    ],
)
def test_custom_provider_endpoint(base_url: str, expected: str) -> None:
    config = custom()
    config["model_providers"]["gw"]["base_url"] = base_url
    gw = g.resolve_gateway(config, None, {})
    assert gw.provider == "gw"
    assert gw.url("/responses") == expected


def test_custom_provider_ignores_openai_base_url() -> None:
    config = custom()
    config["openai_base_url"] = "https://other.example.test/v1"
    gw = g.resolve_gateway(config, None, {"OPENAI_BASE_URL": "https://env.example.test/v1"})
    assert gw.url("/responses") == GW_URL + "/responses"


def test_query_params_are_encoded_in_a_stable_order() -> None:
    params = {"api-version": "2025-04-01 preview", "x": "a&b=c", "z": "1", "a": "é/?"}
    gw = g.resolve_gateway(custom(query_params=params), None, {})
    url = gw.url("/responses")
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == GW_URL + "/responses"
    assert parse_qsl(parts.query, strict_parsing=True) == list(params.items())
    assert " " not in url and url.count("?") == 1 and url.count("&") == 3
    # the same config always gives the same URL
    assert g.resolve_gateway(custom(query_params=dict(params)), None, {}).url("/responses") == url


def test_query_params_with_trailing_slash_base_url() -> None:
    config = custom(query_params={"api-version": "1"})
    config["model_providers"]["gw"]["base_url"] = GW_URL + "/"
    gw = g.resolve_gateway(config, None, {})
    assert gw.url("/responses") == GW_URL + "/responses?api-version=1"


def test_http_headers_and_env_http_headers() -> None:
    config = custom(
        http_headers={"X-Static": "static", "X-Gw-Tag": "t"},
        env_http_headers={
            "X-Env": "MY_HEADER_VAR",
            "X-Empty": "EMPTY_VAR",
            "X-Blank": "BLANK_VAR",
            "X-Unset": "UNSET_VAR",
        },
    )
    env = {"MY_HEADER_VAR": "from-env", "EMPTY_VAR": "", "BLANK_VAR": "   "}
    headers = g.resolve_gateway(config, None, env).request_headers()
    assert header(headers, "X-Static") == ["static"]
    assert header(headers, "X-Gw-Tag") == ["t"]
    assert header(headers, "X-Env") == ["from-env"]
    for name in ("X-Empty", "X-Blank", "X-Unset"):
        assert header(headers, name) == []


def test_cli_header_overrides_config_header_case_insensitively() -> None:
    config = custom(http_headers={"X-Static": "old"})
    gw = g.resolve_gateway(config, None, {}, extra_headers=[("x-STATIC", "new"), ("X-New", "n")])
    headers = gw.request_headers()
    assert header(headers, "x-static") == ["new"]
    assert header(headers, "X-New") == ["n"]


def test_cli_header_overrides_env_header_and_authorization() -> None:
    config = custom(env_http_headers={"X-Env": "V"}, experimental_bearer_token="tok-config")
    gw = g.resolve_gateway(
        config,
        None,
        {"V": "env"},
        extra_headers=[("x-env", "cli"), ("authorization", "Basic abc")],
    )
    headers = gw.request_headers()
    assert header(headers, "X-Env") == ["cli"]
    assert header(headers, "Authorization") == ["Basic abc"]


def test_unknown_provider_is_an_error() -> None:
    config = {"model_provider": "nope", "model_providers": {"gw": {"base_url": GW_URL}}}
    with pytest.raises(g.ConfigError) as err:
        g.resolve_gateway(config, None, {})
    assert "nope" in err.value.message
    assert err.value.exit_code == g.EXIT_CONFIG


def test_custom_provider_without_base_url_is_an_error() -> None:
    config = {"model_provider": "gw", "model_providers": {"gw": {"name": "x"}}}
    with pytest.raises(g.ConfigError, match="base_url"):
        g.resolve_gateway(config, None, {})


@pytest.mark.parametrize(
    "config",
    [
        {"model_provider": 5},
        {"model_providers": "gw"},
        {"model_provider": "gw", "model_providers": {"gw": "https://x"}},
        custom(query_params="a=b"),
        custom(http_headers=["X-A: b"]),
        custom(env_http_headers="X"),
    ],
)
def test_wrong_types_are_config_errors(config: dict[str, Any]) -> None:
    with pytest.raises(g.ConfigError):
        g.resolve_gateway(config, None, {})


def test_ollama_is_built_in() -> None:
    gw = g.resolve_gateway({"model_provider": "ollama"}, None, {})
    assert gw.provider == "ollama"
    assert gw.url("/responses") == "http://localhost:11434/v1/responses"
    assert gw.api_key is None
    assert "Authorization" not in gw.request_headers()


def test_lmstudio_is_built_in() -> None:
    gw = g.resolve_gateway({"model_provider": "lmstudio"}, None, {})
    assert gw.url("/responses") == "http://localhost:1234/v1/responses"


def test_codex_oss_base_url_replaces_the_ollama_url() -> None:
    gw = g.resolve_gateway(
        {"model_provider": "ollama"}, None, {"CODEX_OSS_BASE_URL": "http://127.0.0.1:7/v1"}
    )
    assert gw.url("/responses") == "http://127.0.0.1:7/v1/responses"


def test_base_url_override() -> None:
    gw = g.resolve_gateway(custom(query_params={"q": "1"}), None, {}, base_url="http://127.0.0.1:5")
    assert gw.url("/responses") == "http://127.0.0.1:5/responses?q=1"


# --- credentials --------------------------------------------------------------------------------

CHAIN = [
    # (source name, the key it provides, words its key_source must contain)
    # the provider's own key first: an OpenAI key set for Codex must not go to a gateway
    # that has a key of its own (Codex reads env_key and the bearer token before its login)
    ("env_key", "k-env-key", ["GW_KEY"]),
    ("bearer", "k-bearer", ["experimental_bearer_token"]),
    ("codex_env", "k-codex-env", ["CODEX_API_KEY"]),
    ("auth_key", "k-auth-json", ["OPENAI_API_KEY", "auth.json"]),
    ("chatgpt", "k-chatgpt-access", ["auth.json"]),
]


def chain_inputs(
    present: set[str],
) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, str]]:
    provider: dict[str, Any] = {"requires_openai_auth": True}
    auth: dict[str, Any] = {}
    env: dict[str, str] = {}
    if "codex_env" in present:
        env["CODEX_API_KEY"] = "k-codex-env"
    if "env_key" in present:
        provider["env_key"] = "GW_KEY"
        env["GW_KEY"] = "k-env-key"
    if "bearer" in present:
        provider["experimental_bearer_token"] = "k-bearer"
    if "auth_key" in present:
        auth["OPENAI_API_KEY"] = "k-auth-json"
    if "chatgpt" in present:
        auth["tokens"] = {
            "id_token": "id.jwt",
            "access_token": "k-chatgpt-access",
            "refresh_token": "r",
            "account_id": "acct-123",
        }
    return custom(**provider), (auth or None), env


@pytest.mark.parametrize("step", range(len(CHAIN)))
def test_key_precedence_chain(step: int) -> None:
    """With every source from ``step`` on present, the source at ``step`` wins."""
    present = {name for name, _, _ in CHAIN[step:]}
    config, auth, env = chain_inputs(present)
    name, key, words = CHAIN[step]
    gw = g.resolve_gateway(config, auth, env)
    assert gw.api_key == key
    for word in words:
        assert word in gw.key_source
    headers = gw.request_headers()
    assert header(headers, "Authorization") == ["Bearer " + key]
    account = header(headers, "chatgpt-account-id")
    assert account == (["acct-123"] if name == "chatgpt" else [])


def test_key_sources_are_told_apart() -> None:
    sources = set()
    for step in range(len(CHAIN)):
        config, auth, env = chain_inputs({CHAIN[step][0]})
        gw = g.resolve_gateway(config, auth, env)
        assert gw.api_key == CHAIN[step][1]
        sources.add(gw.key_source)
    assert len(sources) == len(CHAIN)


def test_the_openai_api_key_variable_is_never_sent() -> None:
    """Codex 0.171.0 ignores $OPENAI_API_KEY and sends no key (reference D3): sending it would
    be looser than Codex, so with nothing else the run is refused (exit 3) instead."""
    for name in ("openai", "custom"):
        config = {"model_provider": "openai"} if name == "openai" else chain_inputs(set())[0]
        gw = g.resolve_gateway(config, None, {"OPENAI_API_KEY": "k-openai-env"})
        assert not gw.api_key, name
        assert "Authorization" not in gw.request_headers(), name


def test_blank_keys_are_skipped_and_keys_are_stripped() -> None:
    config = custom(requires_openai_auth=True, experimental_bearer_token="  ")
    env = {"CODEX_API_KEY": "   "}
    gw = g.resolve_gateway(config, {"OPENAI_API_KEY": "\tk-auth-json \n"}, env)
    assert gw.api_key == "k-auth-json"
    assert gw.request_headers()["Authorization"] == "Bearer k-auth-json"


def test_env_key_value_is_sent_untrimmed_as_codex_does() -> None:
    # codex-config.md, section 6: "env_key value with surrounding spaces: sent
    # untrimmed"
    gw = g.resolve_gateway(custom(env_key="GW_KEY"), None, {"GW_KEY": " k-env-key  "})
    assert gw.api_key == " k-env-key  "
    assert gw.request_headers()["Authorization"] == "Bearer  k-env-key  "


def test_null_auth_key_falls_through_to_chatgpt_tokens() -> None:
    auth = {"auth_mode": "chatgpt", "OPENAI_API_KEY": None, "tokens": {"access_token": "at-1"}}
    gw = g.resolve_gateway(custom(requires_openai_auth=True), auth, {})
    assert gw.api_key == "at-1"
    # no account_id: no chatgpt-account-id header
    assert header(gw.request_headers(), "chatgpt-account-id") == []


def test_chatgpt_tokens_on_the_builtin_provider() -> None:
    auth = {"tokens": {"access_token": "at-2", "account_id": "acct-9"}}
    gw = g.resolve_gateway({}, auth, {})
    headers = gw.request_headers()
    assert header(headers, "Authorization") == ["Bearer at-2"]
    assert header(headers, "chatgpt-account-id") == ["acct-9"]


def test_no_key_anywhere_is_not_an_error_here() -> None:
    gw = g.resolve_gateway(custom(), None, {})
    assert gw.api_key is None
    assert header(gw.request_headers(), "Authorization") == []


def test_env_key_missing_is_recorded_with_instructions() -> None:
    """Resolution stays pure; load_gateway turns the missing variable into the exit-3 error
    (so that --dry-run and --doctor can still show everything else)."""
    config = custom(env_key="GW_SECRET", env_key_instructions="Get one at https://gw/keys")
    gw = g.resolve_gateway(config, None, {"OTHER": "x"})
    assert gw.api_key is None
    assert gw.key_source == "missing:GW_SECRET"
    assert gw.key_hint == "Get one at https://gw/keys"


@pytest.mark.parametrize("value", ["", "   "])
def test_env_key_blank_counts_as_missing(value: str) -> None:
    gw = g.resolve_gateway(custom(env_key="GW_SECRET"), None, {"GW_SECRET": value})
    assert gw.api_key is None
    assert gw.key_source == "missing:GW_SECRET"


def test_env_key_missing_without_instructions_still_names_the_variable() -> None:
    gw = g.resolve_gateway(custom(env_key="GW_SECRET"), None, {})
    assert "GW_SECRET" in gw.key_hint


def test_env_key_missing_with_base_url_override_is_not_fatal() -> None:
    gw = g.resolve_gateway(custom(env_key="GW_SECRET"), None, {}, base_url="http://127.0.0.1:1")
    assert gw.api_key is None
    assert gw.url("/responses") == "http://127.0.0.1:1/responses"


# --- --header parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("X-A: b", ("X-A", "b")),
        ("X-A:b", ("X-A", "b")),
        ("X-A:   spaced value  ", ("X-A", "spaced value")),
        ("X-Url: https://a.example/b?c=d", ("X-Url", "https://a.example/b?c=d")),
        ("X-Empty:", ("X-Empty", "")),
    ],
)
def test_parse_header_arg(text: str, expected: tuple[str, str]) -> None:
    assert g.parse_header_arg(text) == expected


@pytest.mark.parametrize(
    "text",
    ["no-colon", ": value", "   : value", "Bad Name: v", "X-A : v", "X-A: one\ntwo", "X-A: a\rb"],
)
def test_parse_header_arg_rejects(text: str) -> None:
    with pytest.raises(g.UsageError):
        g.parse_header_arg(text)


# --- proxies ------------------------------------------------------------------------------------


def proxy_for(scheme: str, host: str, port: int, env: dict[str, str]) -> str | None:
    """g.proxy_for with exactly `env` as the proxy environment (urllib reads os.environ)."""
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.lower().endswith("_proxy"):
                mp.delenv(name)
        for name, value in env.items():
            mp.setenv(name, value)
        return g.proxy_for(scheme, host, port)


def test_no_proxy_configured() -> None:
    assert proxy_for("https", "gw.example.test", 443, {}) is None


def test_https_proxy_for_https_and_http_proxy_for_http() -> None:
    env = {"HTTPS_PROXY": "http://sproxy:3128", "HTTP_PROXY": "http://proxy:8080"}
    assert proxy_for("https", "gw.example.test", 443, env) == "http://sproxy:3128"
    assert proxy_for("http", "gw.example.test", 80, env) == "http://proxy:8080"


def test_lower_case_proxy_variable_wins() -> None:
    env = {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2"}
    assert proxy_for("https", "gw.example.test", 443, env) == "http://lower:2"


def test_all_proxy_is_the_fallback() -> None:
    assert proxy_for("https", "h.test", 443, {"ALL_PROXY": "http://all:1"}) == "http://all:1"


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "bypassed"),
    [
        ("*", "anything.test", 443, True),
        ("example.test", "example.test", 443, True),
        ("example.test", "api.example.test", 443, True),
        (".example.test", "api.example.test", 443, True),
        ("example.test", "badexample.test", 443, False),
        ("example.test", "example.test.evil", 443, False),
        ("other.test, example.test", "EXAMPLE.test", 443, True),
        ("example.test:8443", "example.test", 8443, True),
        ("example.test:8443", "example.test", 443, False),
        ("127.0.0.1,localhost", "127.0.0.1", 8080, True),
        ("127.0.0.1,localhost", "localhost", 8080, True),
        ("::1", "::1", 8080, True),
        ("", "example.test", 443, False),
    ],
)
def test_no_proxy(no_proxy: str, host: str, port: int, bypassed: bool) -> None:
    env = {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": no_proxy}
    expected = None if bypassed else "http://proxy:3128"
    assert proxy_for("https", host, port, env) == expected


def test_lower_case_no_proxy_wins() -> None:
    env = {"HTTPS_PROXY": "http://proxy:3128", "no_proxy": "a.test", "NO_PROXY": "*"}
    assert proxy_for("https", "a.test", 443, env) is None
    assert proxy_for("https", "b.test", 443, env) == "http://proxy:3128"


# --- secrets and hosts --------------------------------------------------------------------------


def test_mask_secret_long_key() -> None:
    key = "sk-proj-ABCDEFGHIJKLMNOP1234"
    masked = g.mask_secret(key)
    assert masked == "***"
    assert key not in masked
    assert "ABCDEFGH" not in masked


@pytest.mark.parametrize("key", ["", "a", "short-key", "12345678901"])
def test_mask_secret_short_key_reveals_nothing(key: str) -> None:
    assert g.mask_secret(key) == "***"


@pytest.mark.parametrize("n", range(12, 40))
def test_mask_secret_reveals_no_character(n: int) -> None:
    key = "".join(chr(ord("a") + i % 26) for i in range(n))
    assert not set(g.mask_secret(key)) & set(key)


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "LOCALHOST",
        "127.0.0.1",
        "127.1.2.3",
        "::1",
        "[::1]",
        "0:0:0:0:0:0:0:1",
        "app.localhost",
    ],
)
def test_loopback_hosts(host: str) -> None:
    assert g.is_loopback_host(host) is True


@pytest.mark.parametrize(
    "host",
    [
        "example.com",
        "10.0.0.1",
        "192.168.1.1",
        "0.0.0.0",
        "::",
        "localhost.example.com",
        "notlocalhost",
        "128.0.0.1",
        "127.attacker.example",  # a DNS name, not an address: it can resolve anywhere
        "127.0.0.1.example.com",
    ],
)
def test_non_loopback_hosts(host: str) -> None:
    assert g.is_loopback_host(host) is False


# --- resolution as Codex does it ------------------------------------------------------------------


def test_config_with_a_bom_is_read(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'\xef\xbb\xbfmodel_provider = "gw"\n')
    assert g.load_toml(str(path)) == {"model_provider": "gw"}


@pytest.mark.parametrize("data", ['model_provider = "gw"\n'.encode("utf-16"), b"# caf\xe9\n"])
def test_config_that_is_not_utf8_is_a_config_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(data)
    with pytest.raises(g.ConfigError, match="not UTF-8") as err:
        g.load_toml(str(path))
    assert err.value.exit_code == g.EXIT_CONFIG


@pytest.mark.parametrize("builtin", ["openai", "ollama", "lmstudio"])
def test_redefining_a_builtin_provider_is_rejected(builtin: str) -> None:
    config = {"model_providers": {builtin: {"base_url": GW_URL}}, "model_provider": builtin}
    with pytest.raises(g.ConfigError, match="built-in provider"):
        g.resolve_gateway(config, None, {"CODEX_API_KEY": "k"})


def test_bedrock_profile_may_be_set_but_bedrock_cannot_be_used() -> None:
    config = custom(env_key="K")
    config["model_providers"]["amazon-bedrock"] = {"aws": {"profile": "work"}}
    assert g.resolve_gateway(config, None, {"K": "k"}).api_key == "k"
    config["model_provider"] = "amazon-bedrock"
    with pytest.raises(g.ConfigError, match="SigV4"):
        g.resolve_gateway(config, None, {"K": "k"})


def test_wire_api_other_than_responses_is_rejected() -> None:
    assert g.resolve_gateway(custom(wire_api="responses"), None, {}).base_url == GW_URL
    with pytest.raises(g.ConfigError, match="wire_api"):
        g.resolve_gateway(custom(wire_api="chat"), None, {})


@pytest.mark.parametrize(
    "provider",
    [{"http_headers": {"x-flag": True}}, {"query_params": {"n": 1}}, {"base_url": 5}],
)
def test_non_string_provider_values_are_rejected(provider: dict[str, Any]) -> None:
    config = custom()
    config["model_providers"]["gw"].update(provider)
    with pytest.raises(g.ConfigError, match="must be a string"):
        g.resolve_gateway(config, None, {})


@pytest.mark.parametrize("value", [False, 0, "", ["gw"]])
def test_model_provider_that_is_not_a_name_is_rejected(value: Any) -> None:
    with pytest.raises(g.ConfigError, match="model_provider"):
        g.resolve_gateway({"model_provider": value}, None, {})


CHATGPT_AUTH = {"auth_mode": "chatgpt", "OPENAI_API_KEY": None, "tokens": {"access_token": "tok"}}


def test_chatgpt_login_on_the_builtin_provider_uses_the_codex_backend() -> None:
    gw = g.resolve_gateway({}, CHATGPT_AUTH, {})
    assert gw.url("/responses") == "https://chatgpt.com/backend-api/codex/responses"
    assert gw.api_key == "tok"


@pytest.mark.parametrize(
    ("config", "auth", "env", "url"),
    [
        ({"openai_base_url": GW_URL}, CHATGPT_AUTH, {}, GW_URL),  # explicit URL wins
        ({}, {**CHATGPT_AUTH, "OPENAI_API_KEY": "sk"}, {}, g.DEFAULT_OPENAI_BASE_URL),
        ({}, CHATGPT_AUTH, {"CODEX_API_KEY": "sk"}, g.DEFAULT_OPENAI_BASE_URL),
    ],
)
def test_api_key_or_explicit_url_keeps_the_platform_url(
    config: dict[str, Any], auth: dict[str, Any], env: dict[str, str], url: str
) -> None:
    assert g.resolve_gateway(config, auth, env).base_url == url


def test_oss_variables_apply_to_ollama_and_lmstudio_only() -> None:
    env = {"CODEX_OSS_PORT": "11435"}
    assert g.resolve_gateway({"model_provider": "ollama"}, None, env).base_url == (
        "http://localhost:11435/v1"
    )
    assert g.resolve_gateway({"model_provider": "lmstudio"}, None, env).base_url == (
        "http://localhost:11435/v1"
    )
    env = {"CODEX_OSS_BASE_URL": "http://127.0.0.1:9/v1", "CODEX_OSS_PORT": "1"}
    assert g.resolve_gateway({"model_provider": "ollama"}, None, env).base_url == (
        "http://127.0.0.1:9/v1"
    )
    config = {"model_provider": "gw", "model_providers": {"gw": {"name": "no url"}}}
    with pytest.raises(g.ConfigError, match="no base_url"):
        g.resolve_gateway(config, None, env)
    with pytest.raises(g.ConfigError, match="CODEX_OSS_PORT"):
        g.resolve_gateway({"model_provider": "ollama"}, None, {"CODEX_OSS_PORT": "x1"})


def test_query_params_keep_existing_escapes() -> None:
    params = {"sig": "abc%2Bdef%3D", "scope": "a b&c", "plus": "x+y", "pct": "100%"}
    url = g.resolve_gateway(custom(query_params=params), None, {}).url("/responses")
    assert url == (GW_URL + "/responses?sig=abc%2Bdef%3D&scope=a%20b%26c&plus=x%2By&pct=100%25")
    assert dict(parse_qsl(urlsplit(url).query)) == {
        "sig": "abc+def=",
        "scope": "a b&c",
        "plus": "x+y",
        "pct": "100%",
    }


def test_auth_command_replaces_every_other_key_source() -> None:
    config = custom(auth={"command": "print-token", "args": ["--x"], "timeout_ms": 2500})
    env = {"CODEX_API_KEY": "sk-openai", "OPENAI_API_KEY": "sk-openai-2"}
    gw = g.resolve_gateway(config, {"OPENAI_API_KEY": "sk-auth-json"}, env)
    assert gw.api_key is None  # not run by the pure resolution
    assert gw.key_command is not None
    assert gw.key_command.argv == ["print-token", "--x"]
    assert gw.key_command.timeout == 2.5
    assert "auth.command" in gw.key_source


@pytest.mark.parametrize(
    "auth",
    [
        {"args": []},
        {"command": ""},
        {"command": "t", "args": "x"},
        {"command": "t", "timeout_ms": 0},
    ],
)
def test_bad_auth_command_tables_are_rejected(auth: dict[str, Any]) -> None:
    with pytest.raises(g.ConfigError, match="auth"):
        g.resolve_gateway(custom(auth=auth), None, {})


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ({"x-inj": "a\r\nX-Injected: yes"}, "k"),
        ({"x bad:name": "v"}, "k"),
        ({}, "sk-one\nX-Smuggled: 1"),
    ],
)
def test_header_injection_from_the_configuration_is_refused(
    headers: dict[str, str], key: str
) -> None:
    config = custom(http_headers=headers, requires_openai_auth=True)
    gw = g.resolve_gateway(config, {"OPENAI_API_KEY": key}, {})
    with pytest.raises(g.ConfigError):
        g.check_headers(gw)


@pytest.mark.parametrize("url", ["http://[::1/v1", "https://a]b/v1"])
def test_a_base_url_with_a_broken_bracket_is_a_config_error(url: str, tmp_path: Path) -> None:
    """urlsplit raises ValueError on these: that was 'internal error' (exit 1)."""
    from tests.conftest import clean_env, run_cli

    env = clean_env(CODEX_API_KEY="sk-test-x", HOME=str(tmp_path))
    proc = run_cli(
        ["--base-url", url, "--dry-run", "--prompt", "x", "--out", str(tmp_path / "o.png")], env
    )
    assert proc.returncode == 3, proc.stderr
    assert "is not a URL" in proc.stderr and "internal error" not in proc.stderr


# --- provider tables and base URLs the script refuses ------------------------------------------


@pytest.mark.parametrize(
    ("provider", "words"),
    [
        ({"requires_openai_auth": "yes"}, "requires_openai_auth must be true or false"),
        ({"auth": {"command": "get-token", "cwd": 5}}, "auth.cwd must be a string"),
    ],
)
def test_provider_keys_of_the_wrong_type_are_named(provider: dict[str, Any], words: str) -> None:
    with pytest.raises(g.ConfigError) as err:
        g.resolve_gateway(custom(**provider), None, {})
    assert words in err.value.message
    assert err.value.exit_code == 3


@pytest.mark.parametrize("url", ["ftp://gw.example.test/v1", "http:///v1", "gw.example.test"])
def test_a_base_url_that_is_not_http_is_refused(url: str, tmp_path: Path) -> None:
    from tests.conftest import clean_env, run_cli

    env = clean_env(CODEX_API_KEY="sk-test-x", HOME=str(tmp_path))
    args = ["--base-url", url, "--dry-run", "--prompt", "x", "--out", str(tmp_path / "o.png")]
    proc = run_cli(args, env)
    assert proc.returncode == 3, proc.stderr
    assert f"error: --base-url {url!r} must be an http:// or https:// URL" in proc.stderr


def test_windows_system_layer_is_under_programdata(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Windows branch, computed on this machine: os.name decides it, os.path joins."""
    monkeypatch.setattr(g.os, "name", "nt")
    try:
        given = g.system_layer_paths("H", {"ProgramData": "PD"})
        upper = g.system_layer_paths("H", {"PROGRAMDATA": "pd2"})
        default = g.system_layer_paths("H", {})
    finally:
        monkeypatch.undo()  # os.name is global: pytest itself must not see "nt"
    assert given == (
        os.path.join("PD", "OpenAI", "Codex", "config.toml"),
        os.path.join("H", "managed_config.toml"),
    )
    assert upper[0] == os.path.join("pd2", "OpenAI", "Codex", "config.toml")
    assert default[0] == os.path.join("C:\\ProgramData", "OpenAI", "Codex", "config.toml")
