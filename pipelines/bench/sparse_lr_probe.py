"""Learning-rate probe of the head-only sparse recipe: variants trained with ``lr`` instead of the configs' 1e-3.

``python -m pipelines.bench.sparse_lr_probe --lr 1e-4 c b`` trains each variant of
``pipelines/configs/sparse_scifact_<v>.yaml`` with that learning rate (everything else as in the config) and
evaluates it on SciFact test exactly like ``bench_sparse_retrieval`` (same shortcuts, same latency protocol);
results go to ``runs/sparse/lr-probe/results.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from pipelines.bench.bench_sparse_retrieval import ROOT, _Collection


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.bench.sparse_lr_probe", description=__doc__)
    parser.add_argument("variants", nargs="+", choices=["a", "b", "c"])
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "sparse" / "lr-probe")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from pipelines.retrieval_run import train_sparse
    from pipelines.run_config import load_sparse_train_config
    from retrieval.encoder import load_sparse_encoder

    collection = _Collection("scifact", ROOT / "runs" / "sparse" / "cache", args.out)
    results = {}
    for variant in args.variants:
        config = load_sparse_train_config(ROOT / "pipelines" / "configs" / f"sparse_scifact_{variant}.yaml",
                                          data=str(collection.data), lr=args.lr,
                                          out_dir=str(args.out / f"train-{variant}"),
                                          cache_dir=str(ROOT / "runs" / "sparse" / "cache"))
        trained = train_sparse(config, show_progress=False)
        results[variant] = {**collection.sparse(load_sparse_encoder(trained.model_dir), f"lr-{variant}"),
                            "train_seconds": trained.seconds, "lr": args.lr}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
