"""The script's shape, as the developers' guide asks for it: numbered sections that follow the
reader's path, each using only what the sections above it define (no run-time forward
reference), and functions that read as named steps (complexity and length bounds)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "generate_gateway_image.py"
SOURCE = SCRIPT.read_text(encoding="utf-8")
TREE = ast.parse(SOURCE)
MAX_COMPLEXITY = 25  # the developers guide; radon counts as the issue did
MAX_LINES = 100
LONG_ALLOWED = {"build_parser"}  # the declarative argument parser


def top_level_names() -> dict[str, int]:
    """Each top-level name and the line that defines it first."""
    names: dict[str, int] = {}
    for node in TREE.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.setdefault(node.name, node.lineno)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        names.setdefault(name.id, node.lineno)
    return names


def runtime_names(node: ast.AST) -> set[str]:
    """Names a definition uses when it runs: annotations are strings (from __future__ import
    annotations), so they do not count."""
    used: set[str] = set()
    skip: set[int] = set()
    for inner in ast.walk(node):
        if isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for arg in [*inner.args.args, *inner.args.kwonlyargs, *inner.args.posonlyargs]:
                if arg.annotation is not None:
                    skip.update(id(n) for n in ast.walk(arg.annotation))
            for arg in (inner.args.vararg, inner.args.kwarg):
                if arg is not None and arg.annotation is not None:
                    skip.update(id(n) for n in ast.walk(arg.annotation))
            if inner.returns is not None:
                skip.update(id(n) for n in ast.walk(inner.returns))
        elif isinstance(inner, ast.AnnAssign):
            skip.update(id(n) for n in ast.walk(inner.annotation))
    bound: set[str] = set()  # local names (assigned, parameters) shadow top-level ones
    for inner in ast.walk(node):
        if isinstance(inner, ast.Name) and isinstance(inner.ctx, ast.Store):
            bound.add(inner.id)
        elif isinstance(inner, ast.arg):
            bound.add(inner.arg)
    for inner in ast.walk(node):
        if isinstance(inner, ast.Name) and isinstance(inner.ctx, ast.Load):
            if id(inner) not in skip and inner.id not in bound:
                used.add(inner.id)
    return used


def section_of(line: int) -> int:
    """The number of the section a line belongs to (0 before the first)."""
    number = 0
    for match in re.finditer(r"(?m)^# (\d+)\. ", SOURCE):
        if SOURCE.count("\n", 0, match.start()) + 1 > line:
            break
        number = int(match.group(1))
    return number


def test_no_section_uses_a_later_section() -> None:
    defined = top_level_names()
    problems = []
    for node in TREE.body:
        if not isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign)):
            continue
        for name in runtime_names(node):
            line = defined.get(name)
            if line is not None and section_of(line) > section_of(node.lineno):
                own = getattr(node, "name", "")
                problems.append(f"line {node.lineno} {own}: uses {name} (line {line})")
    assert not problems, "\n".join(problems)


def test_sections_are_numbered_in_order() -> None:
    numbers = [int(n) for n in re.findall(r"(?m)^# (\d+)\. ", SOURCE)]
    assert numbers == list(range(1, len(numbers) + 1)), numbers
    assert len(numbers) >= 12


def functions() -> list[ast.FunctionDef]:
    return [n for n in ast.walk(TREE) if isinstance(n, ast.FunctionDef)]


def test_no_function_is_longer_than_a_hundred_lines() -> None:
    long = [
        (f.name, f.end_lineno - f.lineno + 1)
        for f in functions()
        if f.end_lineno is not None
        and f.end_lineno - f.lineno + 1 > MAX_LINES
        and f.name not in LONG_ALLOWED
    ]
    assert not long, long


def test_no_function_is_more_complex_than_the_bound() -> None:
    radon = pytest.importorskip("radon.complexity")
    blocks = radon.cc_visit(SOURCE)
    complex_ = [
        (b.name, b.complexity)
        for b in blocks
        if b.complexity > MAX_COMPLEXITY and b.name not in LONG_ALLOWED
    ]
    assert not complex_, complex_
