"""The pieces of the GPU fine-tuning path that run on any machine: packed vector files, training on prepared inputs
(``SparseTrainer``, no Lucene), the device option, and the device script's config resolution."""

from __future__ import annotations

import argparse
import random

import numpy as np
import pytest
import torch

from pipelines.retrieval_run import training_pairs
from retrieval.beir import Document
from retrieval.encoder import SparseEncoderConfig, build_sparse_encoder, mlm_parts
from retrieval.impact import MAX_DOC_IMPACT, quantize_weights
from retrieval.mining import Candidates
from retrieval.sparse_config import SparseTrainConfig
from retrieval.sparse_vectors import PackedVectors, load_packed, pack_quantized, save_packed
from retrieval.trainer import SparseTrainer, TrainingData

VOCAB = [f"tok{i}" for i in range(500)] + ["[CLS]", "##ing", "é"]


def _random_vectors(seed: int, docs: int) -> dict[str, dict[str, int]]:
    rng = random.Random(seed)
    out = {}
    for d in range(docs):
        tokens = rng.sample(VOCAB, rng.randint(0, 40))  # some documents empty
        out[f"doc-{d}"] = {t: rng.randint(1, MAX_DOC_IMPACT) for t in tokens}
    return out


def test_packed_vectors_round_trip_exactly_through_one_file(tmp_path) -> None:
    first, second = _random_vectors(0, 60), _random_vectors(1, 7)
    path = save_packed(tmp_path / "v.npz", {"scifact": pack_quantized(first, VOCAB, doc_scale=100.0),
                                             "cranfield": pack_quantized(second, VOCAB, doc_scale=100.0)})
    loaded = load_packed(path)
    assert sorted(loaded) == ["cranfield", "scifact"]
    assert loaded["scifact"].quantized() == first and loaded["cranfield"].quantized() == second
    assert loaded["scifact"].doc_ids == list(first)  # order kept
    assert loaded["scifact"].active_terms.tolist() == [len(v) for v in first.values()]
    # de-quantized weights quantize back to exactly the stored levels (what the impact indexer does)
    for doc_id, weights in loaded["scifact"].weights().items():
        assert quantize_weights(weights, 100.0, where=doc_id, limit=MAX_DOC_IMPACT) == first[doc_id]


def test_packed_vectors_reject_bad_input(tmp_path) -> None:
    with pytest.raises(ValueError, match="not in the vocabulary"):
        pack_quantized({"d": {"unknown-token": 3}}, VOCAB, doc_scale=100.0)
    with pytest.raises(ValueError, match="integer in"):
        pack_quantized({"d": {"tok1": 0}}, VOCAB, doc_scale=100.0)
    with pytest.raises(ValueError, match="integer in"):
        pack_quantized({"d": {"tok1": 2.5}}, VOCAB, doc_scale=100.0)
    with pytest.raises(ValueError, match="offsets"):
        PackedVectors(doc_ids=["a"], offsets=np.array([0, 2, 3]), token_ids=np.zeros(3, np.int32),
                      levels=np.ones(3, np.uint16), vocabulary=VOCAB, doc_scale=100.0)
    with pytest.raises(ValueError, match="without '/'"):
        save_packed(tmp_path / "x.npz", {"a/b": pack_quantized({}, VOCAB, doc_scale=1.0)})
    (tmp_path / "other.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a packed-vector file"):
        load_packed(tmp_path / "other.npz")


def test_training_pairs_keep_judged_non_blank_queries() -> None:
    queries = {"q1": "aspirin", "q2": "  ", "q3": "statins", "q4": "no positive"}
    qrels = {"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 1}, "q3": {"d4": 2}, "q4": {"d5": 0}, "q5": {"d6": 1}}
    kept, positives = training_pairs(queries, qrels)
    assert kept == {"q1": "aspirin", "q3": "statins"}
    assert positives["q1"] == ["d1"] and positives["q3"] == ["d4"] and "q4" not in positives


@pytest.fixture(scope="module")
def prepared():
    corpus = {f"d{i}": Document(title=t, text=x) for i, (t, x) in enumerate([
        ("Aspirin", "Daily aspirin reduces the risk of ischemic stroke."),
        ("Statins", "Statins lower cholesterol and cardiovascular events."),
        ("Kinase", "The protein kinase phosphorylates the receptor in cancer cells."),
        ("Vitamin D", "Vitamin D deficiency is associated with bone fractures."),
    ])}
    queries = {"q0": "aspirin stroke", "q1": "statins cholesterol"}
    positives = {"q0": ["d0"], "q1": ["d1"]}
    docs = {q: ["d0", "d1", "d2", "d3"] for q in queries}
    candidates = Candidates(docs=docs, scores={"bm25": {q: [4.0, 3.0, 1.0, 0.5] for q in queries},
                                               "dense": {q: [0.9, 0.2, 0.1, 0.3] for q in queries}})
    idf = torch.rand(30522, generator=torch.Generator().manual_seed(0)) + 0.5
    return corpus, queries, positives, candidates, idf


def train_model(config: SparseTrainConfig, model, queries, positives, candidates, corpus) -> list[dict]:
    """Train ``model`` in place on prepared inputs (no cache: full fine-tuning); the per-step log."""
    return SparseTrainer(config, model, TrainingData(queries, positives, candidates, corpus)).fit()


def test_train_model_fine_tunes_the_body_on_prepared_inputs_without_lucene(prepared) -> None:
    corpus, queries, positives, candidates, idf = prepared
    config = SparseTrainConfig(data="unused", out_dir="unused", ranking_loss="kd_kl", train_encoder=True, steps=2,
                               batch_queries=2, docs_per_query=3, lr=1e-3, warmup_steps=1, train_max_length=16,
                               device="cpu")
    model = build_sparse_encoder(SparseEncoderConfig(), idf=idf)
    layer = mlm_parts(model)[0].model.bert.encoder.layer[0].attention.self.query.weight
    before = layer.detach().clone()
    log = train_model(config, model, queries, positives, candidates, corpus)
    assert [e["step"] for e in log] == [0, 1]
    assert all(np.isfinite(e["loss"]) for e in log)
    assert not torch.equal(before, layer.detach())  # the transformer body was trained
    assert not mlm_parts(model)[0].training


def test_train_model_and_device_option_errors(prepared) -> None:
    corpus, queries, positives, candidates, idf = prepared
    with pytest.raises(ValueError, match="`device`"):
        SparseTrainConfig(data="x", out_dir="y", device="gpu-please")
    head_only = SparseTrainConfig(data="x", out_dir="y", train_encoder=False)
    with pytest.raises(ValueError, match="needs `cache`"):
        train_model(head_only, None, queries, positives, candidates, corpus)
    full = SparseTrainConfig(data="x", out_dir="y", train_encoder=True)
    with pytest.raises(ValueError, match="lack candidates or positives"):
        train_model(full, None, {**queries, "q9": "unknown"}, positives, candidates, corpus)


def test_device_script_resolves_the_committed_configs_for_full_fine_tuning(tmp_path) -> None:
    from pipelines.bench.gpu_sparse_finetune import variant_config

    args = argparse.Namespace(out=tmp_path, batch_queries=16, docs_per_query=4, train_max_length=256,
                              device="cuda", seed=0)
    for variant, loss, flops, weight in [("a", "infonce", "plain", 0.000148), ("b", "infonce", "idf_aware", 0.002),
                                         ("c", "kd_kl", "idf_aware", 0.002)]:
        config = variant_config(variant, args, steps=1000, backbone=tmp_path / "backbone", lr=2e-5)
        [hook] = config.hooks
        assert (config.ranking_loss, hook["name"], hook["mode"], hook["weight"]) == (loss, "idf_aware_flops", flops,
                                                                                    weight)
        assert config.train_encoder and config.steps == 1000 and config.lr == 2e-5
        assert config.warmup_steps == hook["warmup_steps"] == 100  # 10 %, as the authors' 200 of 2000
        assert config.model["backbone"] == str(tmp_path / "backbone") and config.model["head_init"] == "identity"
        assert config.device == "cuda" and config.train_max_length == 256


def test_dense_projection_trains_like_the_loop(prepared) -> None:
    """The GPU path (``projection="dense"``, chosen automatically on CUDA) gives the loop's losses and weights.

    The two projections sum in different orders, which depend on the CPU's kernels; in float32 Adam amplifies that
    to ~5e-4 relative after two steps. In float64 the reordering error stays ~1e-12, far below the tolerance on any
    CPU, while a wrong projection changes the weights by ~lr = 1e-3.
    """
    corpus, queries, positives, candidates, idf = prepared
    results = []
    for projection in ("loop", "dense"):
        config = SparseTrainConfig(data="unused", out_dir="unused", ranking_loss="kd_kl", train_encoder=True,
                                   steps=2, batch_queries=2, docs_per_query=3, lr=1e-3, warmup_steps=1,
                                   train_max_length=16, device="cpu", projection=projection)
        model = build_sparse_encoder(SparseEncoderConfig(), idf=idf).double()
        log = train_model(config, model, queries, positives, candidates, corpus)
        layer = mlm_parts(model)[0].model.bert.encoder.layer[0].attention.self.query.weight
        results.append(([e["loss"] for e in log], layer.detach().clone()))
    (loop_loss, loop_layer), (dense_loss, dense_layer) = results
    np.testing.assert_allclose(dense_loss, loop_loss, rtol=1e-9)
    torch.testing.assert_close(dense_layer, loop_layer, atol=1e-9, rtol=1e-7)
    with pytest.raises(ValueError, match="`projection`"):
        SparseTrainConfig(data="x", out_dir="y", projection="fused")


def test_kd_temperature_weights_the_kl_term_by_tau_squared(prepared) -> None:
    """Hinton et al.'s τ² factor: at step 0 the FLOPS weight is 0 (quadratic warm-up), so loss = τ²·KL."""
    corpus, queries, positives, candidates, idf = prepared
    config = SparseTrainConfig(data="unused", out_dir="unused", ranking_loss="kd_kl", temperature=3.0,
                               train_encoder=True, steps=1, batch_queries=2, docs_per_query=3, lr=1e-3,
                               warmup_steps=1, train_max_length=16, device="cpu",
                               hooks=[{"name": "idf_aware_flops", "weight": 0.002, "warmup_steps": 5}])
    log = train_model(config, build_sparse_encoder(SparseEncoderConfig(), idf=idf), queries, positives, candidates,
                      corpus)
    assert log[0]["weight/idf_aware_flops"] == 0.0 and log[0]["distill_loss"] > 0
    assert log[0]["loss"] == pytest.approx(9.0 * log[0]["distill_loss"], rel=1e-5)


def test_token_cache_equals_tokenizing_the_batch(prepared) -> None:
    from retrieval.training_batches import TokenCache

    corpus, idf = prepared[0], prepared[4]
    tokenizer = mlm_parts(build_sparse_encoder(SparseEncoderConfig(), idf=idf))[0].tokenizer
    cache = TokenCache(tokenizer, corpus, max_length=16)
    for docs in (["d0", "d2", "d0"], ["d3", "d1", "d2", "d0"]):  # repeats and a second, partly cached batch
        expected = tokenizer([corpus[d].contents for d in docs], padding=True, truncation=True, max_length=16,
                             return_tensors="pt")
        got = cache.batch(docs)
        assert torch.equal(got["input_ids"], expected["input_ids"])
        assert torch.equal(got["attention_mask"], expected["attention_mask"])
    assert sorted(cache.ids) == ["d0", "d1", "d2", "d3"]
