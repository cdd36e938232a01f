"""The `medssl` command.

Exit codes: 0 success; 1 internal error (``MEDSSL_DEBUG=1`` shows its traceback); 2 bad input
or an unusable output location, found before any work (a clear message, no traceback); 3 a
batch or pipeline finished but skipped some series (listed with their reasons); 4 a
file-system error while writing (disk full, I/O error: nothing is left under the output's
name); 130 interrupted.
"""

from __future__ import annotations

import os
import sys
import traceback

import typer
from rich.markup import escape

from medssl import __version__
from medssl.cli._console import err, setup_logging
from medssl.cli.convert import convert
from medssl.cli.data import data_app
from medssl.cli.demo import demo
from medssl.cli.denoise import denoise
from medssl.cli.finetune import finetune
from medssl.cli.info import info
from medssl.cli.ops import ops_app
from medssl.cli.pipeline import pipeline_app
from medssl.cli.pretrain import export_nnunet_cmd, pretrain
from medssl.errors import MedsslError
from medssl.io.text import printable

__all__ = ["app", "main"]

app = typer.Typer(
    name="medssl",
    help="Self-supervised learning for medical volumes: CT denoising (Filter2Noise), 3D "
    "pretraining and nnU-Net fine-tuning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # never print locals: they can hold patient data
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"medssl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress messages."),
) -> None:
    setup_logging(verbose)


app.command()(info)
app.command()(convert)
app.command()(denoise)
app.command()(demo)
app.command()(pretrain)
app.command("export-nnunet")(export_nnunet_cmd)
app.command()(finetune)
app.add_typer(data_app, name="data")
app.add_typer(ops_app, name="ops")
app.add_typer(pipeline_app, name="pipeline")


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and map errors to exit codes (see the module docstring).

    Typer handles usage errors itself (exit 2 with the usage line); medssl's own errors and
    unexpected exceptions are caught here so that no traceback reaches the user.
    """
    try:
        app(args=argv, prog_name="medssl")
    except MedsslError as exc:
        # paths and messages may carry control characters: print each line cleaned, indented
        lines = [
            line[: len(line) - len(line.lstrip())] + printable(line, None)
            for line in str(exc).splitlines()
        ]
        err.print(f"[bold red]error:[/bold red] {escape(chr(10).join(lines))}")
        sys.exit(exc.exit_code)
    except OSError as exc:  # a file-system error outside medssl's writer: say where
        where = f"{printable(exc.filename, 300)}: " if exc.filename else ""
        reason = exc.strerror or type(exc).__name__
        err.print(f"[bold red]error:[/bold red] {escape(where + reason)}")
        sys.exit(4)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("MEDSSL_DEBUG"):
            traceback.print_exc()
        err.print(
            f"[bold red]internal error:[/bold red] {type(exc).__name__} (this is a medssl bug; "
            "rerun with MEDSSL_DEBUG=1 to see the traceback and report it)"
        )
        sys.exit(1)
