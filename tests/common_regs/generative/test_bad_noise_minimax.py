from __future__ import annotations

import pytest
import torch
from torch import nn

from common_regs.api import TrainContext
from common_regs.generative.bad_noise_minimax import BadNoiseMinimax, bad_noise, flow_matching_loss


class _Velocity(nn.Module):
    def __init__(self, dim: int = 6) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * dim + 1, 32), nn.Tanh(), nn.Linear(32, dim))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x_t, cond, t[:, None]], dim=1))


def _batch(seed: int = 0) -> tuple[_Velocity, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = _Velocity().double()
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(16, 6, generator=g, dtype=torch.float64)
    mask = (torch.rand(16, 6, generator=g) < 0.5).double()
    cond = x0 * (1 - mask)  # the "remover" sees the unmasked part and must fill in the masked one
    return model, x0, torch.randn(16, 6, generator=g, dtype=torch.float64), torch.rand(16, generator=g).double(), cond


def test_inner_maximization_beats_random_noise_of_the_same_norm() -> None:
    model, x0, noise, t, cond = _batch()
    bad = bad_noise(model, x0, noise, t, cond, step_size=0.2, steps=3)
    torch.testing.assert_close(bad.norm(dim=1), noise.norm(dim=1))  # stays on the sphere of each sample
    with torch.no_grad():
        start = flow_matching_loss(model, x0, noise, t, cond, reduction="none")
        adversarial = flow_matching_loss(model, x0, bad, t, cond, reduction="none")
    g = torch.Generator().manual_seed(9)
    random_losses = []
    for _ in range(50):
        r = torch.randn(noise.shape, generator=g, dtype=torch.float64)
        r = r * (noise.norm(dim=1) / r.norm(dim=1))[:, None]
        with torch.no_grad():
            random_losses.append(flow_matching_loss(model, x0, r, t, cond, reduction="none"))
    random_mean = torch.stack(random_losses).mean(0)
    assert bool((adversarial > start).all())
    assert float(adversarial.mean()) > 1.2 * float(random_mean.mean())
    assert all(p.grad is None for p in model.parameters())  # the inner loop does not touch parameter gradients


def test_outer_step_decreases_the_adversarial_loss() -> None:
    model, x0, noise, t, cond = _batch(1)
    term = BadNoiseMinimax(step_size=0.2, steps=2)
    loss = term(TrainContext(model=model, extras={"velocity_model": model, "x0": x0, "noise": noise, "t": t,
                                                  "cond": cond}))
    bad = bad_noise(model, x0, noise, t, cond, 0.2, 2)
    torch.testing.assert_close(loss.detach(), flow_matching_loss(model, x0, bad, t, cond).detach())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        after = flow_matching_loss(model, x0, bad, t, cond)
    assert float(after) < float(loss.detach())


def test_fraction_zero_is_the_plain_flow_loss() -> None:
    model, x0, noise, t, cond = _batch(2)
    mixed = BadNoiseMinimax(adversarial_fraction=0.0).forward(model, x0, noise, t, cond)
    torch.testing.assert_close(mixed, flow_matching_loss(model, x0, noise, t, cond))


def test_flow_loss_is_zero_for_the_exact_velocity() -> None:
    x0 = torch.randn(4, 3, dtype=torch.float64)
    noise = torch.randn(4, 3, dtype=torch.float64)
    exact = lambda x_t, t, c: noise - x0  # noqa: E731 — the straight-line velocity of each pair
    assert float(flow_matching_loss(exact, x0, noise, torch.rand(4).double(), x0)) == 0.0


def test_validation() -> None:
    with pytest.raises(ValueError, match="steps"):
        BadNoiseMinimax(steps=0)
    with pytest.raises(ValueError, match="velocity_model"):
        BadNoiseMinimax()(TrainContext(model=nn.Linear(1, 1)))
    model, x0, noise, t, cond = _batch()
    with pytest.raises(ValueError, match="share a shape"):
        BadNoiseMinimax().forward(model, x0, noise[:, :3], t, cond)
