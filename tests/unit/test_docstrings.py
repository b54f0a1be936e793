"""Every public class and function of ``shared/`` and of each ``services/*/service.py`` has a
docstring (issue 17).

Public: a module-level class or function whose name does not start with ``_``, and such a
method of a public class. Properties (and their setters) are exempt: the name of what they
give is most often all there is to say. The files are read with ``ast``, never imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
PROPERTY_DECORATORS = frozenset({"property", "cached_property", "setter", "getter", "deleter"})


def checked_files() -> list[Path]:
    """``shared/**/*.py`` and ``services/*/service.py``, in a stable order."""
    return sorted([*(ROOT / "shared").rglob("*.py"), *(ROOT / "services").glob("*/service.py")])


def is_property(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Decorated ``@property``, ``@cached_property`` or ``@<name>.setter`` (/ getter / deleter)."""
    for decorator in node.decorator_list:
        name = decorator.attr if isinstance(decorator, ast.Attribute) else None
        if isinstance(decorator, ast.Name):
            name = decorator.id
        if name in PROPERTY_DECORATORS:
            return True
    return False


def undocumented(source: str) -> list[tuple[int, str]]:
    """(line, qualified name) of each public class, function and method without a docstring."""
    missing = []
    for node in ast.parse(source).body:
        if not isinstance(node, Definition) or node.name.startswith("_"):
            continue
        if ast.get_docstring(node) is None:
            missing.append((node.lineno, node.name))
        if isinstance(node, ast.ClassDef):
            for method in node.body:
                if (
                    isinstance(method, ast.FunctionDef | ast.AsyncFunctionDef)
                    and not method.name.startswith("_")
                    and not is_property(method)
                    and ast.get_docstring(method) is None
                ):
                    missing.append((method.lineno, f"{node.name}.{method.name}"))
    return missing


def test_every_public_definition_has_a_docstring() -> None:
    missing = [
        f"{relative}:{line} {name}"
        for path in checked_files()
        if (relative := path.relative_to(ROOT).as_posix())
        for line, name in undocumented(path.read_text())
    ]
    assert not missing, (
        "public classes and functions without a docstring (say what it does, returns or "
        "raises, in a line or two):\n" + "\n".join(missing)
    )


def test_the_walk_reaches_shared_and_every_service_module() -> None:
    files = {path.relative_to(ROOT).as_posix() for path in checked_files()}
    assert {"shared/settings.py", "shared/subscriber/jwks.py"} <= files
    assert {f"services/{name}/service.py" for name in ("issuer", "keys", "revocation")} <= files


def test_the_check_finds_what_is_missing_and_spares_the_exempt() -> None:
    source = '''
def public(): pass
def _private(): pass
async def documented():
    """Yes."""
class Plain:
    def method(self): pass
    async def coroutine(self): pass
    def _helper(self): pass
    def __init__(self): pass
    @property
    def value(self): return 1
    @value.setter
    def value(self, new): pass
    @staticmethod
    def static(): pass
class _Hidden:
    def method(self): pass
class Documented:
    """Yes."""
    @classmethod
    def build(cls):
        """Yes."""
'''
    assert undocumented(source) == [
        (2, "public"),
        (6, "Plain"),
        (7, "Plain.method"),
        (8, "Plain.coroutine"),
        (16, "Plain.static"),
    ]
