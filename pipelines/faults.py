"""Fault injection for regkit's CLI jobs.

Run a real ``regkit`` command, SIGKILL it at a chosen moment, damage what it left, rerun it, and compare the outcome
with an uninterrupted run.

Used by the crash tests (``tests/reliability/test_crash_*.py``) and the fault benchmark
(:mod:`pipelines.bench.bench_faults`). Everything runs on the bundled demo data (``data/demo``): the recsys
log for ``regkit recsys train`` and the BEIR corpus for ``regkit retrieval index --model``.

Commands run as ``python -m pipelines ...`` subprocesses with one intra-op thread (``OMP_NUM_THREADS=1``), so
that two runs of the same command compute bit-identical floats and can be compared with ``torch.equal``.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from common_regs.checkpoint import CheckpointDir

logger = logging.getLogger(__name__)

__all__ = [
    "DEMO_DIR",
    "REPO_ROOT",
    "Outcome",
    "compare_indexes",
    "compare_states",
    "index_contents",
    "read_bulk_vectors",
    "recsys_checkpoints",
    "run_cli",
    "run_until",
    "saved_model_state",
    "start_cli",
    "tiny_sparse_model",
    "write_recsys_config",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_DIR = REPO_ROOT / "data" / "demo"


@dataclass
class Outcome:
    """How a subprocess ended: ``killed`` is True when it was SIGKILLed by :func:`run_until` before it exited."""

    returncode: int
    killed: bool
    log: str
    seconds: float


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                "PYTHONHASHSEED": "0", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    return env


def _command(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "pipelines", "--log-level", "INFO", *map(str, args)]


def _limit_file_size(limit: int | None) -> Callable[[], None] | None:
    if limit is None:
        return None

    def apply() -> None:  # in the child, before exec: files larger than `limit` bytes fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def start_cli(args: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``regkit <args>`` in the background (output to ``log``); the caller waits for it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as out:  # the child keeps its own descriptor
        return subprocess.Popen(_command(args), stdout=out, stderr=subprocess.STDOUT, env=_env(), cwd=REPO_ROOT)


def run_cli(args: Sequence[str], log: Path, *, timeout: float = 600, file_size_limit: int | None = None) -> Outcome:
    """Run ``regkit <args>`` to the end; stdout and stderr go to ``log``."""
    return run_until(args, log, ready=None, timeout=timeout, file_size_limit=file_size_limit)


def run_until(
    args: Sequence[str],
    log: Path,
    *,
    ready: Callable[[], bool] | None,
    timeout: float = 600,
    poll: float = 0.005,
    file_size_limit: int | None = None,
) -> Outcome:
    """Start ``regkit <args>``; SIGKILL it as soon as ``ready()`` is true (polled every ``poll`` s).

    ``ready=None`` waits for the process to exit. ``Outcome.killed`` says whether the kill happened (False: the
    process exited first). A process still running after ``timeout`` seconds is killed and TimeoutError raised.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        process = subprocess.Popen(_command(args), stdout=out, stderr=subprocess.STDOUT, env=_env(), cwd=REPO_ROOT,
                                   preexec_fn=_limit_file_size(file_size_limit))  # noqa: PLW1509 - rlimit only
        killed = False
        try:
            while process.poll() is None:
                if ready is not None and ready():
                    os.kill(process.pid, signal.SIGKILL)
                    killed = True
                    break
                if time.perf_counter() - started > timeout:
                    raise TimeoutError(f"`regkit {' '.join(map(str, args))}` still running after {timeout:.0f} s.")
                time.sleep(poll)
        finally:
            if process.poll() is None and not killed:
                process.kill()
            process.wait()
    return Outcome(process.returncode, killed, log.read_text(encoding="utf-8", errors="replace"),
                   time.perf_counter() - started)


# -- recommendation ------------------------------------------------------------------------------------------


def write_recsys_config(path: Path, *, epochs: int = 3, checkpoint_every: int = 5) -> Path:
    """A small ``regkit recsys train`` config on the demo log.

    Two-tower with item features and dropout (dropout draws from the RNG, so a resume must restore the RNG state),
    random hold-out test split.
    """
    config = {
        "seed": 3,
        "num_threads": 1,
        "data": {
            "dir": str(DEMO_DIR / "recsys"),
            "log": "interactions.parquet",
            "split": "random_holdout",
            "test_fraction": 0.2,
            "items": "items.parquet",
            "item_features": [
                {"name": "item_id", "kind": "id"},
                {"name": "genres", "kind": "multi_categorical", "column": "genres"},
                {"name": "year", "kind": "bucketized", "column": "year", "num_buckets": 4},
            ],
            "validation": {"method": "none"},
        },
        "model": {"name": "two_tower", "embedding_dim": 16, "tower_layers": [32, 16], "temperature": 0.2,
                  "dropout": 0.2},
        "train": {"epochs": epochs, "batch_size": 256, "lr": 0.01, "logq": "streaming", "eval_every": 0,
                  "checkpoint_every": checkpoint_every, "show_progress": False},
        "eval": {"ks": [10], "refit": True},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def recsys_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the final fit's checkpoints whose checksum sidecar is written, newest first."""
    return [(s, p) for s, p in CheckpointDir(run_dir / "checkpoints" / "final").checkpoints()
            if p.with_name(p.name + ".sha256").is_file()]


def saved_model_state(run_dir: Path) -> dict[str, Any]:
    """The served model's tensors (``<run>/model/model.pt``, read without the code-running unpickler)."""
    from common_regs.safe_load import load_tensors

    return load_tensors(run_dir / "model" / "model.pt", what="served model")["state_dict"]


def compare_states(reference: Mapping[str, Any], other: Mapping[str, Any]) -> list[str]:
    """Names of tensors that are missing on either side or not ``torch.equal``; [] = bit-identical."""
    import torch

    differing = sorted(set(reference) ^ set(other))
    differing += [k for k in sorted(set(reference) & set(other)) if not torch.equal(reference[k], other[k])]
    return differing


# -- retrieval -----------------------------------------------------------------------------------------------


def tiny_sparse_model(folder: Path, corpus: Path) -> Path:
    """An inference-free sparse encoder (bundled MiniLM backbone, IDF from ``corpus``), saved at ``folder``."""
    from retrieval.beir import read_corpus
    from retrieval.encoder import SparseEncoderConfig, build_sparse_encoder

    texts = [doc.contents for doc in read_corpus(corpus).values()]
    model = build_sparse_encoder(SparseEncoderConfig(max_seq_length=48), corpus_texts=texts)
    model.save_pretrained(str(folder))
    return folder


def read_bulk_vectors(path: Path) -> tuple[list[str], dict[str, dict[str, float]]]:
    """Document ids (in file order, duplicates kept) and vectors of an OpenSearch bulk file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    ids = [json.loads(action)["index"]["_id"] for action in lines[0::2]]
    vectors = {doc_id: json.loads(source).get("sparse_embedding", {}) for doc_id, source in
               zip(ids, lines[1::2], strict=True)}
    return ids, vectors


def index_contents(index_dir: Path) -> dict[str, Any]:
    """Collection docids of every Lucene document, index statistics and ``{term: (df, total tf)}``."""
    from retrieval.jvm import ensure_jvm

    ensure_jvm()
    from pyserini.index.lucene import LuceneIndexReader

    reader = LuceneIndexReader(str(index_dir))
    stats = {k: int(v) for k, v in reader.stats().items()}
    docids = [reader.convert_internal_docid_to_collection_docid(i) for i in range(stats["documents"])]
    terms = {t.term: (int(t.df), int(t.cf)) for t in reader.terms()}
    reader.reader.close()
    return {"docids": docids, "stats": stats, "terms": terms}


def compare_indexes(reference: Mapping[str, Any], other: Mapping[str, Any]) -> dict[str, int]:
    """Documents lost / duplicated / extra and terms whose (df, total impact) differ, as counts (0 = same)."""
    counts = Counter(other["docids"])
    expected = set(reference["docids"])
    return {
        "documents": len(expected),
        "lost": len(expected - set(counts)),
        "duplicated": sum(c - 1 for c in counts.values() if c > 1),
        "extra": len(set(counts) - expected),
        "terms_differing": sum(1 for t in set(reference["terms"]) | set(other["terms"])
                               if reference["terms"].get(t) != other["terms"].get(t)),
    }
