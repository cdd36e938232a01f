"""The ``--deidentify`` options shared by the commands that write DICOM outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import typer

from medssl.errors import InputError
from medssl.io import DEID_SALT_ENV, Deidentifier

__all__ = ["DATES_OPTION", "DEIDENTIFY_OPTION", "SALT_OPTION", "deidentifier_from_options"]


def _option(default: Any, *names: str, help: str) -> Any:
    return typer.Option(default, *names, help=help)


DEIDENTIFY_OPTION = _option(
    False,
    "--deidentify",
    help="Write DICOM outputs under the DICOM PS3.15 Basic Profile: pseudonymous patient, "
    "UIDs mapped with your salt, dates shifted per patient, no free text or private tags. "
    f"Needs a salt: --deidentify-salt-file or ${DEID_SALT_ENV}. (NIfTI, NRRD and MHA "
    "outputs never carry header text.)",
)
SALT_OPTION = _option(
    None,
    "--deidentify-salt-file",
    help=f"File holding the secret salt of --deidentify (else ${DEID_SALT_ENV}); keep it: "
    "the same salt maps the same patient and study to the same pseudonym and UIDs.",
)
DATES_OPTION = _option(
    "shift",
    "--deidentify-dates",
    help="With --deidentify: 'shift' dates by one offset per patient, or 'remove' them.",
)


def deidentifier_from_options(
    deidentify: bool, salt_file: Path | None, dates: str
) -> Deidentifier | None:
    """The :class:`~medssl.io.Deidentifier` the options ask for (``None`` without
    ``--deidentify``), built before any input is read.

    Raises:
        InputError: Unknown dates mode, no salt, or a salt file without ``--deidentify``.
    """
    if not deidentify:
        if salt_file is not None:
            raise InputError(
                "--deidentify-salt-file is given without --deidentify",
                hint="add --deidentify to de-identify the output, or drop the salt file",
            )
        return None
    if dates not in ("shift", "remove"):
        raise InputError(f"unknown --deidentify-dates {dates!r}", hint="use 'shift' or 'remove'")
    mode: Literal["shift", "remove"] = "shift" if dates == "shift" else "remove"
    return Deidentifier.from_env_or_file(salt_file, dates=mode)
