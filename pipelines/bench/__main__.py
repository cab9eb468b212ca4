"""Run every benchmark module (or those named with --only) and write one JSON file per benchmark."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import pkgutil
import sys
import time
from pathlib import Path

import pipelines.bench
from common_regs.io import atomic_write_text
from pipelines.provenance import run_metadata


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.bench", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--only", nargs="*", default=None, help="benchmark names (bench_<name>.py) to run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    names = sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules(pipelines.bench.__path__)
                   if m.name.startswith("bench_"))
    unknown = set(args.only or []) - set(names)
    if unknown:
        parser.error(f"unknown benchmarks {sorted(unknown)}; available: {names}")
    failed = []
    for name in args.only or names:
        module = importlib.import_module(f"pipelines.bench.bench_{name}")
        started = time.perf_counter()
        try:
            results = module.run(args.out / name)
        except Exception:
            logging.getLogger("pipelines.bench").exception("benchmark %s failed", name)
            failed.append(name)
            continue
        payload = {"benchmark": name, "seconds": time.perf_counter() - started, "results": results,
                   "provenance": run_metadata()}
        atomic_write_text(args.out / f"{name}.json", json.dumps(payload, indent=2) + "\n")
        print(json.dumps({name: results}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
