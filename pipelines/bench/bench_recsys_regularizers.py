"""Multi-sample dropout and PS-KD in the ML-100K two-tower: baseline vs. +MSD vs. +PS-KD.

Protocol (``run(out_dir)``; the recsys baseline's protocol, ``pipelines/bench/bench_recsys.py``):

* ML-100K canonical ``u1.base`` / ``u1.test`` (implicit, every rating a positive), all 1,682 items ranked with the
  user's training items excluded, R@K / nDCG@K through ``pipelines.evaluation`` (trec_eval-identical);
* the two-tower (ids only) of ``pipelines/configs/ml100k_two_tower_ids.yaml`` and its variants
  ``ml100k_two_tower_msd.yaml`` (M=8, p=0.5), ``ml100k_two_tower_pskd.yaml`` (α_T=0.8, α ramp over the 40-epoch cap)
  and ``ml100k_two_tower_pskd_e10.yaml`` (ramp over 10 epochs, the baseline's validation-chosen length), which
  differ from it only in the ``hooks`` entry, through :func:`pipelines.recsys_run.train_run`; plus a control, the
  baseline trained (no early stopping) for multi-sample dropout's seed-0 epoch count, to separate the method from
  the longer training it is given;
* epochs: for seed 0 each variant chooses its epoch count on a 10% per-user validation split of u1.base (early
  stopping on validation R@20, evaluated every 5 epochs, patience 2), then is refit on all of u1.base; seeds 1, 2
  reuse their variant's seed-0 epoch count (no second tuning run: the shared machine's budget); u1.test is never
  used for any choice; the method hyperparameters are the papers' defaults, fixed a priori, not tuned;
* reported per variant, mean ± sample std over the seeds run: Recall@20, NDCG@20 (and @10), training seconds of the
  final fit, and the per-step time ratio against the baseline: median wall time of a trainer step with the hook
  divided by the plain step, same batches, same process, 1 thread, interleaved (PS-KD measured at epoch 1, where its
  teacher runs).

``REGKIT_RECREG_SEEDS`` (e.g. ``0``) and ``REGKIT_RECREG_VARIANTS`` (e.g. ``baseline,pskd``) shrink the grid; finished
runs are kept in ``out_dir/runs.jsonl`` and skipped when the benchmark is started again. Order: seed 0 of every
variant first, then the other seeds, so that an interrupted run still compares all variants.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from common_regs.hook_specs import build_hooks
from common_regs.io import atomic_write_text
from pipelines.bench._recsys_hook_bench import mean_and_std, step_time_ratios
from pipelines.bench.bench_ssl import _ml100k_data
from pipelines.recsys_data import RunData
from pipelines.recsys_run import train_run
from pipelines.run_config import DataConfig, load_recsys_config
from recsys.data import InMemoryBatches
from recsys.models import build_model
from recsys.regularizers import TrainSetup
from recsys.trainer import TrainConfig, Trainer

logger = logging.getLogger(__name__)

__all__ = ["VARIANTS", "run"]

REPO = Path(__file__).resolve().parents[2]
VARIANTS: dict[str, tuple[str, str]] = {
    "baseline": ("two-tower (ids)", "ml100k_two_tower_ids.yaml"),
    "msd": ("+ multi-sample dropout (M=8, p=0.5)", "ml100k_two_tower_msd.yaml"),
    "pskd": ("+ PS-KD (α_T=0.8, ramp over the 40-epoch cap)", "ml100k_two_tower_pskd.yaml"),
    "pskd_e10": ("+ PS-KD (α_T=0.8, ramp over 10 epochs)", "ml100k_two_tower_pskd_e10.yaml"),
    "baseline_at_msd_epochs": ("two-tower (ids), trained as long as + MSD (control)", "ml100k_two_tower_ids.yaml"),
}
#: control variants: trained without tuning for the seed-0 epoch count of another variant
CONTROLS: dict[str, str] = {"baseline_at_msd_epochs": "msd"}
SEEDS = (0, 1, 2)
METRICS = ("R@20", "nDCG@20", "R@10", "nDCG@10")


def _config(variant: str, data: Path, overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    path = REPO / "pipelines" / "configs" / VARIANTS[variant][1]
    return load_recsys_config(path, [f"data.dir={data}", "train.show_progress=false", *overrides]).to_dict()


def _job(variant: str, seed: int, data: Path, out: Path, epochs: int | None) -> dict[str, Any]:
    overrides = [f"seed={seed}", f"train.seed={seed}"]
    if epochs is not None:  # seeds > 0: the variant's seed-0 epoch count, no tuning run
        overrides += ["data.validation.method=none", f"train.epochs={epochs}", "train.patience=null"]
    config = _config(variant, data, tuple(overrides))
    if epochs is not None:
        # keep PS-KD's α ramp on the configured epoch budget, as in seed 0's tuning run and refit
        budget = _config(variant, data)["train"]["epochs"]
        config["hooks"] = [
            {**spec, "total_epochs": spec.get("total_epochs", budget)} if spec["name"] == "ps_kd" else spec
            for spec in config["hooks"]
        ]
    started = time.perf_counter()
    report = train_run(config, output_dir=out / "runs" / f"{variant}_s{seed}", overwrite=True)
    test = report["test"]
    return {
        "variant": variant,
        "seed": seed,
        "config": f"pipelines/configs/{VARIANTS[variant][1]}",
        "hooks": config["hooks"],
        "epochs": report["train"]["epochs"],
        "best_epoch": report.get("validation", {}).get("best_epoch"),
        "validation_R@20": report.get("validation", {}).get("metrics", {}).get("R@20"),
        "tuning_seconds": report.get("validation", {}).get("train_seconds"),
        "train_seconds": report["train"]["train_seconds"],
        "wall_seconds": time.perf_counter() - started,
        **{key: test[key] for key in METRICS},
    }


def _overhead(data: Path, steps: int = 12) -> dict[str, Any]:
    """Median trainer-step time of each variant / the baseline, same batches, interleaved twice, 1 thread."""
    base = _config("baseline", data)
    prepared = RunData(DataConfig.model_validate({**base["data"], "validation": {"method": "none"}}))
    options = {k: v for k, v in base["model"].items() if k != "name"}
    train = TrainConfig(**base["train"])
    def make_trainer(variant: str) -> Trainer:
        torch.manual_seed(0)
        model = build_model("two_tower", options, users=prepared.user_features, items=prepared.item_features)
        setup = TrainSetup(model=model, train=train, item_counts=prepared.train.item_counts(), epochs=train.epochs)
        hooks = build_hooks(_config(variant, data)["hooks"], domain="recsys", setup=setup)
        trainer = Trainer(model, InMemoryBatches(prepared.train, train.batch_size, seed=0), train, hooks=hooks,
                          item_counts=prepared.train.item_counts())
        trainer.epoch = 1  # PS-KD's teacher runs from epoch 1 on (its snapshot falls in the warm-up steps)
        return trainer

    return {"batch_size": train.batch_size,
            **step_time_ratios(make_trainer, VARIANTS, "baseline", steps=steps, epoch=1)}


def _summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    table = []
    for variant in VARIANTS:
        group = [row for row in rows if row["variant"] == variant]
        if not group:
            continue
        entry: dict[str, Any] = {"variant": variant, "seeds": [row["seed"] for row in group],
                                 "epochs": group[0]["epochs"]}
        entry.update(mean_and_std(group, (*METRICS, "train_seconds")))
        table.append(entry)
    return table


def _markdown(summary: list[dict[str, Any]], overhead: dict[str, Any] | None) -> str:
    lines = ["| model | seeds | epochs | R@20 | NDCG@20 | R@10 | NDCG@10 | train s | step time vs baseline |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in summary:
        ratios = overhead or {}  # pskd_e10 runs the pskd hook: same per-step cost (an older overhead.json lacks it)
        ratio = 1.0 if e["variant"].startswith("baseline") else ratios.get(
            f"{e['variant']}_over_baseline", ratios.get(f"{e['variant'].split('_')[0]}_over_baseline"))
        cells = [f"{e[k]:.4f} ± {e[f'{k} std']:.4f}" for k in METRICS]
        lines.append(
            f"| {VARIANTS[e['variant']][0]} | {len(e['seeds'])} | {e['epochs']} | " + " | ".join(cells)
            + f" | {e['train_seconds']:.0f} ± {e['train_seconds std']:.0f} | "
            + (f"{ratio:.2f}x" if ratio is not None else "–") + " |"
        )
    return "\n".join(lines) + "\n"


def run(out_dir: str | Path) -> dict[str, Any]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # the reference box is a shared 2-core machine; one thread per run is reproducible
    data = _ml100k_data(out)
    seeds = [int(s) for s in os.environ.get("REGKIT_RECREG_SEEDS", ",".join(map(str, SEEDS))).split(",")]
    variants = os.environ.get("REGKIT_RECREG_VARIANTS", ",".join(VARIANTS)).split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"`REGKIT_RECREG_VARIANTS` has unknown variants {sorted(unknown)}; known: {list(VARIANTS)}.")
    log_path = out / "runs.jsonl"
    rows = [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.is_file() else []
    overhead_path = out / "overhead.json"
    if overhead_path.is_file():
        overhead = json.loads(overhead_path.read_text())
    else:
        overhead = _overhead(data)
        atomic_write_text(overhead_path, json.dumps(overhead, indent=2) + "\n")
    logger.info("step-time ratios: %s", {k: v for k, v in overhead.items() if k.endswith("_over_baseline")})
    # seed 0 of every variant first (controls after what they copy), then the other seeds, multi-sample dropout
    # (the slowest) last among the tuned variants
    jobs = sorted(((variant, seed) for seed in seeds for variant in variants),
                  key=lambda job: (job[1] != 0, job[0] in CONTROLS, job[0] == "msd", job[1]))
    for variant, seed in jobs:
        if any((row["variant"], row["seed"]) == (variant, seed) for row in rows):
            continue
        tuned = [row for row in rows if (row["variant"], row["seed"]) == (CONTROLS.get(variant, variant), 0)]
        if variant in CONTROLS and not tuned:
            logger.warning("%s needs %s seed 0 first; skipped", variant, CONTROLS[variant])
            continue
        epochs = tuned[0]["epochs"] if (seed != 0 or variant in CONTROLS) and tuned else None
        rows.append(_job(variant, seed, data, out, epochs))
        atomic_write_text(log_path, "".join(json.dumps(row) + "\n" for row in rows))
        logger.info("%s seed %d: %s", variant, seed, {k: rows[-1][k] for k in (*METRICS, "epochs")})
    rows = [row for row in rows if row["variant"] in variants and row["seed"] in seeds]
    summary = _summary(rows)
    table = _markdown(summary, overhead)
    atomic_write_text(out / "table.md", table)
    logger.info("\n%s", table)
    return {
        "protocol": "ML-100K u1.base -> u1.test, implicit, all 1682 items ranked, train items excluded; epochs chosen "
        "on a 10% validation split of u1.base for seed 0, reused for seeds 1-2",
        "rows": rows,
        "summary": summary,
        "overhead": overhead,
        "table_markdown": table,
    }
