"""Fault-injection benchmark: real ``regkit`` commands are killed or starved at chosen moments, what they left is
damaged on purpose, the same command is rerun, and the outcome is compared with an uninterrupted run.

Run: ``.venv/bin/python -m pipelines.bench --only faults`` (writes ``runs/bench/faults/faults.md`` and
``runs/bench/faults.json``). Data: the bundled demo data (``data/demo``): ``regkit recsys train`` on the demo log
(two-tower with item features and dropout, 2 epochs × 64 steps, a checkpoint every 5 steps) and
``regkit retrieval index --model`` on the first 80 documents of the demo corpus (shards of 8 documents), with a
freshly built inference-free sparse encoder (bundled MiniLM backbone). Every process runs with
``OMP_NUM_THREADS=1`` (:mod:`pipelines.faults`), so "survived" means *bit-identical* results.

Cases (each against the uninterrupted reference of its job):

* training: SIGKILL during a train step (after the first checkpoint); SIGKILL while a checkpoint is being
  written (its ``.tmp`` exists; "not triggered" if the polling never caught one); truncated newest checkpoint;
  corrupted checksum (a wrong digest in the newest ``.sha256``); a second concurrent run into the same folder;
  disk full (``RLIMIT_FSIZE`` of 100 kB in the child: the first checkpoint write fails with EFBIG).
* indexing: SIGKILL during the encoding (after 2 shards); SIGKILL during the Lucene index commit (while Anserini
  writes into the temporary index folder); disk full (``RLIMIT_FSIZE`` of 100 kB: encoded shards fit, the Lucene
  collection file does not).

"data lost" counts what the final output is missing against the reference: tensors that differ (training) and
documents lost, duplicated or with different vectors/term statistics (indexing). "redone" is the work repeated
after the fault (steps since the checkpoint resumed from; shards encoded again).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common_regs.io import atomic_write_text
from common_regs.run_dir import SUCCESS_NAME, lock_path_for
from pipelines.faults import (
    DEMO_DIR,
    Outcome,
    compare_indexes,
    compare_states,
    index_contents,
    read_bulk_vectors,
    recsys_checkpoints,
    run_cli,
    run_until,
    saved_model_state,
    start_cli,
    tiny_sparse_model,
    write_recsys_config,
)
from retrieval.resumable_encoding import encoding_work_dir

logger = logging.getLogger(__name__)

TOTAL_STEPS = 128  # 2 epochs × 64 batches of 256 (demo log, 80% train split)
DOCS, SHARD = 80, 8
DISK_LIMIT = 100_000  # bytes; a recsys checkpoint is ~270 kB, an encoded shard of 8 documents ~60 kB


def _error_line(log: str, root: Path) -> str:
    """The CLI's one-line error, paths shortened to the case folder, ``|`` escaped for the markdown table."""
    line = next((line for line in log.splitlines() if line.startswith("regkit: error:")), "")
    return line.replace(f"{root}/", "").replace("|", "\\|")


def _resumed_step(log: str) -> int | None:
    match = re.search(r"resumed from \S+ at step (\d+)", log)
    return int(match.group(1)) if match else None


class _Recsys:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = write_recsys_config(root / "config.yaml", epochs=2, checkpoint_every=5)
        reference = run_cli(self.args(root / "reference"), root / "reference.log")
        if reference.returncode != 0:
            raise RuntimeError(f"reference training run failed:\n{reference.log[-3000:]}")
        self.reference = saved_model_state(root / "reference")

    def args(self, run: Path) -> list[Any]:
        return ["recsys", "train", "--config", self.config, "--output-dir", run]

    def case(
        self,
        name: str,
        fault: str,
        *,
        ready: Callable[[Path], bool] | None,
        damage: Callable[[Path], str] | None = None,
        file_size_limit: int | None = None,
    ) -> dict[str, Any]:
        run = self.root / name
        first = run_until(self.args(run), self.root / f"{name}-1.log", ready=(lambda: ready(run)) if ready else None,
                          file_size_limit=file_size_limit)
        triggered = first.killed or first.returncode != 0
        looked_complete = (run / SUCCESS_NAME).exists()
        checkpoints = [step for step, _ in recsys_checkpoints(run)]
        note = damage(run) if damage and triggered else ""
        second = run_cli(self.args(run), self.root / f"{name}-2.log")
        differing = compare_states(self.reference, saved_model_state(run)) if second.returncode == 0 else None
        resumed = _resumed_step(second.log)
        survived = triggered and not looked_complete and second.returncode == 0 and differing == []
        return {
            "case": name,
            "fault": fault,
            "triggered": triggered,
            "first_exit": first.returncode,
            "survived": survived,
            "lost": "n/a" if differing is None else f"{len(differing)} of {len(self.reference)} tensors differ",
            "redone": f"resumed at step {resumed}" if resumed is not None else "restarted from step 0",
            "detail": (f"checkpoints at fault: {checkpoints[:2]}" + (f"; {note}" if note else "")
                       + (f"; first run: `{_error_line(first.log, self.root)}`" if first.returncode > 0 else "")),
            "seconds": round(first.seconds + second.seconds, 1),
        }

    def concurrent(self) -> dict[str, Any]:
        run = self.root / "concurrent"
        started = time.perf_counter()
        first = start_cli(self.args(run), self.root / "concurrent-1.log")
        while not lock_path_for(run).exists() and first.poll() is None:
            time.sleep(0.01)
        second = run_cli(self.args(run), self.root / "concurrent-2.log")
        first.wait()
        refused = second.returncode == 2 and "in use by another run" in second.log
        differing = compare_states(self.reference, saved_model_state(run)) if first.returncode == 0 else None
        return {
            "case": "concurrent_second_run",
            "fault": "a second `regkit recsys train` into the folder while the first runs",
            "triggered": first.returncode is not None and second.returncode != 0,
            "first_exit": first.returncode,
            "survived": refused and differing == [],
            "lost": "n/a" if differing is None else f"{len(differing)} of {len(self.reference)} tensors differ",
            "redone": "second run refused (exit 2)",
            "detail": f"`{_error_line(second.log, self.root)}`",
            "seconds": round(time.perf_counter() - started, 1),
        }


def _truncate_newest(run: Path) -> str:
    _, newest = recsys_checkpoints(run)[0]
    size = newest.stat().st_size
    newest.write_bytes(newest.read_bytes()[: size // 2])
    return f"{newest.name} truncated {size} → {size // 2} bytes"


def _corrupt_sidecar(run: Path) -> str:
    _, newest = recsys_checkpoints(run)[0]
    sidecar = newest.with_name(newest.name + ".sha256")
    sidecar.write_text("0" * 64 + f"  {newest.name}\n")
    return f"{sidecar.name} holds a wrong digest"


def _checkpoint_tmp(run: Path) -> bool:
    """A checkpoint write in progress while an earlier one is complete (so the kill lands on a later write)."""
    return any((run / "checkpoints" / "final").glob(".ckpt-*.tmp")) and bool(recsys_checkpoints(run))


class _Index:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "beir"
        self.data.mkdir(parents=True, exist_ok=True)
        lines = (DEMO_DIR / "beir" / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:DOCS]
        (self.data / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.model = tiny_sparse_model(root / "model", self.data / "corpus.jsonl")
        reference = run_cli(self.args("reference"), root / "reference.log")
        if reference.returncode != 0:
            raise RuntimeError(f"reference indexing run failed:\n{reference.log[-3000:]}")
        self.reference = index_contents(root / "reference")
        self.vectors = read_bulk_vectors(root / "reference.ndjson")

    def args(self, name: str) -> list[Any]:
        return ["retrieval", "index", "--data", self.data, "--index", self.root / name, "--model", self.model,
                "--shard-size", SHARD, "--threads", 1, "--opensearch-bulk", self.root / f"{name}.ndjson"]

    def case(
        self, name: str, fault: str, *, ready: Callable[[Path], bool] | None, file_size_limit: int | None = None
    ) -> dict[str, Any]:
        index = self.root / name
        work = encoding_work_dir(index)
        first: Outcome = run_until(self.args(name), self.root / f"{name}-1.log",
                                   ready=(lambda: ready(index)) if ready else None, file_size_limit=file_size_limit)
        triggered = first.killed or first.returncode != 0
        looked_complete = (index / SUCCESS_NAME).exists()
        shards_at_fault = len(list(work.glob("shard-*.json.sha256")))
        second = run_cli(self.args(name), self.root / f"{name}-2.log")
        summary = re.search(r"encoded \d+ documents in (\d+) shards \((\d+) reused", second.log)
        redone = int(summary.group(1)) - int(summary.group(2)) if summary else None
        comparison, same_vectors = None, False
        if second.returncode == 0:
            comparison = compare_indexes(self.reference, index_contents(index))
            same_vectors = read_bulk_vectors(self.root / f"{name}.ndjson") == self.vectors
        lost = ("n/a" if comparison is None else
                f"{comparison['lost']} lost, {comparison['duplicated']} duplicated, {comparison['extra']} extra of "
                f"{comparison['documents']} docs; {comparison['terms_differing']} terms differ; vectors "
                f"{'identical' if same_vectors else 'DIFFER'}")
        clean = comparison is not None and same_vectors and not any(
            comparison[k] for k in ("lost", "duplicated", "extra", "terms_differing"))
        return {
            "case": name,
            "fault": fault,
            "triggered": triggered,
            "first_exit": first.returncode,
            "survived": triggered and not looked_complete and second.returncode == 0 and clean,
            "lost": lost,
            "redone": f"{redone} of {DOCS // SHARD} shards encoded again" if redone is not None else "n/a",
            "detail": f"{shards_at_fault} of {DOCS // SHARD} shards on disk at the fault"
                      + (f"; first run: `{_error_line(first.log, self.root)}`" if first.returncode > 0 else ""),
            "seconds": round(first.seconds + second.seconds, 1),
        }


def _shards(index: Path) -> int:
    return len(list(encoding_work_dir(index).glob("shard-*.json.sha256")))


def _lucene_writing(index: Path) -> bool:
    return _shards(index) == DOCS // SHARD and any(
        any(tmp.iterdir()) for tmp in index.parent.glob(f".{index.name}.*.tmp") if tmp.is_dir()
    )


def _table(rows: list[dict[str, Any]]) -> str:
    lines = ["| case | fault injected | triggered | survived | data lost | redone | detail |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['case']} | {row['fault']} | {'yes' if row['triggered'] else 'no'} | "
                     f"{'yes' if row['survived'] else 'NO'} | {row['lost']} | {row['redone']} | {row['detail']} |")
    return "\n".join(lines) + "\n"


def run(out_dir: Path) -> dict[str, Any]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    recsys = _Recsys(out_dir / "recsys")
    rows.append(recsys.case("kill_train_step", "SIGKILL mid-epoch after the first checkpoint",
                            ready=lambda run: bool(recsys_checkpoints(run))))
    rows.append(recsys.case("kill_checkpoint_write", "SIGKILL while a checkpoint `.tmp` is being written",
                            ready=_checkpoint_tmp))
    rows.append(recsys.case("truncated_checkpoint", "SIGKILL, then the newest checkpoint cut to half its size",
                            ready=lambda run: len(recsys_checkpoints(run)) >= 2, damage=_truncate_newest))
    rows.append(recsys.case("corrupt_checksum", "SIGKILL, then a wrong digest in the newest `.sha256`",
                            ready=lambda run: len(recsys_checkpoints(run)) >= 2, damage=_corrupt_sidecar))
    rows.append(recsys.concurrent())
    rows.append(recsys.case("disk_full_train", f"RLIMIT_FSIZE {DISK_LIMIT // 1000} kB: checkpoint write fails",
                            ready=None, file_size_limit=DISK_LIMIT))
    index = _Index(out_dir / "index")
    rows.append(index.case("kill_encoding", "SIGKILL after 2 encoded shards", ready=lambda i: _shards(i) >= 2))
    rows.append(index.case("kill_index_commit", "SIGKILL while Anserini writes the temporary index",
                           ready=_lucene_writing))
    rows.append(index.case("disk_full_index", f"RLIMIT_FSIZE {DISK_LIMIT // 1000} kB: Lucene collection write fails",
                           ready=None, file_size_limit=DISK_LIMIT))
    table = _table(rows)
    atomic_write_text(out_dir / "faults.md", table)
    logger.info("fault table:\n%s", table)
    return {"cases": rows, "survived": sum(r["survived"] for r in rows), "total": len(rows),
            "triggered": sum(r["triggered"] for r in rows), "table": table}
