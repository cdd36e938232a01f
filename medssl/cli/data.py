"""`medssl data ...`: fetch and locate the real sample images."""

from __future__ import annotations

import typer
from rich.table import Table

from medssl.cli._console import out
from medssl.data import ARCHIVES, SAMPLES, cache_root, fetch, is_cached
from medssl.errors import InputError

__all__ = ["data_app"]

data_app = typer.Typer(help="Fetch the real sample images (from PyPI and Debian archives).")


@data_app.command("list")
def list_samples() -> None:
    """List the samples, their source archives and whether they are cached."""
    table = Table(title=f"samples (cache: {cache_root()})")
    for col in ("name", "what", "archive", "cached"):
        table.add_column(col)
    for name, sample in SAMPLES.items():
        cached = is_cached(name)
        table.add_row(
            name, sample.description, ARCHIVES[sample.archive].filename, "yes" if cached else ""
        )
    out.print(table)


@data_app.command("fetch")
def fetch_cmd(
    name: str = typer.Argument("lung1", help="Sample name (see `medssl data list`) or 'all'."),
) -> None:
    """Download (once), verify and extract a sample; print its path."""
    names = list(SAMPLES) if name == "all" else [name]
    for n in names:
        out.print(f"{n}: {fetch(n)}")


@data_app.command("path")
def path_cmd(name: str = typer.Argument(..., help="Sample name.")) -> None:
    """Print the path of a fetched sample's main file (fetching it if needed)."""
    if name not in SAMPLES:
        raise InputError(f"unknown sample {name!r}", hint=f"choose one of: {', '.join(SAMPLES)}")
    out.print(str(fetch(name)))
