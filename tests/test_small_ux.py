"""Issue 19, item 8's small things a new user met: batch lines refused for an existing output say
--force; the doctor says "models listed" (relays list models for a wrong key), never "key
accepted"."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli
from tests.gateway import Gateway, json_reply


def test_batch_refusal_for_existing_output_names_force(
    tmp_path: Path, gateway: Gateway, env: dict[str, str]
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "fox.png").write_bytes(b"mine")
    batch = tmp_path / "jobs.jsonl"
    batch.write_text('{"prompt": "a", "out": "fox.png"}\n{"prompt": "b"}\n', encoding="utf-8")
    proc = run_cli(["--batch", str(batch), "--out-dir", str(out_dir)], env)
    assert proc.returncode == 7, proc.stderr
    line = [x for x in proc.stderr.splitlines() if "fox.png" in x]
    assert line and "--force" in line[0], proc.stderr
    assert "hint: pass --force" in proc.stderr
    assert gateway.requests == []
    as_json = run_cli(["--batch", str(batch), "--out-dir", str(out_dir), "--json"], env)
    assert "--force" in json.loads(as_json.stdout)["hint"]


def test_doctor_says_models_listed(gateway: Gateway, env: dict[str, str]) -> None:
    gateway.set_default(json_reply({"object": "list", "data": []}), path="/v1/models")
    proc = run_cli(["--doctor"], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    models = [line for line in proc.stdout.splitlines() if line.split()[1:2] == ["models"]]
    assert models and "models listed" in models[0], proc.stdout
    assert "key accepted" not in proc.stdout
