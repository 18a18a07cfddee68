"""--doctor and --doctor --probe: the gateway check, what it prints for a healthy, unauthenticated
or unreachable gateway and for a refused probe, and that it sends no paid request unless asked."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import (
    TEST_KEY,
    assert_no_secret,
    assert_ok,
    clean_env,
    closed_port,
    image_reply,
    run_cli,
    write_codex_home,
)
from tests.gateway import Gateway, Reply, error_reply, json_reply


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
