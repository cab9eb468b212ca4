"""Nothing regkit loads from a run folder or a model folder can run code.

A SHA-256 sidecar proves a file is intact, not where it came from: a crafted ``ckpt-*.pt`` with a matching sidecar,
a served ``model/model.pt`` or a sparse model folder with a pickled ``.bin`` are loaded by the real commands and
refused with a one-line error, and the file that unpickling them would have created never appears.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from resume_support import MarkerOnUnpickle, cli_error, crash_training, recsys_setup, regkit

from common_regs.checkpoint import checksum_path, sha256_file
from common_regs.safe_load import UnsafeFileError, load_tensors
from pipelines.faults import DEMO_DIR, recsys_checkpoints, tiny_sparse_model


def _plant(path, marker) -> None:
    """Replace ``path`` with a torch file whose unpickling creates ``marker``, and give it a valid sidecar."""
    torch.save({"format_version": 2, "model": {}, "payload": MarkerOnUnpickle(marker)}, path)
    checksum_path(path).write_text(f"{sha256_file(path)}  {path.name}\n", encoding="utf-8")


@pytest.mark.torchrec
def test_crafted_checkpoint_with_a_valid_sidecar_is_refused_on_resume(tmp_path, monkeypatch, capsys) -> None:
    _, config = recsys_setup(tmp_path)
    run, marker = tmp_path / "run", tmp_path / "code-ran"
    args = ("recsys", "train", "--config", config, "--output-dir", run)
    crash_training(monkeypatch, after_checkpoints=1)
    assert regkit(*args) == 2
    monkeypatch.undo()
    (_, newest), *_ = recsys_checkpoints(run)
    _plant(newest, marker)

    capsys.readouterr()
    assert regkit(*args) == 2  # the README's resume command: rerun the same command
    err = cli_error(capsys.readouterr().err)
    assert f"{newest}: refused to load this checkpoint file" in err and "GLOBAL" in err
    assert not marker.exists()


@pytest.mark.torchrec
def test_crafted_served_model_is_refused(tmp_path, capsys) -> None:
    _, config = recsys_setup(tmp_path)
    run, marker = tmp_path / "run", tmp_path / "code-ran"
    assert regkit("recsys", "train", "--config", config, "--output-dir", run, "--set", "train.epochs=1") == 0
    served, manifest = run / "model" / "model.pt", run / "model" / "serving.json"
    torch.save({"name": "two_tower", "config": {}, "state_dict": MarkerOnUnpickle(marker)}, served)
    meta = json.loads(manifest.read_text())  # the manifest's checksums are forged too
    meta["files"]["model.pt"] = {"bytes": served.stat().st_size, "sha256": sha256_file(served)}
    manifest.write_text(json.dumps(meta))

    capsys.readouterr()
    assert regkit("recsys", "recommend", "--model", run / "model", "--user", "1") == 2
    err = cli_error(capsys.readouterr().err)
    assert f"{served}: refused to load this served model file" in err
    assert not marker.exists()


def test_sparse_model_folder_with_pickled_weights_is_refused(tmp_path, capsys) -> None:
    data = DEMO_DIR / "beir"
    model, marker = tiny_sparse_model(tmp_path / "model", data / "corpus.jsonl"), tmp_path / "code-ran"
    idf = model / "query_0_SparseStaticEmbedding"
    (idf / "model.safetensors").unlink()  # the libraries then fall back to the pickled pytorch_model.bin
    torch.save({"weight": MarkerOnUnpickle(marker)}, idf / "pytorch_model.bin")

    capsys.readouterr()
    assert regkit("retrieval", "index", "--data", data, "--index", tmp_path / "index", "--model", model) == 2
    err = cli_error(capsys.readouterr().err)
    assert f"{idf / 'pytorch_model.bin'}: pickle-based weights file" in err and "safetensors only" in err
    assert not marker.exists() and not (tmp_path / "index").exists()


def test_checkpoint_of_the_old_format_is_refused_with_a_way_out(tmp_path) -> None:
    path = tmp_path / "ckpt-000000005.pt"
    torch.save({"format_version": 1, "rng": {"numpy": np.random.get_state()}}, path)  # pickled numpy objects
    with pytest.raises(UnsafeFileError, match=r"older regkit wrote it start over \(--overwrite\)"):
        load_tensors(path, what="checkpoint")
