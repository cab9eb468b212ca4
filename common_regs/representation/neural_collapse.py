"""Neural-collapse metrics (NC1 variability, NC2 simplex ETF, NC3 self-duality) and a callback for any loop."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["NeuralCollapseMonitor", "neural_collapse_metrics"]


@register(
    "neural_collapse_metrics",
    fidelity="diagnostic",
    verified_by="tests/common_regs/representation/test_neural_collapse.py",
    kind="solver",
    paper="Tirer, Huang, Niles-Weed, Perturbation Analysis of Neural Collapse, ICML 2023, arXiv:2210.16658",
    seed=9,
)
def neural_collapse_metrics(features: Tensor, labels: Tensor, classifier: Tensor | None = None) -> dict[str, float]:
    r"""Neural-collapse diagnostics of features ``H`` (N, D) with labels (N,) and optional classifier ``W`` (C, D).

    The seed paper is analytical (it studies a model, :class:`~common_regs.representation.vicinity_ufm.VicinityUFM`,
    and proposes no training method); its measurements are provided here, and :class:`NeuralCollapseMonitor` calls
    them as a training callback in any loop.

    Reference:
        Tirer, Huang, Niles-Weed, "Perturbation Analysis of Neural Collapse", ICML 2023, arXiv:2210.16658: Σ_W, Σ_B
        and the trace-ratio metric NC̃1 (§3, Eq. 3), NC1 = tr(Σ_W Σ_B†)/K and the Frobenius NC2 (§5), equation
        numbers as in the OpenReview ICLR 2023 text. NC1 after Papyan, Han, Donoho 2020, arXiv:2008.08186, whose
        norm/angle NC2 and NC3 are also given.

    Math:
        .. math::
            \Sigma_W = \frac1N\sum_i (h_i - \mu_{y_i})(h_i - \mu_{y_i})^\top,\
            \Sigma_B = \frac1C\sum_c (\mu_c - \mu_G)(\mu_c - \mu_G)^\top,\
            NC_1 = \tfrac1C\mathrm{tr}(\Sigma_W\Sigma_B^{\dagger}),\
            \widetilde{NC}_1 = \frac{\mathrm{tr}\,\Sigma_W}{\mathrm{tr}\,\Sigma_B}\\
            NC_2 = \Big\lVert \frac{MM^\top}{\lVert MM^\top\rVert_F} - \frac{I_C - \frac1C 1 1^\top}{\sqrt{C-1}}
            \Big\rVert_F,\
            NC_2^{norm} = \frac{\mathrm{std}_c\lVert\mu_c-\mu_G\rVert}
            {\mathrm{mean}_c\lVert\mu_c-\mu_G\rVert},
            \ NC_2^{angle} = \mathrm{mean}_{c\ne c'}
            \Big|\cos(\mu_c-\mu_G, \mu_{c'}-\mu_G) + \tfrac{1}{C-1}\Big|,
            \ NC_3 = \Big\lVert \frac{W}{\lVert W\rVert_F} - \frac{M}{\lVert M\rVert_F}\Big\rVert_F

        with M the (C, D) matrix of centred class means (μ_G is the mean of all N features, as in the paper). All
        are 0 at exact collapse onto a simplex ETF.

    Returns:
        ``{"nc1", "nc1_tilde", "nc2", "nc2_norm", "nc2_angle"[, "nc3"]}`` as floats.

    Example:
        >>> import torch
        >>> means = torch.eye(3)
        >>> h = means.repeat_interleave(4, 0); y = torch.arange(3).repeat_interleave(4)
        >>> round(neural_collapse_metrics(h, y)["nc1"], 6)
        0.0
    """
    if features.ndim != 2 or len(features) != len(labels):
        raise ValueError(f"`features` must be (N, D) with N labels, got {tuple(features.shape)} and {len(labels)}.")
    h = features.double()
    classes = labels.unique()
    if len(classes) < 2:
        raise ValueError(f"neural-collapse metrics need >= 2 classes, got {len(classes)}.")
    global_mean = h.mean(0)
    means = torch.stack([h[labels == c].mean(0) for c in classes])
    centred_rows = h - means[torch.searchsorted(classes, labels)]
    sigma_w = centred_rows.T @ centred_rows / len(h)
    centred_means = means - global_mean
    sigma_b = centred_means.T @ centred_means / len(classes)
    nc1 = float(torch.trace(sigma_w @ torch.linalg.pinv(sigma_b, hermitian=True)) / len(classes))
    norms = centred_means.norm(dim=1)
    cosine = F.normalize(centred_means, dim=1) @ F.normalize(centred_means, dim=1).T
    off = ~torch.eye(len(classes), dtype=torch.bool)
    gram = centred_means @ centred_means.T
    etf = (torch.eye(len(classes), dtype=h.dtype) - 1.0 / len(classes)) / (len(classes) - 1) ** 0.5
    metrics = {
        "nc1": nc1,
        "nc1_tilde": float(torch.trace(sigma_w) / torch.trace(sigma_b)),
        "nc2": float((gram / gram.norm() - etf).norm()),
        "nc2_norm": float(norms.std() / norms.mean()),
        "nc2_angle": float((cosine[off] + 1.0 / (len(classes) - 1)).abs().mean()),
    }
    if classifier is not None:
        w = classifier.double()[classes]
        metrics["nc3"] = float((w / w.norm() - centred_means / centred_means.norm()).norm())
    return metrics


class NeuralCollapseMonitor:
    """Training callback: the neural-collapse metrics of a model's features, measured as training goes.

    Loop-agnostic: call it with the step (or epoch) and the current penultimate features of a fixed probe set
    (and optionally the last layer's weights); every ``every``-th step it measures
    :func:`neural_collapse_metrics`, logs them at INFO as ``reg/neural_collapse/<metric>`` and appends
    ``{"step": step, **metrics}`` to :attr:`history`. ``state_dict`` / ``load_state_dict`` carry the history
    across a resume.

    Args:
        every: measure when ``step % every == 0``. Default 1.

    Example:
        >>> import torch
        >>> monitor = NeuralCollapseMonitor(every=2)
        >>> y = torch.arange(3).repeat_interleave(4)
        >>> for step in range(4):
        ...     _ = monitor(step, torch.eye(3)[y] + torch.randn(12, 3) / (step + 1), y)
        >>> [entry["step"] for entry in monitor.history]
        [0, 2]
    """

    def __init__(self, every: int = 1) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"`every` must be a positive integer, got {every!r}.")
        self.every = every
        self.history: list[dict[str, float]] = []

    def __call__(self, step: int, features: Tensor, labels: Tensor, classifier: Tensor | None = None
                 ) -> dict[str, float] | None:
        """Measure at ``step`` (None when ``step`` is not a multiple of ``every``); features are detached."""
        if step % self.every:
            return None
        with torch.no_grad():
            metrics = neural_collapse_metrics(features.detach(), labels.detach(),
                                              None if classifier is None else classifier.detach())
        self.history.append({"step": step, **metrics})
        logger.info("step %d: %s", step, ", ".join(f"reg/neural_collapse/{k}={v:.4g}" for k, v in metrics.items()))
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {"every": self.every, "history": [dict(entry) for entry in self.history]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.every = int(state["every"])
        self.history = [dict(entry) for entry in state["history"]]
