"""The MCP server's JSON-RPC framing, byte for byte over a subprocess's stdin and stdout (no SDK,
so these run on every Python): errors for unknown methods and unparsable lines, notifications
never answered, nothing but protocol on stdout."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import generate_gateway_image as g
from tests.conftest import PNG, SCRIPT, TEST_KEY, clean_env, image_reply, report, run_cli
from tests.gateway import Gateway, stall_reply


def exchange(
    lines: list[Any], env: dict[str, str], cwd: Path, *args: str, timeout: float = 30
) -> tuple[list[dict[str, Any]], subprocess.CompletedProcess[bytes]]:
    """Send the messages (dicts as JSON, bytes as they are), close stdin, return the answers."""
    data = b"".join(
        (line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines
    )
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--mcp", *args],
        input=data,
        capture_output=True,
        env=env,
        cwd=str(cwd),
        timeout=timeout,
    )
    answers = [json.loads(line) for line in proc.stdout.splitlines()]  # every line is JSON
    for answer in answers:
        assert answer["jsonrpc"] == "2.0", answer
    return answers, proc


def request(rid: Any, method: str, params: Any = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
    if params is not None:
        message["params"] = params
    return message


def notify(method: str, params: Any = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    return message


INIT = request(
    0,
    "initialize",
    {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
)
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
}


def test_unknown_method_and_unparsable_line(env: dict[str, str], tmp_path: Path) -> None:
    answers, proc = exchange(
        [INIT, request(1, "resources/list"), b"{not json", request(2, "ping")], env, tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    by_id = {a.get("id"): a for a in answers}
    assert by_id[1]["error"]["code"] == -32601
    assert by_id[None]["error"]["code"] == -32700
    assert by_id[2]["result"] == {}  # still serving after the bad line
    assert len(answers) == 4


def test_notifications_are_never_answered(env: dict[str, str], tmp_path: Path) -> None:
    answers, proc = exchange(
        [
            INIT,
            notify("notifications/initialized"),
            notify("notifications/unknown", {"x": 1}),
            notify("notifications/cancelled", {"requestId": 99}),
            notify("notifications/cancelled", {"requestId": [1]}),
            notify("notifications/progress", "not an object"),
            {"jsonrpc": "2.0", "id": 7, "result": {}},  # a response: we sent no request
            request(3, "ping"),
        ],
        env,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert [a["id"] for a in answers] == [0, 3]


def test_invalid_requests(env: dict[str, str], tmp_path: Path) -> None:
    answers, _ = exchange(
        [
            [request(1, "ping")],  # a batch
            {"id": 2, "method": "ping"},  # no "jsonrpc"
            request(3, "tools/list", ["not", "an", "object"]),
            request(4, "tools/call", {"name": "no_such_tool", "arguments": {}}),
            {"jsonrpc": "2.0", "id": {"an": "object"}, "method": "ping"},
            b"42",
        ],
        env,
        tmp_path,
    )
    codes = [(a.get("id"), a["error"]["code"]) for a in answers]
    assert codes == [(None, -32600), (2, -32600), (3, -32602), (4, -32602), (None, -32600)] + [
        (None, -32600)
    ]


def test_a_too_long_line_is_refused_in_bounded_memory(env: dict[str, str], tmp_path: Path) -> None:
    huge = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"' + b"a" * (g.MCP_MAX_LINE + 10)
    answers, proc = exchange([huge + b'"}}', request(2, "ping")], env, tmp_path)
    assert [(a.get("id"), "error" in a) for a in answers] == [(None, True), (2, False)]
    assert answers[0]["error"]["code"] == -32700


def test_version_negotiation(env: dict[str, str], tmp_path: Path) -> None:
    old = dict(INIT, params=dict(INIT["params"], protocolVersion="2024-11-05"))
    unknown = dict(INIT, id=1, params=dict(INIT["params"], protocolVersion="1999-01-01"))
    answers, _ = exchange([old, unknown], env, tmp_path)
    assert [a["result"]["protocolVersion"] for a in answers] == ["2024-11-05", "2025-11-25"]
    assert answers[0]["result"]["capabilities"] == {"tools": {"listChanged": False}}


def test_modern_requests_carry_their_version(env: dict[str, str], tmp_path: Path) -> None:
    bad_meta = dict(MODERN_META, **{"io.modelcontextprotocol/protocolVersion": "2099-01-01"})
    answers, _ = exchange(
        [
            request(1, "server/discover", {"_meta": MODERN_META}),
            request(2, "tools/list", {"_meta": MODERN_META}),
            request(3, "tools/list", {"_meta": bad_meta}),
        ],
        env,
        tmp_path,
    )
    discover, tools, refused = answers
    assert discover["result"]["supportedVersions"] == ["2026-07-28"]
    assert discover["result"]["resultType"] == "complete"
    assert discover["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"]
    assert tools["result"]["resultType"] == "complete" and tools["result"]["ttlMs"] == 0
    assert refused["error"]["code"] == -32022
    assert refused["error"]["data"] == {"supported": ["2026-07-28"], "requested": "2099-01-01"}


def test_old_clients_get_the_record_as_text(
    gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> None:
    """2024-11-05 has no structuredContent, outputSchema or resource_link."""
    old = dict(INIT, params=dict(INIT["params"], protocolVersion="2024-11-05"))
    call = request(2, "tools/call", {"name": "generate_image", "arguments": {"prompt": " "}})
    answers, _ = exchange([old, request(1, "tools/list"), call], env, tmp_path)
    tools = answers[1]["result"]["tools"]
    assert all("outputSchema" not in t and "annotations" not in t for t in tools)
    result = answers[2]["result"]
    assert result["isError"] is True and "structuredContent" not in result
    assert "exit code 2" in result["content"][0]["text"]


def test_stdout_is_only_protocol(gateway: Gateway, tmp_path: Path) -> None:
    """Warnings, progress and --verbose logs go to stderr, and so would a stray print."""
    from tests.conftest import write_codex_home

    home = write_codex_home(tmp_path / "home", gateway.base_url)
    (home / "auth.json").chmod(0o644)  # a warning on every load
    env = clean_env(CODEX_HOME=str(home))
    call = request(1, "tools/call", {"name": "check_gateway", "arguments": {}})
    answers, proc = exchange([INIT, call], env, tmp_path, "--verbose")
    assert [a["id"] for a in answers] == [0, 1], proc.stderr
    assert b"readable by other users" in proc.stderr
    assert TEST_KEY.encode() not in proc.stdout + proc.stderr


def test_stray_print_goes_to_stderr(env: dict[str, str], tmp_path: Path) -> None:
    code = (
        "import sys, generate_gateway_image as g\n"
        "g.McpServer.preflight = lambda self: print('stray output')\n"
        "sys.exit(g.main(sys.argv[1:]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "--mcp"],
        input=json.dumps(request(1, "ping")).encode() + b"\n",
        capture_output=True,
        env=dict(env, PYTHONPATH=str(SCRIPT.parent)),
        cwd=str(tmp_path),
        timeout=30,
    )
    assert json.loads(proc.stdout) == {"jsonrpc": "2.0", "id": 1, "result": {}}
    assert b"stray output" in proc.stderr


def test_single_job_flags_are_refused(env: dict[str, str], tmp_path: Path) -> None:
    proc = run_cli(["--mcp", "--prompt", "x", "--out", "a.png"], env)
    assert proc.returncode == 2, report(proc)
    assert "--prompt, --out cannot be combined with --mcp" in proc.stderr
    assert proc.stdout == ""


def test_resume_is_refused_at_start(env: dict[str, str], tmp_path: Path) -> None:
    # --resume names one stored response: every generate_image call would otherwise fail with
    # "--prompt cannot be combined with --resume"
    proc = run_cli(["--mcp", "--resume", "resp_abc123"], env, input="", timeout=30)
    assert proc.returncode == 2, report(proc)
    assert "--resume cannot be combined with --mcp" in proc.stderr
    assert proc.stdout == ""


def test_a_key_cut_short_in_an_error_shows_no_piece_of_it(
    env: dict[str, str], tmp_path: Path
) -> None:
    """Names the client sent are cut (40-80 characters) in error messages: a key cut there
    after its first characters is masked too, not only runs of 12 or more."""
    pad = "m" * 30  # the cut falls 10 characters into the key
    answers, proc = exchange(
        [
            INIT,
            request(1, pad + TEST_KEY),
            request(2, "tools/call", {"name": "generate_image", "arguments": {pad + TEST_KEY: 1}}),
            request(3, "tools/call", {"name": "m" * 70 + TEST_KEY}),
        ],
        env,
        tmp_path,
    )
    everything = json.dumps(answers) + proc.stderr.decode()
    assert "method not found" in everything and "unknown argument" in everything
    for n in range(4, len(TEST_KEY) + 1):
        assert TEST_KEY[:n] not in everything, n


def test_progress_notifications_stop_when_the_call_ends(
    env: dict[str, str], tmp_path: Path
) -> None:
    """With a 0.3 s heartbeat (MCP_HEARTBEAT patched in the server process), a finished call's
    token gets no notification after its answer, while stdin stays open."""
    import threading
    import time

    code = (
        "import sys, generate_gateway_image as g\n"
        "g.MCP_HEARTBEAT = 0.3\n"
        "sys.exit(g.main(sys.argv[1:]))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--mcp"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=dict(env, PYTHONPATH=str(SCRIPT.parent)),
        cwd=str(tmp_path),
    )
    seen: list[tuple[float, dict[str, Any]]] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append((time.monotonic(), json.loads(line)))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert proc.stdin is not None
    call = request(1, "tools/call", {"name": "check_gateway", "arguments": {}})
    call["params"]["_meta"] = {"progressToken": "tok-1"}
    proc.stdin.write(json.dumps(INIT).encode() + b"\n" + json.dumps(call).encode() + b"\n")
    proc.stdin.flush()
    try:
        deadline = time.monotonic() + 20
        while not any(m.get("id") == 1 for _, m in seen) and time.monotonic() < deadline:
            time.sleep(0.05)
        (answered_at,) = [t for t, m in seen if m.get("id") == 1]
        time.sleep(2.5)  # more than the tick (1 s) and several heartbeats
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
        reader.join(timeout=5)
    progress = [(t, m) for t, m in seen if m.get("method") == "notifications/progress"]
    assert progress, seen  # it did report while it ran
    assert all(m["params"]["progressToken"] == "tok-1" for _, m in progress)
    assert [m for t, m in progress if t > answered_at] == [], seen


def test_start_flags_that_cannot_serve_are_refused(env: dict[str, str], tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("x", encoding="utf-8")
    for args, words in (
        (["--n", "2"], "--n cannot be combined with --mcp"),
        (["--concurrency", "17"], "--concurrency must be between 1 and 16"),
        (["--concurrency", "0"], "--concurrency must be between 1 and 16"),
        (["--out-dir", str(not_a_folder)], "is not a folder"),
    ):
        proc = run_cli(["--mcp", *args], env, input="", timeout=30)
        assert proc.returncode == 2, report(proc)
        assert words in proc.stderr, proc.stderr
        assert proc.stdout == ""


def test_tool_arguments_are_checked_before_anything_is_sent(
    gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> None:
    def call(rid: int, arguments: Any) -> dict[str, Any]:
        return request(rid, "tools/call", {"name": "generate_image", "arguments": arguments})

    cases = {
        1: (call(1, ["not", "an", "object"]), "the arguments must be a JSON object"),
        2: (call(2, {"prompt": "x", "colour": "red"}), "unknown argument 'colour'"),
        3: (call(3, {"prompt": "x", "n": "2"}), "argument 'n' must be a integer"),
        4: (call(4, {"prompt": "x", "images": [1, 2]}), "must be a list of strings"),
        5: (call(5, {"prompt": "x", "force": "yes"}), "argument 'force' must be a boolean"),
        6: (call(6, None), "the prompt is missing or empty"),
    }
    answers, proc = exchange([INIT, *(m for m, _ in cases.values())], env, tmp_path)
    by_id = {a["id"]: a for a in answers}
    for rid, (_, words) in cases.items():
        result = by_id[rid]["result"]
        assert result["isError"] is True, result
        assert words in result["content"][0]["text"], (rid, result)
        assert "exit code 2" in result["content"][0]["text"]
    assert gateway.requests == [], proc.stderr


def test_a_message_that_is_not_a_request_and_a_reused_id(
    env: dict[str, str], tmp_path: Path
) -> None:
    slow = request(7, "tools/call", {"name": "check_gateway", "arguments": {}})
    lines = [INIT, [1, 2], b'"just a string"', {"jsonrpc": "2.0", "params": {}}, slow, slow]
    answers, _ = exchange(lines, env, tmp_path)
    errors = [a["error"]["message"] for a in answers if "error" in a]
    assert "JSON-RPC batches are not supported" in errors
    assert "a message must be a JSON object" in errors
    assert "not a JSON-RPC request" in errors
    assert "request id 7 is already in use" in errors, answers


# --- what an old client gets, and what a call reports while it runs ------------------------------

OLD_INIT = dict(INIT, params=dict(INIT["params"], protocolVersion="2024-11-05"))


def call(rid: Any, name: str, arguments: Any, token: Any = None) -> dict[str, Any]:
    message = request(rid, "tools/call", {"name": name, "arguments": arguments})
    if token is not None:
        message["params"]["_meta"] = {"progressToken": token}
    return message


def test_an_old_client_gets_a_saved_image_as_text_and_a_preview(
    gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> None:
    """2024-11-05 knows neither structuredContent nor resource_link: the record comes as a JSON
    text block, the small image as the preview; a null argument counts as not given."""
    gateway.set_default(image_reply())
    arguments = {"prompt": "a fox", "out": "fox.png", "size": None, "quality": None}
    answers, proc = exchange(
        [OLD_INIT, call(1, "generate_image", arguments), call(2, "check_gateway", {})],
        env,
        tmp_path,
    )
    by_id = {a["id"]: a for a in answers}
    result = by_id[1]["result"]
    assert result["isError"] is False and "structuredContent" not in result, proc.stderr
    kinds = [block["type"] for block in result["content"]]
    assert kinds == ["text", "text", "image"], result
    assert "saved " + str(tmp_path / "fox.png") in result["content"][0]["text"]
    record = json.loads(result["content"][1]["text"])
    assert record["ok"] is True and record["images"][0]["path"] == str(tmp_path / "fox.png")
    assert base64.b64decode(result["content"][2]["data"]) == PNG
    assert (tmp_path / "fox.png").read_bytes() == PNG
    check = by_id[2]["result"]
    assert "structuredContent" not in check and check["content"][0]["type"] == "text"
    assert "config" in check["content"][0]["text"]


def test_progress_of_a_call_with_several_images_counts_them(
    gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> None:
    gateway.set_default(image_reply())
    arguments = {"prompt": "a fox", "out": "fox.png", "n": 2}
    answers, proc = exchange(
        [INIT, call(1, "generate_image", arguments, token="t2")], env, tmp_path
    )
    progress = [a["params"] for a in answers if a.get("method") == "notifications/progress"]
    assert progress and all(p["progressToken"] == "t2" for p in progress), answers
    # the first says "sending" before the call knows its images; then they are counted
    pattern = r"[0-2]/2 images done; running: [a-z, -]+ \(\d+s\)$"
    counted = [p["message"] for p in progress[1:]]
    assert counted and all(re.match(pattern, m) for m in counted), counted
    (result,) = [a["result"] for a in answers if a.get("id") == 1]
    assert result["isError"] is False, proc.stderr
    assert len(result["structuredContent"]["images"]) == 2


def test_a_preview_skips_missing_and_unreadable_live_previews(
    gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> None:
    """Asked for two live previews, the gateway sent none; a stray fox.partial-1.png that is no
    image is not returned: the preview is the saved image itself."""
    gateway.set_default(image_reply())
    (tmp_path / "fox.partial-1.png").write_bytes(b"not an image at all")
    arguments = {"prompt": "a fox", "out": "fox.png", "partial_images": 2}
    answers, proc = exchange([INIT, call(1, "generate_image", arguments)], env, tmp_path)
    (result,) = [a["result"] for a in answers if a.get("id") == 1]
    assert result["isError"] is False, proc.stderr
    (preview,) = [block for block in result["content"] if block["type"] == "image"]
    assert base64.b64decode(preview["data"]) == PNG and preview["mimeType"] == "image/png"


# --- a bug costs one answer, never the server ---------------------------------------------


def exchange_patched(
    patch: str, lines: list[Any], env: dict[str, str], cwd: Path, *args: str
) -> tuple[list[dict[str, Any]], subprocess.CompletedProcess[bytes]]:
    """exchange() with the server's module changed first by `patch` (Python, with the script
    imported as g)."""
    code = f"import sys, generate_gateway_image as g\n{patch}\nsys.exit(g.main(sys.argv[1:]))\n"
    data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    proc = subprocess.run(
        [sys.executable, "-c", code, "--mcp", *args],
        input=data,
        capture_output=True,
        env=dict(env, PYTHONPATH=str(SCRIPT.parent)),
        cwd=str(cwd),
        timeout=30,
    )
    return [json.loads(line) for line in proc.stdout.splitlines()], proc


def exchange_with_a_bug(
    bug: str, lines: list[Any], env: dict[str, str], cwd: Path, *args: str
) -> tuple[list[dict[str, Any]], subprocess.CompletedProcess[bytes]]:
    """exchange() with the script's function `bug` replaced by one raising
    RuntimeError("a planted bug")."""
    patch = (
        "def planted(*args, **kwargs):\n"
        "    raise RuntimeError('a planted bug')\n"
        f"setattr(g, {bug!r}, planted)"
    )
    return exchange_patched(patch, lines, env, cwd, *args)


def test_a_bug_in_a_request_is_an_internal_error_answer(
    env: dict[str, str], tmp_path: Path
) -> None:
    answers, proc = exchange_with_a_bug(
        "mcp_tools", [INIT, request(1, "tools/list"), request(2, "ping")], env, tmp_path
    )
    by_id = {a["id"]: a for a in answers}
    assert by_id[1]["error"] == {
        "code": -32603,
        "message": "internal error: RuntimeError: a planted bug",
    }, answers
    assert by_id[2]["result"] == {} and proc.returncode == 0


def test_a_bug_in_a_call_is_an_error_result_with_its_traceback_under_verbose(
    env: dict[str, str], tmp_path: Path
) -> None:
    lines = [INIT, call(1, "check_gateway", {}), request(2, "ping")]
    answers, proc = exchange_with_a_bug("doctor", lines, env, tmp_path, "--verbose")
    by_id = {a["id"]: a for a in answers}
    result = by_id[1]["result"]
    assert result["isError"] is True, answers
    assert "internal error: RuntimeError: a planted bug" in result["content"][0]["text"]
    assert by_id[2]["result"] == {} and proc.returncode == 0
    stderr = proc.stderr.decode()
    assert "Traceback (most recent call last)" in stderr and "planted" in stderr
    answers, proc = exchange_with_a_bug("doctor", lines, env, tmp_path)
    assert "Traceback" not in proc.stderr.decode()  # only under --verbose
    assert {a["id"] for a in answers} == {0, 1, 2}


# --- lines the server skips ------------------------------------------------------------------


def test_blank_lines_and_a_line_of_several_pieces_are_skipped(
    env: dict[str, str], tmp_path: Path
) -> None:
    """A line more than twice the cap is skipped piece by piece; blank lines are no messages;
    a message with a wrong "jsonrpc" and no id is a notification: never answered."""
    huge = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"' + b"a" * (2 * g.MCP_MAX_LINE)
    wrong = {"jsonrpc": "1.0", "method": "ping"}
    answers, proc = exchange(
        [b"", b"   ", huge + b'"}}', b"\t", wrong, request(2, "ping")], env, tmp_path
    )
    assert [(a.get("id"), "error" in a) for a in answers] == [(None, True), (2, False)], answers
    assert answers[0]["error"]["code"] == -32700


# --- the client's workspace roots ------------------------------------------------------------


def test_roots_are_taken_once_each_up_to_the_cap_and_only_local_folders(
    gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> None:
    """An answer to roots/list with duplicates, addresses that are no local folder (another
    scheme or host, relative, a NUL, over 4096 characters, not a string) and more folders than
    MCP_MAX_ROOTS: each folder once, the first MCP_MAX_ROOTS only."""
    gateway.set_default(image_reply())
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    first = tmp_path / "first"
    folders = [tmp_path / f"root{i}" for i in range(g.MCP_MAX_ROOTS + 5)]
    for folder in [first, *folders]:
        folder.mkdir()
    odd: list[Any] = [
        {"uri": first.as_uri()},
        {"uri": 123},
        {"uri": "file:///" + "x" * 5000},
        {"uri": "http://example.com/work"},
        {"uri": f"file://otherhost{tmp_path}"},
        {"uri": "file:relative/work"},
        {"uri": (tmp_path / "nul").as_uri() + "%00x"},
        "not an object",
    ]
    roots = [{"uri": first.as_uri()}, *odd, *({"uri": f.as_uri()} for f in folders)]
    init = dict(INIT, params=dict(INIT["params"], capabilities={"roots": {}}))
    last_in, first_out = folders[g.MCP_MAX_ROOTS - 2], folders[g.MCP_MAX_ROOTS - 1]
    lines = [
        init,
        notify("notifications/initialized"),
        {"jsonrpc": "2.0", "id": "imagegen-roots-1", "result": {"roots": roots}},
        call(1, "generate_image", {"prompt": "a fox", "out": str(last_in / "in.png")}),
        call(2, "generate_image", {"prompt": "a fox", "out": str(first_out / "out.png")}),
    ]
    answers, proc = exchange(lines, env, tmp_path, "--out-dir", str(out_dir))
    assert [a["method"] for a in answers if "method" in a] == ["roots/list"], answers
    stderr = proc.stderr.decode()
    (line,) = [x for x in stderr.splitlines() if "client workspace roots: " in x]
    taken = line.split("client workspace roots: ", 1)[1].split(", ")
    assert taken == [str(first), *(str(f) for f in folders[: g.MCP_MAX_ROOTS - 1])], line
    by_id = {a["id"]: a for a in answers if "id" in a}
    assert by_id[1]["result"]["isError"] is False, stderr
    assert (last_in / "in.png").read_bytes() == PNG
    refused = by_id[2]["result"]
    assert refused["isError"] is True and "outside" in refused["content"][0]["text"], refused
    assert not (first_out / "out.png").exists() and len(gateway.posts()) == 1


# --- more calls than the server takes, and a client that leaves ------------------------------


def test_calls_beyond_the_queue_are_refused_and_the_rest_cancelled_at_eof(
    gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> None:
    """--concurrency 1: one call runs (the gateway never answers it), MCP_MAX_WAITING wait, the
    next is refused at once; when stdin closes the running and waiting calls are cancelled
    (no answer, nothing saved) and the server exits within its grace periods."""
    gateway.set_default(stall_reply())
    taken = 1 + g.MCP_MAX_WAITING
    calls = [
        call(i, "generate_image", {"prompt": "a fox", "out": f"fox{i}.png"})
        for i in range(1, taken + 2)
    ]
    answers, proc = exchange([INIT, *calls], env, tmp_path, "--concurrency", "1")
    assert [a["id"] for a in answers] == [0, taken + 1], answers
    assert answers[1]["error"] == {
        "code": -32000,
        "message": f"{taken} calls are running or waiting; try again when one ends",
    }
    assert proc.returncode == 0
    assert len(gateway.posts()) == 1 and list(tmp_path.glob("fox*")) == []
    assert "cancelled: no answer is sent" in proc.stderr.decode()


@pytest.mark.parametrize("vanished", [False, True])
def test_a_call_stuck_at_eof_leaves_no_temporary_file(
    gateway: Gateway, env: dict[str, str], tmp_path: Path, vanished: bool
) -> None:
    """A call that neither ends nor wakes when cancelled (planted: it hangs after the image
    arrived, before it is moved into place): the server exits after its grace periods all the
    same, and removes the call's .part file, which that call's thread never will (a .part that
    is already gone is no error)."""
    gateway.set_default(image_reply())
    patch = (
        "import os, time\n"
        "g.MCP_EOF_GRACE, g.MCP_SHUTDOWN_WAIT = 0.5, 0.5\n"
        "def stuck(outcome, sink, *args):\n"
        f"    if {vanished}:\n"
        "        os.remove(sink.tmp)\n"
        "    time.sleep(60)\n"
        "g.commit_images = stuck"
    )
    lines = [INIT, call(1, "generate_image", {"prompt": "a fox", "out": "fox.png"})]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    answers, proc = exchange_patched(patch, lines, env, tmp_path, "--out-dir", str(out_dir))
    assert [a["id"] for a in answers] == [0] and proc.returncode == 0, proc.stderr
    assert len(gateway.posts()) == 1
    assert sorted(p.name for p in out_dir.iterdir()) == [], proc.stderr
    assert b"Traceback" not in proc.stderr


# --- a configuration the calls cannot use -----------------------------------------------------


def home_with(tmp_path: Path, provider: str) -> dict[str, str]:
    """A Codex home whose provider table is `provider` (its base_url given there), with the
    test key in auth.json."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(
        f'model_provider = "gw"\n[model_providers.gw]\nname = "test"\n{provider}\n',
        encoding="utf-8",
    )
    auth = home / "auth.json"
    auth.write_text(json.dumps({"OPENAI_API_KEY": TEST_KEY}), encoding="utf-8")
    auth.chmod(0o600)
    return clean_env(CODEX_HOME=str(home))


def test_a_login_the_provider_does_not_take_gets_its_own_hint_not_a_variable_to_forward(
    gateway: Gateway, tmp_path: Path
) -> None:
    """No requires_openai_auth: the key in auth.json is withheld (as in Codex). No variable is
    missing from the server's environment, so the hint is the configuration's, in the call's
    result and in check_gateway's failed key check."""
    env = home_with(tmp_path, f'base_url = "{gateway.base_url}"')
    lines = [INIT, call(1, "generate_image", {"prompt": "a fox"}), call(2, "check_gateway", {})]
    answers, proc = exchange(lines, env, tmp_path)
    by_id = {a["id"]: a["result"] for a in answers}
    generated = by_id[1]["structuredContent"]
    assert generated["exit_code"] == 3 and "does not set requires_openai_auth" in generated["error"]
    assert "add requires_openai_auth = true" in generated["hint"]
    checked = by_id[2]
    (key,) = [c for c in checked["structuredContent"]["checks"] if c["check"] == "key"]
    assert key["status"] == "failed" and "add requires_openai_auth = true" in key["hint"]
    for result in by_id.values():
        assert "started without" not in json.dumps(result)  # no variable to forward
    assert gateway.posts() == []  # nothing generated; the doctor only looks
    assert TEST_KEY not in proc.stdout.decode() + proc.stderr.decode()


def test_a_broken_configuration_is_said_at_start_and_fails_each_call(
    gateway: Gateway, tmp_path: Path
) -> None:
    env = home_with(tmp_path, 'base_url = "ftp://gateway.invalid/v1"\nrequires_openai_auth = true')
    answers, proc = exchange([INIT, call(1, "generate_image", {"prompt": "a fox"})], env, tmp_path)
    stderr = proc.stderr.decode()
    assert "must be an http:// or https:// URL; tool calls fail until this is fixed" in stderr
    assert "MCP server ready" not in stderr and proc.returncode == 0
    (result,) = [a["result"] for a in answers if a.get("id") == 1]
    record = result["structuredContent"]
    assert record["exit_code"] == 3 and "must be an http:// or https:// URL" in record["error"]
    assert "--codex-home" not in json.dumps(result)  # the configuration was found
    assert gateway.requests == []


# --- where the server runs ---------------------------------------------------------------------


def test_without_stdin_the_server_refuses_to_start(env: dict[str, str], tmp_path: Path) -> None:
    """A client that starts the server with stdin closed: exit 2 with the reason, no protocol."""
    if os.name != "posix":
        pytest.skip("closing fd 0 before exec is POSIX (Windows: a process always has stdin)")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--mcp"],
        preexec_fn=lambda: os.close(0),
        capture_output=True,
        env=env,
        cwd=str(tmp_path),
        timeout=30,
    )
    assert proc.returncode == 2, proc.stderr
    assert b"--mcp needs stdin: the client writes its requests there" in proc.stderr
    assert proc.stdout == b""


def test_an_embedding_host_without_file_descriptors_gets_the_protocol_on_its_stdout(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process, with sys.stdin and sys.stdout as in-memory streams (no descriptors to
    duplicate): the answers go to that stdout, which is restored afterwards."""
    lines = [INIT, request(1, "ping"), request(2, "tools/list")]
    data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setenv("CODEX_HOME", env["CODEX_HOME"])
    monkeypatch.setenv("NO_PROXY", "*")
    monkeypatch.chdir(tmp_path)
    assert g.main(["--mcp"]) == 0
    assert sys.stdout is stdout
    stdout.flush()
    raw = stdout.buffer.getvalue()  # type: ignore[attr-defined]
    answers = [json.loads(line) for line in raw.splitlines()]
    assert [a["id"] for a in answers] == [0, 1, 2]
    assert {t["name"] for t in answers[2]["result"]["tools"]} == {"generate_image", "check_gateway"}


def test_a_prompt_whose_names_are_all_taken_is_refused_before_sending(
    gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> None:
    """Without out, a call's file is named after its prompt and never replaces a file: with
    a-fox.png and a-fox-2.png ... a-fox-9999.png all there, it asks for out; nothing is sent."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for number in range(1, 10_000):
        (out_dir / ("a-fox.png" if number == 1 else f"a-fox-{number}.png")).touch()
    lines = [INIT, call(1, "generate_image", {"prompt": "a fox"})]
    answers, proc = exchange(lines, env, tmp_path, "--out-dir", str(out_dir))
    (result,) = [a["result"] for a in answers if a.get("id") == 1]
    record = result["structuredContent"]
    assert record["error"] == f"no free file name for this prompt in {out_dir}", record
    assert record["hint"] == "pass out" and record["exit_code"] == 7
    assert gateway.requests == [] and len(list(out_dir.iterdir())) == 9999


# --- pieces a subprocess cannot reach on this system ------------------------------------------


def test_a_connection_cancelled_before_it_opens_sends_nothing(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An MCP cancellation can land between a call registering its connection and opening it:
    the connection is shut down the moment it opens, and no request reaches the gateway."""
    import time

    monkeypatch.setenv("NO_PROXY", "*")
    clock = g.Clock(5.0, time.monotonic() + 10)
    wire = g.Wire(gateway.base_url + "/responses", g.Settings({}), clock)
    wire.shutdown()  # before open(): no watchdog yet
    assert wire.killed and wire.watchdog is None
    try:
        wire.open()
        with pytest.raises((g.ImagegenError, OSError)):
            wire.send("POST", {"Content-Type": "application/json"}, [b"{}"])
            wire.answer()
    finally:
        wire.close()
    time.sleep(0.2)
    assert gateway.requests == []


def test_a_relative_path_is_never_inside_a_folder() -> None:
    """commonpath refuses to compare a relative and an absolute path (and, on Windows, two
    drives): that is "outside", never an error."""
    folder = os.path.abspath("work")
    assert g.is_inside(os.path.join(folder, "a.png"), folder) is True
    assert g.is_inside("a.png", folder) is False


def test_a_client_that_closed_our_stdout_ends_the_server_quietly(
    env: dict[str, str], tmp_path: Path
) -> None:
    # The read end of stdout is closed before the first answer: every write is a broken pipe.
    # The server keeps reading until stdin's EOF and exits 0, without an "internal error".
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), "--mcp"],
            input=(json.dumps(INIT) + "\n" + json.dumps(request(1, "tools/list")) + "\n").encode(),
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=env,
            cwd=str(tmp_path),
            timeout=30,
        )
    finally:
        os.close(write_end)
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "internal error" not in err and "Traceback" not in err and "BrokenPipe" not in err, err
