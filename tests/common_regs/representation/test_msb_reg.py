"""MSBReg (#29): centroid loss zero for identical views, SV loss zero for whitened batches, Brownian force."""

from __future__ import annotations

import torch

from common_regs.api import TrainContext
from common_regs.representation import MSBReg, brownian_loss, multiview_centroid_loss, singular_value_loss


def test_centroid_loss_zero_for_identical_views_positive_otherwise() -> None:
    z = torch.randn(3, 5, 4)
    assert float(multiview_centroid_loss(z, z)) == 0.0
    assert float(multiview_centroid_loss(z, z.flip(1))) > 0


def test_singular_value_loss_minimised_by_whitened_batch() -> None:
    q, _ = torch.linalg.qr(torch.randn(16, 16))
    whitened = q[:, :4] - q[:, :4].mean(0)  # centred columns are not orthogonal; re-orthogonalise after centring
    u, _, vh = torch.linalg.svd(whitened, full_matrices=False)
    assert float(singular_value_loss(u @ vh)) < 1e-10
    collapsed = torch.randn(16, 1) @ torch.randn(1, 4) + 1e-3 * torch.randn(16, 4)
    assert float(singular_value_loss(collapsed)) > 0.3


def test_brownian_force_is_the_noise_and_zero_mean() -> None:
    z = torch.randn(8, 3, requires_grad=True)
    generator = torch.Generator().manual_seed(0)
    brownian_loss(z, std=0.5, generator=generator).backward()
    noise = 0.5 * torch.randn((8, 3), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(z.grad, noise / 8)
    means = torch.stack([brownian_loss(torch.ones(8, 3), 1.0) for _ in range(2000)])
    assert abs(float(means.mean())) < 0.05


def test_combined_term_reports_components() -> None:
    reg = MSBReg(brownian_weight=0.0)
    z = torch.randn(2, 6, 3)
    value = reg(TrainContext(model=torch.nn.Identity(), outputs={"online": z, "target": z}))
    assert set(reg.last_components) == {"centroid", "singular", "brownian"}
    torch.testing.assert_close(value, singular_value_loss(z[0]))
