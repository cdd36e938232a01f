"""Fixtures of the identifier tests: a study with planted identifiers and a salt file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.io.test_deidentify import SALT, write_planted_series


@pytest.fixture
def study(tmp_path) -> Path:
    """Two series of one planted study, with escape sequences in the SeriesDescription and
    the Manufacturer."""
    root = tmp_path / "study"
    write_planted_series(root / "a", index=1, escape=True, seed=1)
    write_planted_series(root / "b", index=2, escape=True, seed=2)
    return root


@pytest.fixture
def salt_file(tmp_path) -> Path:
    path = tmp_path / "keys" / "salt.txt"
    path.parent.mkdir()
    path.write_bytes(SALT + b"\n")
    return path
