"""The package layout holds: no private name crosses a module boundary, modules stay small.

The layering itself (which package may import which, no cycles, the store behind
gateway.storage) is import-linter's job (`lint-imports`, contracts in pyproject.toml, run by
.ci/run); these are the two rules it cannot express.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAX_LINES = 600
# Modules allowed past MAX_LINES, each with the reason one concern honestly needs the length.
LONG_MODULES: dict[str, str] = {}


def _python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py"))


def _private_imports(source: str, where: str) -> list[str]:
    """`where:line module.name` for each `from gateway… import _name` in `source`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gateway"):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{where}:{node.lineno} {node.module}.{alias.name}")
    return found


def test_no_module_imports_a_private_name_of_another() -> None:
    found = [
        hit
        for path in _python_files("gateway", "tests", "bench")
        for hit in _private_imports(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    ]
    assert found == [], "give these names a public name where they are defined:\n" + "\n".join(
        found
    )


def test_the_private_import_check_sees_one() -> None:
    source = "from gateway.store.database import Storage, _row\nfrom gateway import __version__\n"
    assert _private_imports(source, "m.py") == ["m.py:1 gateway.store.database._row"]


def test_no_module_is_longer_than_its_concern_needs() -> None:
    long = {
        str(path.relative_to(REPO)): lines
        for path in _python_files("gateway")
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    unexplained = {name: lines for name, lines in long.items() if name not in LONG_MODULES}
    assert unexplained == {}, (
        f"split these (or say in LONG_MODULES why one concern needs it): {unexplained}"
    )
    stale = set(LONG_MODULES) - set(long)
    assert not stale, f"no longer long, drop from LONG_MODULES: {stale}"
