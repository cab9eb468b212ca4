"""``regkit recsys tune``: an Optuna search over any run-config key, scored on validation, never on the test split.

A trial is the run's early-stopping fit (:func:`pipelines.recsys_run.fit_on_validation`): it trains on the training
side of ``data.validation`` (a carve of the training log, or a given validation file) and its score is the best
validation value of ``metric`` (default ``train.monitor``) over the fit. The sampler is TPE (Bergstra et al.,
"Algorithms for Hyper-Parameter Optimization", NeurIPS 2011; ``optuna.samplers.TPESampler``); the median pruner
(``optuna.pruners.MedianPruner``) stops a trial whose validation value at an evaluation is below the median of
earlier trials at the same evaluation. Baselines fitted in closed form have one evaluation, so they are never pruned.

The search space is a YAML mapping from dotted config keys to distributions::

    train.lr: {type: float, low: 1.0e-4, high: 3.0e-2, log: true}
    model.embedding_dim: {type: int, low: 32, high: 256, log: true}
    train.loss: {type: categorical, choices: [softmax, bpr]}
    hooks.embedding_l2.weight: {type: float, low: 1.0e-6, high: 1.0e-2, log: true}

``hooks.<name>.<option>`` sets an option of the hook named ``<name>`` in the config's ``hooks`` list. ``data.*``,
``eval.*`` and ``output_dir`` cannot be searched (they change the data or the score, not the model). Each model has a
default space in ``pipelines/configs/spaces/<model>.yaml``.

The run folder holds ``study.db`` (Optuna's SQLite storage: a killed search resumes where it stopped when rerun),
``trials.json`` (every trial: number, state, value, parameters, seconds, best epoch, validation metrics),
``best_config.yaml`` (the config with the best trial's values, ready for ``regkit recsys train``), ``space.yaml``
(the space as searched) and ``report.md`` / ``report.html`` with the optimisation history and the parameters'
importance (fANOVA, Hutter et al., ICML 2014; ``optuna.importance.FanovaImportanceEvaluator``).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import model_validator

from common_regs.io import atomic_write_text
from pipelines.config_files import ConfigError, load_yaml
from pipelines.recsys_data import RunData
from pipelines.recsys_run import fit_on_validation
from pipelines.report import Report
from pipelines.run_config import RecsysRunConfig, recsys_config
from pipelines.run_config._errors import validate
from pipelines.run_config._schema import Section

logger = logging.getLogger(__name__)

__all__ = [
    "SPACES_DIR",
    "SearchParameter",
    "TuneResult",
    "default_space",
    "load_search_space",
    "search_identity",
    "tune",
]

SPACES_DIR = Path(__file__).resolve().parent / "configs" / "spaces"
STUDY_FILE = "study.db"
_FIXED_SECTIONS = ("data", "eval", "output_dir")


class SearchParameter(Section):
    """One searched key: ``int`` / ``float`` over ``[low, high]`` or ``categorical`` over ``choices``.

    ``log`` samples a range on the log scale; ``step`` discretises it (not both).
    """

    type: Literal["int", "float", "categorical"]
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _complete(self) -> SearchParameter:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("`type`='categorical' needs a non-empty `choices` list.")
            return self
        if self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"`type`={self.type!r} needs `low` < `high`, got {self.low!r} and {self.high!r}.")
        if self.log and self.low <= 0:
            raise ValueError(f"`log`=true needs `low` > 0, got {self.low!r}.")
        if self.log and self.step is not None:
            raise ValueError("`log` and `step` cannot be combined (Optuna samples one or the other).")
        if self.type == "int" and not all(isinstance(v, int) for v in (self.low, self.high)):
            raise ValueError(f"`type`='int' needs integer bounds, got {self.low!r} and {self.high!r}.")
        return self

    def suggest(self, trial: Any, key: str) -> Any:
        """The value ``trial`` (an ``optuna.Trial``) draws for ``key``."""
        if self.type == "categorical":
            return trial.suggest_categorical(key, self.choices)
        if self.type == "int":
            return trial.suggest_int(key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(key, float(self.low), float(self.high), step=self.step, log=self.log)

    def extremes(self) -> list[Any]:
        """The values that bound the space (checked against the config schema before the search starts)."""
        return list(self.choices) if self.type == "categorical" else [self.low, self.high]


def default_space(model: str) -> Path:
    """The shipped search space of the model named ``model``."""
    path = SPACES_DIR / f"{model}.yaml"
    if not path.is_file():
        shipped = sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"no default search space for `model.name`={model!r} (shipped: {shipped}); "
                                "pass --space FILE.")
    return path


def load_search_space(path: str | Path) -> dict[str, SearchParameter]:
    """The space in ``path``, each entry validated (errors name the file and line); an empty file is an empty space."""
    raw, sources = load_yaml(path)
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a search space is a mapping of dotted config keys to distributions, "
                          f"got a {type(raw).__name__}.")
    space = {}
    for key, spec in raw.items():
        where = sources.where((key,))
        if not isinstance(key, str) or not key:
            raise ConfigError(f"{where}: a searched key must be a dotted config key, got {key!r}.")
        if key.split(".")[0] in _FIXED_SECTIONS:
            raise ConfigError(f"{where}: `{key}` cannot be searched: tuning never changes the data, the split or "
                              f"the score ({', '.join(_FIXED_SECTIONS)}).")
        try:
            space[key] = validate(SearchParameter, spec)
        except ConfigError as err:
            raise ConfigError(f"{where}: `{key}`: {err}") from None
    return space


def _set_key(config: dict[str, Any], key: str, value: Any) -> None:
    """Set the dotted ``key`` in a plain config dict; ``hooks.<name>.<option>`` addresses a hook by its name."""
    parts = key.split(".")
    if parts[0] == "hooks":
        if len(parts) != 3:
            raise ConfigError(f"`{key}`: a hook option is addressed as hooks.<name>.<option>.")
        named = [hook for hook in config.get("hooks", []) if hook.get("name") == parts[1]]
        if len(named) != 1:
            names = [hook.get("name") for hook in config.get("hooks", [])]
            raise ConfigError(f"`{key}`: the config needs exactly one hook named {parts[1]!r}, its hooks are {names}.")
        named[0][parts[2]] = value
        return
    node = config
    for depth, part in enumerate(parts[:-1]):
        if not isinstance(node.get(part), dict):
            raise ConfigError(f"`{key}`: `{'.'.join(parts[: depth + 1])}` is not a section of the run config.")
        node = node[part]
    node[parts[-1]] = value


def trial_config(base: RecsysRunConfig, values: Mapping[str, Any]) -> RecsysRunConfig:
    """``base`` with the searched ``values`` set, validated like any run config."""
    config = copy.deepcopy(base.to_dict())
    for key, value in values.items():
        _set_key(config, key, value)
    return recsys_config(config)


def _check_space(base: RecsysRunConfig, space: Mapping[str, SearchParameter], where: str) -> None:
    """Every key exists and both ends of every range (every choice) give a valid config, before any trial runs."""
    for key, parameter in space.items():
        for value in parameter.extremes():
            try:
                trial_config(base, {key: value})
            except ConfigError as err:
                raise ConfigError(f"{where}: `{key}` = {value!r} does not give a valid run config: {err}") from None


def search_identity(
    base: RecsysRunConfig, space: Mapping[str, SearchParameter], *, metric: str | None, seed: int
) -> dict[str, Any]:
    """What a search computes (its study's name and its run folder's identity): config, space, metric and seed."""
    searched = {key: parameter.model_dump(exclude_defaults=True) for key, parameter in space.items()}
    return {"config": base.identity(), "space": searched, "metric": metric or base.train.monitor, "seed": seed}


@dataclass
class TuneResult:
    """What a search found: the best trial's value, parameters and config, and every trial's record."""

    metric: str
    best_value: float
    best_params: dict[str, Any]
    best_config: RecsysRunConfig
    trials: list[dict[str, Any]]
    seconds: float


def _trial_record(trial: Any) -> dict[str, Any]:
    duration = trial.duration.total_seconds() if trial.duration is not None else None
    return {"number": trial.number, "state": trial.state.name, "value": trial.value, "params": trial.params,
            "seconds": duration, **trial.user_attrs}


def _objective(base: RecsysRunConfig, space: Mapping[str, SearchParameter], data: RunData, metric: str) -> Any:
    import optuna

    def objective(trial: optuna.Trial) -> float:
        values = {key: parameter.suggest(trial, key) for key, parameter in space.items()}
        config = trial_config(base, values)
        evaluations = 0

        def report(metrics: dict[str, float]) -> None:
            nonlocal evaluations
            if metric not in metrics:
                raise ValueError(f"`--metric` {metric!r} is not among the validation metrics {sorted(metrics)}.")
            trial.report(metrics[metric], evaluations)
            evaluations += 1
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at evaluation {evaluations - 1}: validation {metric} "
                                         f"{metrics[metric]:.4f}")

        result = fit_on_validation(config, data, on_evaluation=report)[2]
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("validation", result.best_metrics)
        trial.set_user_attr("train_seconds", result.train_seconds)
        value = result.best_metrics.get(metric, math.nan)
        return value

    return objective


def _report(study: Any, metric: str, trials: Sequence[dict[str, Any]], best: Mapping[str, Any]) -> Report:
    import optuna
    from optuna.visualization import matplotlib as optuna_plots

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # the matplotlib plots' API
    page = Report(f"Tuning: {study.study_name}")
    page.text(f"Validation {metric} per trial (TPE sampler, median pruner); the test split is never read.")
    page.table([{"best validation " + metric: best["value"], **best["params"]}], caption="best trial")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        page.figure(optuna_plots.plot_optimization_history(study).figure, caption="validation value of each trial")
    if len(complete) >= 2 and complete[0].params:
        try:
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
            axes = optuna_plots.plot_param_importances(study, evaluator=evaluator)
            page.figure(axes.figure, caption="parameter importance (fANOVA over the finished trials)")
        except (RuntimeError, ValueError) as err:  # e.g. every finished trial drew the same values
            page.text(f"Parameter importance not computed: {err}")
    page.table([{k: v for k, v in t.items() if k != "validation"} for t in trials], caption="every trial")
    return page


def tune(
    base: RecsysRunConfig,
    space: Mapping[str, SearchParameter],
    out: str | Path,
    *,
    trials: int,
    metric: str | None = None,
    seed: int = 0,
    timeout: float | None = None,
    space_file: str = "the search space",
    pruner: Any = None,
) -> TuneResult:
    """Run (or resume) the search in ``out`` until it holds ``trials`` finished or pruned trials.

    The study is named after the base config and the space, so rerunning the same search resumes it and another
    search in the same folder starts a study of its own. ``pruner`` replaces the default
    ``MedianPruner(n_startup_trials=5, n_warmup_steps=1)`` (no pruning before five trials finished, nor at a trial's
    first evaluation).
    """
    import optuna

    from common_regs.run_dir import config_sha256

    if trials < 1:
        raise ValueError(f"`trials` must be >= 1, got {trials}.")
    if base.data.validation.method == "none":
        raise ConfigError("tuning scores trials on a validation split, and `data.validation` is none: set e.g. "
                          "data.validation={method: random_holdout, fraction: 0.1} (never the test split).")
    _check_space(base, space, space_file)
    identity = search_identity(base, space, metric=metric, seed=seed)
    metric = identity["metric"]
    if not space:
        logger.info("the search space is empty: one trial scores the config as it is")
        trials = 1
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=f"{base.model.name}-{config_sha256(identity)[:12]}",
        storage=f"sqlite:///{(out / STUDY_FILE).resolve()}",
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=pruner or optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
        load_if_exists=True,
    )
    started = time.perf_counter()
    done = sum(t.state.is_finished() for t in study.trials)
    if done:
        logger.info("resuming study %s: %d of %d trials already finished", study.study_name, done, trials)
    if done < trials:
        data = RunData(base.data, work_dir=out)
        study.optimize(_objective(base, space, data, metric), n_trials=trials - done, timeout=timeout,
                       gc_after_trial=True)
    records = [_trial_record(t) for t in study.trials]
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        raise RuntimeError(f"no trial of {study.study_name} finished (states: {[r['state'] for r in records]}).")
    best = {"value": study.best_value, "params": study.best_params}
    best_config = trial_config(base, study.best_params)
    atomic_write_text(out / "trials.json", json.dumps(records, indent=2) + "\n")
    atomic_write_text(out / "space.yaml", yaml.safe_dump(identity["space"], sort_keys=False))
    atomic_write_text(out / "best_config.yaml", yaml.safe_dump(best_config.to_dict(), sort_keys=False))
    seconds = time.perf_counter() - started
    summary = {"metric": metric, "best": best, "trials": len(records), "study": study.study_name,
               "seconds_this_session": seconds}
    _report(study, metric, records, best).write(out, metrics=summary, config=identity, seed=seed)
    return TuneResult(metric, best["value"], best["params"], best_config, records, seconds)
