"""The `medssl` command-line interface (typer)."""

from medssl.cli.app import app, main

__all__ = ["app", "main"]
