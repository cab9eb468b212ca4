"""Beta-Rank: filter importance from the filter values and the input→output change, for structured pruning."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common_regs.api import ConfigFromKeys
from common_regs.registry import register
from common_regs.sparsity._masks import check_fraction

logger = logging.getLogger(__name__)

__all__ = ["BetaRank", "beta_rank_scores"]


def beta_rank_scores(layer: nn.Module, inputs: Tensor, outputs: Tensor, *, normalize: bool = True) -> Tensor:
    """Per-filter β-rank score of ``layer`` (Linear or Conv2d) from a calibration batch.

    For each output position p: ``σ_out(f, p)`` = std over the batch of filter f's output at p, ``σ_in(p)`` = std of
    the input patch feeding p (over batch and patch entries); ``score_f = mean(|W_f|) · Σ_p σ_out(f,p) / σ_in(p)``
    then min-max normalized over the layer's filters (``std_filters`` of the official code). A Linear layer has one
    position and its whole input as the patch.
    """
    weight = layer.weight.detach()
    filter_l1 = weight.abs().flatten(1).mean(1)  # mean over the filter's entries of |W_f|
    if isinstance(layer, nn.Linear):
        ratio = outputs.detach().std(0, unbiased=False) / inputs.detach().std(unbiased=False).clamp_min(1e-12)
    elif isinstance(layer, nn.Conv2d):
        patches = F.unfold(
            inputs.detach(), layer.kernel_size, dilation=layer.dilation, padding=layer.padding, stride=layer.stride
        )  # (B, C·kh·kw, P)
        sigma_in = patches.transpose(0, 1).flatten(0, 1).std(0, unbiased=False).clamp_min(1e-12)  # (P,)
        sigma_out = outputs.detach().flatten(2).std(0, unbiased=False)  # (F, P)
        ratio = (sigma_out / sigma_in).sum(1)
    else:
        raise TypeError(f"beta_rank_scores supports nn.Linear and nn.Conv2d, got {type(layer).__name__}.")
    score = filter_l1 * ratio
    if normalize:
        span = (score.max() - score.min()).clamp_min(1e-12)
        score = (score - score.min()) / span
    return score


@register(
    "beta_rank",
    fidelity="official-code",
    verified_by="tests/common_regs/sparsity/test_beta_rank.py",
    kind="post_hoc",
    paper="Homayounfar, Koohi-Moghadam, Rawassizadeh, Vardhanabhuti, Beta-Rank: A Robust Convolutional Filter "
    "Pruning Method For Imbalanced Medical Image Analysis, 2023, arXiv:2304.07461",
    seed=46,
)
class BetaRank(ConfigFromKeys):
    r"""Rank filters by β-rank on calibration data and prune (zero) the lowest-ranked fraction of each layer.

    The importance of a filter combines its values (L1 of the weights) with how much it changes the data: the
    ratio of output to input standard deviation on a calibration batch. Pruned filters get zero weights and bias
    (structured: whole output channels), ready for physical removal with a structural pruner and fine-tuning.

    Reference:
        Homayounfar et al., "Beta-Rank: A Robust Convolutional Filter Pruning Method For Imbalanced Medical Image
        Analysis", 2023, arXiv:2304.07461; score as computed by ``std_filters`` in ``rank_generation.py`` of the
        official code (``mohofar/Beta-Rank``). **Equation unconfirmed** against the paper PDF (its equation is an
        image); the input patch here spans all input channels of the window (the code's slicing of an NCHW array
        along dims 1-2 looks unintended).

    Math:
        .. math::
            r_f = \frac{1}{|W_f|}\sum |W_f| \cdot \sum_p \frac{\sigma_{out}(f, p)}{\sigma_{in}(p)}, \qquad
            \beta_f = \frac{r_f - \min r}{\max r - \min r}

    Args:
        prune_ratio: fraction of filters pruned per layer (number, or a dict by layer name). Default 0.5.
        limit: calibration batches used. Default 1 (source: code ``--limit`` default).
        targets: layer names to score; default every Linear/Conv2d except ``exclude``.
        exclude: layer-name prefixes left untouched (e.g. the classifier). Default ().
    """

    config_keys: ClassVar[tuple[str, ...]] = ("prune_ratio", "limit", "targets", "exclude")

    def __init__(
        self,
        prune_ratio: float | dict[str, float] = 0.5,
        limit: int = 1,
        targets: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
    ) -> None:
        ratios = prune_ratio.values() if isinstance(prune_ratio, dict) else [prune_ratio]
        for value in ratios:
            check_fraction("prune_ratio", value)
        if limit < 1:
            raise ValueError(f"`limit` must be >= 1, got {limit}.")
        self.prune_ratio, self.limit = prune_ratio, limit
        self.targets, self.exclude = (list(targets) if targets is not None else None), tuple(exclude)
        self.scores: dict[str, Tensor] = {}
        self.masks: dict[str, Tensor] = {}

    @classmethod
    def example_kwargs(cls) -> dict[str, Any]:
        return {"prune_ratio": {"0": 0.25}, "targets": ["0"], "exclude": ["2"]}

    def _layers(self, model: nn.Module) -> dict[str, nn.Module]:
        layers = {
            name: module
            for name, module in model.named_modules()
            if isinstance(module, (nn.Linear, nn.Conv2d)) and not any(name.startswith(p) for p in self.exclude)
        }
        if self.targets is not None:
            unknown = set(self.targets) - set(layers)
            if unknown:
                raise ValueError(f"`targets` names no Linear/Conv2d layer: {sorted(unknown)}.")
            layers = {n: layers[n] for n in self.targets}
        if not layers:
            raise ValueError("BetaRank found no Linear/Conv2d layer to score.")
        return layers

    @torch.no_grad()
    def score(
        self, model: nn.Module, batches: Iterable[Any], forward: Callable[[nn.Module, Any], Any] | None = None
    ) -> dict[str, Tensor]:
        """β-rank scores of every target layer from up to ``limit`` calibration batches."""
        layers = self._layers(model)
        records: dict[str, tuple[list[Tensor], list[Tensor]]] = {n: ([], []) for n in layers}

        def hook(name: str) -> Callable[..., None]:
            def record(_: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
                records[name][0].append(args[0].detach())
                records[name][1].append(out.detach())

            return record

        handles = [layer.register_forward_hook(hook(name)) for name, layer in layers.items()]
        try:
            for index, batch in enumerate(batches):
                if index >= self.limit:
                    break
                forward(model, batch) if forward is not None else model(batch)
        finally:
            for handle in handles:
                handle.remove()
        if not records[next(iter(layers))][0]:
            raise ValueError("BetaRank.score got no calibration batch.")
        self.scores = {
            name: beta_rank_scores(layers[name], torch.cat(ins), torch.cat(outs))
            for name, (ins, outs) in records.items()
        }
        return self.scores

    @torch.no_grad()
    def apply(
        self, model: nn.Module, batches: Iterable[Any], forward: Callable[[nn.Module, Any], Any] | None = None
    ) -> nn.Module:
        """Score, then zero the weights and bias of the lowest-ranked filters of each layer; returns ``model``."""
        scores = self.score(model, batches, forward)
        layers = self._layers(model)
        for name, score in scores.items():
            ratio = self.prune_ratio.get(name, 0.0) if isinstance(self.prune_ratio, dict) else self.prune_ratio
            count = int(ratio * score.numel())
            keep = torch.ones_like(score)
            if count:
                keep[torch.topk(score, count, largest=False).indices] = 0.0
            layer = layers[name]
            layer.weight.mul_(keep.view(-1, *([1] * (layer.weight.ndim - 1))))
            if layer.bias is not None:
                layer.bias.mul_(keep)
            self.masks[name] = keep
        logger.info("BetaRank: pruned %s", {n: int((m == 0).sum()) for n, m in self.masks.items()})
        return model
