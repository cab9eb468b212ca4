"""Scratch data of a streamed ``regkit recsys train`` stays in its run folder; a killed run's is removed next time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import planted_log
import pytest
import yaml

import pipelines.evaluation.recsys_streaming as recsys_streaming
import pipelines.recsys_data as recsys_data
from common_regs.run_dir import scratch_folder
from pipelines.cli import main
from pipelines.run_guard import STARTED_NAME


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_scratch_folder_removes_only_the_leftovers_of_dead_processes(tmp_path):
    dead = tmp_path / f".regkit-seen-parts-{_dead_pid()}-abc"
    live = tmp_path / f".regkit-seen-parts-{os.getpid()}-def"  # e.g. another rank of the same run
    other_kind = tmp_path / f".regkit-eval-parts-{_dead_pid()}-ghi"
    for folder in (dead, live, other_kind):
        (folder / "part-0").mkdir(parents=True)
    with scratch_folder("seen-parts", tmp_path) as created:
        assert Path(created).parent == tmp_path and Path(created).name.startswith(f".regkit-seen-parts-{os.getpid()}-")
        assert not dead.exists() and live.is_dir() and other_kind.is_dir()
    assert not Path(created).exists()


@pytest.mark.torchrec
def test_a_streamed_run_partitions_inside_its_run_folder_and_cleans_a_killed_runs_leftovers(tmp_path, monkeypatch):
    planted = planted_log.make_planted_log(tmp_path / "data", items=120, per_user=20)
    run = tmp_path / "run"
    dead = _dead_pid()  # a SIGKILL while building the seen table leaves its marker and its partitions
    leftover = run / f".regkit-seen-parts-{dead}-x7q"
    (leftover / "train").mkdir(parents=True)
    (leftover / "train" / "part-00000.parquet").write_bytes(b"partial")
    (run / STARTED_NAME).write_text(json.dumps({"config_sha256": "0" * 64, "inputs": {}, "pid": dead}))
    destinations: list[Path] = []
    for module in (recsys_data, recsys_streaming):
        original = module.partition_by_user

        def recording(path, vocabulary, out, *args, original=original, **kwargs):
            destinations.append(Path(out))
            return original(path, vocabulary, out, *args, **kwargs)

        monkeypatch.setattr(module, "partition_by_user", recording)
    config = {
        "seed": 0, "num_threads": 1,
        "data": {"dir": str(planted.folder), "split": "given", "train": "train.parquet", "test": "test.parquet",
                 "duplicates": "keep", "validation": {"method": "none"}, "streaming": True,
                 "streaming_part_rows": 500},
        "model": {"name": "mf", "embedding_dim": 8},
        "train": {"epochs": 1, "batch_size": 128, "show_progress": False},
        "eval": {"ks": [5]},
    }
    path = tmp_path / "streaming.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["recsys", "train", "--config", str(path), "--output-dir", str(run)]) == 0
    assert destinations and all(run.resolve() in folder.resolve().parents for folder in destinations), destinations
    assert not leftover.exists()
    assert not list(run.glob(".regkit-*-parts-*"))  # this run's own scratch is gone too
