"""Regularizers switched on in retrieval training by YAML alone (``hooks:``), through ``regkit retrieval train``.

The same registry names as in recsys configs: ``dsl`` on the sparse encoder's MLM head (mask density), the
retrieval adapters of ``ps_kd`` and ``multi_sample_dropout`` (the loss changes against the same run without them),
and the registry resolving domain methods in a fresh interpreter, whatever was imported first. Plus the sparse
trainer's checkpoints: a run resumed from one ends with the parameters of an uninterrupted run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from common_regs.run_dir import SUCCESS_NAME
from pipelines.cli import main
from retrieval.beir import Document
from retrieval.encoder import SparseEncoderConfig, build_sparse_encoder, mlm_parts
from retrieval.mining import Candidates
from retrieval.sparse_config import SparseTrainConfig
from retrieval.trainer import SparseTrainer, TrainingData

DOCS = {
    "d1": ("Aspirin and stroke", "Daily aspirin reduces the risk of ischemic stroke in adults."),
    "d2": ("Statins", "Statins lower cholesterol and the rate of cardiovascular events."),
    "d3": ("Protein kinase", "The protein kinase phosphorylates the receptor in cancer cells."),
    "d4": ("Vitamin D", "Vitamin D deficiency is associated with the risk of bone fractures."),
    "d5": ("Insulin", "Insulin resistance precedes the onset of type 2 diabetes."),
    "d6": ("Malaria", "Artemisinin treats the malaria caused by plasmodium."),
}
QUERIES = {"q1": "does aspirin prevent stroke", "q2": "statins cholesterol", "q3": "kinase receptor cancer",
           "q4": "vitamin d bones", "q5": "insulin diabetes"}
FLOPS = {"name": "idf_aware_flops", "weight": 0.01, "warmup_steps": 2}
DECODER = "*cls.predictions.decoder.weight"  # the MLM head's vocabulary projection (untied in head-only training)
STEPS = 4  # 5 training queries, 2 per step: the second pass over them (epoch 1) starts at step 2


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``regkit retrieval train`` with the default FLOPS hook alone, and with each regularizer added by YAML."""
    root = tmp_path_factory.mktemp("hooks")
    data = root / "tiny"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": t, "text": x}) + "\n"
                                               for d, (t, x) in DOCS.items()))
    (data / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items()))
    (data / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"q{i}\td{i}\t1\n" for i in range(1, 6)))
    variants = {
        "base": [FLOPS],
        "dsl": [FLOPS, {"name": "dsl", "density": 0.5, "update_interval": 2, "targets": [DECODER]}],
        "ps_kd": [FLOPS, {"name": "ps_kd", "alpha_final": 0.8}],
        "msd": [FLOPS, {"name": "multi_sample_dropout", "num_samples": 2, "p": 0.3}],
    }
    logs = {}
    for name, hooks in variants.items():
        config = {"data": str(data), "out_dir": str(root / name), "cache_dir": str(root / "cache"),
                  "ranking_loss": "infonce", "steps": STEPS, "batch_queries": 2, "docs_per_query": 3,
                  "candidates_k": 4, "lr": 1e-3, "warmup_steps": 1, "train_max_length": 32, "hooks": hooks}
        (root / f"{name}.yaml").write_text(yaml.safe_dump(config))
        assert main(["retrieval", "train", "--config", str(root / f"{name}.yaml")]) == 0
        logs[name] = [json.loads(line) for line in (root / name / "train_log.jsonl").read_text().splitlines()]
    return root, logs


def _decoder_density(run) -> float:
    weights = load_file(next(run.glob("model/document_0_Transformer/*.safetensors")))
    decoder = next(value for key, value in weights.items() if key.endswith("cls.predictions.decoder.weight"))
    return float((decoder != 0).float().mean())


def test_dsl_on_the_mlm_head_keeps_its_density(runs) -> None:
    root, logs = runs
    assert [entry["reg/dsl/density"] for entry in logs["dsl"]] == [0.5] * STEPS  # the budget, every step
    assert _decoder_density(root / "dsl") <= 0.5  # the saved model holds the pruned weights (masks baked in)
    assert _decoder_density(root / "base") > 0.99  # without the hook the projection is dense
    resolved = yaml.safe_load((root / "dsl" / "resolved_config.yaml").read_text())
    assert [hook["name"] for hook in resolved["hooks"]] == ["idf_aware_flops", "dsl"]


def test_ps_kd_changes_the_loss_from_the_second_epoch_on(runs) -> None:
    _, logs = runs
    base, pskd = logs["base"], logs["ps_kd"]
    # epoch 0 has no past prediction: the term is exactly 0 and the run is the base run, bit for bit
    assert [entry["ps_kd"] for entry in pskd[:2]] == [0.0, 0.0]
    assert [entry["loss"] for entry in pskd[:2]] == [entry["loss"] for entry in base[:2]]
    assert all(entry["ps_kd"] != 0.0 for entry in pskd[2:])  # the model of epoch 0 now teaches
    assert pskd[2]["loss"] != base[2]["loss"]


def test_multi_sample_dropout_changes_the_loss_from_the_first_step(runs) -> None:
    _, logs = runs
    base, msd = logs["base"], logs["msd"]
    assert msd[0]["multi_sample_dropout"] != 0.0 and msd[0]["weight/multi_sample_dropout"] == 1.0
    # with `ranking_loss: infonce` the total is the mean of the dropout samples' InfoNCE (+ FLOPS, 0 at step 0)
    assert msd[0]["loss"] == pytest.approx(base[0]["loss"] + msd[0]["multi_sample_dropout"], rel=1e-5)
    assert msd[0]["loss"] != base[0]["loss"]


def test_a_bad_hook_is_refused_before_any_work(runs, capsys) -> None:
    root, _ = runs
    config = yaml.safe_load((root / "base.yaml").read_text())
    config["hooks"] = [{"name": "dsl", "density": 0.5, "weight": 2.0}]
    config["out_dir"] = str(root / "refused")
    (root / "refused.yaml").write_text(yaml.safe_dump(config))
    assert main(["retrieval", "train", "--config", str(root / "refused.yaml")]) == 2
    assert "`hooks[0]` (dsl): `weight` only applies to loss terms; 'dsl' is a 'mask_scheduler' hook" in (
        capsys.readouterr().err)
    assert not (root / "refused").exists()


def test_the_registry_finds_domain_methods_without_importing_them_first() -> None:
    code = ("import sys; from common_regs import registry; assert 'retrieval.losses' not in sys.modules; "
            "info = registry.get('idf_aware_flops'); print(info.module, info.kind); "
            "print(registry.adapter_for('ps_kd', 'retrieval').__name__, "
            "registry.adapter_for('ps_kd', 'recsys').__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["retrieval.losses", "loss", "RankingPSKD", "InBatchPSKD"]


def test_rerunning_an_unfinished_training_resumes_from_its_checkpoint(runs) -> None:
    """As if ``regkit retrieval train`` had been killed after step 2: the rerun continues from the step-2
    checkpoint (and says so) and saves the model an uninterrupted run saves."""
    root, _ = runs
    config = yaml.safe_load((root / "base.yaml").read_text())
    config.update(out_dir=str(root / "resumed"), checkpoint_every=2)
    (root / "resumed.yaml").write_text(yaml.safe_dump(config))
    command = ["retrieval", "train", "--config", str(root / "resumed.yaml")]
    assert main(command) == 0
    run = root / "resumed"
    finished = load_file(next(run.glob("model/document_0_Transformer/*.safetensors")))
    assert [path.name for path in sorted((run / "checkpoints").glob("ckpt-*.pt"))] == ["ckpt-000000002.pt",
                                                                                      "ckpt-000000004.pt"]
    first = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    for path in [run / SUCCESS_NAME, *(run / "checkpoints").glob("ckpt-000000004.pt*")]:
        path.unlink()
    shutil.rmtree(run / "model")
    assert main(command) == 0
    again = load_file(next(run.glob("model/document_0_Transformer/*.safetensors")))
    assert finished.keys() == again.keys() and all(torch.equal(finished[k], again[k]) for k in finished)
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == list(range(STEPS))
    assert log[:2] == first[:2]  # steps 0-1 come from the checkpoint (their timings too): not trained again
    assert [entry["loss"] for entry in log] == [entry["loss"] for entry in first]


def _prepared() -> TrainingData:
    corpus = {d: Document(title=t, text=x) for d, (t, x) in DOCS.items()}
    docs = {q: ["d1", "d2", "d3", "d4"] for q in ("q1", "q2")}
    candidates = Candidates(docs=docs, scores={"bm25": {q: [4.0, 3.0, 1.0, 0.5] for q in docs},
                                               "dense": {q: [0.9, 0.2, 0.1, 0.3] for q in docs}})
    return TrainingData({"q1": QUERIES["q1"], "q2": QUERIES["q2"]}, {"q1": ["d1"], "q2": ["d2"]}, candidates, corpus)


def test_a_resumed_run_ends_with_the_parameters_of_an_uninterrupted_one(tmp_path) -> None:
    config = SparseTrainConfig(data="unused", out_dir="unused", ranking_loss="kd_kl", train_encoder=True, steps=4,
                               batch_queries=2, docs_per_query=3, lr=1e-3, warmup_steps=1, train_max_length=16,
                               checkpoint_every=2, hooks=[FLOPS, {"name": "dsl", "density": 0.5, "update_interval": 1,
                                                                 "targets": ["*transform.dense.weight"]}])
    idf = torch.rand(30522, generator=torch.Generator().manual_seed(0)) + 0.5
    finished = {}
    for name in ("straight", "resumed"):
        if name == "resumed":  # as if killed after step 2: only the step-2 checkpoint is there
            (tmp_path / name).mkdir()
            for path in (tmp_path / "straight").glob("ckpt-000000002.pt*"):
                shutil.copy(path, tmp_path / name / path.name)
        model = build_sparse_encoder(SparseEncoderConfig(), idf=idf)
        log = SparseTrainer(config, model, _prepared(), checkpoint_dir=tmp_path / name).fit()
        finished[name] = (log, mlm_parts(model)[0].state_dict())
    (straight_log, straight), (resumed_log, resumed) = finished["straight"], finished["resumed"]
    assert [entry["loss"] for entry in resumed_log] == [entry["loss"] for entry in straight_log]
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[key], resumed[key]) for key in straight)
    dense = straight["model.cls.predictions.transform.dense.weight"]
    assert float((dense != 0).float().mean()) <= 0.5  # the DSL masks were restored with the rest
