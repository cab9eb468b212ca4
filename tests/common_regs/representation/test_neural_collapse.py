"""Neural-collapse metrics (#9): zero at exact collapse onto a simplex ETF, positive with within-class noise."""

from __future__ import annotations

import pytest
import torch

from common_regs.representation import NeuralCollapseMonitor, neural_collapse_metrics


def _simplex(c: int) -> torch.Tensor:
    return torch.eye(c) - 1.0 / c  # centred simplex ETF rows


def test_exact_collapse_onto_a_simplex_etf_gives_zero_metrics() -> None:
    means = _simplex(4) * 3.0
    features = means.repeat_interleave(5, 0)
    labels = torch.arange(4).repeat_interleave(5)
    metrics = neural_collapse_metrics(features, labels, classifier=means * 0.5)
    for key in ("nc1", "nc2_norm", "nc2_angle", "nc3"):
        assert metrics[key] == pytest.approx(0.0, abs=1e-9)


def test_nc1_grows_with_within_class_noise() -> None:
    torch.manual_seed(0)
    means = _simplex(3) * 3.0
    labels = torch.arange(3).repeat_interleave(20)
    low = neural_collapse_metrics(means[labels] + 0.1 * torch.randn(60, 3), labels)["nc1"]
    high = neural_collapse_metrics(means[labels] + 1.0 * torch.randn(60, 3), labels)["nc1"]
    assert 0 < low < high
    with pytest.raises(ValueError, match="classes"):
        neural_collapse_metrics(torch.randn(4, 2), torch.zeros(4, dtype=torch.long))


def test_paper_metrics_nc1_tilde_and_frobenius_nc2_by_hand() -> None:
    # K = 2 classes with 2 and 3 samples in 2-D; Σ_W, Σ_B (1/N and 1/K weights) and the §5 NC2 with loops
    rows = [[0.0, 0.0], [2.0, 0.0], [1.0, 3.0], [2.0, 1.0], [0.0, 2.0]]
    labels = [0, 0, 1, 1, 1]
    means = [[sum(r[j] for r, c in zip(rows, labels, strict=True) if c == k) / labels.count(k) for j in range(2)]
             for k in range(2)]
    global_mean = [sum(r[j] for r in rows) / 5 for j in range(2)]
    trace_w = sum((r[j] - means[c][j]) ** 2 for r, c in zip(rows, labels, strict=True) for j in range(2)) / 5
    trace_b = sum((means[k][j] - global_mean[j]) ** 2 for k in range(2) for j in range(2)) / 2
    centred = [[means[k][j] - global_mean[j] for j in range(2)] for k in range(2)]
    gram = [[sum(centred[a][j] * centred[b][j] for j in range(2)) for b in range(2)] for a in range(2)]
    gram_norm = sum(v**2 for row in gram for v in row) ** 0.5
    etf = [[(1.0 - 0.5) if a == b else -0.5 for b in range(2)] for a in range(2)]  # (I − 11ᵀ/K)/√(K − 1), K = 2
    nc2 = sum((gram[a][b] / gram_norm - etf[a][b]) ** 2 for a in range(2) for b in range(2)) ** 0.5
    metrics = neural_collapse_metrics(torch.tensor(rows), torch.tensor(labels))
    assert metrics["nc1_tilde"] == pytest.approx(trace_w / trace_b, rel=1e-9)
    assert metrics["nc2"] == pytest.approx(nc2, abs=1e-9)


def test_monitor_tracks_collapse_during_a_small_training_run() -> None:
    """The callback in a plain loop: NC1 of the penultimate features falls as a small MLP trains (MSE, WD)."""
    torch.manual_seed(0)
    centres = 2.0 * torch.randn(3, 6)
    labels = torch.arange(3).repeat_interleave(20)
    x = centres[labels] + torch.randn(60, 6)
    body = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16), torch.nn.ReLU())
    head = torch.nn.Linear(16, 3, bias=False)
    optimizer = torch.optim.Adam([*body.parameters(), *head.parameters()], lr=1e-2, weight_decay=1e-4)
    monitor = NeuralCollapseMonitor(every=50)
    targets = torch.nn.functional.one_hot(labels, 3).float()
    for step in range(401):
        features = body(x)
        monitor(step, features, labels, classifier=head.weight)
        loss = ((head(features) - targets) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    nc1 = [entry["nc1"] for entry in monitor.history]
    assert [entry["step"] for entry in monitor.history] == list(range(0, 401, 50))
    assert nc1[-1] < 0.1 * nc1[0]
    assert monitor.history[-1]["nc1_tilde"] < 0.1 * monitor.history[0]["nc1_tilde"]
    assert monitor(1, features, labels) is None  # off-schedule steps measure nothing
    resumed = NeuralCollapseMonitor()
    resumed.load_state_dict(monitor.state_dict())
    assert resumed.every == 50 and resumed.history == monitor.history
    with pytest.raises(ValueError, match="every"):
        NeuralCollapseMonitor(every=0)
