"""DR-Tune (#19): Procrustes recovers a rotation, class means coincide after calibration, no grad to the encoder."""

from __future__ import annotations

import torch
from scipy.linalg import orthogonal_procrustes

from common_regs.api import TrainContext
from common_regs.distill import DRTune, procrustes_rotation, semantic_calibration


def test_procrustes_recovers_known_rotation_and_matches_scipy() -> None:
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))
    if torch.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    source = torch.randn(30, 4, dtype=torch.float64)
    rotation = procrustes_rotation(source, source @ q)
    torch.testing.assert_close(rotation, q)
    noisy_target = source @ q + 0.05 * torch.randn(30, 4, dtype=torch.float64)
    reference, _ = orthogonal_procrustes(source.numpy(), noisy_target.numpy())
    if abs(torch.linalg.det(torch.from_numpy(reference)) - 1) < 1e-6:  # scipy's optimum is a proper rotation here
        torch.testing.assert_close(procrustes_rotation(source, noisy_target), torch.from_numpy(reference))


def test_class_means_move_onto_the_weighted_downstream_centres() -> None:
    torch.manual_seed(1)
    pre, down = torch.randn(12, 3), torch.randn(12, 3)
    labels = torch.tensor([0, 1, 2] * 4)
    head = torch.randn(3, 3)
    out = semantic_calibration(pre, down, labels, head, torch.eye(3), rescale=False)
    unit_down = torch.nn.functional.normalize(down, dim=1)
    for c in range(3):
        rows = labels == c
        weights = torch.softmax(torch.nn.functional.cosine_similarity(unit_down[rows], head[c][None], dim=1), 0)
        torch.testing.assert_close(out[rows].mean(0), (weights[:, None] * unit_down[rows]).sum(0))
    scaled = semantic_calibration(pre, down, labels, head, torch.eye(3))
    torch.testing.assert_close(scaled.norm(dim=1).mean(), down.norm(dim=1).mean())


def test_only_the_head_learns_and_queue_is_capped() -> None:
    torch.manual_seed(2)
    encoder, head = torch.nn.Linear(5, 3), torch.nn.Linear(3, 2)
    term = DRTune(head, pretrained_encoder=encoder, queue_size=6, rotation_interval=2)
    for _ in range(3):
        x, y = torch.randn(4, 5), torch.randint(0, 2, (4,))
        loss = term(TrainContext(model=head, batch=(x, y), extras={"features": torch.randn(4, 3)}))
        loss.backward()
    assert term.queue_down is not None and len(term.queue_down) == 6
    assert head.weight.grad is not None and float(head.weight.grad.abs().sum()) > 0
    assert all(p.grad is None for p in encoder.parameters())
