"""``regkit recsys``: train, tune, compare, recommend and evaluate recommenders (neural models and baselines)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from pipelines.cli._config import config_option, options_as_overrides

app = typer.Typer(help="Train, serve and evaluate recommenders.", no_args_is_help=True)
console = Console()


@app.command()
def train(
    config: Path = typer.Option(None, "--config", help="YAML run config (see pipelines/configs/ml100k_*.yaml)."),
    overrides: list[str] = typer.Option([], "--set", help="Override a config value: section.key=value (repeatable)."),
    output_dir: Path = typer.Option(None, "--output-dir", help="Run folder (default: the config's output_dir)."),
    seed: int = typer.Option(None, "--seed", help="Seed (overrides the config's seed)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run folder's model."),
    force: bool = typer.Option(False, "--force", help="Take over a run-folder lock held from another host."),
    distributed: bool = typer.Option(
        False, "--distributed", help="Under torchrun: shard the two-tower's tables with torchrec DMP (gloo/NCCL)."
    ),
    sharding_type: str = typer.Option("table_wise", "--sharding-type", help="torchrec sharding type (--distributed)."),
) -> None:
    """Train on the configured split, tune epochs on validation, test, and save the served model.

    The run folder is locked while training; rerunning a killed run resumes it from its last verified
    checkpoint, and ``_SUCCESS.json`` is written last (docs/reliability.md). Multi-process:
    ``torchrun --nproc_per_node N -m pipelines recsys train --config C --distributed`` (docs/scaling_distributed.md).
    """
    from pipelines.recsys_data import input_files
    from pipelines.recsys_run import train_run
    from pipelines.run_config import load_recsys_config
    from pipelines.run_guard import guarded_run_dir

    sets = options_as_overrides(seed=seed, output_dir=None if output_dir is None else str(output_dir))
    resolved = load_recsys_config(config, [*overrides, *sets])  # the options are the last overrides
    folder = Path(resolved.output_dir)
    sharding = sharding_type if distributed else None
    if distributed and os.environ.get("RANK", "0") != "0":  # rank 0 holds the folder lock and writes the run
        train_run(resolved, output_dir=folder, overwrite=overwrite, distributed=sharding)
        return
    with guarded_run_dir(folder, config=resolved.identity(), inputs=input_files(resolved), overwrite=overwrite,
                         force=force, extra={"job": "recsys train"}):
        report = train_run(resolved, output_dir=folder, overwrite=overwrite, distributed=sharding)
    table = Table(title=f"{report['model']} on {report['split']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in report["test"].items():
        if isinstance(value, float) and "/" not in key:
            table.add_row(key, f"{value:.4f}")
    table.add_row("train seconds", f"{report['train']['train_seconds']:.1f}")
    console.print(table)
    console.print(f"run folder: {folder} (model/, metrics.json, resolved_config.yaml, run.json)", soft_wrap=True)


@app.command()
def tune(
    config: Path = typer.Option(..., "--config", help="YAML run config to tune (its data.validation scores trials)."),
    space: Path = typer.Option(None, "--space",
                               help="Search space YAML (default: pipelines/configs/spaces/<model>.yaml)."),
    trials: int = typer.Option(20, "--trials", min=1,
                               help="Trials in the study (finished + pruned), resumed ones included."),
    out: Path = typer.Option(..., "--out", help="Run folder: study.db, trials.json, best_config.yaml, report."),
    overrides: list[str] = typer.Option([], "--set",
                                        help="Override a base config value: section.key=value (repeatable)."),
    metric: str = typer.Option(None, "--metric",
                               help="Validation metric to maximise (default: the config's train.monitor)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the TPE sampler."),
    timeout: float = typer.Option(None, "--timeout", help="Stop starting new trials after this many seconds."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Discard a finished search in --out and start over."),
) -> None:
    """Search config values with Optuna (TPE + median pruning) on the validation split; write the best config.

    Rerunning a killed search resumes it from ``study.db``; train the result with
    ``regkit recsys train --config <out>/best_config.yaml --output-dir <run>``.
    """
    from pipelines.recsys_data import input_files
    from pipelines.recsys_tune import STUDY_FILE, default_space, load_search_space, search_identity
    from pipelines.recsys_tune import tune as run_tune
    from pipelines.run_config import load_recsys_config
    from pipelines.run_guard import guarded_run_dir

    base = load_recsys_config(config, overrides)
    space_path = space or default_space(base.model.name)
    searched = load_search_space(space_path)
    identity = search_identity(base, searched, metric=metric, seed=seed)
    with guarded_run_dir(out, config=identity, inputs=[*input_files(base), space_path], overwrite=overwrite,
                         extra={"job": "recsys tune"}):
        if overwrite:
            (out / STUDY_FILE).unlink(missing_ok=True)
        result = run_tune(base, searched, out, trials=trials, metric=metric, seed=seed, timeout=timeout,
                          space_file=str(space_path))
    table = Table(title=f"best of {len(result.trials)} trials (validation {result.metric})")
    table.add_column("parameter")
    table.add_column("value", justify="right")
    table.add_row(f"validation {result.metric}", f"{result.best_value:.4f}")
    for key, value in result.best_params.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)
    console.print(f"best config: {out / 'best_config.yaml'}; report: {out / 'report.md'}", soft_wrap=True)


@app.command()
def compare(
    configs: list[Path] = typer.Option(..., "--config", help="A run config (repeatable; named by the file's stem)."),
    out: Path = typer.Option(..., "--out", help="Folder: tune/<name>, runs/<name>, report.md, metrics.json."),
    trials: int = typer.Option(0, "--trials", min=0,
                               help="Tune each config first with this many trials of its default space (0: as is)."),
    overrides: list[str] = typer.Option([], "--set", help="Override a value in every config: section.key=value."),
    metrics: list[str] = typer.Option(["R@20", "nDCG@20"], "--metric", help="Test metric (repeatable)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the tuning sampler and of the resampling tests."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo steps whose folder holds another config's run."),
) -> None:
    """Tune, train and test several configs on one split; compare each with the best baseline (paired tests)."""
    from pipelines.recsys_compare import compare_configs
    from pipelines.recsys_data import input_files
    from pipelines.run_config import load_recsys_config
    from pipelines.run_guard import guarded_run_dir

    names = [path.stem for path in configs]
    if len(set(names)) != len(names):
        raise typer.BadParameter(f"configs need distinct file names (they name the runs), got {names}.",
                                 param_hint="--config")
    loaded = {name: load_recsys_config(path, overrides) for name, path in zip(names, configs, strict=True)}
    identity = {"configs": {name: config.identity() for name, config in loaded.items()}, "trials": trials,
                "metrics": metrics, "seed": seed}
    inputs = sorted({file for config in loaded.values() for file in input_files(config)})
    with guarded_run_dir(out, config=identity, inputs=inputs, overwrite=overwrite, extra={"job": "recsys compare"}):
        summary = compare_configs(loaded, out, trials=trials, metrics=metrics, seed=seed, overwrite=overwrite)
    table = Table(title=f"test metrics (best baseline on validation: {summary['best_baseline']})")
    for column in ("config", "model", *metrics, *(f"Δ {m}" for m in metrics), "time to result (s)"):
        table.add_column(column, justify="left" if column in ("config", "model") else "right")
    baseline = summary["best_baseline"]
    for row in summary["rows"]:
        deltas = []
        for metric in metrics:
            delta = row.get(f"Δ {metric} vs {baseline}")
            deltas.append("—" if delta is None else f"{delta:+.4f} (p {row[f'p {metric}']:.3g})")
        table.add_row(row["name"], row["model"], *(f"{row[m]:.4f}" for m in metrics), *deltas,
                      f"{row['time_to_result_seconds']:.0f}")
    console.print(table)
    console.print(f"report: {out / 'report.md'}", soft_wrap=True)


@app.command()
def recommend(
    config: Path = config_option(),
    model: Path = typer.Option(..., "--model", help="Saved model folder (<run>/model)."),
    users: list[str] = typer.Option(..., "--user", help="Raw user id (repeatable)."),
    k: int = typer.Option(10, "--k", help="List length."),
    include_seen: bool = typer.Option(False, "--include-seen", help="Do not exclude training items."),
) -> None:
    """Print top-k items (JSON lines: user, items, scores) for the given users.

    A user the model cannot embed (an id not in the training data, or one without history when the model has no
    user features) gets the most popular items: its line says "fallback": "popularity", with a note on stderr. A
    user without history served from its features says "fallback": "user_features".
    """
    from recsys.serving import Recommender

    service = Recommender.load(model)
    ids = [_raw_user_id(user, service.users.ids) for user in users]
    indices = service.users.encode(np.asarray(ids))
    by_popularity, cold = service.served_by_popularity(indices), service.is_cold(indices)
    lists = service.recommend(ids, k, exclude_seen=not include_seen)
    for user, index, ranked, popular, no_history in zip(ids, indices, lists, by_popularity, cold, strict=True):
        line: dict = {"user": user, "items": [i for i, _ in ranked], "scores": [s for _, s in ranked]}
        if popular:
            known = "is not in" if index == service.users.oov_index else "has no interactions in"
            typer.echo(f"regkit: user {user!r} {known} the model's training data: serving the most popular items "
                       '("fallback": "popularity").', err=True)
        if no_history:
            line["fallback"] = "popularity" if popular else "user_features"
        typer.echo(json.dumps(line))


def _raw_user_id(user: str, known: np.ndarray) -> int | str:
    """``--user`` as the model's id type: an int for a model trained on integer ids (else a BadParameter)."""
    if known.dtype.kind not in "iu":
        return user
    try:
        return int(user)
    except ValueError:
        example = ", ".join(str(i) for i in known[:3].tolist())
        raise typer.BadParameter(f"{user!r}: this model's user ids are integers (e.g. {example}); "
                                 "pass a user id from the training log.", param_hint="--user") from None


@app.command("eval")
def evaluate(
    config: Path = config_option(),
    model: Path = typer.Option(..., "--model", help="Saved model folder (<run>/model)."),
    test: Path = typer.Option(..., "--test", help="Parquet test log (user_id, item_id)."),
    ks: list[int] = typer.Option([10, 20], "--k", help="Cut-offs (repeatable)."),
    out: Path = typer.Option(None, "--out", help="Write the metrics as JSON here."),
) -> None:
    """Full-catalogue evaluation (training items excluded): R@K, nDCG@K, coverage, head/tail slices."""
    from common_regs.io import atomic_write_text
    from pipelines.evaluation.recsys import evaluate_recommendations
    from recsys.data import clean_log
    from recsys.serving import Recommender

    log = clean_log(test, where=str(test)).collect()
    metrics = evaluate_recommendations(Recommender.load(model), log, ks=ks, where=str(test))
    if out is not None:
        atomic_write_text(out, json.dumps(metrics, indent=2) + "\n")
    table = Table(title=f"{model} on {test}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    if out is not None:
        console.print(f"metrics written to {out}", soft_wrap=True)
