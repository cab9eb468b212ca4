"""Supervised dictionary learning with auxiliary covariates (SDL), solved by block coordinate descent."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from common_regs.api import ConfigFromKeys
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["SDLResult", "SupervisedDictionaryLearning", "sdl_objective"]

Mode = Literal["feature", "filter"]


def _logits(x: Tensor, w: Tensor, h: Tensor, beta: Tensor, aux: Tensor | None, mode: Mode) -> Tensor:
    """``a_i = β₀ + β_1:rᵀ z_i + γᵀ aux_i`` with ``z_i = h_i`` (feature) or ``Wᵀx_i`` (filter); β = [β₀, β_1:r, γ]."""
    z = h if mode == "feature" else w.T @ x
    design = torch.cat([torch.ones(1, x.shape[1], dtype=x.dtype), z] + ([aux] if aux is not None else []))
    return beta @ design


def sdl_objective(x: Tensor, y: Tensor, w: Tensor, h: Tensor, beta: Tensor, aux: Tensor | None = None, *,
                  xi: float = 1.0, mode: Mode = "feature", l2: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Tensor:
    """``Σᵢ log(1 + e^{aᵢ}) − yᵢaᵢ + ξ‖X − WH‖²_F + λ_H‖H‖²_F + λ_W‖W‖²_F + λ_β‖β_{1:}‖²`` (the BCD objective)."""
    a = _logits(x, w, h, beta, aux, mode)
    label = (F.softplus(a) - y * a).sum()
    return label + xi * (x - w @ h).pow(2).sum() + l2[0] * h.pow(2).sum() + l2[1] * w.pow(2).sum() \
        + l2[2] * beta[1:].pow(2).sum()


@dataclass
class SDLResult:
    """Fitted dictionary W (d, r), codes H (r, n), regression coefficients [β₀, β, γ], objective per iteration."""

    dictionary: Tensor
    codes: Tensor
    beta: Tensor
    objective: list[float] = field(default_factory=list)


@register("supervised_dictionary_learning", kind="solver", seed=67,
          fidelity="official-code",
          verified_by="tests/common_regs/structure/test_supervised_dictionary_learning.py",
          paper="Lee, Lyu, Yao, Supervised Dictionary Learning with Auxiliary Covariates, 2022, arXiv:2206.06774")
class SupervisedDictionaryLearning(ConfigFromKeys):
    r"""Jointly learn a dictionary, codes and a logistic classifier (with auxiliary covariates) by BCD.

    SDL finds a class-discriminative dictionary: latent atoms that both reconstruct the features and predict the
    labels. ξ trades reconstruction against prediction (ξ → ∞: plain matrix factorization, then regression; small
    ξ: atoms bend toward the discriminative directions). Auxiliary covariates enter the classifier only.

    Reference:
        Joowon Lee, Hanbaek Lyu, Weixin Yao, "Supervised Dictionary Learning with Auxiliary Covariates", 2022,
        arXiv:2206.06774 (the BCD algorithm, §"Algorithms"). Model and block structure checked against the
        authors' ``ljw9510/SMF`` ``src/SDL_BCD.py`` (filter- and feature-based SDL, loss = logistic + ξ·‖X − WH‖²,
        L1/L2 and nonnegativity options). The paper's exact constraint sets, radius schedule and step rule were not
        read; regkit uses projected gradient steps of size 1/L per block, which make the objective non-increasing.

    Math:
        .. math::
            \min_{W, H, \beta}\ \sum_i \log(1 + e^{a_i}) - y_i a_i + \xi\|X - WH\|_F^2
            + \lambda_H\|H\|_F^2 + \lambda_W\|W\|_F^2 + \lambda_\beta\|\beta_{1:}\|^2,\quad
            a_i = \beta_0 + \beta_{1:r}^\top z_i + \gamma^\top c_i

        with z_i = h_i ("feature") or Wᵀx_i ("filter"), c_i the auxiliary covariates; cyclic blocks W → H → β,
        each a projected gradient step ``P(u − ∇_u F / L_u)`` with the block Lipschitz bound L_u (logistic
        curvature ≤ 1/4), P = clamp at 0 where ``nonnegative``.

    Args:
        n_components: r, the number of atoms. Default 5 (regkit).
        xi: ξ. Default 1.0 (regkit; the authors tune it per data set).
        mode: "feature" (codes predict) or "filter" (Wᵀx predicts). Default "feature".
        l2: (λ_H, λ_W, λ_β). Default (0.0, 0.0, 1e-3) (regkit: a small ridge keeps β bounded on separable data).
        nonnegative: clamp W and H at 0 (NMF-style, as in the authors' default). Default False.
        iterations: BCD sweeps. Default 500 (regkit).

    Shape:
        X (d, n) features as columns, y (n,) in {0, 1}, auxiliary covariates (p, n) or None.

    Returns:
        ``fit(...)`` returns an :class:`SDLResult`; ``predict_proba`` the class-1 probabilities.

    Note:
        float64 throughout. Initialization as the authors' (W, H ~ U[0, 1), β ~ U(−1, 1)); a β = 0 start is a
        saddle when the reconstructive atoms carry no label signal. The authors' sklearn ``LogisticRegression``
        β step (C = 1, refit every sweep) and the W renormalization are replaced by monotone gradient steps.

    Example:
        >>> import torch
        >>> x = torch.randn(4, 30, dtype=torch.float64)
        >>> y = (x[0] > 0).double()
        >>> res = SupervisedDictionaryLearning(n_components=2, iterations=20).fit(x, y)
        >>> res.objective[-1] <= res.objective[0]
        True
    """

    config_keys: ClassVar[tuple[str, ...]] = ("n_components", "xi", "mode", "l2", "nonnegative", "iterations")
    runtime_keys: ClassVar[tuple[str, ...]] = ()
    citation: ClassVar[str] = (
        "@article{lee2022supervised, title={Supervised Dictionary Learning with Auxiliary Covariates}, author={Lee, "
        "Joowon and Lyu, Hanbaek and Yao, Weixin}, journal={arXiv:2206.06774}, year={2022}}"
    )

    def __init__(self, n_components: int = 5, xi: float = 1.0, mode: Mode = "feature",
                 l2: tuple[float, float, float] = (0.0, 0.0, 1e-3), nonnegative: bool = False,
                 iterations: int = 500) -> None:
        if n_components < 1:
            raise ValueError(f"`n_components` must be >= 1, got {n_components}.")
        if xi <= 0:
            raise ValueError(f"`xi` must be > 0, got {xi}.")
        if mode not in ("feature", "filter"):
            raise ValueError(f"`mode` must be 'feature' or 'filter', got {mode!r}.")
        if len(l2) != 3 or min(l2) < 0:
            raise ValueError(f"`l2` must be three non-negative weights (λ_H, λ_W, λ_β), got {l2}.")
        if iterations < 1:
            raise ValueError(f"`iterations` must be >= 1, got {iterations}.")
        self.n_components, self.xi, self.mode = int(n_components), float(xi), mode
        self.l2 = tuple(float(v) for v in l2)
        self.nonnegative, self.iterations = bool(nonnegative), int(iterations)

    def _project(self, u: Tensor) -> Tensor:
        return u.clamp_min(0) if self.nonnegative else u

    def fit(self, x: Tensor, y: Tensor, aux: Tensor | None = None, generator: torch.Generator | None = None,
            show_progress_bar: bool | None = None) -> SDLResult:
        """Run the BCD sweeps; the objective is recorded before the first and after every sweep.

        Initialization as in the authors' code: W, H ~ U[0, 1), β ~ U(−1, 1) (from ``generator``).
        """
        if x.ndim != 2 or y.shape != (x.shape[1],):
            raise ValueError(f"`x` must be (d, n) and `y` (n,), got {tuple(x.shape)} and {tuple(y.shape)}.")
        if not bool(((y == 0) | (y == 1)).all()):
            raise ValueError("`y` must hold 0/1 labels.")
        if aux is not None and (aux.ndim != 2 or aux.shape[1] != x.shape[1]):
            raise ValueError(f"`aux` must be (p, n) with n = {x.shape[1]}, got {tuple(aux.shape)}.")
        if self.n_components > min(x.shape):
            raise ValueError(f"`n_components` must be <= min(d, n) = {min(x.shape)}, got {self.n_components}.")
        x, y = x.to(torch.float64), y.to(torch.float64)
        aux = aux.to(torch.float64) if aux is not None else None
        r = self.n_components
        w = torch.rand(x.shape[0], r, generator=generator, dtype=torch.float64)
        h = torch.rand(r, x.shape[1], generator=generator, dtype=torch.float64)
        beta = 1 - 2 * torch.rand(1 + r + (aux.shape[0] if aux is not None else 0), generator=generator,
                                  dtype=torch.float64)
        lam_h, lam_w, lam_b = self.l2
        xi = self.xi

        def objective() -> float:
            return float(sdl_objective(x, y, w, h, beta, aux, xi=xi, mode=self.mode, l2=self.l2))

        history = [objective()]
        show = logger.isEnabledFor(logging.INFO) if show_progress_bar is None else show_progress_bar
        for _ in tqdm(range(self.iterations), desc="SDL BCD", disable=not show):
            b = beta[1:1 + r]
            # W block
            residual = self.xi * 2 * (w @ h - x) @ h.T
            lip = 2 * self.xi * float(torch.linalg.matrix_norm(h @ h.T, ord=2)) + 2 * lam_w
            if self.mode == "filter":
                p = torch.sigmoid(_logits(x, w, h, beta, aux, self.mode))
                residual = residual + torch.outer(x @ (p - y), b)
                lip += float(b @ b) * float(torch.linalg.matrix_norm(x, ord=2)) ** 2 / 4
            w = self._project(w - (residual + 2 * lam_w * w) / max(lip, 1e-12))
            # H block
            grad_h = 2 * self.xi * w.T @ (w @ h - x) + 2 * lam_h * h
            lip = 2 * self.xi * float(torch.linalg.matrix_norm(w.T @ w, ord=2)) + 2 * lam_h
            if self.mode == "feature":
                p = torch.sigmoid(_logits(x, w, h, beta, aux, self.mode))
                grad_h = grad_h + torch.outer(b, p - y)
                lip += float(b @ b) / 4
            h = self._project(h - grad_h / max(lip, 1e-12))
            # β block (intercept unpenalized)
            z = h if self.mode == "feature" else w.T @ x
            design = torch.cat([torch.ones(1, x.shape[1], dtype=x.dtype), z] + ([aux] if aux is not None else []))
            p = torch.sigmoid(beta @ design)
            penalty = 2 * lam_b * torch.cat([beta.new_zeros(1), beta[1:]])
            lip = float(torch.linalg.matrix_norm(design, ord=2)) ** 2 / 4 + 2 * lam_b
            beta = beta - (design @ (p - y) + penalty) / lip
            history.append(objective())
        return SDLResult(dictionary=w, codes=h, beta=beta, objective=history)

    def predict_proba(self, result: SDLResult, x: Tensor, aux: Tensor | None = None) -> Tensor:
        """Class-1 probability of new columns; "feature" mode codes them by least squares on the dictionary."""
        x = x.to(torch.float64)
        w = result.dictionary
        h = torch.linalg.lstsq(w, x).solution if self.mode == "feature" else w.T @ x
        return torch.sigmoid(_logits(x, w, h, result.beta, aux.to(torch.float64) if aux is not None else None,
                                     self.mode))
