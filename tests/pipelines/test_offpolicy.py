"""Off-policy estimators on simulated bandits whose true policy values are known in closed form."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pipelines.evaluation.offpolicy import LoggedData, OffPolicyFormatError, estimate_policy, read_logged_data

N_USERS, N_ITEMS = 30, 8


def _world(seed: int = 0):
    rng = np.random.default_rng(seed)
    q = 1 / (1 + np.exp(-(rng.normal(size=(N_USERS, 4)) @ rng.normal(size=(4, N_ITEMS)))))  # true click rates
    logging_scores = rng.normal(size=(N_USERS, N_ITEMS))
    pi_b = np.exp(logging_scores) / np.exp(logging_scores).sum(axis=1, keepdims=True)
    return q, pi_b


def _policy_from(choice: np.ndarray) -> dict[str, dict[str, float]]:
    """A deterministic policy showing item choice[u] first (its score is the highest)."""
    return {str(u): {str(a): float(a == choice[u]) for a in range(N_ITEMS)} for u in range(N_USERS)}


def _log(q, pi_b, n, seed, uniform=False) -> LoggedData:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, N_USERS, size=n)
    probs = np.full((N_USERS, N_ITEMS), 1 / N_ITEMS) if uniform else pi_b
    items = np.array([rng.choice(N_ITEMS, p=probs[u]) for u in users])
    rewards = (rng.random(n) < q[users, items]).astype(float)
    frame = pl.DataFrame({"user_id": users.astype(str), "item_id": items.astype(str), "reward": rewards,
                          "propensity": probs[users, items]})
    return LoggedData.from_frame(frame)


def _true_model(q):
    return lambda users, items, positions: np.array(
        [q[int(u), int(a)] if a is not None else 0.0 for u, a in zip(users, items, strict=True)])


def test_estimators_cover_the_true_value_and_rank_policies():
    q, pi_b = _world()
    good, bad = q.argmax(axis=1), q.argmin(axis=1)
    truth_good, truth_bad = q[np.arange(N_USERS), good].mean(), q[np.arange(N_USERS), bad].mean()
    data = _log(q, pi_b, 20_000, seed=1)
    estimates_good = {e.estimator: e for e in estimate_policy(data, _policy_from(good), n_bootstrap=300)}
    estimates_bad = {e.estimator: e for e in estimate_policy(data, _policy_from(bad), n_bootstrap=300)}
    for name in ("ips", "snips", "dr"):
        assert estimates_good[name].ci_low <= truth_good <= estimates_good[name].ci_high, name
        assert estimates_bad[name].ci_low <= truth_bad <= estimates_bad[name].ci_high, name
        assert estimates_good[name].ci_low > estimates_bad[name].ci_high, name
    ess = estimates_good["ips"].effective_sample_size
    assert 0 < ess < data.n_rounds


def test_dr_with_a_good_reward_model_has_lower_variance_than_ips():
    q, pi_b = _world()
    data = _log(q, pi_b, 20_000, seed=2)
    policy = _policy_from(q.argmax(axis=1))
    estimates = {e.estimator: e for e in estimate_policy(data, policy, reward_model=_true_model(q), n_bootstrap=300)}
    width = {name: estimate.ci_high - estimate.ci_low for name, estimate in estimates.items()}
    assert width["dr"] < 0.7 * width["ips"]
    truth = q[np.arange(N_USERS), q.argmax(axis=1)].mean()
    assert estimates["dm"].value == pytest.approx(truth, abs=0.01)  # DM with the true model: only context sampling


def test_ips_is_unbiased_over_repeated_logs():
    q, pi_b = _world(3)
    choice = q.argmax(axis=1)
    truth = q[np.arange(N_USERS), choice].mean()
    values = [estimate_policy(_log(q, pi_b, 1500, seed=s), _policy_from(choice), estimators=("ips",),
                              n_bootstrap=2)[0].value for s in range(40)]
    standard_error = np.std(values, ddof=1) / np.sqrt(len(values))
    assert abs(np.mean(values) - truth) < 3.5 * standard_error


def test_replay_on_uniform_logs_and_refusal_otherwise():
    q, pi_b = _world(4)
    choice = q.argmax(axis=1)
    truth = q[np.arange(N_USERS), choice].mean()
    uniform = _log(q, pi_b, 20_000, seed=5, uniform=True)
    (replay,) = estimate_policy(uniform, _policy_from(choice), estimators=("replay",), n_bootstrap=300)
    assert replay.ci_low <= truth <= replay.ci_high
    assert replay.effective_sample_size == pytest.approx(20_000 / N_ITEMS, rel=0.1)  # matched rounds
    with pytest.raises(ValueError, match="needs a uniform-random logging policy"):
        estimate_policy(_log(q, pi_b, 500, seed=6), _policy_from(choice), estimators=("replay",))


def test_position_based_slates():
    q, _ = _world(7)
    theta = np.array([1.0, 0.6, 0.3])  # examination probability per position
    rng = np.random.default_rng(8)
    rows = []
    for round_id in range(6000):
        user = int(rng.integers(0, N_USERS))
        slate = rng.permutation(N_ITEMS)[:3]  # uniform random slates: P(a at k) = 1 / N_ITEMS
        for k, item in enumerate(slate, start=1):
            rows.append((round_id, str(user), str(item), k, float(rng.random() < theta[k - 1] * q[user, item]),
                         1 / N_ITEMS))
    frame = pl.DataFrame(rows, schema=["round_id", "user_id", "item_id", "position", "reward", "propensity"],
                         orient="row")
    data = LoggedData.from_frame(frame)
    ranking = np.argsort(-q, axis=1)
    policy = {str(u): {str(a): float(N_ITEMS - r) for r, a in enumerate(ranking[u])} for u in range(N_USERS)}
    truth = np.mean([sum(theta[k] * q[u, ranking[u, k]] for k in range(3)) for u in range(N_USERS)])
    estimates = {e.estimator: e for e in estimate_policy(data, policy, estimators=("ips", "snips", "replay"),
                                                         n_bootstrap=300)}
    for name, estimate in estimates.items():
        assert estimate.ci_low <= truth <= estimate.ci_high, name
    assert data.n_rounds == 6000


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("propensity", 0.0, r"`propensity` must lie in \(0, 1\]; 1 rows do not \(first at row 1: 0.0\)"),
        ("propensity", 1.5, r"`propensity` must lie in \(0, 1\]"),
        ("reward", float("nan"), r"`reward` has 1 null/NaN/inf values \(first at row 1\)"),
    ],
)
def test_bad_logged_values(column, value, message):
    frame = pl.DataFrame(
        {"user_id": ["a", "b"], "item_id": ["x", "y"], "reward": [1.0, 0.0], "propensity": [0.5, 0.5]}
    )
    second_row = pl.int_range(pl.len()) == 1
    frame = frame.with_columns(pl.when(second_row).then(value).otherwise(pl.col(column)).alias(column))
    with pytest.raises(OffPolicyFormatError, match=message):
        LoggedData.from_frame(frame)


def test_missing_columns_files_and_users(tmp_path):
    with pytest.raises(OffPolicyFormatError, match="missing required column `propensity`"):
        LoggedData.from_frame(pl.DataFrame({"user_id": [1], "item_id": [1], "reward": [1.0]}))
    with pytest.raises(OffPolicyFormatError, match="logged-data file not found"):
        read_logged_data(tmp_path / "none.parquet")
    data = LoggedData.from_frame(pl.DataFrame({"user_id": ["u1", "u2"], "item_id": ["a", "b"], "reward": [1.0, 0.0],
                                               "propensity": [0.5, 0.5]}))
    with pytest.raises(OffPolicyFormatError, match=r"ranks no items for 1 logged users \(e.g. 'u2'\)"):
        estimate_policy(data, {"u1": {"a": 1.0}})
