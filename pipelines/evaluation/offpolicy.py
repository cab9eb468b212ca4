"""Counterfactual (off-policy) estimates of a new policy's reward from logged interactions with propensities.

Logging format (parquet, one row per logged item impression):

=============  ==========================================================  ========
column         meaning                                                     required
=============  ==========================================================  ========
user_id        the context x (a user; integer or string)                   yes
item_id        the logged action a (integer or string)                     yes
reward         observed reward r (click = 1, else 0; any finite number)    yes
propensity     π_b(a | x) (at this position, for slates), in (0, 1]         yes
position       1-based slot of the item in the logged slate                no (default 1)
round_id       groups the rows of one logged slate                         no (default: one row = one round)
=============  ==========================================================  ========

The target policy π_e is deterministic: a ranking per user (a run ``{user: {item: score}}``); it shows its
top item at position 1, its second at position 2, ... With the position-based (item-position, "IIPS")
assumption, a slate's reward is the sum of per-position rewards, and each position is estimated separately:

    w_i = π_e(a_i at k_i | x_i) / π_b(a_i at k_i | x_i) = 1[rank_e(x_i, a_i) = k_i] / p_i

and with n the number of logged rounds, q̂ a reward model and a_e(x, k) the target policy's item at slot k:

    IPS   = (1/n) Σ_i min(w_i, M) r_i                                     (clipped at M; M = ∞ by default)
    SNIPS = Σ_k  Σ_{i∈k} w_i r_i / Σ_{i∈k} w_i
    DM    = (1/n) Σ_i q̂(x_i, a_e(x_i, k_i), k_i)
    DR    = DM + (1/n) Σ_i w_i (r_i − q̂(x_i, a_i, k_i))
    ESS   = (Σ_i w_i)² / Σ_i w_i²
    Replay = Σ_k  Σ_{i∈k, match} r_i / #{i∈k : match}       (uniform-random logging only; equals SNIPS there)

Intervals: percentile bootstrap over logged rounds (a cluster bootstrap: a slate is resampled whole).

References: Horvitz & Thompson 1952 (IPS); Swaminathan & Joachims, "The Self-Normalized Estimator for
Counterfactual Learning", NeurIPS 2015 (SNIPS); Dudík, Langford & Li, "Doubly Robust Policy Evaluation and
Learning", ICML 2011 (DM, DR); Li, Chu, Langford & Wang, "Unbiased offline evaluation of contextual-bandit-based
news article recommendation algorithms", WSDM 2011 (replay); Li et al., "Offline Evaluation of Ranking Policies with
Click Models", KDD 2018 (item-position IPS). Estimator definitions follow Open Bandit Pipeline's
``obp.ope`` (which cannot be installed on Python 3.11, hence this implementation).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl

logger = logging.getLogger(__name__)

__all__ = [
    "ESTIMATORS",
    "LoggedData",
    "OffPolicyEstimate",
    "OffPolicyFormatError",
    "estimate_policy",
    "fit_item_position_reward_model",
    "read_logged_data",
]

ESTIMATORS = ("ips", "snips", "dm", "dr", "replay")
RewardModel = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


class OffPolicyFormatError(ValueError):
    """A logged-data file or a target policy cannot be used; the message names the file and column."""


@dataclass(frozen=True)
class LoggedData:
    """Logged interactions, one entry per row, with the logging policy's propensities (checked on construction)."""

    users: np.ndarray  # object or int array, one entry per row
    items: np.ndarray
    rewards: np.ndarray  # float
    propensities: np.ndarray  # float in (0, 1]
    positions: np.ndarray  # int >= 1
    rounds: np.ndarray  # int in [0, n_rounds)
    n_rounds: int

    @classmethod
    def from_frame(cls, frame: pl.DataFrame, source: str = "logged data") -> LoggedData:
        for column in ("user_id", "item_id", "reward", "propensity"):
            if column not in frame.columns:
                raise OffPolicyFormatError(f"{source}: missing required column `{column}` (columns: {frame.columns}).")
        if frame.height == 0:
            raise OffPolicyFormatError(f"{source}: no logged rows.")
        rewards = frame["reward"].cast(pl.Float64, strict=False).to_numpy()
        propensities = frame["propensity"].cast(pl.Float64, strict=False).to_numpy()
        for name, values in (("reward", rewards), ("propensity", propensities)):
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                raise OffPolicyFormatError(f"{source}: column `{name}` has {bad.size} null/NaN/inf values "
                                           f"(first at row {bad[0]}).")
        bad = np.flatnonzero((propensities <= 0) | (propensities > 1))
        if bad.size:
            raise OffPolicyFormatError(f"{source}: column `propensity` must lie in (0, 1]; {bad.size} rows do not "
                                       f"(first at row {bad[0]}: {propensities[bad[0]]}).")
        positions = (frame["position"].to_numpy().astype(np.int64) if "position" in frame.columns
                     else np.ones(frame.height, dtype=np.int64))
        if positions.min() < 1:
            raise OffPolicyFormatError(f"{source}: column `position` is 1-based; found {positions.min()}.")
        if "round_id" in frame.columns:
            rounds = frame["round_id"].rank("dense").cast(pl.Int64).to_numpy() - 1
            duplicated = pl.DataFrame({"r": rounds, "k": positions}).is_duplicated()
            if duplicated.any():
                first = int(np.flatnonzero(duplicated.to_numpy())[0])
                raise OffPolicyFormatError(f"{source}: round {frame['round_id'][first]!r} logs position "
                                           f"{positions[first]} twice (row {first}).")
        else:
            rounds = np.arange(frame.height)
        return cls(users=frame["user_id"].to_numpy(), items=frame["item_id"].to_numpy(), rewards=rewards,
                   propensities=propensities, positions=positions, rounds=rounds, n_rounds=int(rounds.max()) + 1)


def read_logged_data(path: str | os.PathLike[str]) -> LoggedData:
    """Read and check a logged-data parquet file; an :class:`OffPolicyFormatError` names the file and column."""
    path = Path(path)
    if not path.is_file():
        raise OffPolicyFormatError(f"{path}: logged-data file not found.")
    try:
        frame = pl.read_parquet(path)
    except (pl.exceptions.ComputeError, OSError) as err:
        raise OffPolicyFormatError(f"{path}: not a readable parquet file ({err}).") from None
    return LoggedData.from_frame(frame, source=str(path))


@dataclass(frozen=True)
class OffPolicyEstimate:
    """One estimator's expected reward per round, its bootstrap interval, effective sample size and rounds."""

    estimator: str
    value: float
    ci_low: float
    ci_high: float
    confidence: float
    effective_sample_size: float
    rounds: int

    def as_dict(self) -> dict:
        return asdict(self)


def _target_items(policy: Mapping[str, Mapping[str, float]], data: LoggedData) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the target policy's item at the row's position, and whether it equals the logged item."""
    rankings: dict[str, list[str]] = {
        str(user): [item for item, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))]
        for user, scores in policy.items()
    }
    missing = sorted({str(u) for u in data.users} - set(rankings))
    if missing:
        raise OffPolicyFormatError(f"the target policy ranks no items for {len(missing)} logged users "
                                   f"(e.g. {missing[0]!r}); it must act in every logged context.")
    target = np.empty(len(data.users), dtype=object)
    for row, (user, position) in enumerate(zip(data.users, data.positions, strict=True)):
        ranking = rankings[str(user)]
        target[row] = ranking[position - 1] if position <= len(ranking) else None
    matches = np.array([t is not None and t == str(item) for t, item in zip(target, data.items, strict=True)])
    return target, matches


def fit_item_position_reward_model(data: LoggedData, prior_strength: float = 10.0) -> RewardModel:
    """q̂(x, a, k): mean logged reward of item a at position k, shrunk toward the position's mean reward.

    q̂(a, k) = (Σ_{i: a_i=a, k_i=k} r_i + m · μ_k) / (n_{a,k} + m), m = ``prior_strength``; unseen (a, k) → μ_k.
    A context-free model: good enough for DR's correction term; pass your own model for more.
    """
    frame = pl.DataFrame({"item": [str(i) for i in data.items], "k": data.positions, "r": data.rewards})
    position_mean = dict(frame.group_by("k").agg(pl.col("r").mean()).iter_rows())
    cells = frame.group_by("item", "k").agg(pl.col("r").sum().alias("s"), pl.len().alias("n"))
    table = {(item, k): (s + prior_strength * position_mean[k]) / (n + prior_strength)
             for item, k, s, n in cells.iter_rows()}
    overall = float(np.mean(data.rewards))

    def model(users: np.ndarray, items: np.ndarray, positions: np.ndarray) -> np.ndarray:
        return np.array([table.get((str(a), int(k)), position_mean.get(int(k), overall)) if a is not None else 0.0
                         for a, k in zip(items, positions, strict=True)])

    return model


def _estimate(name: str, counts: np.ndarray, terms: dict[str, np.ndarray], data: LoggedData) -> np.ndarray:
    """Estimator values for a batch of round-resampling weights ``counts`` (B × n_rounds)."""
    row_counts = counts[:, data.rounds]  # B × rows
    n = counts.sum(axis=1)
    if name in ("ips", "dm", "dr"):
        return row_counts @ terms[name] / n
    if name in ("snips", "replay"):
        # Replay is the per-position ratio with match indicators as weights; under uniform logging it equals SNIPS.
        weights = terms["w"] if name == "snips" else terms["match"]
        value = np.zeros(counts.shape[0])
        for k in np.unique(data.positions):
            at_k = data.positions == k
            numerator = row_counts[:, at_k] @ (weights[at_k] * data.rewards[at_k])
            denominator = row_counts[:, at_k] @ weights[at_k]
            value += np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)
        return value
    raise ValueError(f"unknown estimator {name!r}; choose from {ESTIMATORS}.")


def estimate_policy(
    data: LoggedData,
    policy: Mapping[str, Mapping[str, float]],
    *,
    estimators: tuple[str, ...] = ("ips", "snips", "dm", "dr"),
    reward_model: RewardModel | None = None,
    clip: float = math.inf,
    confidence: float = 0.95,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> list[OffPolicyEstimate]:
    """Estimate the expected per-round reward of ``policy`` from ``data`` with each estimator."""
    unknown = set(estimators) - set(ESTIMATORS)
    if unknown:
        raise ValueError(f"unknown estimators {sorted(unknown)}; choose from {ESTIMATORS}.")
    if clip <= 0:
        raise ValueError(f"`clip` must be > 0, got {clip}.")
    target, matches = _target_items(policy, data)
    weights = matches / data.propensities
    if "replay" in estimators:
        _check_uniform_logging(data)
    model = reward_model or fit_item_position_reward_model(data)
    q_target = model(data.users, target, data.positions)
    q_logged = model(data.users, data.items, data.positions)
    terms = {
        "w": weights,
        "match": matches.astype(float),
        "ips": np.minimum(weights, clip) * data.rewards,
        "dm": q_target,
        "dr": q_target + weights * (data.rewards - q_logged),
    }
    rng = np.random.default_rng(seed)
    ess = float(weights.sum() ** 2 / (weights ** 2).sum()) if weights.any() else 0.0
    point_counts = np.ones((1, data.n_rounds))
    results = []
    alpha = (1 - confidence) / 2
    for name in estimators:
        point = float(_estimate(name, point_counts, terms, data)[0])
        replicates = []
        for start in range(0, n_bootstrap, 50):
            size = min(50, n_bootstrap - start)
            draws = rng.integers(0, data.n_rounds, size=(size, data.n_rounds))
            counts = np.stack([np.bincount(row, minlength=data.n_rounds) for row in draws]).astype(float)
            replicates.append(_estimate(name, counts, terms, data))
        boot = np.concatenate(replicates)
        results.append(OffPolicyEstimate(
            estimator=name, value=point, ci_low=float(np.quantile(boot, alpha)),
            ci_high=float(np.quantile(boot, 1 - alpha)), confidence=confidence,
            effective_sample_size=float(matches.sum()) if name == "replay" else ess, rounds=data.n_rounds,
        ))
    return results


def _check_uniform_logging(data: LoggedData) -> None:
    per_position = pl.DataFrame({"k": data.positions, "p": data.propensities}).group_by("k").agg(
        pl.col("p").n_unique().alias("distinct"))
    if per_position["distinct"].max() > 1:
        raise ValueError("replay evaluation needs a uniform-random logging policy (one propensity per position); "
                         "these logs have varying propensities: use ips/snips/dr instead.")
