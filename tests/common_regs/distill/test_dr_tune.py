"""DR-Tune (#19): the official ``weeknan/DR-Tune`` loss worked out by hand, Procrustes, gradient flow, queue cap."""

from __future__ import annotations

import math

import numpy as np
import torch

from common_regs.api import TrainContext
from common_regs.distill.dr_tune import DRTune, procrustes_align, procrustes_rotation


def _unit(rows: np.ndarray) -> np.ndarray:
    out = np.empty_like(rows)
    for i, row in enumerate(rows):
        out[i] = row / math.sqrt(sum(v * v for v in row))
    return out


def _official_calibration(pre: np.ndarray, down: np.ndarray, labels: list[int], head_w: np.ndarray,
                          scale: float, rotate: bool) -> np.ndarray:
    """``base_model.semantic_calibration`` + ``rot_align`` of the official code, in column-vector form, by loops."""
    p, d = _unit(pre), _unit(down)
    if rotate:
        x, y = p.T, d.T  # (D, N), as in rot_align
        xm, ym = x.mean(1, keepdims=True), y.mean(1, keepdims=True)
        u, _, vt = np.linalg.svd((x - xm) @ (y - ym).T)
        v = vt.T.copy()
        v[:, -1] *= np.linalg.det(v @ u.T)
        rot = v @ u.T
        xc, yc = x - xm, y - ym
        t = (yc - rot @ xc).mean(1, keepdims=True)
        p = (rot @ xc + t).T
    out = p.copy()
    for c in sorted(set(labels)):
        rows = [i for i, label in enumerate(labels) if label == c]
        w = head_w[c] / math.sqrt(sum(v * v for v in head_w[c]))
        scores = [sum(d[i, j] * w[j] for j in range(d.shape[1])) for i in rows]
        top = max(scores)
        exps = [math.exp(s - top) for s in scores]
        weights = [e / sum(exps) for e in exps]
        centre = sum(weights[k] * d[i] for k, i in enumerate(rows))
        pre_centre = sum(p[i] for i in rows) / len(rows)
        for i in rows:
            out[i] = p[i] + centre - pre_centre
    return _unit(out) * scale


def _ce_sum(features: np.ndarray, labels: list[int], head_w: np.ndarray, head_b: np.ndarray) -> float:
    total = 0.0
    for f, y in zip(features, labels, strict=True):
        logits = [sum(head_w[c, j] * f[j] for j in range(len(f))) + head_b[c] for c in range(len(head_b))]
        top = max(logits)
        total += top + math.log(sum(math.exp(z - top) for z in logits)) - logits[y]
    return total


def test_matches_official_joint_loss_by_hand() -> None:
    torch.manual_seed(0)
    dim, batch, k = 3, 2, 6
    head = torch.nn.Linear(dim, 2).double()
    w, b = head.weight.detach().numpy(), head.bias.detach().numpy()
    term = DRTune(head, queue_size=k, rotation_interval=2)
    steps = [(torch.randn(batch, dim, dtype=torch.float64), torch.randn(batch, dim, dtype=torch.float64),
              torch.tensor(labels)) for labels in ([0, 1], [1, 1], [0, 1], [1, 0])]
    warm_pre, _, warm_y = steps[0]
    term.warm_up(warm_pre, warm_y)
    # Official queue contents (order is irrelevant to the loss): warm-up rows enqueue f_p as both f_p and f_d.
    queue = [(r.numpy(), r.numpy(), int(y)) for r, y in zip(warm_pre, warm_y, strict=True)]
    for call, (pre, down, y) in enumerate(steps[1:]):
        down = down.requires_grad_(True)
        got = term(TrainContext(model=head, batch=(None, y), extras={"features": down, "pretrained_features": pre}))
        q_pre = np.stack([row[0] for row in queue])
        q_down = np.stack([row[1] for row in queue])
        q_y = [row[2] for row in queue]
        scale = sum(math.sqrt(sum(v * v for v in row)) for row in down.detach().numpy()) / batch
        calibrated = _official_calibration(q_pre, q_down, q_y, w, scale, rotate=call % 2 == 0)
        queue_ce = _ce_sum(calibrated, q_y, w, b)
        torch.testing.assert_close(got, torch.tensor(queue_ce / batch, dtype=torch.float64))
        # The official objective is one CE over [batch; queue]; task CE (mean) + term is it times (B + K) / B.
        official = (_ce_sum(down.detach().numpy(), y.tolist(), w, b) + queue_ce) / (batch + len(q_y))
        task = torch.nn.functional.cross_entropy(head(down), y)
        torch.testing.assert_close(batch / (batch + len(q_y)) * (task + got).detach(),
                                   torch.tensor(official, dtype=torch.float64))
        queue = ([(p.numpy(), d.detach().numpy(), int(t)) for p, d, t in zip(pre, down, y, strict=True)]
                 + queue)[:k]
    assert len(queue) == k and term.queue_pre is not None and len(term.queue_pre) == k


def test_procrustes_recovers_a_rotation_after_centring() -> None:
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))
    if torch.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    source = torch.randn(30, 4, dtype=torch.float64)
    shift = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    target = source @ q + shift  # a translation on top: only the centred problem recovers q
    torch.testing.assert_close(procrustes_rotation(source, target), q)
    torch.testing.assert_close(procrustes_align(source, target), target - target.mean(0))
    reflected = source.clone()
    reflected[:, 0] = -reflected[:, 0]  # the best orthogonal map is a reflection; det fix keeps a rotation
    assert abs(float(torch.linalg.det(procrustes_rotation(source, reflected))) - 1.0) < 1e-9


def test_only_the_head_learns_and_queue_is_capped() -> None:
    torch.manual_seed(2)
    encoder, head = torch.nn.Linear(5, 3), torch.nn.Linear(3, 2)
    term = DRTune(head, pretrained_encoder=encoder, queue_size=6, rotation_interval=2)
    features = torch.randn(4, 3, requires_grad=True)
    for _ in range(3):
        x, y = torch.randn(4, 5), torch.randint(0, 2, (4,))
        loss = term(TrainContext(model=head, batch=(x, y), extras={"features": features}))
        loss.backward()
    assert term.queue_down is not None and len(term.queue_down) == 6
    assert head.weight.grad is not None and float(head.weight.grad.abs().sum()) > 0
    assert features.grad is None  # calibration is detached: the encoder is trained by the task CE only
    assert all(p.grad is None for p in encoder.parameters())
