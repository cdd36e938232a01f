"""``docs/architecture.md`` matches the code: every ``medssl.…`` name it cites exists, and its
dependency table lists exactly the medssl packages each package imports (``ast`` on the
source; lazy imports inside functions count)."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

import medssl

ROOT = Path(medssl.__file__).resolve().parent
DOC = ROOT.parent / "docs" / "architecture.md"

_NAME = re.compile(r"\bmedssl(?:\.[A-Za-z_]\w*)+")


def cited_names(text: str) -> list[str]:
    """The dotted ``medssl.…`` names of a text, each once, in order."""
    return list(dict.fromkeys(_NAME.findall(text)))


def resolve(dotted: str) -> object:
    """The object a dotted name means: the longest importable module prefix, then attributes.

    Raises:
        LookupError: Nothing by that name.
    """
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            obj: object = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and not module_name.startswith(exc.name):
                raise  # the module exists but an import inside it failed
            continue
        for i, attr in enumerate(parts[cut:], start=cut):
            if not hasattr(obj, attr):
                raise LookupError(f"{dotted}: {'.'.join(parts[:i])} has no {attr!r}")
            obj = getattr(obj, attr)
        return obj
    raise LookupError(f"{dotted}: no such module")


def _package_of(module: str) -> str | None:
    """``medssl.X`` of ``medssl.X.y`` (``None`` for the top-level package itself)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 and parts[0] == "medssl" else None


def imported_packages() -> dict[str, set[str]]:
    """For each medssl package (``medssl.io``, ..., ``medssl.pipeline``): the other medssl
    packages it imports anywhere in its source."""
    deps: dict[str, set[str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[1] == "__init__":  # medssl itself: the version string only
            continue
        own = ".".join(parts[:2])
        is_package = path.name == "__init__.py"
        module = ".".join(parts[:-1] if is_package else parts)
        found = deps.setdefault(own, set())
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolve against this module
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = [target]
            for target in targets:
                package = _package_of(target)
                if package is not None and package != own:
                    found.add(package)
    return deps


def documented_packages(text: str) -> dict[str, set[str]]:
    """The dependency table of the doc: package -> the packages its row says it imports."""
    table: dict[str, set[str]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"`medssl\.\w+`", cells[0]):
            table[cells[0].strip("`")] = set(cited_names(cells[2]))
    return table


def test_every_name_the_architecture_doc_cites_exists():
    names = cited_names(DOC.read_text())
    assert len(names) > 50
    missing = []
    for name in names:
        try:
            resolve(name)
        except LookupError as exc:
            missing.append(str(exc))
    assert missing == [], "docs/architecture.md cites names that do not exist"


def test_the_dependency_table_is_the_imports_of_the_source():
    table = documented_packages(DOC.read_text())
    actual = imported_packages()
    actual.pop("medssl.__main__")  # runs the CLI; the one importer of medssl.cli
    assert set(table) == set(actual), "a package missing from (or extra in) the table"
    wrong = {p: (sorted(actual[p]), sorted(table[p])) for p in table if table[p] != actual[p]}
    assert wrong == {}, "package: (imports in the source, imports in the doc)"
    assert all("medssl.cli" not in deps for deps in actual.values())


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("medssl.io.atomic_file", True),
        ("medssl.finetune.settings.FinetuneSettings.record", True),
        ("medssl.io.no_such_writer", False),
        ("medssl.no_such_package.thing", False),
    ],
)
def test_the_name_check_itself(name: str, ok: bool):
    if ok:
        resolve(name)
    else:
        with pytest.raises(LookupError):
            resolve(name)


def test_the_table_parser_reads_rows_and_ignores_prose():
    text = (
        "| package | what | imports |\n|---|---|---|\n"
        "| `medssl.io` | I/O, not `medssl.cli` | `medssl.errors` |\n"
        "| `medssl.ops` | kernels | none |\n"
        "Prose naming `medssl.data`.\n"
    )
    assert documented_packages(text) == {"medssl.io": {"medssl.errors"}, "medssl.ops": set()}
