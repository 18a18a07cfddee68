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
    section = TROUBLE[TROUBLE.index("## Sandboxes") : TROUBLE.index("## Errors by exit code")]
    section = " ".join(section.split())  # entries wrap their lines
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
    """The symptom of the troubleshooting entry that starts with `start`, as a regex:
    `…` is any text, an upper-case placeholder (DIR, HOST) any word."""
    (row,) = [line for line in TROUBLE.splitlines() if line.startswith("- `" + start)]
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


# --- SKILL.md for the agent, README for a newcomer, readable reference files ---------------

REFERENCES = ROOT / "references"


def test_skill_is_lean_and_puts_prompt_craft_first() -> None:
    assert len(SKILL) <= 10_000, len(SKILL)  # loaded into the agent's context on every use
    words = " ".join(SKILL.split())
    order = [words.index(s) for s in ("Write the prompt", "Choose the size", "Run it once")]
    assert order == sorted(order), order
    for must in (
        "Exact text",  # text in the image, in quotes
        "If an edit ignores its reference",
        "`--action edit`",
        "--mask",
        "An edit keeps its reference's shape",
        "do not open or read the script",
        "search `references/troubleshooting.md` for the error line",
        "background task's completion notice",  # Claude Code, not only Codex's polling
        "exactly one JSON object",
    ):
        assert must in words, must


def test_skill_reference_files_exist_and_have_a_toc() -> None:
    named = set(re.findall(r"references/[\w.-]+\.md", SKILL))
    assert {"references/modes.md", "references/troubleshooting.md"} <= named
    for name in named:
        assert (ROOT / name).is_file(), name
    for path in REFERENCES.glob("*.md"):
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > 100:  # Anthropic's guidance for skill reference files
            head = "\n".join(text.splitlines()[:30])
            assert "## Contents" in head, path.name


def github_anchor(heading: str) -> str:
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    return {github_anchor(h) for h in re.findall(r"(?m)^#{1,6} (.*)$", text)}


def test_links_between_the_documents_resolve() -> None:
    documents = [ROOT / "README.md", ROOT / "SKILL.md", *REFERENCES.glob("*.md")]
    for doc in documents:
        text = doc.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            assert dest.is_file(), (doc.name, target)
            if anchor:
                assert anchor in anchors(dest.read_text(encoding="utf-8")), (doc.name, target)


def test_readme_opens_with_the_first_image() -> None:
    first_screen = "\n".join(README.splitlines()[:50])
    for must in (
        "```toml",
        'env_key = "GATEWAY_API_KEY"',
        "export GATEWAY_API_KEY=",
        "python3 generate_gateway_image.py --prompt",
        "CODEX_API_KEY=",
        "--base-url",
    ):
        assert must in first_screen, must
    sections = re.findall(r"(?m)^## (.*)$", README)
    assert sections[:2] == ["Your first image", "Contents"], sections[:3]
    for needed in ("MCP server: --mcp", "Reliability", "Exit codes", "Tests"):
        assert needed in sections, needed
    assert len(README.splitlines()) < 800
    tests = README[README.index("## Tests") :]
    assert "minutes" in tests and ".ci/run" in tests and "mypy" in tests


def readme_block(after: str, lang: str) -> str:
    start = README.index(after)
    match = re.compile(r"```" + lang + r"\n(.*?)```", re.S).search(README, start)
    assert match, (after, lang)
    return match.group(1)


def test_readme_first_commands_run_as_written(tmp_path: Path) -> None:
    """The first screen's config, export and command, against the loopback gateway: only the
    URL and the key are replaced."""
    import shlex

    from tests import images
    from tests.conftest import SCRIPT, TEST_KEY
    from tests.gateway import Gateway, image_events, sse_reply

    config = readme_block("## Your first image", "toml")
    commands = readme_block("## Your first image", "sh").strip().splitlines()
    printed = readme_block("After a minute or two", "").strip().splitlines()
    zero = readme_block("No Codex configuration at all", "sh").strip()
    url = tomllib.loads(config)["model_providers"]["gateway"]["base_url"]
    with Gateway() as gw:
        gw.set_default(sse_reply(image_events(images.b64(images.png_bytes(64, 64)))))
        home = tmp_path / "codex"
        home.mkdir()
        (home / "config.toml").write_text(config.replace(url, gw.base_url), encoding="utf-8")
        export = shlex.split(commands[0])
        assert export[0] == "export"
        name = export[1].split("=", 1)[0]
        env = clean_env(CODEX_HOME=str(home), **{name: TEST_KEY})
        argv = shlex.split(commands[1])
        assert argv[:2] == ["python3", "generate_gateway_image.py"]
        proc = run_cli(argv[2:], env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines() == [printed[-1]]  # the path, as the README shows
        saved = [line for line in proc.stderr.splitlines() if line.startswith("saved ")]
        assert saved and saved[0].split(" (")[0] == printed[-2].split(" (")[0], proc.stderr
        assert "; tokens: main model" in saved[0] and "image model" in printed[-2]
        assert (tmp_path / printed[-1]).is_file()

        words = shlex.split(zero)
        assignment, rest = words[0], words[1:]
        assert assignment.startswith("CODEX_API_KEY=") and rest[:2] == argv[:2]
        rest = [gw.base_url if w == url else w for w in rest]
        assert gw.base_url in rest
        (tmp_path / printed[-1]).unlink()
        bare = clean_env(HOME=str(tmp_path / "empty-home"), CODEX_API_KEY=TEST_KEY)
        proc = run_cli(rest[2:], bare, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == printed[-1]
        assert all(r.header("authorization") == "Bearer " + TEST_KEY for r in gw.posts())
        assert str(SCRIPT).endswith(argv[1])


def test_readme_tells_the_truth_about_claude_code() -> None:
    section = README[README.index("## MCP server") : README.index("## In Codex's sandbox")]
    words = " ".join(section.split())
    assert "MCP_TOOL_TIMEOUT" in words and "hard wall-clock limit" in words
    assert 'per-server `"timeout"`' in words
    assert "resets its tool timer" not in words  # progress does not extend the hard limit
    assert "passes its whole environment" in words
    assert "tool search" in words


def test_troubleshooting_opens_with_a_toc_and_reads_as_entries() -> None:
    head = "\n".join(TROUBLE.splitlines()[:30])
    assert "## Contents" in head and "Search this file" in head
    assert not [line for line in TROUBLE.splitlines() if line.startswith("| Symptom |")]
    longest = max(len(line) for line in TROUBLE.splitlines())
    assert longest <= 320, longest  # rows were up to 692 characters


def test_help_examples_section() -> None:
    proc = run_cli(["--help"])
    assert_ok(proc)
    assert "examples:" in proc.stdout
    examples = proc.stdout.split("examples:", 1)[1]
    for flag in ("--batch", "--n", "--edit-from", "--doctor"):
        assert flag in examples, (flag, examples)
