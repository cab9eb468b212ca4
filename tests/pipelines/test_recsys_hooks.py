"""The ``hooks:`` switch of recsys runs: registry names + options → trainer hooks, with clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import planted_log
import pytest
import torch
import yaml

from common_regs.hook_specs import build_hooks, check_hook_specs
from common_regs.sparsity.dsl import DSL
from common_regs.training import Weighted
from pipelines.cli import main
from pipelines.recsys_run import train_run
from pipelines.run_config import load_recsys_config
from recsys.data import Vocabulary, encode_interactions
from recsys.features import FeatureSpec, FeatureTable
from recsys.losses import EmbeddingL2
from recsys.models import TwoTower
from recsys.regularizers import InBatchPSKD, TrainSetup, TwoTowerMultiSampleDropout
from recsys.trainer import TrainConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return planted_log.make_planted_log(tmp_path_factory.mktemp("planted"))


def _setup(planted, **train) -> TrainSetup:
    users = Vocabulary.from_values("user_id", planted.users["user_id"])
    items = Vocabulary.from_values("item_id", planted.items["item_id"])
    torch.manual_seed(0)
    model = TwoTower(FeatureTable.build(users, [FeatureSpec("user_id", "id")]),
                     FeatureTable.build(items, [FeatureSpec("item_id", "id")]), embedding_dim=8, tower_layers=[8])
    counts = encode_interactions(planted.train, users, items).item_counts()
    return TrainSetup(model=model, train=TrainConfig(**{"epochs": 7, **train}), item_counts=counts, epochs=7)


@pytest.mark.torchrec
def test_the_switch_builds_adapters_registry_methods_and_embedding_l2(planted) -> None:
    specs = [
        {"name": "multi_sample_dropout", "num_samples": 3, "p": 0.2, "at": "output"},
        {"name": "ps_kd", "alpha_final": 0.5},
        {"name": "dsl", "density": 0.5, "update_interval": 10},
        {"name": "embedding_l2", "weight": 1e-3},
    ]
    msd, pskd, dsl, weighted = build_hooks(specs, domain="recsys", setup=_setup(planted))
    assert isinstance(weighted, Weighted) and weighted.weight == 1e-3  # the entry's weight travels with the term
    l2 = weighted.hook
    assert isinstance(msd, TwoTowerMultiSampleDropout) and (msd.num_samples, msd.p, msd.at) == (3, 0.2, "output")
    assert msd.method.num_samples == 3  # the registered common_regs MultiSampleDropout does the sampling
    assert isinstance(pskd, InBatchPSKD) and pskd.alpha_final == 0.5
    assert pskd.total_epochs == 7  # the ramp spans the run's configured epochs unless given
    assert pskd.alpha(6) == pytest.approx(0.5) and pskd.alpha(0) == pytest.approx(0.5 / 7)
    assert isinstance(dsl, DSL) and dsl.hook_kind == "mask_scheduler"
    assert isinstance(l2, EmbeddingL2)
    assert all(hook.hook_kind in ("loss", "mask_scheduler") for hook in (msd, pskd, dsl, l2))


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ([{"name": "ps_kdd"}], r"`hooks\[0\]`: unknown method `name`='ps_kdd'. Did you mean 'ps_kd'"),
        ([{"name": "ps_kd"}, {"name": "multi_sample_dropout", "m": 4}],
         r"`hooks\[1\]` \(multi_sample_dropout\): unknown option\(s\) \['m'\]; allowed: \['at', 'num_samples', 'p'\]"),
        ([{"name": "sinkhorn"}], r"'sinkhorn' is a 'solver', not a training-step hook"),
        ([{"p": 0.5}], r"`hooks\[0\]` must be a mapping with a string `name`"),
        ({"name": "ps_kd"}, r"`hooks` must be a list"),
    ],
)
def test_bad_specs_get_a_clear_error(specs, message) -> None:
    with pytest.raises(ValueError, match=message):
        check_hook_specs(specs, domain="recsys")


@pytest.mark.torchrec
def test_adapters_check_the_run_they_are_built_for(planted) -> None:
    with pytest.raises(ValueError, match="`ps_kd` adapts the in-batch softmax: it needs `train.loss`='softmax'"):
        build_hooks([{"name": "ps_kd"}], domain="recsys", setup=_setup(planted, loss="bpr"))
    with pytest.raises(ValueError, match="`alpha_final` must be a number in \\[0, 1\\]"):
        build_hooks([{"name": "ps_kd", "alpha_final": -1}], domain="recsys", setup=_setup(planted))


@pytest.mark.torchrec
def test_a_bad_name_fails_the_run_before_any_data_is_read(tmp_path) -> None:
    with pytest.raises(ValueError, match="Did you mean 'multi_sample_dropout'"):  # refused when the config is read
        load_recsys_config(REPO / "pipelines" / "configs" / "ml100k_two_tower_msd.yaml",
                           [f"data.dir={tmp_path / 'missing'}", "hooks=[{name: multisample_dropout}]"])
    config = {"data": {"dir": str(tmp_path / "missing")}, "hooks": [{"name": "multisample_dropout"}]}
    with pytest.raises(ValueError, match="Did you mean 'multi_sample_dropout'"):
        train_run(config, output_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.torchrec
def test_the_ml100k_configs_load_and_differ_only_in_hooks() -> None:
    base = load_recsys_config(REPO / "pipelines" / "configs" / "ml100k_two_tower_ids.yaml").to_dict()
    for name, hook in (("msd", "multi_sample_dropout"), ("pskd", "ps_kd"), ("pskd_e10", "ps_kd")):
        config = load_recsys_config(REPO / "pipelines" / "configs" / f"ml100k_two_tower_{name}.yaml").to_dict()
        assert [spec["name"] for spec in config["hooks"]] == [hook]
        check_hook_specs(config["hooks"], domain="recsys")
        assert {k: v for k, v in config.items() if k not in ("hooks", "output_dir")} == {
            k: v for k, v in base.items() if k not in ("hooks", "output_dir")
        }


@pytest.mark.torchrec
def test_cli_run_with_both_methods(planted, tmp_path) -> None:
    config = {
        "seed": 0,
        "num_threads": 1,
        "data": {"dir": str(planted.folder), "split": "given", "train": "train.parquet", "test": "test.parquet",
                 "items": "items.parquet", "validation": {"method": "none"}},
        "model": {"name": "two_tower", "embedding_dim": 16, "tower_layers": [16], "temperature": 0.2},
        "train": {"epochs": 4, "batch_size": 64, "lr": 0.02, "show_progress": False},
        "hooks": [{"name": "ps_kd"}],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    hooks = "hooks=[{name: multi_sample_dropout, num_samples: 4, p: 0.3}, {name: ps_kd, alpha_final: 0.5}]"
    assert main(["recsys", "train", "--config", str(path), "--output-dir", str(run), "--set", hooks]) == 0
    resolved = yaml.safe_load((run / "resolved_config.yaml").read_text())
    assert [spec["name"] for spec in resolved["hooks"]] == ["multi_sample_dropout", "ps_kd"]
    assert resolved["hooks"][1] == {"name": "ps_kd", "alpha_final": 0.5}
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["R@10"] > 0.5  # planted clusters: random ranking gives about 0.2
