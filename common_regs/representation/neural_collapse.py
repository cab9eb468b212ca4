"""Neural-collapse metrics (NC1 variability, NC2 simplex ETF, NC3 self-duality) of penultimate features."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor

from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["neural_collapse_metrics"]


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

    Reference:
        Tirer, Huang, Niles-Weed, "Perturbation Analysis of Neural Collapse", ICML 2023, arXiv:2210.16658 (NC1 as
        used there, after Papyan, Han, Donoho 2020, arXiv:2008.08186). NC2/NC3 follow Papyan et al.

    Math:
        .. math::
            \Sigma_W = \frac1N\sum_i (h_i - \mu_{y_i})(h_i - \mu_{y_i})^\top,\
            \Sigma_B = \frac1C\sum_c (\mu_c - \mu_G)(\mu_c - \mu_G)^\top,\
            NC_1 = \tfrac1C\mathrm{tr}(\Sigma_W\Sigma_B^{\dagger})\\
            NC_2^{norm} = \frac{\mathrm{std}_c\lVert\mu_c-\mu_G\rVert}
            {\mathrm{mean}_c\lVert\mu_c-\mu_G\rVert},
            \ NC_2^{angle} = \mathrm{mean}_{c\ne c'}
            \Big|\cos(\mu_c-\mu_G, \mu_{c'}-\mu_G) + \tfrac{1}{C-1}\Big|,
            \ NC_3 = \Big\lVert \frac{W}{\lVert W\rVert_F} - \frac{M}{\lVert M\rVert_F}\Big\rVert_F

        with M the (C, D) matrix of centred class means. All are 0 at exact collapse onto a simplex ETF.

    Returns:
        ``{"nc1", "nc2_norm", "nc2_angle"[, "nc3"]}`` as floats.

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
    metrics = {
        "nc1": nc1,
        "nc2_norm": float(norms.std() / norms.mean()),
        "nc2_angle": float((cosine[off] + 1.0 / (len(classes) - 1)).abs().mean()),
    }
    if classifier is not None:
        w = classifier.double()[classes]
        metrics["nc3"] = float((w / w.norm() - centred_means / centred_means.norm()).norm())
    return metrics
