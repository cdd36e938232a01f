"""Shared fixtures: real sample data (fetched once, skipped with a reason when impossible) and
the real `medssl` command run in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from medssl.data import DataUnavailableError, fetch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one compute thread per test process (and the commands it starts): with a worker per
    # core, more threads only contend for the same cores
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


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


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@pytest.fixture
def medssl():
    """``medssl(*args)`` runs ``python -m medssl ARGS`` and returns its exit code and output."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> Result:
        full_env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(env or {})}
        proc = subprocess.run(
            [sys.executable, "-m", "medssl", *map(str, args)],
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run
