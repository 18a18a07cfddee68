"""--dry-run names what a real run of the same command would refuse (no key
resolved, an existing --out without --force, a provider that routes no credential) as warning
lines, and still exits 0; with --json it prints one object that lists them."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import TEST_KEY, clean_env, run_cli, write_codex_home
from tests.gateway import Gateway


def warnings_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning: a real run stops")]


def test_clean_dry_run_has_no_warning(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    proc = run_cli(["--prompt", "p", "--out", str(tmp_path / "o.png"), "--dry-run"], env)
    assert proc.returncode == 0, proc.stderr
    assert warnings_of(proc.stderr) == []
    assert gateway.requests == []


def test_missing_key_variable(tmp_path: Path, gateway: Gateway) -> None:
    home = write_codex_home(
        tmp_path / "ch", gateway.base_url, key=None, extra_provider='env_key = "GW_TEST_KEY"'
    )
    proc = run_cli(
        ["--prompt", "p", "--out", str(tmp_path / "o.png"), "--dry-run"],
        clean_env(CODEX_HOME=str(home)),
    )
    assert proc.returncode == 0, proc.stderr
    (line,) = warnings_of(proc.stderr)
    assert "(exit 3)" in line and "GW_TEST_KEY" in line
    real = run_cli(
        ["--prompt", "p", "--out", str(tmp_path / "o.png")], clean_env(CODEX_HOME=str(home))
    )
    assert real.returncode == 3  # the warning told the truth


def test_provider_that_routes_no_credential(tmp_path: Path, gateway: Gateway) -> None:
    home = tmp_path / "ch"
    home.mkdir()
    (home / "config.toml").write_text(
        f'model_provider = "gw"\n[model_providers.gw]\nbase_url = "{gateway.base_url}"\n',
        encoding="utf-8",
    )
    env = clean_env(CODEX_HOME=str(home), CODEX_API_KEY=TEST_KEY)
    proc = run_cli(["--prompt", "p", "--out", str(tmp_path / "o.png"), "--dry-run"], env)
    assert proc.returncode == 0, proc.stderr
    (line,) = warnings_of(proc.stderr)
    assert "(exit 3)" in line and "requires_openai_auth" in line
    assert TEST_KEY not in proc.stdout + proc.stderr


def test_no_configuration(tmp_path: Path) -> None:
    env = clean_env(HOME=str(tmp_path / "home"), USERPROFILE=str(tmp_path / "home"))
    proc = run_cli(["--prompt", "p", "--out", str(tmp_path / "o.png"), "--dry-run"], env)
    assert proc.returncode == 0, proc.stderr
    (line,) = warnings_of(proc.stderr)
    assert "(exit 3)" in line and "no Codex configuration" in line


def test_existing_out_without_force(tmp_path: Path, gateway: Gateway, env: dict[str, str]) -> None:
    out = tmp_path / "o.png"
    out.write_bytes(b"mine")
    proc = run_cli(["--prompt", "p", "--out", str(out), "--dry-run"], env)
    assert proc.returncode == 0, proc.stderr
    (line,) = warnings_of(proc.stderr)
    assert "(exit 7)" in line and "already exists" in line and "--force" in line
    forced = run_cli(["--prompt", "p", "--out", str(out), "--dry-run", "--force"], env)
    assert forced.returncode == 0 and warnings_of(forced.stderr) == []
    assert out.read_bytes() == b"mine"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "codex-home") == ["o.png"]


def test_existing_batch_output(tmp_path: Path, gateway: Gateway, env: dict[str, str]) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "fox.png").write_bytes(b"mine")
    batch = tmp_path / "jobs.jsonl"
    batch.write_text('{"prompt": "a", "out": "fox.png"}\n{"prompt": "b"}\n', encoding="utf-8")
    proc = run_cli(["--batch", str(batch), "--out-dir", str(tmp_path / "out"), "--dry-run"], env)
    assert proc.returncode == 0, proc.stderr
    assert any("fox.png" in line and "(exit 7)" in line for line in warnings_of(proc.stderr))


def test_dry_run_json_is_one_object(tmp_path: Path, gateway: Gateway) -> None:
    home = write_codex_home(
        tmp_path / "ch", gateway.base_url, key=None, extra_provider='env_key = "GW_TEST_KEY"'
    )
    out = tmp_path / "o.png"
    out.write_bytes(b"mine")
    proc = run_cli(
        ["--prompt", "p", "--out", str(out), "--dry-run", "--json"],
        clean_env(CODEX_HOME=str(home)),
    )
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stdout.splitlines()
    record = json.loads(line)
    assert record["ok"] is True and record["exit_code"] == 0 and record["dry_run"] is True
    assert record["url"] == gateway.base_url + "/responses"
    assert record["body"]["tools"][0]["size"] == "1024x1024"
    assert len(record["warnings"]) == 2
    assert any("(exit 3)" in w for w in record["warnings"])
    assert any("(exit 7)" in w for w in record["warnings"])


def test_dry_run_json_masks_the_key(tmp_path: Path, gateway: Gateway, env: dict[str, str]) -> None:
    proc = run_cli(["--prompt", "p", "--out", str(tmp_path / "o.png"), "--dry-run", "--json"], env)
    record = json.loads(proc.stdout)
    assert record["headers"]["Authorization"].startswith("Bearer ")
    assert TEST_KEY not in proc.stdout + proc.stderr
    assert record["warnings"] == []


def test_config_without_any_key(tmp_path: Path, gateway: Gateway) -> None:
    # a configuration is there, its provider wants a key, nothing supplies one
    home = write_codex_home(tmp_path / "ch", gateway.base_url, key=None)
    env = clean_env(CODEX_HOME=str(home))
    proc = run_cli(["--prompt", "p", "--out", str(tmp_path / "o.png"), "--dry-run"], env)
    assert proc.returncode == 0, proc.stderr
    (line,) = warnings_of(proc.stderr)
    assert line.startswith(
        "warning: a real run stops here (exit 3): no API key found for provider 'gw'; hint: "
    ), line
    assert "set CODEX_API_KEY" in line
    real = run_cli(["--prompt", "p", "--out", str(tmp_path / "o.png")], env)
    assert real.returncode == 3, real.stderr
    assert gateway.requests == []


def test_existing_sidecar_without_force(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    out = tmp_path / "o.png"
    (tmp_path / "o.png.json").write_text('{"mine": true}', encoding="utf-8")
    args = ["--prompt", "p", "--out", str(out), "--dry-run"]
    assert warnings_of(run_cli(args, env).stderr) == []  # no --sidecar: it is not written
    proc = run_cli([*args, "--sidecar"], env)
    assert proc.returncode == 0, proc.stderr
    (line,) = warnings_of(proc.stderr)
    assert "(exit 7)" in line and "o.png.json" in line
    assert (tmp_path / "o.png.json").read_text(encoding="utf-8") == '{"mine": true}'
    assert not out.exists()


def test_existing_variant_output(tmp_path: Path, gateway: Gateway, env: dict[str, str]) -> None:
    (tmp_path / "v-2.png").write_bytes(b"mine")
    args = ["--prompt", "p", "--out", str(tmp_path / "v.png"), "--n", "2"]
    proc = run_cli([*args, "--dry-run"], env)
    assert proc.returncode == 0, proc.stderr
    (line,) = warnings_of(proc.stderr)
    assert "(exit 7)" in line and "v-2.png" in line and "v-1.png" not in line
    real = run_cli(args, env)
    assert real.returncode == 7, real.stderr  # the warning told the truth
    assert gateway.requests == []


def test_resume_dry_run_shows_the_fetch(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    """--resume only fetches: the dry run shows that GET (no body, no Content-Type); without
    --out it says a real run would stop, with --out it has nothing to say."""
    out = tmp_path / "o.png"
    proc = run_cli(["--resume", "resp_abc123", "--out", str(out), "--dry-run"], env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"GET {gateway.base_url}/responses/resp_abc123\n"), proc.stdout
    assert "Accept: application/json" in proc.stdout
    assert "Content-Type" not in proc.stdout
    assert warnings_of(proc.stderr) == []
    no_out = run_cli(["--resume", "resp_abc123", "--dry-run"], env)
    assert no_out.returncode == 0, no_out.stderr
    assert warnings_of(no_out.stderr) == ["warning: a real run stops here (exit 2): no --out given"]
    assert gateway.requests == []
    assert not out.exists()
