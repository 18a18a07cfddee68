"""Redact secrets, not words.

A value is secret when it came from a credential source (the key, auth.command's output,
experimental_bearer_token, an env_http_headers variable) or sits in a header whose name is a
credential's name as a whole word (Authorization, api-key, x-api-key, x-auth-token, ...). Behind
Portkey, ``x-portkey-provider: openai`` is not a secret (its name merely contains "key"): before,
"openai" was masked everywhere (``requires_***_auth``) and runs of ``x-portkey-custom-host``
masked the endpoint itself. Every test runs the script as a subprocess against the loopback
gateway and also checks that the real secrets never show, whole or in part.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import generate_gateway_image as g
from tests import images
from tests.conftest import TEST_KEY, clean_env, report, run_cli, write_codex_home
from tests.gateway import Gateway, error_reply, image_events, sse_reply
from tests.hostile import leaks

PNG = images.png_bytes(40, 24)
PORTKEY_KEY = "pk-live-9f8e7d6c5b4a3210fedc"
TEAM_TAG = "team-tag-from-env-5566778899"


def portkey_home(tmp_path: Path, gateway: Gateway) -> dict[str, str]:
    headers = (
        "[model_providers.gw.http_headers]\n"
        '"x-portkey-provider" = "openai"\n'
        f'"x-portkey-custom-host" = "{gateway.base_url}"\n'
        f'"x-portkey-api-key" = "{PORTKEY_KEY}"\n'
        "[model_providers.gw.env_http_headers]\n"
        '"x-team-tag" = "TEAM_TAG"\n'
    )
    home = write_codex_home(tmp_path / "codex-home", gateway.base_url, extra_provider=headers)
    return clean_env(CODEX_HOME=str(home), TEAM_TAG=TEAM_TAG)


def assert_no_secret(text: str) -> None:
    for secret in (TEST_KEY, PORTKEY_KEY, TEAM_TAG):
        assert leaks(secret, text) == [], (secret, text)


def test_dry_run_shows_what_is_not_a_secret_and_masks_what_is(
    tmp_path: Path, gateway: Gateway
) -> None:
    env = portkey_home(tmp_path, gateway)
    proc = run_cli(["--prompt", "p", "--out", str(tmp_path / "o.png"), "--dry-run"], env)
    assert proc.returncode == 0, report(proc)
    text = proc.stdout + proc.stderr
    assert "x-portkey-provider: openai" in text, text
    assert f"x-portkey-custom-host: {gateway.base_url}" in text, text
    assert f"POST {gateway.base_url}/responses" in text, text
    assert "x-portkey-api-key: ***" in text, text
    assert "x-team-tag: ***" in text, text  # from env_http_headers: secret by its source
    assert_no_secret(text)


def test_a_gateway_error_naming_the_provider_is_shown_as_written(
    tmp_path: Path, gateway: Gateway
) -> None:
    env = portkey_home(tmp_path, gateway)
    gateway.set_default(error_reply(400, "openai error: requires_openai_auth is not set here"))
    proc = run_cli(["--prompt", "p", "--out", str(tmp_path / "o.png"), "--verbose"], env)
    assert proc.returncode == 4, report(proc, gateway)
    assert "openai error: requires_openai_auth is not set here" in proc.stderr, proc.stderr
    assert f"POST {gateway.base_url}/responses" in proc.stderr, proc.stderr
    assert "x-portkey-provider: openai" in proc.stderr
    (post,) = gateway.posts()
    assert post.header("x-portkey-provider") == "openai"
    assert post.header("x-portkey-api-key") == PORTKEY_KEY and post.header("x-team-tag") == TEAM_TAG
    assert_no_secret(proc.stdout + proc.stderr)


def test_the_saved_result_keeps_words_and_masks_header_secrets_echoed_back(
    tmp_path: Path, gateway: Gateway
) -> None:
    env = portkey_home(tmp_path, gateway)
    revised = f"openai drew it; echo {PORTKEY_KEY} and {TEAM_TAG[:14]}"
    gateway.enqueue(sse_reply(image_events(images.b64(PNG), revised_prompt=revised)))
    proc = run_cli(["--prompt", "p", "--out", str(tmp_path / "o.png"), "--json"], env)
    assert proc.returncode == 0, report(proc, gateway)
    assert '"revised_prompt": "openai drew it; echo ***' in proc.stdout, proc.stdout
    assert_no_secret(proc.stdout + proc.stderr)


@pytest.mark.parametrize(
    "name",
    [
        "Authorization",
        "api-key",
        "x-api-key",
        "X-Auth-Token",
        "x-goog-api-key",
        "x-portkey-api-key",
        "ocp-apim-subscription-key",
        "client_secret",
        "apiKey",
        "accessToken",
        "Cookie",
        "sig",
    ],
)
def test_credential_names_are_credentials(name: str) -> None:
    assert g.looks_secret(name) and g.is_credential_header(name)


@pytest.mark.parametrize(
    "name",
    [
        "x-portkey-provider",
        "x-portkey-custom-host",
        "x-portkey-config-name",
        "x-keyboard-layout",
        "OpenAI-Organization",
        "x-monkey-business",
        "api-version",
        "x-tokenizer",
    ],
)
def test_names_that_merely_contain_the_letters_are_not(name: str) -> None:
    assert not g.looks_secret(name, "openai") and not g.is_credential_header(name)


def test_a_secret_that_holds_the_host_does_not_hide_the_endpoint(
    tmp_path: Path, gateway: Gateway
) -> None:
    # a credential header whose value starts with the base URL: the whole value stays masked,
    # a piece of it that is the endpoint itself is not (the endpoint is public)
    secret = gateway.base_url + "?token=zz-9182736450"
    headers = f'[model_providers.gw.http_headers]\n"x-upstream-token" = "{secret}"\n'
    home = write_codex_home(tmp_path / "codex-home", gateway.base_url, extra_provider=headers)
    env = clean_env(CODEX_HOME=str(home))
    proc = run_cli(["--prompt", "p", "--out", str(tmp_path / "o.png"), "--dry-run"], env)
    assert proc.returncode == 0, report(proc)
    assert f"POST {gateway.base_url}/responses" in proc.stdout, proc.stdout
    assert "x-upstream-token: ***" in proc.stdout
    assert secret not in proc.stdout + proc.stderr and "9182736450" not in proc.stdout


@pytest.mark.parametrize("key", [TEST_KEY, "sk-path+0123456789abcdefghijKLMN"])
def test_a_key_inside_the_base_url_is_never_public(
    tmp_path: Path, gateway: Gateway, key: str
) -> None:
    # some gateways take the key in the path: no piece of it, in any spelling, counts as
    # public endpoint text ("+" is "%2B" in one of the spellings redact() knows)
    base = f"{gateway.base_url}/{key}"
    home = write_codex_home(tmp_path / "codex-home", base, key=key)
    env = clean_env(CODEX_HOME=str(home))
    refusal = error_reply(401, f"bad key {key[:14]}... {key[-18:]} for {base[:30]}")
    gateway.set_default(refusal, path=f"/v1/{key}/responses")
    proc = run_cli(["--prompt", "p", "--out", str(tmp_path / "o.png"), "--retries", "0"], env)
    assert proc.returncode == 3 and "bad key" in proc.stderr, report(proc, gateway)
    assert leaks(key, proc.stdout + proc.stderr) == [], proc.stderr
