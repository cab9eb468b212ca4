"""Build ``.gpu_payload/``: everything ``gpu_sparse_finetune`` needs on a GPU machine without Lucene or the datasets.

``python -m pipelines.bench.gpu_sparse_payload`` (on the CPU machine, after ``bench_sparse_retrieval`` or
``regkit retrieval train`` has mined the SciFact training candidates) writes, under ``.gpu_payload/`` (git-ignored
through ``.git/info/exclude``; the device tool carries it, 64 MiB limit for the whole working tree):

* ``backbone/``: the bundled all-MiniLM-L6-v2 with its weights stored in float16 (45 MB instead of 91 MB; the device
  script converts them back to float32 before loading, so the model there is the float16-rounded backbone), its
  config and tokenizer files;
* ``scifact/``: ``corpus.jsonl.gz``, ``queries.jsonl.gz``, ``qrels/train.tsv`` (training queries only, no test
  qrels); ``cranfield/corpus.jsonl.gz`` (zero-shot corpus, encoded only);
* ``scifact-train-candidates.json.gz``: the cached candidates and both teachers' scores
  (:mod:`retrieval.mining`: BM25 exact Lucene scores and all-MiniLM-L6-v2 cosine);
* ``scifact_idf.npy``: the BM25 IDF of the SciFact corpus (:func:`retrieval.encoder.corpus_idf`), the query side;
* ``manifest.json``: sources, sizes and SHA-256 of every file.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np

from common_regs.io import atomic_path, atomic_write_text
from pipelines.bench import shared_data_dir

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
PAYLOAD = ROOT / ".gpu_payload"
TOKENIZER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "sentence_bert_config.json")
LIMIT_BYTES = 64 * 2**20


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _gzip(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp, open(source, "rb") as src, gzip.open(tmp, "wb", compresslevel=9) as dst:
        shutil.copyfileobj(src, dst)


def half_precision_checkpoint(source: Path, target: Path) -> None:
    """Copy a safetensors file with every floating tensor cast to float16 (other tensors unchanged)."""
    import torch
    from safetensors.torch import load_file, save_file

    tensors = {k: (v.half() if v.is_floating_point() else v) for k, v in load_file(str(source)).items()}
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    logger.info("%s: %d tensors in float16 (%s)", target, len(tensors), torch.float16)


def build_payload(data_root: Path, cache_dir: Path, out: Path = PAYLOAD) -> dict:
    """Write the payload (module docstring) and return its manifest."""
    from transformers import AutoTokenizer

    from retrieval.beir import load_beir
    from retrieval.encoder import corpus_idf, default_backbone
    from retrieval.mining import Candidates

    backbone = Path(default_backbone())
    candidates_path = cache_dir / "scifact-train-candidates-k50.json"
    Candidates.load(candidates_path)  # validates the cache format before shipping it
    (out / "backbone").mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copyfile(backbone / name, out / "backbone" / name)
    half_precision_checkpoint(backbone / "model.safetensors", out / "backbone" / "model.fp16.safetensors")
    scifact = data_root / "scifact"
    _gzip(scifact / "corpus.jsonl", out / "scifact" / "corpus.jsonl.gz")
    _gzip(scifact / "queries.jsonl", out / "scifact" / "queries.jsonl.gz")
    (out / "scifact" / "qrels").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(scifact / "qrels" / "train.tsv", out / "scifact" / "qrels" / "train.tsv")
    _gzip(data_root / "cranfield" / "corpus.jsonl", out / "cranfield" / "corpus.jsonl.gz")
    _gzip(candidates_path, out / "scifact-train-candidates.json.gz")
    dataset = load_beir(scifact, split="train")
    idf = corpus_idf((d.contents for d in dataset.corpus.values()), AutoTokenizer.from_pretrained(str(backbone)))
    with atomic_path(out / "scifact_idf.npy") as tmp, open(tmp, "wb") as handle:
        np.save(handle, idf.numpy())
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "manifest.json")
    manifest = {
        "sources": {"backbone": str(backbone), "scifact": str(scifact), "cranfield": str(data_root / "cranfield"),
                    "candidates": str(candidates_path)},
        "files": {str(p.relative_to(out)): {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in files},
    }
    total = sum(v["bytes"] for v in manifest["files"].values())
    manifest["total_bytes"] = total
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    logger.info("payload %s: %d files, %.1f MiB", out, len(files), total / 2**20)
    if total > LIMIT_BYTES - 8 * 2**20:
        logger.warning("payload is %.1f MiB: with the working tree it may exceed the device tool's 64 MiB",
                       total / 2**20)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.bench.gpu_sparse_payload", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=shared_data_dir() / "beir")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "runs" / "sparse" / "cache")
    parser.add_argument("--out", type=Path, default=PAYLOAD)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    manifest = build_payload(args.data_root, args.cache_dir, args.out)
    print(json.dumps({"total_MiB": manifest["total_bytes"] / 2**20, "files": len(manifest["files"])}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
