"""Shared fixtures: real sample data (fetched once, skipped with a reason when impossible) and
the real `medssl` command (in-process by default, or in a subprocess)."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import warnings
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

from medssl.data import DataUnavailableError, fetch

# the commands run in-process by the `medssl` fixture print as they would to a 200-column pipe:
# rich reads these when medssl's consoles are created at import
os.environ["COLUMNS"] = "200"
os.environ["NO_COLOR"] = "1"

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


def _exit_code(exc: SystemExit, stderr: io.StringIO) -> int:
    """The exit status a process would have for ``sys.exit(exc.code)``."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=stderr)  # as the interpreter prints a non-integer exit value
    return 1


def _run_in_process(args: list[str], env: dict[str, str]) -> Result:
    """Run ``medssl.cli.app.main(args)`` here, with ``env`` set and everything it changes in this
    process (environment, the `medssl` logger, warning filters, thread count, the bilateral
    backend) put back afterwards. Saves the 3-4 s a new Python process spends importing torch."""
    import torch

    from medssl.cli.app import main
    from medssl.ops import set_backend

    stdout, stderr = io.StringIO(), io.StringIO()
    saved_env = dict(os.environ)
    logger = logging.getLogger("medssl")
    saved_logger = (list(logger.handlers), logger.level, logger.propagate)
    threads = torch.get_num_threads()
    code = 0
    os.environ.update(env)
    try:
        with warnings.catch_warnings(), redirect_stdout(stdout), redirect_stderr(stderr):
            try:
                main(args)
            except SystemExit as exc:
                code = _exit_code(exc, stderr)
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        logger.handlers[:], logger.level, logger.propagate = saved_logger
        torch.set_num_threads(threads)
        set_backend(None)
    return Result(code, stdout.getvalue(), stderr.getvalue())


@pytest.fixture
def medssl():
    """``medssl(*args)`` runs the `medssl` command with ARGS and returns its exit code and output.

    By default the command runs in this test process (``medssl.cli.app.main``, the function
    ``python -m medssl`` calls, with stdout and stderr captured and exit codes from
    ``SystemExit``); ``process=True`` runs ``python -m medssl ARGS`` in a new process, for what
    only a real process shows (the interpreter's own exit, output of child processes)."""

    def run(
        *args: str,
        env: dict[str, str] | None = None,
        timeout: float = 300,
        process: bool = False,
    ) -> Result:
        env = {"COLUMNS": "200", "NO_COLOR": "1", **(env or {})}
        if not process:
            return _run_in_process([str(a) for a in args], env)
        proc = subprocess.run(
            [sys.executable, "-m", "medssl", *map(str, args)],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            timeout=timeout,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run
