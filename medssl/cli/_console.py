"""Console output shared by the commands: results to stdout, messages to stderr."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler

__all__ = ["err", "out", "setup_logging"]

out = Console(highlight=False, soft_wrap=True, markup=False)  # paths may hold [brackets]
err = Console(stderr=True, highlight=False, soft_wrap=True)


def setup_logging(verbose: bool) -> None:
    """Log medssl's messages to stderr (INFO with ``--verbose``, else WARNING)."""
    logger = logging.getLogger("medssl")
    logger.handlers.clear()
    handler = RichHandler(console=err, show_time=False, show_path=False, markup=False)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    logger.propagate = False
