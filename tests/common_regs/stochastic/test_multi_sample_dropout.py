"""Multi-sample dropout (#4): M = 1 is dropout, p = 0 is the plain loss, losses (not logits) averaged, mean grads."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common_regs.api import TrainContext
from common_regs.stochastic import MultiSampleDropout


def _setup() -> tuple[torch.nn.Linear, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.nn.Linear(6, 4), torch.randn(8, 6), torch.randint(0, 4, (8,))


def test_single_sample_equals_standard_dropout_loss() -> None:
    head, h, y = _setup()
    torch.manual_seed(5)
    msd = MultiSampleDropout(head, num_samples=1, p=0.5).loss(h, y)
    torch.manual_seed(5)
    plain = F.cross_entropy(head(F.dropout(h, 0.5, True)), y)
    torch.testing.assert_close(msd, plain)


def test_zero_dropout_is_the_plain_loss_for_any_m() -> None:
    head, h, y = _setup()
    for m in (1, 3, 8):
        torch.testing.assert_close(
            MultiSampleDropout(head, num_samples=m, p=0.0).loss(h, y), F.cross_entropy(head(h), y)
        )


def test_averages_losses_not_logits_and_gradient_is_mean_of_sample_gradients() -> None:
    head, h, y = _setup()
    torch.manual_seed(7)
    loss = MultiSampleDropout(head, num_samples=4, p=0.5).loss(h, y)
    torch.manual_seed(7)
    samples = F.dropout(h.unsqueeze(0).expand(4, *h.shape), 0.5, True)  # the same four masks
    per_sample = [F.cross_entropy(head(samples[m]), y) for m in range(4)]
    torch.testing.assert_close(loss, torch.stack(per_sample).mean())
    logit_average = F.cross_entropy(torch.stack([head(samples[m]) for m in range(4)]).mean(0), y)
    assert float(loss.detach()) > float(logit_average.detach())  # Jensen: CE(mean logits) < mean CE here
    (grad,) = torch.autograd.grad(loss, head.weight)
    mean_grad = torch.stack([torch.autograd.grad(term, head.weight)[0] for term in per_sample]).mean(0)
    torch.testing.assert_close(grad, mean_grad)


def test_loss_term_reads_features_and_eval_disables_dropout() -> None:
    head, h, y = _setup()
    model = torch.nn.Sequential(head).eval()
    msd = MultiSampleDropout(head, num_samples=8, p=0.9)
    value = msd(TrainContext(model=model, batch=(h, y), extras={"features": h}))
    torch.testing.assert_close(value, F.cross_entropy(head(h), y))
