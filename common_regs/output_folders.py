"""What regkit may write into, replace or delete: its own output folders, and only paths inside them.

The rule every command that writes follows (``docs/reliability.md``, "Output folders"):

* a missing or empty folder is written;
* a folder that is not empty and holds none of the markers its writer leaves (``_SUCCESS.json``, ``_STARTED.json``,
  ``regkit-index.json``, ...) is *foreign*: it is never written into, replaced or deleted, even with
  ``--overwrite`` (:func:`check_regkit_folder`);
* a finished regkit folder is refused unless ``--overwrite``, which removes or rewrites only regkit's outputs;
* a path built from a configured name (a model name that becomes a sub-folder) must be a plain name
  (:func:`check_name`) and stay inside the output folder (:func:`path_inside`), so an absolute name or ``..``
  never reaches a folder outside it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

__all__ = ["NAME_PATTERN", "ForeignFolderError", "check_name", "check_regkit_folder", "is_regkit_folder",
           "path_inside"]

NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]+")


class ForeignFolderError(FileExistsError):
    """A folder holds files regkit did not write; it is never written into or replaced, not even with overwrite."""


def is_regkit_folder(folder: str | os.PathLike[str], markers: Sequence[str]) -> bool:
    """True when ``folder`` holds one of ``markers`` (paths relative to it), the files its regkit writer leaves."""
    folder = Path(folder)
    return any((folder / marker).exists() for marker in markers)


def check_regkit_folder(folder: str | os.PathLike[str], markers: Sequence[str]) -> None:
    """Refuse a ``folder`` that exists, is not empty and holds none of ``markers``.

    Raises:
        ForeignFolderError: the folder (or a file at its path) was not written by regkit.
    """
    folder = Path(folder)
    if not folder.exists() or (folder.is_dir() and next(folder.iterdir(), None) is None):
        return
    if folder.is_dir() and is_regkit_folder(folder, markers):
        return
    what = f"not empty and holds no {' / '.join(markers) or 'regkit marker'}" if folder.is_dir() else "a file"
    raise ForeignFolderError(
        f"{folder} is {what}: regkit did not write it and never writes into or deletes it, even with --overwrite; "
        "choose another output folder, or empty it yourself."
    )


def check_name(name: object, what: str) -> str:
    """Return ``name`` when it is a plain file name (``[A-Za-z0-9._-]+``, not ``.`` or ``..``).

    Raises:
        ValueError: ``name`` is empty, absolute, holds a separator or other characters, or is ``.``/``..``; the
            message names ``what`` (e.g. the config key) and the value.
    """
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or name in (".", ".."):
        raise ValueError(
            f"{what} {name!r} is not a valid name: use letters, digits, '.', '_' and '-' only (it becomes a "
            "folder inside the output folder; no '/', no '..')."
        )
    return name


def path_inside(root: str | os.PathLike[str], *parts: str) -> Path:
    """``root / parts``, refused unless it lies inside ``root`` (after resolving ``..`` and symbolic links).

    Raises:
        ValueError: the path would leave ``root``.
    """
    root = Path(root)
    path = root.joinpath(*parts)
    if not path.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"{path} lies outside the output folder {root}; regkit writes only inside it.")
    return path
