"""Helpers of the resume tests: an interrupted ``regkit recsys train``, and a pickle that would leave a marker file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from pipelines.cli import main
from pipelines.faults import DEMO_DIR, write_recsys_config
from recsys.trainer import Trainer


class MarkerOnUnpickle:
    """Unpickling this object (``pickle`` / ``torch.load(weights_only=False)``) creates the file ``path``: the way a
    crafted checkpoint runs code."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return exec, (f"open({self.path!r}, 'w').close()",)


def crash_training(monkeypatch: pytest.MonkeyPatch, *, after_checkpoints: int) -> None:
    """Make the trainer raise ("simulated crash") instead of writing checkpoint number ``after_checkpoints + 1``.

    What it leaves on disk is what a kill at that moment leaves (the folder lock aside, released by the exception).
    """
    original = Trainer.save_checkpoint
    saved: list[Path | None] = []

    def save(self: Trainer) -> Path | None:
        if len(saved) >= after_checkpoints:
            raise RuntimeError("simulated crash")
        saved.append(original(self))
        return saved[-1]

    monkeypatch.setattr(Trainer, "save_checkpoint", save)


def regkit(*args: object) -> int:
    """``regkit <args>`` in this process; the torch thread count (set by the run's config) is restored after."""
    threads = torch.get_num_threads()
    try:
        return main([str(arg) for arg in args])
    finally:
        torch.set_num_threads(threads)


def cli_error(stderr: str) -> str:
    """The CLI's error message, checked to be one line: the last line of ``stderr`` (logs and progress bars of the
    run come before it)."""
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("regkit: error: ") and stderr.count("regkit: error:") == 1, stderr[-3000:]
    return last


def recsys_setup(root: Path) -> tuple[Path, Path]:
    """A copy of the demo recsys data under ``root/data`` and a small config reading it; returns both paths."""
    data = root / "data"
    shutil.copytree(DEMO_DIR / "recsys", data)
    config = write_recsys_config(root / "config.yaml", epochs=2, checkpoint_every=5)
    resolved = yaml.safe_load(config.read_text(encoding="utf-8"))
    resolved["data"]["dir"] = str(data)
    config.write_text(yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8")
    return data, config
