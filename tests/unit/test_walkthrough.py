"""docs/walkthrough.md names files and functions: each must exist, so a rename that leaves the
walkthrough behind fails here instead of misleading a reader."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

from tests.conftest import ROOT

WALKTHROUGH = ROOT / "docs" / "walkthrough.md"
CODE = (ROOT / "services", ROOT / "shared")
QUOTED = re.compile(r"`([^`]+)`")
# A call as the walkthrough writes it: `name()`, `Class.method()`, `module.function(…)`.
CALL = re.compile(r"([A-Za-z_][\w.]*)\(")
# A file followed by the function it contains: `path.py` `name()` or `path.py` — `name()`.
FILE_THEN_CALL = re.compile(r"`([\w/]+\.py)`(?:\s+—)?\s+`([A-Za-z_][\w.]*)\(")


def _definitions(path: Path) -> tuple[set[str], dict[str, set[str]]]:
    """The functions and classes ``path`` defines (nested ones too), and each class's methods."""
    names: set[str] = set()
    methods: dict[str, set[str]] = defaultdict(set)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            methods[node.name] |= {
                item.name
                for item in node.body
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
            }
    return names, methods


def _code() -> dict[Path, tuple[set[str], dict[str, set[str]]]]:
    return {path: _definitions(path) for top in CODE for path in sorted(top.rglob("*.py"))}


def _defined(code: dict[Path, tuple[set[str], dict[str, set[str]]]], call: str) -> bool:
    """Whether ``call`` (``name``, ``Class.method`` or ``module.function``) is defined."""
    *prefix, name = call.split(".")
    for path, (names, methods) in code.items():
        if not prefix:
            if name in names:
                return True
        elif prefix[-1][0].isupper():
            if name in methods.get(prefix[-1], ()):
                return True
        elif path.stem == prefix[-1] and name in names:
            return True
    return False


def test_every_file_the_walkthrough_names_exists() -> None:
    quoted = QUOTED.findall(WALKTHROUGH.read_text())
    files = [q for q in quoted if q.endswith(".py")]
    assert len(files) > 20  # the walkthrough is about files: an empty match is a broken regex
    missing = [f for f in files if not (ROOT / f).is_file()]
    assert not missing, f"docs/walkthrough.md names files that do not exist: {missing}"


def test_every_function_the_walkthrough_names_is_defined() -> None:
    code = _code()
    calls = {c for q in QUOTED.findall(WALKTHROUGH.read_text()) for c in CALL.findall(q)}
    assert len(calls) > 50
    missing = sorted(c for c in calls if not _defined(code, c))
    assert not missing, f"docs/walkthrough.md names functions that do not exist: {missing}"


def test_a_function_named_after_its_file_is_defined_in_that_file() -> None:
    pairs = FILE_THEN_CALL.findall(WALKTHROUGH.read_text())
    assert len(pairs) > 20
    wrong = []
    for file, call in pairs:
        names, methods = _definitions(ROOT / file)
        *prefix, name = call.split(".")
        where = methods.get(prefix[-1], set()) if prefix and prefix[-1][0].isupper() else names
        if name not in where:
            wrong.append(f"{file}: {call}()")
    assert not wrong, f"docs/walkthrough.md puts functions in the wrong file: {wrong}"


def test_the_checks_catch_a_name_that_does_not_exist() -> None:
    code = _code()
    assert _defined(code, "record_revocations")
    assert _defined(code, "OutboxRelay.relay_once")
    assert _defined(code, "store.mark_revoked")
    assert not _defined(code, "record_revocation")
    assert not _defined(code, "OutboxRelay.publish")
    assert not _defined(code, "outbox.mark_revoked")
