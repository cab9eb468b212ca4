"""End to end on a tiny BEIR folder: ``regkit retrieval train`` → ``retrieval index --model`` → ``beir eval --retriever
sparse``; candidate mining, impact quantization bound, a token present in every document, OpenSearch export."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from common_regs.schedules import QuadraticWarmup
from pipelines.cli import main
from pipelines.run_config import load_sparse_train_config
from retrieval.beir import load_beir
from retrieval.encoder import default_backbone, idf_weights, load_sparse_encoder, mlm_parts, query_weights
from retrieval.impact import ImpactQuantization
from retrieval.index import read_index_metadata
from retrieval.mining import Candidates
from retrieval.runs import read_trec_run
from retrieval.search import Bm25Searcher
from retrieval.sparse_index import (
    InferenceFreeSearcher,
    flops,
    index_vectors,
    search_with_model,
    write_opensearch_bulk,
)

pytestmark = pytest.mark.java

DOCS = {
    "d1": ("Aspirin and stroke", "Daily aspirin reduces the risk of ischemic stroke in adults."),
    "d2": ("Statins", "Statins lower cholesterol and the rate of cardiovascular events."),
    "d3": ("Protein kinase", "The protein kinase phosphorylates the receptor in cancer cells."),
    "d4": ("Vitamin D", "Vitamin D deficiency is associated with the risk of bone fractures."),
    "d5": ("Insulin", "Insulin resistance precedes the onset of type 2 diabetes."),
    "d6": ("Malaria", "Artemisinin treats the malaria caused by plasmodium."),
    "d7": ("", ""),  # empty document
    "d8": ("Smoking", "Smoking causes lung cancer and heart disease. " * 40),  # longer than max length
}
QUERIES = {"q1": "does aspirin prevent stroke", "q2": "statins cholesterol", "q3": "kinase receptor cancer",
           "q4": "vitamin d bones", "q5": "insulin diabetes", "q6": "malaria treatment", "q7": "smoking lung cancer"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("sparse")
    data = root / "tiny"
    (data / "qrels").mkdir(parents=True)
    with open(data / "corpus.jsonl", "w", encoding="utf-8") as out:
        for doc_id, (title, text) in DOCS.items():
            out.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with open(data / "queries.jsonl", "w", encoding="utf-8") as out:
        for qid, text in QUERIES.items():
            out.write(json.dumps({"_id": qid, "text": text}) + "\n")
    (data / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq3\td3\t1\n"
                                              "q4\td4\t1\nq5\td5\t1\n")
    (data / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq6\td6\t1\nq7\td8\t1\n")
    config = {"data": str(data), "out_dir": str(root / "run"), "cache_dir": str(root / "cache"),
              "ranking_loss": "kd_kl", "steps": 3, "batch_queries": 2, "docs_per_query": 3, "candidates_k": 4,
              "lr": 1e-3, "warmup_steps": 1, "hooks": [{"name": "idf_aware_flops", "weight": 0.01, "warmup_steps": 2}],
              "model": {"max_seq_length": 256}, "train_max_length": 32}
    (root / "train.yaml").write_text(yaml.safe_dump(config))
    assert main(["retrieval", "train", "--config", str(root / "train.yaml")]) == 0
    return root, data, config


def test_training_writes_a_loadable_model_log_and_config(tiny) -> None:
    root, _, config = tiny
    run = root / "run"
    model = load_sparse_encoder(run / "model")
    assert (run / "model" / "idf.json").is_file()
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [0, 1, 2]
    schedule = QuadraticWarmup(config["hooks"][0]["weight"], config["hooks"][0]["warmup_steps"])
    assert [e["weight/idf_aware_flops"] for e in log] == pytest.approx([schedule(s) for s in range(3)])
    assert all(math.isfinite(e["loss"]) and e["idf_aware_flops"] > 0 and "distill_loss" in e for e in log)
    assert yaml.safe_load((run / "resolved_config.yaml").read_text())["ranking_loss"] == "kd_kl"
    # head-only training: the frozen body's input embeddings are untouched, the (untied) decoder moved
    from transformers import AutoModel

    original = AutoModel.from_pretrained(default_backbone()).get_input_embeddings().weight
    hf = mlm_parts(model)[0].model
    torch.testing.assert_close(hf.get_input_embeddings().weight, original)
    assert not torch.equal(hf.get_output_embeddings().weight, original)


def test_candidates_hold_positives_and_exact_bm25_scores(tiny) -> None:
    root, data, _ = tiny
    cache = root / "cache"
    candidates = Candidates.load(next(cache.glob("tiny-train-candidates-k4.json")))
    assert set(candidates.docs) == {"q1", "q2", "q3", "q4", "q5"}
    assert all(f"d{q[1]}" in candidates.docs[q] for q in candidates.docs)  # the judged positive is a candidate
    with Bm25Searcher(cache / "tiny-bm25") as searcher:
        run = searcher.search({q: QUERIES[q] for q in candidates.docs}, k=10, show_progress=False)
    for qid, docs in candidates.docs.items():
        for doc_id, score in zip(docs, candidates.scores["bm25"][qid], strict=True):
            assert score == pytest.approx(run[qid].get(doc_id, 0.0), rel=1e-5)
        assert all(-1.0 <= s <= 1.0 for s in candidates.scores["dense"][qid])


def test_cli_index_search_eval_and_opensearch_export(tiny) -> None:
    root, data, _ = tiny
    model_dir = root / "run" / "model"
    bulk = root / "bulk.ndjson"
    assert main(["retrieval", "index", "--data", str(data), "--index", str(root / "impact"), "--model",
                 str(model_dir), "--opensearch-bulk", str(bulk)]) == 0
    meta = read_index_metadata(root / "impact")
    assert meta["kind"] == "impact" and meta["documents"] == 7  # the empty document is not indexed
    lines = bulk.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 * len(DOCS)
    assert json.loads(lines[0]) == {"index": {"_index": "tiny", "_id": "d1"}}
    assert all(v > 0 for v in json.loads(lines[1])["sparse_embedding"].values())
    assert json.loads(lines[13]) == {}  # d7: empty vector
    mapping = json.loads((root / "bulk.ndjson.mapping.json").read_text())
    assert mapping["mappings"]["properties"]["sparse_embedding"]["type"] == "rank_features"
    run_file = root / "impact.trec"  # --model without --retriever: the sparse retriever, through the registry
    assert main(["retrieval", "search", "--index", str(root / "impact"), "--model", str(model_dir), "--queries",
                 str(data), "--out", str(run_file), "--k", "3"]) == 0
    expected = search_with_model(load_sparse_encoder(model_dir), root / "impact", load_beir(data).split_queries, k=3)
    assert read_trec_run(run_file) == {q: {d: float(f"{s:.6f}") for d, s in docs.items()}
                                       for q, docs in expected.items() if docs}
    # a searcher kept open answers one query per call as the one-shot batch search does
    with InferenceFreeSearcher(load_sparse_encoder(model_dir), root / "impact") as searcher:
        assert {qid: searcher.search({qid: text}, k=3)[qid] for qid, text in load_beir(data).split_queries.items()} \
            == expected
    for idf in ("model", "corpus"):
        out = root / f"eval-{idf}"
        assert main(["beir", "eval", "--data", str(data), "--retriever", "sparse", "--model", str(model_dir),
                     "--out", str(out), "--idf", idf]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert 0.0 <= metrics["aggregate"]["nDCG@10"] <= 1.0 and metrics["retriever"] == "sparse"
        assert metrics["index"]["truncated_documents"] == 1 and metrics["index"]["empty_documents"] == 1
    assert main(["beir", "eval", "--data", str(data), "--retriever", "sparse", "--out", str(root / "x")]) == 2


def test_quantized_scores_are_within_the_rounding_bound_and_common_tokens_kept(tiny, tmp_path) -> None:
    root, _, _ = tiny
    model = load_sparse_encoder(root / "run" / "model")
    tokenizer = mlm_parts(model)[0].tokenizer
    # hand-made vectors where "the" occurs in every document (idf = ln(N/df) = 0 inside Lucene)
    vectors = {"a": {"the": 0.731, "kinase": 1.234}, "b": {"the": 0.2, "stroke": 2.5}, "c": {"the": 1.0}}
    quantization = ImpactQuantization(doc_scale=100.0, query_scale=100.0)
    index_vectors(vectors, tmp_path / "idx", quantization=quantization)
    queries = {"q": "the kinase", "only": "the"}
    run = search_with_model(model, tmp_path / "idx", queries, k=10)
    assert set(run["only"]) == {"a", "b", "c"}  # not dropped although present in every document
    weights = query_weights(model, queries)
    assert float(idf_weights(model)[tokenizer.convert_tokens_to_ids("the")]) > 0
    for qid, q in weights.items():
        for doc_id, d in vectors.items():
            shared = set(q) & set(d)
            exact = sum(q[t] * d[t] for t in shared)
            bound = sum(abs(q[t]) * 0.5 / 100 + abs(d[t]) * 0.5 / 100 + 0.25 / 100**2 for t in shared)
            assert abs(run[qid].get(doc_id, 0.0) - exact) <= bound + 1e-9


def test_flops_metric_and_bulk_validation(tmp_path) -> None:
    queries = {"q1": {"a": 1.0, "b": 1.0}, "q2": {"a": 2.0}}
    docs = {"d1": {"a": 0.5}, "d2": {"a": 0.1, "b": 0.3}, "d3": {"c": 1.0}, "d4": {"b": 0.0}}
    # p_q(a) = 1, p_q(b) = 1/2; p_d(a) = 2/4, p_d(b) = 1/4 (zero weights are inactive)
    assert flops(queries, docs) == pytest.approx(1 * 0.5 + 0.5 * 0.25)
    with pytest.raises(ValueError, match="`index_name`"):
        write_opensearch_bulk(docs, tmp_path / "b.ndjson", index_name="Bad Name")


def test_training_config_errors_are_clear(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("data: x\nout_dir: y\nranking_los: kd_kl\n")
    with pytest.raises(ValueError, match=r"c.yaml:3: unknown key `ranking_los` \(did you mean `ranking_loss`\?\)"):
        load_sparse_train_config(path)
    path.write_text("data: x\nout_dir: y\nflops_weight: 0.1\n")  # a key of older configs names its replacement
    with pytest.raises(ValueError, match=r"c.yaml:3: `flops_weight` is now the option `weight` of the FLOPS entry "
                                         r"of `hooks`: write `hooks: \[\{name: idf_aware_flops, weight: 0.1\}\]`"):
        load_sparse_train_config(path)
    path.write_text("data: x\nout_dir: y\nhooks: [{name: idf_aware_flops, weight: 0.1, lambda: 2}]\n")
    with pytest.raises(ValueError, match=r"c.yaml:3: `hooks\[0\]` \(idf_aware_flops\): unknown option\(s\) "
                                         r"\['lambda'\]; allowed: \['mode', 'threshold'\]"):
        load_sparse_train_config(path)
    path.write_bytes(b"data: caf\xe9\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        load_sparse_train_config(path)
    path.write_text("data: x\n")
    with pytest.raises(ValueError, match=r"c.yaml: `out_dir` is required"):
        load_sparse_train_config(path)
    path.write_text("data: x\nout_dir: y\nranking_loss: kl\n")
    with pytest.raises(ValueError, match=r"c.yaml:3: `ranking_loss` must be one of \['infonce'"):
        load_sparse_train_config(path)


def test_full_fine_tuning_updates_the_transformer_body(tiny) -> None:
    from transformers import AutoModel

    from pipelines.retrieval_run import train_sparse
    from retrieval.sparse_config import SparseTrainConfig

    root, _, config = tiny
    full = SparseTrainConfig(**{**config, "out_dir": str(root / "full"), "train_encoder": True, "steps": 1,
                                "ranking_loss": "kd_margin_mse", "warmup_steps": 1})
    result = train_sparse(full, show_progress=False)
    body = mlm_parts(load_sparse_encoder(result.model_dir))[0].model.base_model
    original = AutoModel.from_pretrained(default_backbone())
    name = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(body.get_parameter(name), original.get_parameter(name))
    assert "margin_mse" in result.log[0] and math.isfinite(result.log[0]["loss"])
