"""Checksummed checkpoints: a truncated or corrupted newest checkpoint is detected on resume (warning naming the
file and the mismatch), the previous one is used, and training still ends bit-identical; none valid → clear error.
"""

from __future__ import annotations

import logging

import numpy as np
import polars as pl
import pytest
import torch

from common_regs.checkpoint import (
    CheckpointDir,
    CheckpointError,
    ChecksumError,
    checksum_path,
    save_with_checksum,
    sha256_file,
    verify_checksum,
)
from recsys.data import InMemoryBatches, Vocabulary, encode_interactions
from recsys.features import FeatureSpec, FeatureTable
from recsys.models import build_model
from recsys.trainer import TrainConfig, Trainer


def _trainer(folder, *, max_steps: int, init_seed: int = 0) -> Trainer:
    rng = np.random.default_rng(5)
    log = pl.DataFrame({"user_id": rng.integers(0, 40, 900), "item_id": rng.integers(0, 30, 900)}).unique(
        maintain_order=True
    )
    users, items = Vocabulary.from_values("user_id", log["user_id"]), Vocabulary.from_values("item_id", log["item_id"])
    train = encode_interactions(log, users, items)
    torch.manual_seed(init_seed)
    model = build_model(
        "two_tower",
        {"embedding_dim": 8, "tower_layers": [16, 8], "dropout": 0.3},
        users=FeatureTable.build(users, [FeatureSpec("user_id", "id")]),
        items=FeatureTable.build(items, [FeatureSpec("item_id", "id")]),
    )
    config = TrainConfig(epochs=3, max_steps=max_steps, batch_size=64, logq="streaming", checkpoint_every=4,
                         show_progress=False, seed=11)
    return Trainer(model, InMemoryBatches(train, 64, seed=11), config, checkpoint_dir=folder)


@pytest.fixture(scope="module")
def reference_state(tmp_path_factory):
    trainer = _trainer(tmp_path_factory.mktemp("reference"), max_steps=30)
    trainer.fit()
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def _assert_identical(reference, model):
    state = model.state_dict()
    assert reference.keys() == state.keys()
    for key, value in reference.items():
        assert torch.equal(value, state[key]), key


@pytest.mark.torchrec
@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "drop_sidecar"])
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(reference_state, tmp_path, caplog, damage):
    _trainer(tmp_path, max_steps=18).fit()  # "crash" after step 18: checkpoints at 16 and 18 (epoch end at 14)
    ckpts = CheckpointDir(tmp_path).checkpoints()
    assert [step for step, _ in ckpts] == [18, 16]  # keep=2: older ones were pruned after each save
    newest, previous = ckpts[0][1], ckpts[1][1]
    data = newest.read_bytes()
    if damage == "truncate":
        newest.write_bytes(data[: len(data) // 2])
    elif damage == "flip_byte":
        newest.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    else:
        checksum_path(newest).unlink()
    resumed = _trainer(tmp_path, max_steps=30, init_seed=99)  # another init: everything must come from disk
    with caplog.at_level(logging.WARNING, logger="common_regs.checkpoint"):
        result = resumed.fit()
    warning = next(r.getMessage() for r in caplog.records if "unusable checkpoint" in r.getMessage())
    assert str(newest) in warning
    assert {"truncate": "SHA-256 mismatch", "flip_byte": "SHA-256 mismatch", "drop_sidecar": "no checksum"}[
        damage
    ] in warning
    assert any(f"using checkpoint {previous}" in r.getMessage() for r in caplog.records)
    assert result.steps == 30
    _assert_identical(reference_state, resumed.model)


@pytest.mark.torchrec
def test_no_valid_checkpoint_is_a_clear_error(tmp_path):
    _trainer(tmp_path, max_steps=9).fit()
    for _, path in CheckpointDir(tmp_path).checkpoints():
        path.write_bytes(path.read_bytes()[:10])
    with pytest.raises(CheckpointError, match=r"no valid checkpoint in .*ckpt-000000009\.pt: .*SHA-256 mismatch"):
        _trainer(tmp_path, max_steps=30).fit()


def test_checksum_matches_hashlib_and_sha256sum_format(tmp_path):
    import hashlib

    payload = bytes(range(256)) * 5000  # > one 1 MiB read chunk
    path = save_with_checksum(tmp_path / "blob.bin", lambda tmp: tmp.write_bytes(payload))
    digest = hashlib.sha256(payload).hexdigest()
    assert sha256_file(path) == digest == verify_checksum(path)
    assert checksum_path(path).read_text() == f"{digest}  blob.bin\n"  # `sha256sum -c` format
    checksum_path(path).write_text("not a digest\n")
    with pytest.raises(ChecksumError, match="not a SHA-256 checksum file"):
        verify_checksum(path)


def test_rotation_keeps_the_newest_and_removes_stale_temporaries(tmp_path):
    ckpts = CheckpointDir(tmp_path, keep=3)
    (tmp_path / ".ckpt-000000002.pt.abcd.tmp").write_bytes(b"half a write")  # a write killed before its rename
    for step in range(1, 6):
        ckpts.save(step, lambda tmp, step=step: tmp.write_text(f"state {step}"))
    assert [s for s, _ in ckpts.checkpoints()] == [5, 4, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"ckpt-{s:09d}.pt" for s in (3, 4, 5)] + [f"ckpt-{s:09d}.pt.sha256" for s in (3, 4, 5)]
    )
    assert ckpts.load_latest(lambda p: p.read_text()) == (ckpts.path(5), "state 5")
    assert CheckpointDir(tmp_path / "empty").load_latest(lambda p: p.read_text()) is None
    with pytest.raises(ValueError, match="`keep` must be an integer >= 1, got 0"):
        CheckpointDir(tmp_path, keep=0)
