"""What agents read: SKILL.md, the MCP install lines in README.md, --help and the sandbox rows of
references/troubleshooting.md, checked against what Codex and Claude Code need."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from tests.conftest import ROOT, assert_ok, clean_env, run_cli

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.9/3.10
    import tomli as tomllib

SKILL = (ROOT / "SKILL.md").read_text(encoding="utf-8")
README = (ROOT / "README.md").read_text(encoding="utf-8")
TROUBLE = (ROOT / "references" / "troubleshooting.md").read_text(encoding="utf-8")


def front_matter(text: str) -> dict[str, str]:
    head = text.split("---", 2)[1]
    return dict(line.split(": ", 1) for line in head.strip().splitlines())


def test_skill_description_names_a_condition_the_model_can_see() -> None:
    meta = front_matter(SKILL)
    assert meta["name"] == "codex-gateway-imagegen"
    assert "no image_gen tool in your tool list" in meta["description"]


def test_skill_finds_the_script_beside_itself() -> None:
    assert "$HOME/.codex/skills" not in SKILL and "~/.codex/skills/codex-gateway" not in SKILL
    assert "folder of" in SKILL or "same folder as this" in SKILL
    assert "${CLAUDE_SKILL_DIR}" in SKILL and ".claude/skills/" in SKILL
    assert "py -3" in SKILL  # Windows, where python3 is often a Store stub
    commands = [line for line in SKILL.splitlines() if "generate_gateway_image.py" in line]
    assert commands and all("<skill>" in c for c in commands if c.startswith(("python", "py ")))


def test_skill_says_how_to_wait_and_what_works_in_the_sandbox() -> None:
    words = " ".join(SKILL.split())
    assert "keep polling" in words and "Never start the same request again" in words
    assert "generous timeout" not in words
    for fix in (
        "sandbox_workspace_write.network_access=true",
        "--sandbox danger-full-access",
        "read-only file system",
        "approval policy is `never`",
    ):
        assert fix in words, fix
    assert "codex mcp add imagegen -- python3" in SKILL and "--mcp" in SKILL


def test_readme_install_lines_work_as_written() -> None:
    assert re.search(
        r"codex mcp add imagegen -- python3 \S+generate_gateway_image\.py --mcp", README
    )
    assert re.search(
        r"claude mcp add imagegen -- python3 \S+generate_gateway_image\.py --mcp", README
    )
    block = re.search(r"```toml\n(\[mcp_servers\.imagegen\].*?)```", README, re.S)
    assert block, "the [mcp_servers.imagegen] example"
    entry = tomllib.loads(block.group(1))["mcp_servers"]["imagegen"]
    assert entry["command"] == "python3"
    assert entry["args"][0].endswith("generate_gateway_image.py") and entry["args"][1:] == ["--mcp"]
    assert entry["env_vars"] == ["GATEWAY_API_KEY"]  # Codex gives MCP servers a minimal env
    assert entry["default_tools_approval_mode"] == "approve"  # codex exec cannot ask
    assert entry["tool_timeout_sec"] >= 300  # the ~60 s default is shorter than a render


def test_help_shows_the_mcp_mode_and_the_sandbox_advice() -> None:
    proc = run_cli(["--help"])
    assert proc.returncode == 0
    assert "--mcp" in proc.stdout and "codex mcp add imagegen" in proc.stdout
    assert "claude mcp add imagegen" in proc.stdout and "read-only file" in proc.stdout


def test_troubleshooting_has_the_sandbox_symptoms() -> None:
    section = TROUBLE[TROUBLE.index("## Sandboxes") : TROUBLE.index("## Errors, one per row")]
    for symptom in (
        "Operation not permitted",
        "read-only file system",
        "approval policy is never",
        "Process running with session ID",
        "env_vars",
    ):
        assert symptom in section, symptom


def readme_flag_rows() -> set[str]:
    flags: set[str] = set()
    for line in README.splitlines():
        if line.startswith("| `--"):
            flags.update(re.findall(r"`(--[a-z][a-z-]*)", line.split(" | ")[0]))
    return flags


def test_every_help_flag_has_a_row_in_readme() -> None:
    proc = run_cli(["--help"])
    assert proc.returncode == 0
    helped = set(re.findall(r"^\s+(--[a-z][a-z-]*)", proc.stdout, re.M))
    assert len(helped) > 40
    assert helped - {"--help"} <= readme_flag_rows(), helped - readme_flag_rows()


def trouble_row(start: str) -> str:
    """The symptom cell of the troubleshooting row that starts with `start`, as a regex:
    `…` is any text, an upper-case placeholder (DIR, HOST) any word."""
    (row,) = [line for line in TROUBLE.splitlines() if line.startswith("| `" + start)]
    message = row.split("`")[1]
    pattern = re.escape(message).replace("…", ".*")
    return re.sub(r"\b[A-Z]{3,}\b", r"\\S+", pattern)


def test_troubleshooting_rows_match_what_the_script_prints(tmp_path: Path) -> None:
    empty = tmp_path / "home"
    empty.mkdir()
    env = clean_env(HOME=str(tmp_path), CODEX_IMAGEGEN_SYSTEM_CONFIG_DIR=str(tmp_path / "etc"))
    # the doctor's network checks with the default endpoint go to a closed loopback proxy
    env.update(NO_PROXY="", https_proxy="http://127.0.0.1:9")
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('"a fox"\n', encoding="utf-8")
    cases = [
        (["--doctor", "--codex-home", str(empty)], "note config", "failed key"),
        (["--batch", str(jobs), "--out", "x.png"], "--out cannot be combined with --batch", ""),
        (["--probe", "--prompt", "p", "--out", "p.png"], "--probe needs --doctor", ""),
    ]
    for args, start, then in cases:
        proc = run_cli(args, env, input="", timeout=30)
        text = " ".join((proc.stdout + proc.stderr).split())
        assert re.search(trouble_row(start), text), (start, text)
        if then:
            assert then in text, (then, text)


def test_help_and_readme_name_previews_alike() -> None:
    proc = run_cli(["--help"])
    assert "STEM.partial-N.EXT" in " ".join(proc.stdout.split())
    assert "`STEM.partial-N.EXT`" in README


def test_help_examples_section() -> None:
    proc = run_cli(["--help"])
    assert_ok(proc)
    assert "examples:" in proc.stdout
    examples = proc.stdout.split("examples:", 1)[1]
    for flag in ("--batch", "--n", "--edit-from", "--doctor"):
        assert flag in examples, (flag, examples)
