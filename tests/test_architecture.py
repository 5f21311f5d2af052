"""The package's structure as a contract (the layering itself is import-linter's, in lint).

No module imports another module's private names: only private *modules*
(``_dist``, ``_faults``, ...) may be imported with a leading underscore.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parents[1] / "hpckpt"
MODULES = sorted(PKG.rglob("*.py"))


def _module_path(file: pathlib.Path, node: ast.ImportFrom) -> pathlib.Path | None:
    """The package directory or module an import refers to (inside hpckpt), else None."""
    if node.level:
        base = file.parent
        for _ in range(node.level - 1):
            base = base.parent
    elif node.module and (node.module == "hpckpt" or node.module.startswith("hpckpt.")):
        base = PKG.parent
    else:
        return None
    for part in (node.module or "").split(".") if node.module else []:
        base = base / part
    return base


@pytest.mark.parametrize("file", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_no_private_names_imported_across_modules(file: pathlib.Path) -> None:
    tree = ast.parse(file.read_text())
    bad = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        target = _module_path(file, node)
        if target is None:
            continue
        for alias in node.names:
            name = alias.name
            if not name.startswith("_") or name.startswith("__"):
                continue
            is_module = (
                (target / f"{name}.py").exists()
                or (target / f"{name}.pyi").exists()  # a C extension, with its stub
                or (target / name).is_dir()
            )
            if not is_module:
                bad.append(
                    f"line {node.lineno}: from {'.' * node.level}{node.module or ''} import {name}"
                )
    assert not bad, bad


def test_the_package_has_small_modules() -> None:
    """One responsibility per module: none grows past 700 lines."""
    sizes = {str(f.relative_to(PKG)): len(f.read_text().splitlines()) for f in MODULES}
    assert max(sizes.values()) <= 700, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
