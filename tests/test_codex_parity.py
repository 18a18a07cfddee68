"""Send exactly what Codex sends: one table of configurations, each run end to end.

Every row writes a Codex home (and, where the row needs them, a system layer, a managed layer, a
project ``.codex/`` folder or ``auth.command`` scripts), runs the script as a subprocess against
the loopback gateway and pins what the gateway recorded: the path, the query, the Authorization
value and the extra headers; or exit 3 with nothing sent.

The expectations are Codex's observed behaviour, copied from the reference note
``codex-config.md`` (the 0.169.0 variant table, A..H, and section 6 for 0.171.0), not from
running the script. Where the script deliberately differs, the row says so in ``note``:

* ``STRICTER``: Codex would send a request with no credential (or silently ignore a mistake);
  the script refuses with exit 3 and says what to configure.
* ``LEGACY``: the old ``profile = "NAME"`` / ``[profiles.NAME]`` scheme, which Codex refuses and
  the script still reads (it only reads the user's own files).

System and managed layers live in a temporary folder named by ``CODEX_IMAGEGEN_SYSTEM_CONFIG_DIR``
(set for every row, so that a real ``/etc/codex`` never leaks into a test).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs

import pytest

import generate_gateway_image as g
from tests import images
from tests.conftest import clean_env, report, run_cli
from tests.gateway import Gateway, image_events, sse_reply

KEY_AUTH = "sk-authjson-0000aaaa1111"
KEY_ENV = "sk-envkey-2222bbbb3333"
KEY_CODEX = "sk-env-CODEX-4444cccc5555"
KEY_BEARER = "sk-bearer-6666dddd7777"
KEY_OPENAI_ENV = "sk-openai-env-8888eeee9999"
KEY_HEADER = "sk-configured-hdr-1212abab"
ACCESS = "eyJhbGciOiJSUzI1NiJ9.access-payload.sig-3434cdcd"
ACCOUNT = "acct-5656efef"
TOK_CWD = "tok-from-cwd-7878a1a1"
TOK_HOME = "tok-from-home-9090b2b2"
TOK_OTHER = "tok-from-other-1313c3c3"
SECRETS = (KEY_AUTH, KEY_ENV, KEY_CODEX, KEY_BEARER, KEY_OPENAI_ENV, KEY_HEADER, ACCESS)

AUTH_KEY = json.dumps({"OPENAI_API_KEY": KEY_AUTH})
AUTH_CHATGPT = json.dumps(
    {
        "OPENAI_API_KEY": None,
        "tokens": {
            "id_token": "eyJ.id.sig",
            "access_token": ACCESS,
            "refresh_token": "rt-0000",
            "account_id": ACCOUNT,
        },
    }
)
SELECT = 'model_provider = "gw"\n'
REQUIRES = "requires_openai_auth = true\n"


def provider(extra: str = "", name: str = "gw", base: str = "{url}/v1") -> str:
    """A [model_providers.NAME] table; {url} becomes the gateway's http://127.0.0.1:PORT."""
    return f'\n[model_providers.{name}]\nname = "test {name}"\nbase_url = "{base}"\n{extra}\n'


def script(token: str) -> str:
    return f"#!/bin/sh\necho {token}\n"


@dataclass
class Case:
    id: str
    files: dict[str, str]  # path under the test folder: home/, system/, cwd/, user/.codex/
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    path: str | None = "/v1/responses"  # None: exit 3 and nothing sent
    query: dict[str, str] = field(default_factory=dict)
    auth: str | None = None  # the Authorization header the gateway must see (None: absent)
    headers: dict[str, str | None] = field(default_factory=dict)  # None: must be absent
    refused: str = ""  # with path=None: text the one-line error must contain
    stderr: str = ""  # on success: a warning that must be shown
    dry_url: str = ""  # run with --dry-run: the URL it must print (never dialled)
    codex_home: bool = True  # False: HOME=user/, the home is user/.codex
    note: str = ""  # STRICTER / LEGACY: a deliberate difference from Codex


C = "home/config.toml"
A = "home/auth.json"
SYS = "system/config.toml"
MAN = "system/managed_config.toml"
A_QUERY = 'query_params = { "api-version" = "2025-04-01", foo = "bar" }\n'

CASES = [
    # --- A: custom provider with requires_openai_auth, headers and query (0.169.0 table) ---
    Case(
        "A-custom-openai-auth-headers-query",
        {
            C: SELECT
            + provider(
                REQUIRES
                + A_QUERY
                + 'http_headers = { "x-static-header" = "static" }\n'
                + 'env_http_headers = { "x-env-header" = "GW_HDR", "x-unset-header" = "GW_NO" }'
            ),
            A: AUTH_KEY,
        },
        env={"GW_HDR": "from-env"},
        query={"api-version": "2025-04-01", "foo": "bar"},
        auth="Bearer " + KEY_AUTH,
        headers={"x-static-header": "static", "x-env-header": "from-env", "x-unset-header": None},
    ),
    Case(
        "A2-trailing-slash",
        {
            C: SELECT + provider(REQUIRES + 'query_params = { foo = "bar" }', base="{url}/v1/"),
            A: AUTH_KEY,
        },
        query={"foo": "bar"},
        auth="Bearer " + KEY_AUTH,
    ),
    Case(
        "F0-home-dot-codex",
        {
            "user/.codex/config.toml": SELECT + provider(REQUIRES + A_QUERY),
            "user/.codex/auth.json": AUTH_KEY,
        },
        query={"api-version": "2025-04-01", "foo": "bar"},
        auth="Bearer " + KEY_AUTH,
        codex_home=False,
    ),
    # --- B: profiles ---
    Case(
        "B3-profile-file-switches-provider",
        {
            C: SELECT + provider(REQUIRES),
            "home/work.config.toml": 'model_provider = "work"\n'
            + provider(REQUIRES, name="work", base="{url}/work/v1"),
            A: AUTH_KEY,
        },
        args=["--profile", "work"],
        path="/work/v1/responses",
        auth="Bearer " + KEY_AUTH,
    ),
    Case(
        "B3b-profile-file-deep-merges",
        {
            C: SELECT + provider(REQUIRES + 'http_headers = { "x-base" = "1" }'),
            "home/work.config.toml": '[model_providers.gw]\nbase_url = "{url}/prof/v1"\n',
            A: AUTH_KEY,
        },
        args=["--profile", "work"],
        path="/prof/v1/responses",
        auth="Bearer " + KEY_AUTH,
        headers={"x-base": "1"},
    ),
    Case(
        "B-profile-file-missing",
        {C: SELECT + provider(REQUIRES), A: AUTH_KEY},
        args=["--profile", "ghost"],
        path=None,
        refused="ghost",
        note="STRICTER: Codex silently uses the base config",
    ),
    Case(
        "B1-legacy-profile-selector",
        {
            C: 'profile = "work"\n'
            + SELECT
            + provider(REQUIRES)
            + provider(REQUIRES, name="work", base="{url}/work/v1")
            + '\n[profiles.work]\nmodel_provider = "work"\n',
            A: AUTH_KEY,
        },
        path="/work/v1/responses",
        auth="Bearer " + KEY_AUTH,
        note="LEGACY: Codex exits 1",
    ),
    Case(
        "B2b-legacy-table-without-selector-ignored",
        {
            C: SELECT
            + provider(REQUIRES)
            + provider(REQUIRES, name="work", base="{url}/work/v1")
            + '\n[profiles.work]\nmodel_provider = "work"\n',
            A: AUTH_KEY,
        },
        auth="Bearer " + KEY_AUTH,
    ),
    # --- C: the provider's own key sources ---
    Case(
        "C1-env-key",
        {C: SELECT + provider('env_key = "GW_KEY"')},
        env={"GW_KEY": KEY_ENV},
        auth="Bearer " + KEY_ENV,
    ),
    Case(
        "C2-env-key-beats-auth-json",
        {C: SELECT + provider('env_key = "GW_KEY"'), A: AUTH_KEY},
        env={"GW_KEY": KEY_ENV},
        auth="Bearer " + KEY_ENV,
    ),
    Case(
        "C2b-env-key-beats-auth-json-with-openai-auth",
        {C: SELECT + provider('env_key = "GW_KEY"\n' + REQUIRES), A: AUTH_KEY},
        env={"GW_KEY": KEY_ENV, "CODEX_API_KEY": KEY_CODEX},
        auth="Bearer " + KEY_ENV,
    ),
    Case(
        "C3-env-key-unset-no-fall-through",
        {C: SELECT + provider('env_key = "GW_KEY"\n' + REQUIRES), A: AUTH_KEY},
        path=None,
        refused="missing environment variable GW_KEY",
    ),
    Case(
        "C3b-env-key-unset-shows-instructions",
        {
            C: SELECT
            + provider('env_key = "GW_KEY"\nenv_key_instructions = "Get a key at keys.example"')
        },
        path=None,
        refused="Get a key at keys.example",
    ),
    Case(
        "C3c-env-key-empty",
        {C: SELECT + provider('env_key = "GW_KEY"'), A: AUTH_KEY},
        env={"GW_KEY": ""},
        path=None,
        refused="GW_KEY",
    ),
    Case(
        "C3d-env-key-blank",
        {C: SELECT + provider('env_key = "GW_KEY"')},
        env={"GW_KEY": "   "},
        path=None,
        refused="GW_KEY",
    ),
    Case(
        "C-env-key-value-untrimmed",
        {C: SELECT + provider('env_key = "GW_KEY"')},
        env={"GW_KEY": "  " + KEY_ENV},
        auth="Bearer   " + KEY_ENV,
    ),
    Case(
        "C4-bearer-token-beats-auth-json",
        {
            C: SELECT + provider(f'experimental_bearer_token = "{KEY_BEARER}"\n' + REQUIRES),
            A: AUTH_KEY,
        },
        auth="Bearer " + KEY_BEARER,
    ),
    Case(
        "C4b-bearer-token-alone",
        {C: SELECT + provider(f'experimental_bearer_token = "{KEY_BEARER}"')},
        auth="Bearer " + KEY_BEARER,
    ),
    Case(
        "C5-no-credential-at-all",
        {C: SELECT + provider()},
        path=None,
        refused="no API key found",
        note="STRICTER: Codex sends no Authorization",
    ),
    # --- section 6: the OpenAI login never reaches a provider that did not ask for it ---
    Case(
        "N1-codex-api-key-withheld-from-custom",
        {C: SELECT + provider()},
        env={"CODEX_API_KEY": KEY_CODEX},
        path=None,
        refused="requires_openai_auth",
        note="STRICTER: Codex sends no Authorization",
    ),
    Case(
        "N2-auth-json-key-withheld-from-custom",
        {C: SELECT + provider(), A: AUTH_KEY},
        path=None,
        refused="requires_openai_auth",
        note="STRICTER: Codex sends no Authorization",
    ),
    Case(
        "N3-chatgpt-tokens-withheld-from-custom",
        {C: SELECT + provider(), A: AUTH_CHATGPT},
        path=None,
        refused="requires_openai_auth",
        note="STRICTER: Codex sends no Authorization",
    ),
    Case(
        "N4-openai-api-key-env-withheld-from-custom",
        {C: SELECT + provider()},
        env={"OPENAI_API_KEY": KEY_OPENAI_ENV},
        path=None,
        refused="requires_openai_auth",
        note="STRICTER: Codex sends no Authorization",
    ),
    Case(
        "N5-requires-openai-auth-false",
        {C: SELECT + provider("requires_openai_auth = false"), A: AUTH_KEY},
        env={"CODEX_API_KEY": KEY_CODEX},
        path=None,
        refused="requires_openai_auth",
        note="STRICTER: Codex sends no Authorization",
    ),
    # --- D: the built-in openai provider ---
    Case(
        "D1-openai-base-url-env-ignored",
        {A: AUTH_KEY},
        env={"OPENAI_BASE_URL": "{url}/v1"},
        dry_url="https://api.openai.com/v1/responses",
    ),
    Case(
        "D2-openai-base-url-key",
        {C: 'openai_base_url = "{url}/v1"\n', A: AUTH_KEY},
        env={"OPENAI_ORGANIZATION": "org-1", "OPENAI_PROJECT": "proj-2"},
        auth="Bearer " + KEY_AUTH,
        headers={"openai-organization": "org-1", "openai-project": "proj-2"},
    ),
    Case(
        "D2c-openai-base-url-key-beats-env",
        {C: 'openai_base_url = "{url}/v1"\n', A: AUTH_KEY},
        env={"OPENAI_BASE_URL": "http://127.0.0.1:9/elsewhere"},
        auth="Bearer " + KEY_AUTH,
    ),
    Case(
        "D3-openai-api-key-env-on-builtin",
        {C: 'openai_base_url = "{url}/v1"\n'},
        env={"OPENAI_API_KEY": KEY_OPENAI_ENV},
        path=None,
        refused="CODEX_API_KEY",
        note="STRICTER: Codex ignores the variable and sends no Authorization",
    ),
    Case(
        "D4-codex-api-key-on-builtin",
        {C: 'openai_base_url = "{url}/v1"\n'},
        env={"CODEX_API_KEY": KEY_CODEX},
        auth="Bearer " + KEY_CODEX,
    ),
    Case(
        "D5-codex-api-key-beats-auth-json",
        {C: 'openai_base_url = "{url}/v1"\n', A: AUTH_KEY},
        env={"CODEX_API_KEY": KEY_CODEX, "OPENAI_API_KEY": KEY_OPENAI_ENV},
        auth="Bearer " + KEY_CODEX,
    ),
    Case(
        "D5b-custom-codex-api-key-beats-auth-json",
        {C: SELECT + provider(REQUIRES + A_QUERY), A: AUTH_KEY},
        env={"CODEX_API_KEY": KEY_CODEX},
        query={"api-version": "2025-04-01", "foo": "bar"},
        auth="Bearer " + KEY_CODEX,
    ),
    Case(
        "D6-redefined-openai",
        {C: 'model_provider = "openai"\n' + provider(name="openai"), A: AUTH_KEY},
        path=None,
        refused="built-in provider",
    ),
    Case(
        "E2-chatgpt-tokens-on-custom-openai-auth",
        {C: SELECT + provider(REQUIRES + 'query_params = { foo = "bar" }'), A: AUTH_CHATGPT},
        query={"foo": "bar"},
        auth="Bearer " + ACCESS,
        headers={"chatgpt-account-id": ACCOUNT},
    ),
    # --- auth.command (section 6) ---
    Case(
        "K1-auth-command-in-working-directory",
        {
            C: SELECT + provider('auth = { command = "./keycmd.sh" }'),
            "cwd/keycmd.sh": script(TOK_CWD),
            "home/keycmd.sh": script(TOK_HOME),
        },
        auth="Bearer " + TOK_CWD,
    ),
    Case(
        "K2-auth-command-cwd-dot-is-codex-home",
        {
            C: SELECT + provider('auth = { command = "./keycmd.sh", cwd = "." }'),
            "cwd/keycmd.sh": script(TOK_CWD),
            "home/keycmd.sh": script(TOK_HOME),
        },
        auth="Bearer " + TOK_HOME,
    ),
    Case(
        "K3-auth-command-absolute-cwd",
        {
            C: SELECT + provider('auth = { command = "./keycmd.sh", cwd = "{tmp}/other" }'),
            "cwd/keycmd.sh": script(TOK_CWD),
            "other/keycmd.sh": script(TOK_OTHER),
        },
        auth="Bearer " + TOK_OTHER,
    ),
    Case(
        "K4-auth-with-env-key",
        {C: SELECT + provider('env_key = "GW_KEY"\nauth = { command = "./keycmd.sh" }')},
        env={"GW_KEY": KEY_ENV},
        path=None,
        refused="provider auth cannot be combined with env_key",
    ),
    Case(
        "K5-auth-with-requires-openai-auth",
        {C: SELECT + provider(REQUIRES + 'auth = { command = "./keycmd.sh" }'), A: AUTH_KEY},
        path=None,
        refused="provider auth cannot be combined with requires_openai_auth",
    ),
    Case(
        "K6-auth-with-bearer-token",
        {
            C: SELECT
            + provider(
                f'experimental_bearer_token = "{KEY_BEARER}"\nauth = {{ command = "./k.sh" }}'
            )
        },
        path=None,
        refused="provider auth cannot be combined with experimental_bearer_token",
    ),
    Case(
        "K7-auth-command-fails",
        {
            C: SELECT + provider('auth = { command = "./keycmd.sh" }'),
            "cwd/keycmd.sh": "#!/bin/sh\necho expired >&2\nexit 4\n",
        },
        path=None,
        refused="exited with 4",
        note="STRICTER: Codex logs it and sends no Authorization",
    ),
    Case(
        "K8-auth-command-cannot-start",
        {
            C: SELECT + provider('auth = { command = "./keycmd.sh" }'),
            "home/keycmd.sh": script(TOK_HOME),  # not where Codex looks without cwd
        },
        path=None,
        refused="cannot be run",
        note="STRICTER: Codex logs it and sends no Authorization",
    ),
    # --- a configured Authorization header ---
    Case(
        "H1-http-headers-authorization-loses-to-env-key",
        {
            C: SELECT
            + provider(f'env_key = "GW_KEY"\nhttp_headers = {{ Authorization = "{KEY_HEADER}" }}')
        },
        env={"GW_KEY": KEY_ENV},
        auth="Bearer " + KEY_ENV,
        stderr="Authorization",
    ),
    Case(
        "H2-env-http-headers-authorization-loses-to-auth-json",
        {
            C: SELECT + provider(REQUIRES + 'env_http_headers = { authorization = "GW_AUTHZ" }'),
            A: AUTH_KEY,
        },
        env={"GW_AUTHZ": "Bearer " + KEY_HEADER},
        auth="Bearer " + KEY_AUTH,
        stderr="Authorization",
    ),
    Case(
        "H3-http-headers-authorization-without-credential",
        {C: SELECT + provider(f'http_headers = {{ Authorization = "Bearer {KEY_HEADER}" }}')},
        auth="Bearer " + KEY_HEADER,
    ),
    Case(
        "H4-api-key-header-without-authorization",
        {C: SELECT + provider('env_http_headers = { "api-key" = "AZ_KEY" }')},
        env={"AZ_KEY": KEY_ENV},
        auth=None,
        headers={"api-key": KEY_ENV},
    ),
    # --- system and managed layers (section 6) ---
    Case(
        "S1-system-config-selects-provider",
        {
            SYS: 'model_provider = "sys"\n' + provider(REQUIRES, name="sys", base="{url}/sys/v1"),
            A: AUTH_KEY,
        },
        path="/sys/v1/responses",
        auth="Bearer " + KEY_AUTH,
    ),
    Case(
        "S2-provider-table-only-in-system-config",
        {
            SYS: provider('env_key = "GW_KEY"', name="sys", base="{url}/sys/v1"),
            C: 'model_provider = "sys"\n',
        },
        env={"GW_KEY": KEY_ENV},
        path="/sys/v1/responses",
        auth="Bearer " + KEY_ENV,
    ),
    Case(
        "S3-user-config-beats-system",
        {
            SYS: 'model_provider = "sys"\n' + provider(REQUIRES, name="sys", base="{url}/sys/v1"),
            C: SELECT + provider(REQUIRES),
            A: AUTH_KEY,
        },
        auth="Bearer " + KEY_AUTH,
    ),
    Case(
        "S4-managed-config-overrides-the-choice",
        {
            C: SELECT + provider(REQUIRES),
            MAN: 'model_provider = "corp"\n'
            + provider('env_key = "CORP_KEY"', name="corp", base="{url}/corp/v1"),
            A: AUTH_KEY,
        },
        env={"CORP_KEY": KEY_ENV},
        path="/corp/v1/responses",
        auth="Bearer " + KEY_ENV,
    ),
    Case(
        "S5-managed-config-overrides-a-profile",
        {
            C: SELECT + provider(REQUIRES),
            "home/work.config.toml": '[model_providers.gw]\nbase_url = "{url}/prof/v1"\n',
            MAN: '[model_providers.gw]\nbase_url = "{url}/corp/v1"\n',
            A: AUTH_KEY,
        },
        args=["--profile", "work"],
        path="/corp/v1/responses",
        auth="Bearer " + KEY_AUTH,
    ),
    # --- project .codex/ folders never route the key (section 1 and 6) ---
    Case(
        "P1-project-model-provider-ignored",
        {
            C: SELECT + provider(REQUIRES),
            A: AUTH_KEY,
            "cwd/.codex/config.toml": 'model_provider = "evil"\n'
            + provider(REQUIRES, name="evil", base="{url}/evil/v1"),
        },
        auth="Bearer " + KEY_AUTH,
    ),
    Case(
        "P2-project-openai-base-url-ignored",
        {
            C: 'openai_base_url = "{url}/v1"\n',
            A: AUTH_KEY,
            "cwd/.codex/config.toml": 'openai_base_url = "{url}/evil/v1"\n',
        },
        auth="Bearer " + KEY_AUTH,
    ),
    Case(
        "P3-project-headers-and-query-ignored",
        {
            C: SELECT + provider(REQUIRES),
            A: AUTH_KEY,
            "cwd/.codex/config.toml": "[model_providers.gw]\n"
            'query_params = { leak = "1" }\nhttp_headers = { "x-project" = "1" }\n',
        },
        auth="Bearer " + KEY_AUTH,
        headers={"x-project": None},
    ),
    # --- what Codex refuses (section 6), and what the script cannot serve ---
    Case(
        "R1-wire-api-chat",
        {C: SELECT + provider('wire_api = "chat"\nenv_key = "GW_KEY"')},
        env={"GW_KEY": KEY_ENV},
        path=None,
        refused="wire_api",
    ),
    Case(
        "R2-wire-api-unknown",
        {C: SELECT + provider('wire_api = "grpc"\nenv_key = "GW_KEY"')},
        env={"GW_KEY": KEY_ENV},
        path=None,
        refused="wire_api",
    ),
    Case(
        "R3-undefined-provider-id",
        {C: 'model_provider = "nosuch"\n' + provider(REQUIRES), A: AUTH_KEY},
        path=None,
        refused="nosuch",
    ),
    Case(
        "R4-malformed-toml",
        {C: SELECT + "[model_providers.gw\n", A: AUTH_KEY},
        path=None,
        refused="invalid TOML",
    ),
    Case(
        "R5-non-string-query-value",
        {C: SELECT + provider(REQUIRES + "query_params = { n = 1 }"), A: AUTH_KEY},
        path=None,
        refused="must be a string",
    ),
    Case(
        "R6-unknown-provider-key-warned-and-ignored",
        {C: SELECT + provider(REQUIRES + 'env_kye = "TYPO"'), A: AUTH_KEY},
        auth="Bearer " + KEY_AUTH,
        stderr="env_kye",
    ),
    Case(
        "G1-gateway-oauth",
        {C: SELECT + provider('[model_providers.gw.gateway_oauth]\nissuer = "https://id.example"')},
        path=None,
        refused="gateway_oauth",
    ),
    Case(
        "G2-vertex-ai",
        {C: 'model_provider = "vertex"\n'},
        path=None,
        refused="Vertex AI",
    ),
    Case(
        "G2b-vertex-ai-provider-keys",
        {C: SELECT + provider('project_id = "p"\nlocation = "us-central1"')},
        path=None,
        refused="Vertex AI",
    ),
    Case(
        "G3-aws-on-a-custom-provider",
        {C: SELECT + provider('[model_providers.gw.aws]\nprofile = "work"')},
        path=None,
        refused="amazon-bedrock",
    ),
    # --- URL forming: a query inside base_url is kept as Codex keeps it ---
    Case(
        "U1-query-inside-base-url",
        {C: SELECT + provider(REQUIRES, base="{url}/v1?tenant=t1"), A: AUTH_KEY},
        path="/v1",
        query={"tenant": "t1/responses"},
        auth="Bearer " + KEY_AUTH,
        stderr="has a query",
    ),
]


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)


def materialise(case: Case, tmp_path: Path, url: str) -> dict[str, str]:
    for folder in ("home", "cwd", "system", "user"):
        (tmp_path / folder).mkdir(exist_ok=True)
    for rel, text in case.files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.replace("{url}", url).replace("{tmp}", str(tmp_path)), "utf-8")
        if rel.endswith(".sh"):
            path.chmod(0o755)
        elif rel.endswith("auth.json"):
            path.chmod(0o600)
    env = clean_env(**{g.SYSTEM_CONFIG_DIR_ENV: str(tmp_path / "system")})
    env.update({k: v.replace("{url}", url) for k, v in case.env.items()})
    if case.codex_home:
        env["CODEX_HOME"] = str(tmp_path / "home")
    else:
        env["HOME"] = env["USERPROFILE"] = str(tmp_path / "user")
    return env


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_codex_parity(case: Case, tmp_path: Path, gateway: Gateway) -> None:
    env = materialise(case, tmp_path, gateway.url)
    reply = sse_reply(image_events(images.b64(images.png_bytes(8, 8))))
    for path in ("/v1/responses", case.path or "/v1/responses"):
        gateway.set_default(reply, path=path)
    out = tmp_path / "cwd" / "o.png"
    args = ["--prompt", "p", "--out", str(out), "--retries", "0", *case.args]
    if case.dry_url:
        args.append("--dry-run")
    proc = run_cli(args, env, cwd=tmp_path / "cwd")
    seen = report(proc, gateway)
    for secret in SECRETS:
        assert secret not in proc.stdout + proc.stderr, seen
    assert "Traceback" not in proc.stderr, seen
    if case.dry_url:
        assert proc.returncode == 0, seen
        assert f"POST {case.dry_url}\n" in proc.stdout, seen
        assert gateway.requests == [], seen
        return
    if case.path is None:
        assert proc.returncode == 3, seen
        assert gateway.requests == [], seen
        assert proc.stderr.startswith("error: "), seen
        assert case.refused in proc.stderr, seen
        assert not out.exists()
        return
    assert proc.returncode == 0, seen
    assert len(gateway.requests) == 1, seen
    (rec,) = gateway.posts(case.path)
    assert rec.path == case.path, seen
    assert parse_qs(rec.raw_query, keep_blank_values=True) == {
        k: [v] for k, v in case.query.items()
    }, seen
    assert rec.header("authorization") == case.auth, seen
    for name, value in case.headers.items():
        assert rec.header(name) == value, (name, seen)
    assert case.stderr in proc.stderr, seen
    assert out.is_file()


def test_windows_layer_paths_follow_codex() -> None:
    """Codex on Windows: %ProgramData%\\OpenAI\\Codex\\config.toml, and managed_config.toml in
    the Codex home (no /etc). Checked through the path function, as this machine is Linux."""
    if os.name == "nt":
        system, managed = g.system_layer_paths("C:\\h", {"ProgramData": "D:\\PD"})
        assert system == "D:\\PD\\OpenAI\\Codex\\config.toml"
        assert managed == "C:\\h\\managed_config.toml"
    else:
        assert g.system_layer_paths("/h", {}) == (
            "/etc/codex/config.toml",
            "/etc/codex/managed_config.toml",
        )
    assert g.system_layer_paths("/h", {g.SYSTEM_CONFIG_DIR_ENV: "/t"}) == (
        os.path.join("/t", "config.toml"),
        os.path.join("/t", "managed_config.toml"),
    )
