"""Loading files that a user may have received from someone else, without ever running code from them.

A pickle (``torch.load(..., weights_only=False)``, :mod:`pickle`, ``np.load(allow_pickle=True)``, joblib) can call
any Python function while it is read, so a checkpoint or model folder copied from elsewhere, even one with a
matching ``.sha256`` sidecar (the sidecar proves integrity, not origin), must never be unpickled. regkit writes
tensors and plain containers only and reads them back with:

* :func:`load_tensors`: ``torch.load(weights_only=True)`` (PyTorch's restricted unpickler: tensors, dicts, lists,
  tuples, numbers, strings); anything else is refused with :class:`UnsafeFileError`, a one-line message naming
  the file and the object it would have built;
* :func:`refuse_pickled_weights`: a model folder must hold its weights as safetensors; a ``.bin`` / ``.pt`` /
  ``.pkl`` file in it is refused before any library opens the folder.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

__all__ = ["PICKLE_SUFFIXES", "UnsafeFileError", "load_tensors", "refuse_pickled_weights"]

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib")
"""File suffixes of pickle-based weights (PyTorch ``torch.save``, joblib, plain pickle)."""


class UnsafeFileError(ValueError):
    """A file would need the full (code-running) unpickler, or a model folder holds pickle-based weights."""


def _reason(err: Exception) -> str:
    match = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\. Please|\n|$)", str(err))
    return match.group(1).strip() if match else str(err).splitlines()[0]


def load_tensors(path: str | os.PathLike[str], *, what: str = "regkit") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; a file holding any other Python object is refused.

    Args:
        path: the file.
        what: what the file should be, for the message (e.g. "checkpoint").

    Raises:
        UnsafeFileError: the file holds objects outside PyTorch's weights-only allowlist (a crafted file, or one
            written by an older regkit that pickled numpy objects); nothing from it is executed.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeFileError(
            f"{path}: refused to load this {what} file: it holds Python objects other than tensors and plain "
            f"containers ({_reason(err)}), and unpickling them could run code. A file written by this regkit never "
            "does; if it came from elsewhere do not use it, if an older regkit wrote it start over (--overwrite)."
        ) from None


def refuse_pickled_weights(folder: str | os.PathLike[str]) -> None:
    """Raise :class:`UnsafeFileError` when ``folder`` (recursively) holds a pickle-based weights file.

    Libraries such as transformers and sentence-transformers fall back to ``pytorch_model.bin`` when no
    ``model.safetensors`` is present; checking first keeps every load path of a model folder pickle-free.
    """
    folder = Path(folder)
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES and p.is_file())
    if found:
        raise UnsafeFileError(
            f"{found[0]}: pickle-based weights file in the model folder {folder} ({len(found)} such file(s)); regkit "
            "loads model folders from safetensors only: re-save the model with "
            "`save_pretrained(path, safe_serialization=True)` from a trusted copy, or remove the file."
        )
