"""End-to-end tests of the core CLI: configuration on the wire, the request body, prompt sources,
the output file, --json, --dry-run, --help and --version.

Every test runs ``generate_gateway_image.py`` as a subprocess (``run_cli``) against the loopback
test gateway, or with no network at all, and checks the exit code, stdout/stderr, the request(s)
the gateway recorded and the files on disk.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import generate_gateway_image as g
from tests import images
from tests.conftest import (
    PNG,
    ROOT,
    TEST_KEY,
    assert_no_secret,
    assert_ok,
    clean_env,
    decode_data_url,
    home_env,
    image_reply,
    leftovers,
    only_post,
    parse_json_stdout,
    run_cli,
    write_auth,
    write_codex_home,
    write_config,
)
from tests.gateway import (
    Gateway,
    Recorded,
    error_event,
    image_events,
    image_item,
    json_reply,
    response_obj,
    sse_reply,
)

TOOL_OPTION_KEYS = (
    "model",
    "quality",
    "background",
    "output_compression",
    "moderation",
    "input_fidelity",
    "input_image_mask",
    "n",
)


# --- helpers -------------------------------------------------------------------------------


def body_of(rec: Recorded) -> Any:
    assert (rec.header("content-type") or "").startswith("application/json")
    return json.loads(rec.body.decode("utf-8"))


# --- configuration as seen on the wire ---------------------------------------------------------


def test_custom_provider_query_headers_env_headers(tmp_path: Path, gateway: Gateway) -> None:
    home = write_codex_home(
        tmp_path / "ch",
        gateway.base_url + "/",  # trailing slash: still /v1/responses
        extra_provider=(
            'query_params = { "api-version" = "2025-04-01-preview", "foo" = "a b&c=d", '
            '"q" = "é/ü" }\n'
            'http_headers = { "X-Static" = "static-value" }\n'
            'env_http_headers = { "X-Env-Set" = "IMG_TEST_SET", '
            '"X-Env-Unset" = "IMG_TEST_UNSET", "X-Env-Blank" = "IMG_TEST_BLANK" }\n'
        ),
    )
    gateway.enqueue(image_reply())
    out = tmp_path / "o.png"
    env = clean_env(CODEX_HOME=str(home), IMG_TEST_SET="from-env", IMG_TEST_BLANK="  ")
    proc = run_cli(["--prompt", "a fox", "--out", str(out), "--retries", "0"], env)
    assert_ok(proc)
    rec = only_post(gateway)
    assert rec.method == "POST"
    assert rec.path == "/v1/responses"
    assert rec.raw_query.isascii() and " " not in rec.raw_query
    names = [part.split("=", 1)[0] for part in rec.raw_query.split("&")]
    assert names == ["api-version", "foo", "q"]
    assert rec.query == {"api-version": ["2025-04-01-preview"], "foo": ["a b&c=d"], "q": ["é/ü"]}
    assert rec.header("x-static") == "static-value"
    assert rec.header("x-env-set") == "from-env"
    assert rec.header("x-env-unset") is None
    assert rec.header("x-env-blank") is None
    assert rec.header("authorization") == f"Bearer {TEST_KEY}"
    assert out.read_bytes() == PNG
    assert_no_secret(proc)


PROFILE_BASE = """\
model_provider = "base"

[model_providers.base]
name = "base"
base_url = "{url}/base/v1"
requires_openai_auth = true
"""


@pytest.mark.parametrize(
    "profile_text",
    [
        # the profile switches to another provider
        'model_provider = "prof"\n\n[model_providers.prof]\nname = "prof"\n'
        'base_url = "{url}/prof/v1"\nhttp_headers = {{ "X-Profile" = "work" }}\n'
        "requires_openai_auth = true\n",  # else auth.json's key is not sent (Codex)
        # the profile only overrides keys of the same provider (deep merge)
        '[model_providers.base]\nbase_url = "{url}/prof/v1"\n'
        'http_headers = {{ "X-Profile" = "work" }}\n',
    ],
    ids=["other-provider", "same-provider"],
)
def test_profile_file_overrides_config(tmp_path: Path, gateway: Gateway, profile_text: str) -> None:
    home = tmp_path / "ch"
    write_config(home, PROFILE_BASE.format(url=gateway.url))
    write_config(home, profile_text.format(url=gateway.url), "work.config.toml")
    write_auth(home, {"OPENAI_API_KEY": TEST_KEY})
    gateway.enqueue(image_reply(), path="/prof/v1/responses")
    out = tmp_path / "o.png"
    proc = run_cli(
        ["--prompt", "p", "--out", str(out), "--profile", "work", "--retries", "0"],
        clean_env(CODEX_HOME=str(home)),
    )
    assert_ok(proc)
    rec = only_post(gateway)
    assert rec.path == "/prof/v1/responses"
    assert rec.header("x-profile") == "work"
    assert rec.header("authorization") == f"Bearer {TEST_KEY}"
    assert out.read_bytes() == PNG


@pytest.mark.parametrize("how", ["selector", "flag"])
def test_legacy_profiles_table(tmp_path: Path, gateway: Gateway, how: str) -> None:
    home = tmp_path / "ch"
    selector = 'profile = "old"\n' if how == "selector" else ""
    write_config(
        home,
        selector
        + PROFILE_BASE.format(url=gateway.url)
        + f'\n[model_providers.prof]\nname = "prof"\nbase_url = "{gateway.url}/prof/v1"\n'
        + "requires_openai_auth = true\n"  # else auth.json's key is not sent (Codex)
        + '\n[profiles.old]\nmodel_provider = "prof"\n',
    )
    write_auth(home, {"OPENAI_API_KEY": TEST_KEY})
    gateway.enqueue(image_reply(), path="/prof/v1/responses")
    out = tmp_path / "o.png"
    args = ["--prompt", "p", "--out", str(out), "--retries", "0"]
    if how == "flag":
        args += ["--profile", "old"]
    proc = run_cli(args, clean_env(CODEX_HOME=str(home)))
    assert_ok(proc)
    assert only_post(gateway).path == "/prof/v1/responses"
    assert out.read_bytes() == PNG


def test_builtin_openai_provider_with_openai_base_url(tmp_path: Path, gateway: Gateway) -> None:
    home = tmp_path / "ch"
    write_config(home, f'openai_base_url = "{gateway.base_url}"\n')
    write_auth(home, {"OPENAI_API_KEY": TEST_KEY})
    gateway.enqueue(image_reply())
    out = tmp_path / "o.png"
    proc = run_cli(
        ["--prompt", "p", "--out", str(out)],
        clean_env(CODEX_HOME=str(home), OPENAI_ORGANIZATION="org-test1"),
    )
    assert_ok(proc)
    rec = only_post(gateway)
    assert rec.path == "/v1/responses"
    assert rec.header("authorization") == f"Bearer {TEST_KEY}"
    assert rec.header("openai-organization") == "org-test1"
    assert out.read_bytes() == PNG


def test_base_url_and_header_overrides(tmp_path: Path, gateway: Gateway) -> None:
    home = write_codex_home(
        tmp_path / "ch",
        gateway.url + "/cfg/v1",
        extra_provider='http_headers = { "X-Team" = "from-config" }',
    )
    gateway.enqueue(image_reply(), path="/alt/v1/responses")
    out = tmp_path / "o.png"
    proc = run_cli(
        [
            "--prompt",
            "p",
            "--out",
            str(out),
            "--retries",
            "0",
            "--base-url",
            gateway.url + "/alt/v1/",
            "--header",
            "X-Extra: 1",
            "--header",
            "X-Team: from-cli",
        ],
        clean_env(CODEX_HOME=str(home)),
    )
    assert_ok(proc)
    rec = only_post(gateway)
    assert rec.path == "/alt/v1/responses"
    assert rec.header("x-extra") == "1"
    assert rec.header("x-team") == "from-cli"
    assert rec.header("authorization") == f"Bearer {TEST_KEY}"


# --- missing or broken configuration ---------------------------------------------------------


def test_no_configuration_at_all(tmp_path: Path, gateway: Gateway) -> None:
    out = tmp_path / "o.png"
    proc = run_cli(["--prompt", "p", "--out", str(out)], home_env(tmp_path))
    assert proc.returncode == 3, proc.stderr
    wanted = os.path.join(".codex", "config.toml")
    assert wanted in proc.stderr
    assert str(tmp_path / "home" / ".codex" / "config.toml") in proc.stderr
    assert "model_providers" in proc.stderr  # an example to copy
    assert "base_url" in proc.stderr
    # where the key goes, as Codex routes it: auth.json only with requires_openai_auth
    assert "env_key" in proc.stderr.splitlines()[0]
    assert "auth.json with requires_openai_auth = true" in proc.stderr.splitlines()[0]
    assert proc.stdout == ""
    assert gateway.requests == []
    assert not out.exists()
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "case", ["no-key", "env-key-missing", "malformed-toml", "unknown-provider"]
)
def test_configuration_errors_exit_3(tmp_path: Path, gateway: Gateway, case: str) -> None:
    home = tmp_path / "ch"
    expected: list[str]
    if case == "no-key":
        write_codex_home(home, gateway.base_url, key=None)
        expected = ["no API key"]
    elif case == "env-key-missing":
        write_codex_home(
            home,
            gateway.base_url,
            key=None,
            extra_provider=(
                'env_key = "GW_TEST_KEY"\n'
                'env_key_instructions = "Create a key at https://keys.example.test, '
                'then export GW_TEST_KEY"'
            ),
        )
        expected = ["GW_TEST_KEY", "Create a key at https://keys.example.test, then export"]
    elif case == "malformed-toml":
        write_config(
            home, f'model_provider = "gw"\n\n[model_providers.gw\nbase_url = "{gateway.base_url}"\n'
        )
        write_auth(home, {"OPENAI_API_KEY": TEST_KEY})
        expected = [str(home / "config.toml"), "line 3"]
    else:
        write_config(
            home,
            f'model_provider = "nosuch"\n\n[model_providers.gw]\nbase_url = "{gateway.base_url}"\n',
        )
        write_auth(home, {"OPENAI_API_KEY": TEST_KEY})
        expected = ["nosuch"]
    out = tmp_path / "o.png"
    proc = run_cli(["--prompt", "p", "--out", str(out)], clean_env(CODEX_HOME=str(home)))
    assert proc.returncode == 3, proc.stderr
    for text in expected:
        assert text in proc.stderr
    assert proc.stderr.startswith("error:")
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert gateway.requests == []
    assert not out.exists()
    assert_no_secret(proc)


# --- the request body on the wire ------------------------------------------------------------


def test_default_request(tmp_path: Path, gateway: Gateway, env: dict[str, str]) -> None:
    gateway.enqueue(image_reply())
    out = tmp_path / "o.png"
    proc = run_cli(["--prompt", "a red fox in snow", "--out", str(out)], env)
    assert_ok(proc)
    rec = only_post(gateway)
    body = body_of(rec)
    assert body["model"] == "gpt-5.5"
    assert body["input"] == [
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "a red fox in snow"}],
        }
    ]
    (tool,) = body["tools"]
    assert tool["type"] == "image_generation"
    assert tool["size"] == "1024x1024"
    assert tool.get("action", "auto") == "auto"
    assert tool.get("output_format", "png") == "png"
    for key in TOOL_OPTION_KEYS:
        assert key not in tool, key
    assert "n" not in body
    assert body["tool_choice"] == {"type": "image_generation"}
    assert body["store"] is False
    assert body["stream"] is True
    assert rec.header("accept") == "text/event-stream"
    assert (rec.header("user-agent") or "").strip()
    assert not (rec.header("user-agent") or "").startswith("Python-urllib")


@pytest.mark.parametrize(
    ("args", "extra_env", "expected"),
    [
        (["--model", "gpt-cli-model"], {}, "gpt-cli-model"),
        ([], {"CODEX_IMAGEGEN_MODEL": "gpt-env-model"}, "gpt-env-model"),
        (["--model", "gpt-cli-model"], {"CODEX_IMAGEGEN_MODEL": "gpt-env-model"}, "gpt-cli-model"),
    ],
    ids=["flag", "env", "flag-beats-env"],
)
def test_model_selection(
    tmp_path: Path,
    gateway: Gateway,
    codex_home: Path,
    args: list[str],
    extra_env: dict[str, str],
    expected: str,
) -> None:
    gateway.enqueue(image_reply())
    out = tmp_path / "o.png"
    proc = run_cli(
        ["--prompt", "p", "--out", str(out), *args],
        clean_env(CODEX_HOME=str(codex_home), **extra_env),
    )
    assert_ok(proc)
    assert body_of(only_post(gateway))["model"] == expected


def test_no_stream_request(tmp_path: Path, gateway: Gateway, env: dict[str, str]) -> None:
    gateway.enqueue(json_reply(response_obj([image_item(images.b64(PNG))])))
    out = tmp_path / "o.png"
    proc = run_cli(["--prompt", "p", "--out", str(out), "--no-stream"], env)
    assert_ok(proc)
    rec = only_post(gateway)
    assert body_of(rec)["stream"] is False
    assert "event-stream" not in (rec.header("accept") or "")
    assert out.read_bytes() == PNG


def test_full_request_with_images_mask_and_options(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    png = images.png_bytes(32, 32)
    jpeg = images.jpeg_bytes(24, 16)
    mask = images.png_bytes(32, 32, alpha=True)
    (tmp_path / "ref.png").write_bytes(png)
    (tmp_path / "ref.jpg").write_bytes(jpeg)
    (tmp_path / "mask.png").write_bytes(mask)
    remote = gateway.url + "/static/ref.png"  # passed through, never fetched by the script
    served = images.webp_bytes(32, 32)
    gateway.enqueue(image_reply(served, output_format="webp"))
    out = tmp_path / "result.img"  # no known extension: the format comes from --format
    proc = run_cli(
        [
            "--prompt",
            "make it night",
            "--out",
            str(out),
            "--image",
            str(tmp_path / "ref.png"),
            "--image",
            str(tmp_path / "ref.jpg"),
            "--image-url",
            remote,
            "--detail",
            "high",
            "--mask",
            str(tmp_path / "mask.png"),
            "--quality",
            "high",
            "--background",
            "opaque",
            "--compression",
            "50",
            "--moderation",
            "low",
            "--input-fidelity",
            "high",
            "--image-model",
            "gpt-image-1.5",
            "--format",
            "webp",
        ],
        env,
    )
    assert_ok(proc)
    rec = only_post(gateway)
    assert rec.path == "/v1/responses"  # the remote reference URL was not fetched
    body = body_of(rec)
    (message,) = body["input"]
    assert message["role"] == "user"
    content = message["content"]
    assert [part["type"] for part in content] == [
        "input_text",
        "input_image",
        "input_image",
        "input_image",
    ]
    assert content[0]["text"] == "make it night"
    assert decode_data_url(content[1]["image_url"], "image/png") == png
    assert decode_data_url(content[2]["image_url"], "image/jpeg") == jpeg
    assert content[3]["image_url"] == remote
    assert [part["detail"] for part in content[1:]] == ["high", "high", "high"]
    (tool,) = body["tools"]
    assert tool["type"] == "image_generation"
    assert tool["model"] == "gpt-image-1.5"
    assert tool["quality"] == "high"
    assert tool["background"] == "opaque"
    assert tool["output_compression"] == 50
    assert tool["moderation"] == "low"
    assert tool["input_fidelity"] == "high"
    assert tool["output_format"] == "webp"
    assert "n" not in tool and "n" not in body
    assert decode_data_url(tool["input_image_mask"]["image_url"], "image/png") == mask
    assert body["tool_choice"] == {"type": "image_generation"}
    assert body["store"] is False
    assert body["stream"] is True
    assert out.read_bytes() == served


# --- prompt sources --------------------------------------------------------------------------


def test_prompt_from_stdin(tmp_path: Path, gateway: Gateway, env: dict[str, str]) -> None:
    gateway.enqueue(image_reply())
    out = tmp_path / "o.png"
    proc = run_cli(
        ["--prompt", "-", "--out", str(out)], env, input="a lighthouse, read from stdin\n"
    )
    assert_ok(proc)
    content = body_of(only_post(gateway))["input"][0]["content"]
    assert content[0] == {"type": "input_text", "text": "a lighthouse, read from stdin"}


def test_prompt_file_utf8(tmp_path: Path, gateway: Gateway, env: dict[str, str]) -> None:
    text = "Ein Fuchs im Schnee — 狐狸 🦊, café crème\nzweite Zeile: «ñ»"
    prompt_file = tmp_path / "brief.txt"
    prompt_file.write_bytes(text.encode("utf-8"))
    gateway.enqueue(image_reply())
    out = tmp_path / "o.png"
    proc = run_cli(["--prompt-file", str(prompt_file), "--out", str(out)], env)
    assert_ok(proc)
    content = body_of(only_post(gateway))["input"][0]["content"]
    assert content[0]["text"] == text


@pytest.mark.parametrize("case", ["both", "none", "empty", "blank-stdin", "empty-file"])
def test_prompt_errors_exit_2(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], case: str
) -> None:
    prompt_file = tmp_path / "brief.txt"
    prompt_file.write_text("" if case == "empty-file" else "a fox", encoding="utf-8")
    out = tmp_path / "o.png"
    stdin: str | None = None
    args = {
        "both": ["--prompt", "a fox", "--prompt-file", str(prompt_file)],
        "none": [],
        "empty": ["--prompt", ""],
        "blank-stdin": ["--prompt", "-"],
        "empty-file": ["--prompt-file", str(prompt_file)],
    }[case]
    if case == "blank-stdin":
        stdin = "  \n\t\n"
    proc = run_cli([*args, "--out", str(out)], env, input=stdin)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error:")
    assert "prompt" in proc.stderr.lower()
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert gateway.requests == []
    assert not out.exists()
    assert leftovers(tmp_path) == []


# --- output ----------------------------------------------------------------------------------


def test_saves_image_creating_parent_folders(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    gateway.enqueue(image_reply())
    out = tmp_path / "a" / "b" / "c" / "fox.png"
    proc = run_cli(["--prompt", "p", "--out", str(out)], env)
    assert_ok(proc)
    assert proc.stdout == f"{out}\n"
    assert out.read_bytes() == PNG
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in out.parent.iterdir()) == ["fox.png"]
    assert_no_secret(proc)


def test_existing_out_refused_then_force_replaces(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    out = tmp_path / "fox.png"
    out.write_bytes(b"old content")
    gateway.set_default(image_reply())
    proc = run_cli(["--prompt", "p", "--out", str(out)], env)
    assert proc.returncode == 7, proc.stderr
    assert "exists" in proc.stderr
    assert "--force" in proc.stderr
    assert proc.stdout == ""
    assert gateway.requests == []
    assert out.read_bytes() == b"old content"

    proc = run_cli(["--prompt", "p", "--out", str(out), "--force"], env)
    assert_ok(proc)
    assert proc.stdout == f"{out}\n"
    assert len(gateway.posts()) == 1
    assert out.read_bytes() == PNG
    assert leftovers(tmp_path) == []


def test_out_is_a_directory(tmp_path: Path, gateway: Gateway, env: dict[str, str]) -> None:
    out = tmp_path / "folder"
    out.mkdir()
    gateway.set_default(image_reply())
    proc = run_cli(["--prompt", "p", "--out", str(out), "--force"], env)
    assert proc.returncode == 7, proc.stderr
    assert "directory" in proc.stderr
    assert proc.stdout == ""
    assert gateway.requests == []
    assert out.is_dir() and list(out.iterdir()) == []
    assert leftovers(tmp_path) == []


def test_json_output(tmp_path: Path, gateway: Gateway, env: dict[str, str]) -> None:
    served = images.png_bytes(48, 32)
    gateway.enqueue(
        image_reply(served, revised_prompt="a fox in deep snow, revised", resp_id="resp_json1")
    )
    out = tmp_path / "fox.png"
    proc = run_cli(["--prompt", "a fox", "--out", str(out), "--json"], env)
    assert_ok(proc)
    assert proc.stdout.count("\n") == 1 and proc.stdout.endswith("\n")
    data = parse_json_stdout(proc)
    assert isinstance(data, dict)
    assert data["path"] == str(out)
    assert data["revised_prompt"] == "a fox in deep snow, revised"
    assert data["response_id"] == "resp_json1"
    assert data["size"] == "48x32"
    assert data["format"] == "png"
    assert data["bytes"] == len(served)
    assert isinstance(data["elapsed_seconds"], (int, float)) and data["elapsed_seconds"] >= 0
    assert out.read_bytes() == served
    assert leftovers(tmp_path) == []
    assert_no_secret(proc)


def test_jpeg_bytes_for_png_name_keeps_path_and_warns(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    jpeg = images.jpeg_bytes(32, 24)
    gateway.enqueue(image_reply(jpeg, output_format="jpeg"))
    out = tmp_path / "x.png"
    proc = run_cli(["--prompt", "p", "--out", str(out)], env)
    assert_ok(proc)
    assert proc.stdout == f"{out}\n"
    assert out.read_bytes() == jpeg
    assert "warning" in proc.stderr
    assert "JPEG" in proc.stderr and "PNG" in proc.stderr
    assert leftovers(tmp_path) == []


def test_format_from_out_extension(tmp_path: Path, gateway: Gateway, env: dict[str, str]) -> None:
    served = images.webp_bytes(1024, 1024)  # the requested size: no size warning either
    gateway.enqueue(image_reply(served, output_format="webp"))
    out = tmp_path / "a.webp"
    proc = run_cli(["--prompt", "p", "--out", str(out)], env)
    assert_ok(proc)
    (tool,) = body_of(only_post(gateway))["tools"]
    assert tool["output_format"] == "webp"
    assert out.read_bytes() == served
    assert "warning" not in proc.stderr


# --- dry run ---------------------------------------------------------------------------------


def dry_run_body(stdout: str) -> Any:
    """The JSON body printed by --dry-run: everything from the first line that is '{'."""
    lines = stdout.splitlines()
    start = lines.index("{")
    return json.loads("\n".join(lines[start:]))


def test_dry_run_redacts_key_and_sends_nothing(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    out = tmp_path / "o.png"
    proc = run_cli(["--prompt", "a fox", "--out", str(out), "--dry-run"], env)
    assert_ok(proc)
    assert gateway.requests == []
    assert not out.exists()
    assert gateway.base_url + "/responses" in proc.stdout
    auth = [ln for ln in proc.stdout.splitlines() if ln.lower().startswith("authorization:")]
    assert len(auth) == 1
    assert auth[0] == "Authorization: Bearer ***"
    assert_no_secret(proc)
    body = dry_run_body(proc.stdout)
    assert body["model"] == "gpt-5.5"
    assert body["input"][0]["content"][0]["text"] == "a fox"
    assert body["tools"][0]["type"] == "image_generation"
    assert body["stream"] is True


def test_dry_run_shortens_image_base64(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    big = images.png_bytes(260, 260, noise=True)
    assert len(big) > 200_000
    ref = tmp_path / "big.png"
    ref.write_bytes(big)
    encoded = images.b64(big)
    proc = run_cli(["--prompt", "p", "--image", str(ref), "--dry-run"], env)
    assert_ok(proc)
    assert gateway.requests == []
    assert len(proc.stdout) * 20 < len(encoded)
    assert encoded[100:300] not in proc.stdout
    body = dry_run_body(proc.stdout)
    assert body["input"][0]["content"][1]["type"] == "input_image"


def test_dry_run_without_config_or_key(tmp_path: Path) -> None:
    proc = run_cli(["--prompt", "p", "--dry-run"], home_env(tmp_path))
    assert_ok(proc)
    assert "/responses" in proc.stdout
    assert not any(ln.lower().startswith("authorization:") for ln in proc.stdout.splitlines())
    assert dry_run_body(proc.stdout)["model"] == "gpt-5.5"


# --- help, version, console script -----------------------------------------------------------


def test_help() -> None:
    proc = run_cli(["--help"])
    assert_ok(proc)
    text = proc.stdout.lower()
    assert "examples" in text
    assert "exit codes" in text
    for flag in ("--prompt", "--out", "--dry-run", "--base-url"):
        assert flag in proc.stdout


def test_version() -> None:
    proc = run_cli(["--version"])
    assert_ok(proc)
    assert g.__version__ in proc.stdout


def test_console_script_entry_point() -> None:
    code = "import generate_gateway_image as g; raise SystemExit(g.main(['--version']))"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=str(ROOT),
        env=clean_env(),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert g.__version__ in proc.stdout


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_saved_image_has_normal_permissions(
    gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> None:
    """The temporary file is renamed into place: it must not stay owner-only (umask applies)."""
    gateway.enqueue(sse_reply(image_events(images.b64(images.png_bytes(8, 8)))))
    out = tmp_path / "perm.png"
    old = os.umask(0o022)
    try:
        proc = run_cli(["--prompt", "x", "--out", str(out)], env)
    finally:
        os.umask(old)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_mode & 0o777 == 0o644


# --- odd configuration files ----------------------------------------------------------------------


def test_utf16_config_is_exit_3_not_a_crash(tmp_path: Path, gateway: Gateway) -> None:
    home = tmp_path / "ch"
    home.mkdir()
    text = f'model_provider = "gw"\n[model_providers.gw]\nbase_url = "{gateway.base_url}"\n'
    (home / "config.toml").write_bytes(text.encode("utf-16"))
    proc = run_cli(
        ["--prompt", "p", "--out", str(tmp_path / "o.png")],
        clean_env(CODEX_HOME=str(home), CODEX_API_KEY=TEST_KEY),
    )
    assert proc.returncode == 3, proc.stderr
    assert "not UTF-8" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert gateway.requests == []


# --- usage errors found before anything is sent -------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prompt", "p"], "error: no --out given\n  hint: pass --out PATH for the image file"),
        (["--resume", "resp_abc123"], "error: --resume needs --out PATH for the image"),
        (
            ["--prompt", "p", "--out", "o.png", "--out-dir", "d"],
            "error: --out-dir is for --batch; use --out for a single image",
        ),
        (["--prompt", "p", "--out", "o.png", "--retries", "-1"], "error: --retries must be 0"),
        (
            ["--prompt", "p", "--out", "o.png", "--resumable", "--api", "images"],
            "error: --resumable needs --api responses: the Images API has no background mode",
        ),
        (
            [
                "--prompt",
                "p",
                "--out",
                "o.png",
                "--api",
                "images",
                "--image-url",
                "https://x/a.png",
            ],
            "error: --api images cannot send --image-url references; download them first",
        ),
    ],
    ids=[
        "no-out",
        "resume-no-out",
        "out-dir-alone",
        "negative-retries",
        "resumable-images",
        "images-image-url",
    ],
)
def test_usage_errors_exit_2_before_sending(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], args: list[str], message: str
) -> None:
    proc = run_cli(args, env, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(message), proc.stderr
    assert proc.stdout == ""
    assert gateway.requests == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codex-home"]


@pytest.mark.parametrize("action", ["generate", "edit"])
def test_edit_from_keeps_an_explicit_action(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], action: str
) -> None:
    ref = tmp_path / "in.png"
    ref.write_bytes(images.png_bytes(30, 20))
    args = ["--prompt", "p", "--out", str(tmp_path / "o.png"), "--edit-from", str(ref)]
    proc = run_cli([*args, "--dry-run", "--action", action], env)
    assert_ok(proc)
    assert dry_run_body(proc.stdout)["tools"][0]["action"] == action
    auto = run_cli([*args, "--dry-run"], env)  # --edit-from alone makes it an edit
    assert dry_run_body(auto.stdout)["tools"][0]["action"] == "edit"


def test_json_after_a_double_dash_is_not_an_option(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    # "--" ends the options: the parse error that follows is plain text, not a JSON record
    assert g.json_requested(["--prompt", "p", "--json"]) is True
    assert g.json_requested(["--prompt", "p", "--", "--json"]) is False
    proc = run_cli(["--prompt", "p", "--out", str(tmp_path / "o.png"), "--", "--json"], env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: unrecognized arguments: -- --json"), proc.stderr
    assert proc.stdout == ""
    assert gateway.requests == []


# --- main() where a subprocess cannot take it: embedded use, a bug, odd output streams --------


def test_main_from_a_thread_leaves_signals_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Embedded use: signal handlers can only be set in the main thread, so main() run from
    another thread does without (and still reports its outcome)."""
    import signal
    import threading

    before = signal.getsignal(signal.SIGTERM)
    codes: list[int] = []
    worker = threading.Thread(target=lambda: codes.append(g.main(["--prompt", "p"])))
    worker.start()
    worker.join(30)
    assert codes == [g.EXIT_USAGE]
    assert "error: no --out given" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("verbose", [False, True])
def test_a_bug_is_one_line_and_a_json_record(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], verbose: bool
) -> None:
    """An unexpected exception (a bug) is exit 1 with one line, the traceback only with
    --verbose; --json still gets its record."""

    def broken(args: Any, console: Any) -> int:
        raise RuntimeError("a bug in the run")

    monkeypatch.setattr(g, "run", broken)
    code = g.main(["--prompt", "p", "--json", *(["--verbose"] if verbose else [])])
    out, err = capsys.readouterr()
    assert code == g.EXIT_INTERNAL == 1
    assert (
        "error: internal error: RuntimeError: a bug in the run (rerun with --verbose and "
        "report it)" in err
    )
    assert ("Traceback (most recent call last)" in err) == verbose
    record = json.loads(out)
    assert record == {
        "ok": False,
        "exit_code": 1,
        "error": "internal error: RuntimeError: a bug in the run",
        "hint": "rerun with --verbose and report it",
    }


def test_utf8_output_leaves_streams_it_cannot_reconfigure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An embedding host's stdout may have no reconfigure() (a StringIO), or be closed: both
    are left as they are, without an error."""
    import io

    text = io.StringIO()
    closed = io.TextIOWrapper(io.BytesIO(), encoding="latin-1")
    closed.close()
    monkeypatch.setattr(sys, "stdout", text)
    monkeypatch.setattr(sys, "stderr", closed)
    g.utf8_output()
    assert sys.stdout is text and sys.stderr is closed
    assert closed.encoding == "latin-1"
    piped = io.TextIOWrapper(io.BytesIO(), encoding="latin-1")
    monkeypatch.setattr(sys, "stderr", piped)
    g.utf8_output()
    assert piped.encoding == "utf-8"  # a pipe (not a terminal) is switched to UTF-8


@pytest.mark.parametrize("after", ["error-event", "malformed-stream"])
def test_an_error_after_the_image_keeps_the_image(
    tmp_path: Path, gateway: Gateway, env: dict[str, str], after: str
) -> None:
    """The gateway sends the whole image, then an error event, or a stream line over the
    8 MiB cap (our GatewayError while reading): the image is paid for and saved (exit 0),
    and nothing is retried (a retry would be billed again)."""
    events: list[Any] = image_events(images.b64(PNG))
    done = next(i for i, e in enumerate(events) if e["type"] == "response.output_item.done")
    if after == "error-event":
        tail: Any = error_event("server_error", "the renderer fell over")
    else:
        tail = b"event: " + b"x" * (9 * 1024 * 1024) + b"\n\n"
    gateway.set_default(sse_reply([*events[: done + 1], tail, *events[done + 1 :]]))
    out = tmp_path / "o.png"
    proc = run_cli(["--prompt", "p", "--out", str(out)], env)
    assert_ok(proc)
    assert proc.stdout == f"{out}\n"
    assert out.read_bytes() == PNG
    only_post(gateway)
    assert leftovers(tmp_path) == []


def test_a_second_image_whose_name_is_taken(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    """The answer holds a second, different image, and OUT-2 already exists: the user's file
    stays, the main image is saved (exit 0) and a warning says what became of the second."""
    other = images.png_bytes(24, 24, noise=True, seed=3)
    gateway.enqueue(
        json_reply(
            response_obj(
                [
                    image_item(images.b64(PNG), item_id="ig_1"),
                    image_item(images.b64(other), item_id="ig_2"),
                ]
            )
        )
    )
    out, taken = tmp_path / "o.png", tmp_path / "o-2.png"
    taken.write_bytes(b"mine")
    proc = run_cli(["--prompt", "p", "--out", str(out), "--no-stream"], env)
    assert_ok(proc)
    assert out.read_bytes() == PNG
    assert taken.read_bytes() == b"mine"
    # the second image went to a rescue file, which stdout names after the main image
    main, rescue = proc.stdout.splitlines()
    try:
        assert main == str(out)
        assert Path(rescue).read_bytes() == other
        assert f"warning: a second image: could not write {taken}: {g.NAME_TAKEN}" in proc.stderr
        assert f"the image was saved to {rescue}" in proc.stderr
    finally:
        Path(rescue).unlink()
    assert leftovers(tmp_path) == []
