"""Crash safety of ``regkit recsys train``: SIGKILL mid-epoch, rerun the same command, bit-identical model.

The uninterrupted reference runs in this process with one intra-op thread (the config's ``num_threads: 1``), the
killed and the resumed runs as ``python -m pipelines`` subprocesses with ``OMP_NUM_THREADS=1``.
"""

from __future__ import annotations

import json

import pytest
import torch

from common_regs.run_dir import LOCK_NAME, SUCCESS_NAME
from pipelines.cli import main
from pipelines.faults import (
    compare_states,
    recsys_checkpoints,
    run_cli,
    run_until,
    saved_model_state,
    write_recsys_config,
)

pytestmark = pytest.mark.torchrec


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash-train")
    config = write_recsys_config(root / "config.yaml", epochs=2, checkpoint_every=5)
    threads = torch.get_num_threads()
    try:
        assert main(["recsys", "train", "--config", str(config), "--output-dir", str(root / "reference")]) == 0
    finally:
        torch.set_num_threads(threads)
    return root, config


def test_killed_training_resumes_to_bit_identical_parameters(reference):
    root, config = reference
    run = root / "killed"
    args = ["recsys", "train", "--config", config, "--output-dir", run]
    killed = run_until(args, root / "killed.log", ready=lambda: bool(recsys_checkpoints(run)), timeout=900)
    assert killed.killed and killed.returncode == -9, killed.log[-2000:]
    steps_at_kill = [step for step, _ in recsys_checkpoints(run)]
    assert steps_at_kill and max(steps_at_kill) < 128  # 2 epochs × 64 batches: killed before the end
    # (5) a killed run leaves no completion marker, only a stale lock
    assert not (run / SUCCESS_NAME).exists() and not (run / "model").exists()
    owner = json.loads((run / LOCK_NAME).read_text())
    assert owner["pid"] != 0 and "host" in owner

    resumed = run_cli(args, root / "resumed.log", timeout=900)
    assert resumed.returncode == 0, resumed.log[-3000:]
    assert "taking over the stale lock" in resumed.log and "is not running" in resumed.log
    assert "resumed from" in resumed.log and f"ckpt-{max(steps_at_kill):09d}.pt" in resumed.log
    assert (run / SUCCESS_NAME).is_file() and not (run / LOCK_NAME).exists()

    expected, got = saved_model_state(root / "reference"), saved_model_state(run)
    assert expected and compare_states(expected, got) == []
    for key, tensor in expected.items():  # the same check spelled out: every tensor bit-identical
        assert torch.equal(tensor, got[key]), key
    reference_metrics = json.loads((root / "reference" / "metrics.json").read_text())["test"]
    assert json.loads((run / "metrics.json").read_text())["test"]["R@10"] == reference_metrics["R@10"]
    marker = json.loads((run / SUCCESS_NAME).read_text())
    assert marker["config_sha256"] == json.loads((root / "reference" / SUCCESS_NAME).read_text())["config_sha256"]


def test_rerunning_a_finished_run_is_refused_and_says_why(reference, capsys):
    root, config = reference
    capsys.readouterr()
    assert main(["recsys", "train", "--config", str(config), "--output-dir", str(root / "reference")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds a finished run (_SUCCESS.json" in err and "--overwrite" in err
