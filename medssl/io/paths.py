"""Finding input files: a folder's files without following links out of it."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["list_files"]


def list_files(folder: str | os.PathLike[str], *, follow_outside_links: bool = False) -> list[Path]:
    """The files under ``folder`` at any depth, sorted.

    Folder links are not descended into (no loops); a file link is listed only when its
    target lies inside ``folder``, unless ``follow_outside_links``: a link planted in an
    input folder must not make medssl read (and copy into its outputs) files elsewhere.
    """
    root = Path(folder)
    real_root = Path(os.path.realpath(root))
    files = []
    for dirpath, _dirs, names in os.walk(root, followlinks=False):
        for name in names:
            p = Path(dirpath) / name
            if p.is_symlink():
                target = Path(os.path.realpath(p))
                inside = target == real_root or real_root in target.parents
                if not target.is_file() or not (inside or follow_outside_links):
                    continue
            elif not p.is_file():
                continue
            files.append(p)
    return sorted(files)
