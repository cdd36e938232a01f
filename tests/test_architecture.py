"""Rules of the package layout, checked on the source (``ast``, nothing imported).

- No module uses a private name (``_x``, or anything in a ``_x`` module) of another medssl
  package (``medssl.X`` vs ``medssl.Y``); within one package it is allowed.
- The user-facing errors live in :mod:`medssl.errors`, which imports nothing of medssl;
  ``medssl.io`` re-exports them.
- ``medssl.models`` does not import ``medssl.io``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import medssl

ROOT = Path(medssl.__file__).resolve().parent

# (file relative to medssl/, imported module, name): private imports tolerated for now.
ALLOWED_PRIVATE: set[tuple[str, str, str]] = set()


def _private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package(module: str) -> str:
    """``medssl.X`` of ``medssl.X.y.z`` (``medssl`` for the top-level package itself)."""
    return ".".join(module.split(".")[:2])


def _is_module(dotted: str) -> bool:
    rel = Path(*dotted.split(".")[1:])
    return (ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def private_uses(source: str, module: str, *, is_package: bool = False) -> list[tuple[str, str]]:
    """The ``(imported module, name)`` pairs by which ``source`` (the module ``module``) uses
    a private name of another medssl package: ``from medssl.y import _x``, ``from
    medssl.y._m import x``, ``import medssl.y._m`` and ``m._x`` where ``m`` names a module of
    another package."""
    own = _package(module)
    found: list[tuple[str, str]] = []
    modules: dict[str, str] = {}  # local name -> medssl module it is bound to

    def foreign(target: str) -> bool:
        return target.startswith("medssl.") and _package(target) != own

    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _absolute(node, module, is_package)
            if target == "medssl" or not target.startswith("medssl."):
                continue
            for alias in node.names:
                full = f"{target}.{alias.name}"
                if foreign(full) and (
                    _private(alias.name) or any(map(_private, target.split(".")))
                ):
                    found.append((target, alias.name))
                if _is_module(full):
                    modules[alias.asname or alias.name] = full
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if not alias.name.startswith("medssl."):
                    continue
                if foreign(alias.name) and any(map(_private, alias.name.split("."))):
                    found.append((alias.name, ""))
                if alias.asname:
                    modules[alias.asname] = alias.name
    for node in ast.walk(tree):  # m._x and medssl.y.m._x
        if not (isinstance(node, ast.Attribute) and _private(node.attr)):
            continue
        chain: list[str] = []
        value: ast.expr = node.value
        while isinstance(value, ast.Attribute):
            chain.insert(0, value.attr)
            value = value.value
        if not isinstance(value, ast.Name):
            continue
        if value.id in modules:
            target = ".".join([modules[value.id], *chain])
        elif value.id == "medssl":
            target = ".".join(["medssl", *chain])
        else:
            continue
        if _is_module(target) and foreign(target):
            found.append((target, node.attr))
    return found


def _all_private_uses() -> set[tuple[str, str, str]]:
    uses = set()
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        module = _module_name(path)
        is_package = path.name == "__init__.py"
        for target, name in private_uses(path.read_text(), module, is_package=is_package):
            uses.add((rel, target, name))
    return uses


def test_no_private_name_is_used_across_packages():
    uses = _all_private_uses()
    offending = sorted(uses - ALLOWED_PRIVATE)
    assert not offending, (
        "private names of another medssl package (make them public in their owning module, "
        "with a docstring):\n"
        + "\n".join(f"  medssl/{f}: {t} {n}".rstrip() for f, t, n in offending)
    )
    stale = sorted(ALLOWED_PRIVATE - uses)
    assert not stale, "allow-list entries no longer needed (remove them): " + repr(stale)


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        ("from medssl.data.volumes import _excluded", "medssl.denoise.batch", 1),
        ("from medssl.data.volumes import is_excluded", "medssl.denoise.batch", 0),
        ("from medssl.denoise.noise_model import _patch_size", "medssl.denoise.physics", 0),
        ("from ..data.volumes import _excluded", "medssl.denoise.batch", 1),
        ("from .noise_model import _patch_size", "medssl.denoise.physics", 0),
        ("from medssl.cli._console import out", "medssl.cli.info", 0),
        ("from medssl.cli._console import out", "medssl.pipeline", 1),
        ("import medssl.cli._console as c", "medssl.pipeline", 1),
        ("from medssl.data import volumes\nvolumes._excluded(p, ())", "medssl.denoise.x", 1),
        ("import medssl.data.volumes as v\nv._excluded(p, ())", "medssl.denoise.x", 1),
        ("import medssl.data.volumes\nmedssl.data.volumes._excluded(p)", "medssl.ssl.x", 1),
        ("from medssl.data import volumes\nvolumes.is_excluded(p)", "medssl.denoise.x", 0),
        ("from medssl.io import __all__", "medssl.cli.x", 0),
        ("from __future__ import annotations\nx._y", "medssl.cli.x", 0),
    ],
)
def test_private_uses_finds_the_imports_it_should(source, module, expected):
    assert len(private_uses(source, module)) == expected


def test_errors_module_imports_nothing_of_medssl_and_io_reexports_it():
    import medssl.errors
    import medssl.io
    import medssl.io.errors

    tree = ast.parse((ROOT / "errors.py").read_text())
    imported = [
        n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level
    ] + [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m.split(".")[0] == "medssl"]
    for name in ("InputError", "OutputError", "MedsslError", "MultipleSeriesError"):
        assert getattr(medssl.io, name) is getattr(medssl.errors, name)
        assert getattr(medssl.io.errors, name) is getattr(medssl.errors, name)
    assert medssl.errors.InputError.exit_code == 2
    assert medssl.errors.OutputError.exit_code == 4
    assert medssl.errors.MedsslError.exit_code == 1


def test_models_does_not_import_io():
    for path in sorted((ROOT / "models").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not [n for n in names if n == "medssl.io" or n.startswith("medssl.io.")], path
