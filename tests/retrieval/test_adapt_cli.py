"""``regkit retrieval adapt`` end to end on a tiny BEIR folder whose queries and qrels are absent while it runs (so
they cannot have been read), then ``retrieval index --model`` and ``beir eval --retriever sparse`` with the judgments
restored."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from pipelines.cli import main
from retrieval.document_mixture import DocumentMixture
from retrieval.encoder import load_sparse_encoder
from retrieval.hidden_cache import HiddenStates
from retrieval.index import read_index_metadata

pytestmark = pytest.mark.java

TOPICS = {
    "aspirin": "Daily aspirin reduces the risk of ischemic stroke in adults. Bleeding is the main adverse event.",
    "statins": "Statins lower cholesterol in patients. The rate of cardiovascular events falls with the dose.",
    "kinase": "The protein kinase phosphorylates the receptor in cancer cells. Inhibitors slow tumour growth.",
    "vitamin": "Vitamin D deficiency is associated with bone fractures. Supplements restore serum levels.",
    "insulin": "Insulin resistance precedes the onset of type 2 diabetes. Exercise improves insulin sensitivity.",
    "malaria": "Artemisinin treats the malaria caused by plasmodium. Resistance spreads in southeast Asia.",
}


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapt")
    data = root / "tiny"
    (data / "qrels").mkdir(parents=True)
    with open(data / "corpus.jsonl", "w", encoding="utf-8") as out:
        for i in range(24):
            topic, text = list(TOPICS.items())[i % len(TOPICS)]
            record = {"_id": f"d{i}", "title": f"{topic} trial {i}", "text": f"{text} Cohort {i} was followed up."}
            out.write(json.dumps(record) + "\n")
    (data / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": f"{t} treatment"}) + "\n"
                                                for i, t in enumerate(TOPICS)))
    (data / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"q{i}\td{i}\t1\n" for i in range(len(TOPICS))))
    kept = root / "judgments"
    kept.mkdir()
    shutil.move(data / "queries.jsonl", kept / "queries.jsonl")  # absent while adapting: never read
    shutil.move(data / "qrels", kept / "qrels")
    out = root / "adapted"
    args = ["retrieval", "adapt", "--data", str(data), "--out", str(out), "--steps", "3",
            "--set", "pseudo_queries.count=12", "--set", "pseudo_queries.remove_from_document=true",
            "--set", "candidates_k=4", "--set", "batch_queries=2",
            "--set", "docs_per_query=3", "--set", "train_max_length=32", "--set", "warmup_steps=1",
            "--set", "checkpoint_every=2", "--set", f"cache_dir={json.dumps(str(root / 'cache'))}"]
    assert main(args) == 0
    shutil.move(kept / "queries.jsonl", data / "queries.jsonl")
    shutil.move(kept / "qrels", data / "qrels")
    return root, data, out


def test_adapt_trains_on_pseudo_queries_only(adapted) -> None:
    root, _, out = adapted
    records = [json.loads(line) for line in (out / "pseudo_queries.jsonl").read_text().splitlines()]
    assert len(records) == 12 and {r["kind"] for r in records} <= {"ict", "title", "keywords"}
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [0, 1, 2] and all("distill_loss" in e for e in log)
    assert (out / "_SUCCESS.json").is_file() and load_sparse_encoder(out / "model") is not None
    views = [q for q in records if q["kind"] in ("ict", "title")]
    if views:  # the student's positives of cut-sentence and title queries are their views, cached apart
        cache = HiddenStates.load(next((root / "cache").glob("*-views")))
        assert sorted(cache.doc_ids) == sorted(f"pseudo-view:{q['_id']}" for q in views)
    assert main(["retrieval", "adapt", "--data", str(root / "tiny"), "--out", str(out)]) == 2  # finished: refused


def test_adapted_model_indexes_and_evaluates_with_the_judgments_restored(adapted) -> None:
    root, data, out = adapted
    assert main(["retrieval", "index", "--data", str(data), "--index", str(root / "impact"),
                 "--model", str(out / "model")]) == 0
    metadata = read_index_metadata(root / "impact")
    mixture = DocumentMixture.load(out / "model")  # fitted on the pseudo-queries, never worse than BM25 held out
    assert metadata["documents"] == 24 and metadata["document_mixture"] == dataclasses.asdict(mixture)
    assert mixture.fit["held_out_kl"] <= mixture.fit["held_out_kl_bm25_only"]
    states = root / "states"
    for name in ("eval", "eval-again"):  # the second evaluation reuses the first one's backbone states
        assert main(["beir", "eval", "--data", str(data), "--retriever", "sparse", "--model", str(out / "model"),
                     "--out", str(root / name), "--states-dir", str(states)]) == 0
        if name == "eval":
            first = (states / "meta.json").stat().st_mtime_ns
    assert (states / "meta.json").stat().st_mtime_ns == first
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    assert metrics["retriever"] == "sparse" and 0.0 <= metrics["aggregate"]["nDCG@10"] <= 1.0
    assert json.loads((root / "eval-again" / "metrics.json").read_text())["aggregate"] == metrics["aggregate"]


def test_a_corpus_below_the_minimum_is_refused_before_any_work(tmp_path) -> None:
    data = tmp_path / "small"
    data.mkdir()
    (data / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "text": "a short text."}) + "\n"
                                               for i in range(5)))
    assert main(["retrieval", "adapt", "--data", str(data), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "cache").exists()
