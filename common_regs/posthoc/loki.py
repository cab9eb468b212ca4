"""Loki: geometry-aware prediction, replacing argmax by the Fréchet mean in a metric label space."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from scipy.sparse.csgraph import shortest_path
from torch import Tensor, nn

from common_regs.api import ConfigFromKeys
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["Loki", "LokiHead", "frechet_scores", "graph_distances"]


def frechet_scores(probs: Tensor, distances: Tensor, observed: Tensor) -> Tensor:
    """Negative Fréchet variance of every label: ``s_y = −Σ_k P(y_k|x) · d(y, y_k)²``.

    ``probs`` (B, K) over the K observed classes, ``distances`` (|Y|, |Y|), ``observed`` (K,) label ids of the
    observed classes. The Loki prediction is ``argmax_y s_y`` = the weighted Fréchet mean.
    """
    if probs.shape[-1] != observed.numel():
        raise ValueError(f"`probs` has {probs.shape[-1]} classes but `observed` lists {observed.numel()}.")
    squared = distances[:, observed].pow(2)  # (|Y|, K)
    return -(probs @ squared.T)


def graph_distances(adjacency: np.ndarray | Tensor, weighted: bool = False) -> Tensor:
    """All-pairs shortest-path distances of a label graph (``scipy.sparse.csgraph.shortest_path``)."""
    matrix = adjacency.detach().cpu().numpy() if isinstance(adjacency, Tensor) else np.asarray(adjacency)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"`adjacency` must be a square matrix, got shape {matrix.shape}.")
    dist = shortest_path(matrix, directed=False, unweighted=not weighted)
    if np.isinf(dist).any():
        raise ValueError("the label graph is disconnected; every label needs a finite distance to every other.")
    return torch.as_tensor(dist, dtype=torch.float32)


class LokiHead(nn.Module):
    """Maps logits over the K observed classes to Fréchet scores over all |Y| labels (argmax = Loki prediction)."""

    def __init__(self, distances: Tensor, observed: Tensor) -> None:
        super().__init__()
        self.register_buffer("distances", distances)
        self.register_buffer("observed", observed)

    def forward(self, logits: Tensor) -> Tensor:
        return frechet_scores(logits.softmax(-1), self.distances.to(logits.dtype), self.observed)


@register("loki", kind="post_hoc", seed=33,
          fidelity="paper-equation",
          verified_by="tests/common_regs/posthoc/test_loki.py",
          paper="Roberts, Li, Adila, Cromp, Huang, Zhao, Sala, Geometry-Aware Adaptation for Pretrained Models, "
                "NeurIPS 2023, arXiv:2307.12226")
class Loki(ConfigFromKeys):
    r"""Drop-in prediction rule: predict the Fréchet mean of the label metric space instead of the argmax.

    A classifier trained on K of the |Y| labels can then predict any label, including unobserved ones lying
    "between" observed classes in the metric (tree, graph, embedding distances). No training.

    Reference:
        Roberts, Li, Adila, Cromp, Huang, Zhao, Sala, "Geometry-Aware Adaptation for Pretrained Models",
        NeurIPS 2023, arXiv:2307.12226 (§3, the Loki prediction rule).

    Math:
        .. math::
            \hat y(x) = \arg\min_{y \in \mathcal{Y}} \sum_{k=1}^{K} P(y_k \mid x)\, d(y, y_k)^2

    Args:
        distances: |Y|×|Y| label metric d (e.g. :func:`graph_distances` of a label graph).
        observed: label ids of the model's K output classes, in output order. Default None = the first K labels.

    Shape:
        model output (B, K) → Loki scores (B, |Y|).

    Returns:
        ``apply(model)`` returns ``nn.Sequential(model, LokiHead)`` whose argmax is the Loki prediction.

    Note:
        With the discrete metric (d = 1 off the diagonal) Loki equals argmax over the observed classes.

    Example:
        >>> import torch
        >>> d = graph_distances(torch.diag(torch.ones(4), 1)[:5, :5] + torch.diag(torch.ones(4), -1)[:5, :5])
        >>> scores = frechet_scores(torch.tensor([[0.5, 0.5]]), d, torch.tensor([0, 4]))
        >>> int(scores.argmax())
        2
    """

    kind: ClassVar[str] = "post_hoc"
    config_keys: ClassVar[tuple[str, ...]] = ("distances", "observed")
    runtime_keys: ClassVar[tuple[str, ...]] = ()
    citation: ClassVar[str] = (
        "@inproceedings{roberts2023loki, title={Geometry-Aware Adaptation for Pretrained Models}, author={Roberts, "
        "Nicholas and Li, Xintong and Adila, Dyah and Cromp, Sonia and Huang, Tzu-Heng and Zhao, Jitian and Sala, "
        "Frederic}, booktitle={NeurIPS}, year={2023}}"
    )

    def __init__(self, distances: Tensor | Sequence[Sequence[float]], observed: Sequence[int] | Tensor | None = None
                 ) -> None:
        dist = torch.as_tensor(distances, dtype=torch.float32)
        if dist.dim() != 2 or dist.shape[0] != dist.shape[1]:
            raise ValueError(f"`distances` must be a square matrix, got shape {tuple(dist.shape)}.")
        if not torch.allclose(dist, dist.T) or (dist.diagonal() != 0).any() or (dist < 0).any():
            raise ValueError("`distances` must be symmetric, non-negative, with a zero diagonal.")
        self.distances = dist
        self.observed = None if observed is None else torch.as_tensor(observed, dtype=torch.long)
        if self.observed is not None and (self.observed.min() < 0 or self.observed.max() >= dist.shape[0]):
            raise ValueError(f"`observed` label ids must be in [0, {dist.shape[0]}), got {self.observed.tolist()}.")

    @classmethod
    def example_kwargs(cls) -> dict[str, Any]:
        return {"distances": [[0.0, 1.0], [1.0, 0.0]], "observed": [1]}

    def head(self, num_outputs: int) -> LokiHead:
        observed = self.observed if self.observed is not None else torch.arange(num_outputs)
        if observed.numel() != num_outputs:
            raise ValueError(f"the model has {num_outputs} outputs but `observed` lists {observed.numel()} labels.")
        return LokiHead(self.distances, observed)

    def apply(self, model: nn.Module, num_outputs: int | None = None) -> nn.Module:
        """Wrap ``model`` so that it outputs Loki scores; ``num_outputs`` defaults to ``len(observed)``."""
        if num_outputs is None:
            if self.observed is None:
                raise ValueError("pass `num_outputs` (the model's number of classes) or set `observed`.")
            num_outputs = self.observed.numel()
        return nn.Sequential(model, self.head(num_outputs))
