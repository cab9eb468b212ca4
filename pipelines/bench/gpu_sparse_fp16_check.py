"""How much the float16-rounded backbone sent to the GPU machine changes the quantized document vectors.

``python -m pipelines.bench.gpu_sparse_fp16_check`` builds the untrained inference-free encoder twice — from the
bundled float32 all-MiniLM-L6-v2 and from the float16-rounded copy in ``.gpu_payload`` (converted back to float32
exactly as :mod:`pipelines.bench.gpu_sparse_finetune` does) — encodes every 520th SciFact document with both and
counts the quantized weights (``round_half_up(100·w)``) that differ, and those that switch between zero and non-zero.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    from pipelines.bench.gpu_sparse_finetune import ROOT, unpack_payload
    from retrieval.beir import read_corpus
    from retrieval.encoder import SparseEncoderConfig, build_sparse_encoder, encode_documents
    from retrieval.impact import MAX_DOC_IMPACT, quantize_weights

    parser = argparse.ArgumentParser(prog="python -m pipelines.bench.gpu_sparse_fp16_check", description=__doc__)
    parser.add_argument("--payload", type=Path, default=ROOT / ".gpu_payload")
    parser.add_argument("--every", type=int, default=520)
    args = parser.parse_args(argv)
    paths = unpack_payload(args.payload, Path(tempfile.mkdtemp(prefix="fp16check_")))
    corpus = read_corpus(paths["scifact"] / "corpus.jsonl")
    docs = {d: corpus[d].contents for d in itertools.islice(corpus, 0, None, args.every)}
    encoded = []
    for backbone in (None, str(paths["backbone"])):
        model = build_sparse_encoder(SparseEncoderConfig(backbone=backbone), idf=torch.ones(30522))
        vectors, _ = encode_documents(model, docs, batch_size=4, show_progress=False)
        encoded.append({d: quantize_weights(v, 100.0, where=d, limit=MAX_DOC_IMPACT) for d, v in vectors.items()})
    full, half = encoded
    entries = differing = switched = largest = 0
    for doc_id in docs:
        for token in set(full[doc_id]) | set(half[doc_id]):
            a, b = full[doc_id].get(token, 0), half[doc_id].get(token, 0)
            entries += 1
            differing += a != b
            switched += (a == 0) != (b == 0)
            largest = max(largest, abs(a - b))
    print(json.dumps({"documents": len(docs), "entries": entries, "differing": differing,
                      "differing_share": differing / entries, "zero_nonzero_switches": switched,
                      "max_level_difference": largest}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
