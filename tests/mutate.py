"""A small mutation check: change one thing in a chosen function of generate_gateway_image.py
(in a temporary copy of the project) and run only the tests of that function's area. A mutant
that no test notices ("survived") is either a gap in the tests or a change that does not alter
behaviour ("equivalent"); the list of survivors is for a person to judge. Not part of CI.

    python tests/mutate.py --list                         # areas, functions and test files
    python tests/mutate.py --area redaction --sample 20   # 20 random mutants of that area
    python tests/mutate.py --sample 100 --seed 7          # 100 mutants over all areas
    python tests/mutate.py --area retries --only backoff  # every mutant of one function
    python tests/mutate.py --area mcp --mutant 'McpServer.take_slot#3:drop-call'  # one again

The mutations are the classic small ones, applied to one AST node at a time: a comparison
flipped at its edge (< and <=, > and >=) or negated (== and !=, in and not in, is and is not),
and/or swapped, a `not` dropped, an integer constant off by one, True and False swapped, + and -
swapped, a returned value replaced by None, and a call statement removed. The function is
written back with ast.unparse, so only its own lines change.
"""

from __future__ import annotations

import argparse
import ast
import copy
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = "generate_gateway_image.py"

# area: (functions, as "name" or "Class.method"; the test files that cover them)
AREAS: dict[str, tuple[list[str], list[str]]] = {
    "redaction": (
        [
            "looks_secret",
            "add_secret",
            "redact",
            "redact_obj",
            "redact_url",
            "mask_secret",
            "mask_tokens",
            "sanitize",
            "is_credential_header",
            "run_key_command",
        ],
        ["test_config.py", "test_secrets.py", "test_terminal.py", "test_credentials.py"],
    ),
    "credentials": (
        ["resolve_gateway", "key_command_spec", "check_base_url", "load_gateway", "keyring_hint"],
        ["test_config.py", "test_credentials.py", "test_codex_parity.py", "test_config_layers.py"],
    ),
    "files": (
        [
            "check_output_path",
            "create_unique",
            "place_new",
            "ImageSink.commit",
            "ImageSink._move_to_rescue",
            "ImageSink._open_temp",
            "check_batch_out",
            "is_own_sidecar",
            "check_sidecar_path",
        ],
        [
            "test_paths_files.py",
            "test_sidecar.py",
            "test_batch.py",
            "test_faults.py",
            "test_disk_faults.py",
        ],
    ),
    "parsing": (
        [
            "SSEParser.feed",
            "SSEParser._segment",
            "SSEParser._check_line",
            "SSEParser._end_line",
            "JsonSpool.feed",
            "JsonSpool._closing_quote",
            "JsonSpool._check",
            "_escape_cut",
            "ImageSink._decode",
            "image_links",
            "Collector.keep_text",
        ],
        [
            "test_sse.py",
            "test_transport.py",
            "test_answers.py",
            "test_dialects.py",
            "test_paths_files.py",
        ],
    ),
    "download": (
        [
            "download_image",
            "is_web_url",
            "download_hop",
            "refuse_download_head",
            "stream_base64",
            "fetch_image_urls",
            "Wire.read_limited",
            "Wire.answer",
        ],
        ["test_answers.py", "test_transport.py", "test_images_api.py", "test_mcp.py"],
    ),
    "retries": (
        [
            "parse_retry_after",
            "backoff",
            "http_error",
            "http_retryable",
            "should_retry_header",
            "relay_own_failure",
            "rejects_previous_response",
            "exchange",
            "attempt_failure",
        ],
        ["test_faults.py", "test_resume.py"],
    ),
    "mcp": (
        [
            "mcp_key_hint",
            "mcp_failure",
            "McpProgress._show",
            "McpProgress.cancel",
            "McpServer.take_slot",
            "McpServer.check",
            "McpServer.missing_key",
            "McpServer.preflight",
        ],
        ["test_mcp_framing.py", "test_mcp.py"],
    ),
}

SWAP = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}


@dataclass
class Mutant:
    area: str
    function: str
    index: int  # which node of the function, in ast.walk order
    kind: str
    line: int  # line in the original file

    @property
    def name(self) -> str:
        return f"{self.function}#{self.index}:{self.kind}@{self.line}"


def find_function(tree: ast.Module, qualname: str) -> ast.FunctionDef:
    scope: list[ast.stmt] = tree.body
    *outer, name = qualname.split(".")
    for cls in outer:
        scope = next(n for n in scope if isinstance(n, ast.ClassDef) and n.name == cls).body
    for node in scope:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise SystemExit(f"no function {qualname} in {SCRIPT}")


def mutations(node: ast.AST) -> Iterator[tuple[str, ast.AST]]:
    """(kind, replacement) for one node; the replacement is a changed deep copy."""
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in SWAP:
                new = copy.deepcopy(node)
                new.ops[i] = SWAP[type(op)]()
                yield f"{type(op).__name__}->{SWAP[type(op)].__name__}", new
    elif isinstance(node, ast.BoolOp):
        new = copy.deepcopy(node)
        new.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        yield "and<->or", new
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        yield "drop-not", copy.deepcopy(node.operand)
    elif isinstance(node, ast.Constant) and type(node.value) is int:
        yield "int+1", ast.Constant(node.value + 1)
    elif isinstance(node, ast.Constant) and type(node.value) is bool:
        yield "not-bool", ast.Constant(not node.value)
    elif isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
        new = copy.deepcopy(node)
        new.op = ast.Sub() if isinstance(node.op, ast.Add) else ast.Add()
        yield "+<->-", new
    elif isinstance(node, ast.Return) and node.value is not None:
        if not (isinstance(node.value, ast.Constant) and node.value.value is None):
            yield "return-None", ast.Return(ast.Constant(None))
    elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        yield "drop-call", ast.Pass()


class Replace(ast.NodeTransformer):
    def __init__(self, target: ast.AST, replacement: ast.AST) -> None:
        self.target, self.replacement = target, replacement

    def visit(self, node: ast.AST) -> ast.AST:
        if node is self.target:
            return self.replacement
        return super().visit(node)


def nodes_of(func: ast.FunctionDef) -> list[ast.AST]:
    # skip the docstring and decorators: changing them changes nothing the tests could see
    body = func.body[1:] if ast.get_docstring(func) is not None else func.body
    return [n for stmt in body for n in ast.walk(stmt)]


def all_mutants(source: str, areas: list[str], only: set[str] | None) -> list[Mutant]:
    tree = ast.parse(source)
    found = []
    for area in areas:
        for qualname in AREAS[area][0]:
            if only and qualname not in only:
                continue
            func = find_function(tree, qualname)
            for index, node in enumerate(nodes_of(func)):
                for kind, _ in mutations(node):
                    found.append(Mutant(area, qualname, index, kind, getattr(node, "lineno", 0)))
    return found


def apply(source: str, mutant: Mutant) -> str | None:
    """The whole file with the mutant applied, or None when it unparses to the same code."""
    tree = ast.parse(source)
    func = find_function(tree, mutant.function)
    node = nodes_of(func)[mutant.index]
    replacement = dict(mutations(node))[mutant.kind]
    original = ast.unparse(func)
    mutated = Replace(node, replacement).visit(func)
    ast.fix_missing_locations(mutated)
    new_text = ast.unparse(mutated)
    if new_text == original:
        return None
    lines = source.splitlines(keepends=True)
    start = min([func.lineno, *(d.lineno for d in func.decorator_list)])
    indent = " " * func.col_offset
    body = "".join(indent + line + "\n" if line else "\n" for line in new_text.splitlines())
    return "".join(lines[: start - 1]) + body + "".join(lines[func.end_lineno :])


def run_tests(workdir: Path, files: list[str], timeout: float, workers: str) -> str:
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-n", workers]
    cmd += [f"tests/{f}" for f in files]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    try:
        proc = subprocess.run(
            cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired:
        return "killed (timeout)"
    if proc.returncode == 0:
        return "SURVIVED"
    if proc.returncode == 1:
        return "killed"
    if proc.returncode == 2 and "stopping after 1 failures" in proc.stdout:
        return "killed"  # with workers, -x interrupts the session: exit 2, a test failed
    return f"error (pytest exit {proc.returncode}): {proc.stdout[-300:]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--area", action="append", choices=sorted(AREAS))
    parser.add_argument("--only", action="append", help="only these functions (Class.method)")
    parser.add_argument("--mutant", action="append", help="only these (function#index:kind)")
    parser.add_argument("--sample", type=int, help="this many mutants, chosen at random")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip", type=int, default=0, help="start at this mutant of the sample")
    parser.add_argument("--count", type=int, help="run only this many (for parallel runs)")
    parser.add_argument("--timeout", type=float, default=600, help="per mutant, seconds")
    parser.add_argument("--workers", default="0", help="pytest-xdist workers per mutant run")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    areas = args.area or sorted(AREAS)
    if args.list:
        for area in areas:
            funcs, files = AREAS[area]
            print(f"{area}: {', '.join(funcs)}\n    tests: {', '.join(files)}")
        return 0
    source = (ROOT / SCRIPT).read_text(encoding="utf-8")
    mutants = all_mutants(source, areas, set(args.only) if args.only else None)
    if args.mutant:
        mutants = [m for m in mutants if m.name.rsplit("@", 1)[0] in args.mutant]
    if args.sample and args.sample < len(mutants):
        mutants = random.Random(args.seed).sample(mutants, args.sample)
    mutants = mutants[args.skip : None if args.count is None else args.skip + args.count]
    print(f"{len(mutants)} mutants", flush=True)
    tally: dict[str, int] = {}
    survivors = []
    with tempfile.TemporaryDirectory(prefix="mutate-") as tmp:
        work = Path(tmp) / "project"
        shutil.copytree(
            ROOT,
            work,
            ignore=shutil.ignore_patterns(".git", ".venv*", "__pycache__", ".coverage*", "*.pyc"),
        )
        for n, mutant in enumerate(mutants, 1):
            text = apply(source, mutant)
            if text is None:
                verdict = "same code"
            else:
                (work / SCRIPT).write_text(text, encoding="utf-8")
                started = time.monotonic()
                verdict = run_tests(work, AREAS[mutant.area][1], args.timeout, args.workers)
                verdict += f" ({time.monotonic() - started:.0f}s)"
            key = verdict.split(" ")[0]
            tally[key] = tally.get(key, 0) + 1
            if key == "SURVIVED":
                survivors.append(mutant)
            print(f"[{n}/{len(mutants)}] {mutant.area} {mutant.name}: {verdict}", flush=True)
        (work / SCRIPT).write_text(source, encoding="utf-8")
    print("\n" + ", ".join(f"{k}: {v}" for k, v in sorted(tally.items())))
    tested = tally.get("killed", 0) + tally.get("SURVIVED", 0)
    if tested:
        killed = tally.get("killed", 0)
        print(f"score: {killed}/{tested} killed ({100 * killed / tested:.0f} %)")
    for mutant in survivors:
        print(f"survived: {mutant.area} {mutant.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
