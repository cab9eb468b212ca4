"""Group sparse envelope regularization (k-level structured sparsity) applied as a proximal step."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
from torch import Tensor

from common_regs.api import TrainContext
from common_regs.registry import register
from common_regs.sparsity._masks import DEFAULT_MODULE_TYPES, MaskSchedulerBase

logger = logging.getLogger(__name__)

__all__ = ["GroupEnvelopeProx", "group_norms", "k_support_norm_sq", "prox_k_support_sq", "sparse_envelope_prox"]


def k_support_norm_sq(v: Tensor, k: int) -> Tensor:
    """Squared k-support norm (Argyriou, Foygel, Srebro 2012, Prop. 2.1) of a vector.

    ``‖v‖²_(k) = Σ_{i<k-r} z_i² + (Σ_{i≥k-r} z_i)² / (r+1)`` with ``z = sort(|v|, desc)`` (1-based) and ``r``
    the unique integer in [0, k) with ``z_{k-r-1} > Σ_{i≥k-r} z_i / (r+1) ≥ z_{k-r}``. Equals ‖v‖₁² for k = 1
    and ‖v‖₂² for k = d or any k-sparse v; ½‖v‖²_(k) is the sparse envelope function (convex envelope of
    ½‖v‖² + ι(‖v‖₀ ≤ k)).
    """
    z = torch.sort(v.abs().flatten(), descending=True).values
    d = z.numel()
    k = min(k, d)
    z_ext = torch.cat([z.new_tensor([float("inf")]), z])  # z_ext[i] = z_i (1-based), z_ext[0] = +inf
    for r in range(k):
        tail = z[k - r - 1 :].sum() / (r + 1)
        if z_ext[k - r - 1] > tail >= z_ext[k - r]:
            return (z[: k - r - 1] ** 2).sum() + (r + 1) * tail**2
    return (z**2).sum()  # unreachable for finite input; kept for safety with NaN


def prox_k_support_sq(v: Tensor, k: int, beta: float) -> Tensor:
    """``argmin_x ½‖x - v‖² + (1/(2β))‖x‖²_(k)`` (Argyriou, Foygel, Srebro 2012, Algorithm 1).

    Sorted ``z = |v|``: find r in [0, k) and l in [k, d] with
    ``z_{k-r-1}/(β+1) > T/(l-k+(β+1)r+β+1) ≥ z_{k-r}/(β+1)`` and ``z_l > T/(l-k+(β+1)r+β+1) ≥ z_{l+1}``,
    ``T = Σ_{i=k-r}^{l} z_i``; then ``q_i = β z_i/(β+1)`` for i < k-r, ``z_i - T/(…)`` for k-r ≤ i ≤ l, 0 after.
    Searched exhaustively over (r, l) with prefix sums: O(k·d) for a d-vector of group norms.
    """
    if beta <= 0:
        raise ValueError(f"`beta` must be > 0, got {beta}.")
    flat = v.flatten()
    d = flat.numel()
    k = min(k, d)
    z, order = torch.sort(flat.abs(), descending=True)
    zd = z.double()
    inf = torch.tensor([float("inf")], dtype=torch.float64)
    z_ext = torch.cat([inf, zd, -inf])  # z_ext[i] = z_i for 1 <= i <= d
    prefix = torch.cat([torch.zeros(1, dtype=torch.float64), zd.cumsum(0)])  # prefix[i] = Σ_{j≤i} z_j
    q = None
    for r in range(k):
        for l in range(k, d + 1):  # noqa: E741 - the paper's index name
            total = prefix[l] - prefix[k - r - 1]
            theta = total / (l - k + (beta + 1) * r + beta + 1)
            if z_ext[k - r - 1] / (beta + 1) > theta >= z_ext[k - r] / (beta + 1) and z_ext[l] > theta >= z_ext[l + 1]:
                q = torch.zeros(d, dtype=torch.float64)
                q[: k - r - 1] = beta / (beta + 1) * zd[: k - r - 1]
                q[k - r - 1 : l] = zd[k - r - 1 : l] - theta
                break
        if q is not None:
            break
    if q is None:
        raise ArithmeticError(f"prox_k_support_sq found no (r, l) for k={k}, beta={beta}; input has NaN or inf?")
    out = torch.zeros(d, dtype=flat.dtype, device=flat.device)
    out[order] = q.to(flat.dtype).to(flat.device)
    return (out * torch.sign(flat)).view_as(v)


def sparse_envelope_prox(v: Tensor, k: int, step: float, mode: Literal["gap", "envelope"] = "gap") -> Tensor:
    """Prox of ``step·h`` at a nonnegative-or-signed vector ``v`` for the envelope penalties.

    ``mode="envelope"``: ``h = ½‖x‖²_(k)`` (the convex sparse envelope function).
    ``mode="gap"``: ``h = ½‖x‖²_(k) - ½‖x‖²``, non-negative and zero iff x is k-sparse; for ``step < 1``
    ``prox = prox_{(step/(1-step))·½‖·‖²_(k)}(v / (1 - step))``; for ``step ≥ 1`` it is the top-k hard threshold.
    """
    if step < 0:
        raise ValueError(f"`step` must be >= 0, got {step}.")
    if step == 0:
        return v.clone()
    if mode == "envelope":
        return prox_k_support_sq(v, k, 1.0 / step)
    if mode != "gap":
        raise ValueError(f"`mode` must be 'gap' or 'envelope', got {mode!r}.")
    if step >= 1.0:
        keep = torch.topk(v.abs().flatten(), min(k, v.numel())).indices
        out = torch.zeros_like(v).flatten()
        out[keep] = v.flatten()[keep]
        return out.view_as(v)
    return prox_k_support_sq(v / (1.0 - step), k, (1.0 - step) / step)


def group_norms(weight: Tensor, group_dim: int) -> Tensor:
    """ℓ2 norm of each slice of ``weight`` along ``group_dim`` (0: output filters/neurons, 1: input channels)."""
    return weight.detach().transpose(0, group_dim).flatten(1).norm(dim=1)


@register(
    "group_envelope",
    fidelity="reconstruction",
    verified_by="tests/common_regs/sparsity/test_group_envelope_prox.py",
    kind="mask_scheduler",
    paper="Refael, Arbel, Huleihel, Learning k-Level Structured Sparse Neural Networks Using Group Envelope "
    "Regularization, 2022, arXiv:2212.12921",
    seed=35,
)
class GroupEnvelopeProx(MaskSchedulerBase):
    r"""Group sparse envelope proximal step after each optimizer step: at most ``k`` groups per layer survive.

    Proximal-gradient training with a group version of the sparse envelope function: after the (gradient)
    optimizer step, the vector of group norms of each layer is mapped through the prox of the envelope penalty and
    every group is rescaled accordingly (groups whose norm reaches zero are pruned, but may regrow). The mask
    reports the non-zero groups. Groups are output filters/neurons (``group_dim=0``) or input channels (1).

    Reference:
        Refael, Arbel, Huleihel, "Learning k-Level Structured Sparse Neural Networks Using Group Envelope
        Regularization", 2022, arXiv:2212.12921. k-support norm prox: Argyriou, Foygel, Srebro, "Sparse Prediction
        with the k-Support Norm", NeurIPS 2012, arXiv:1204.5043. **Equation unconfirmed**: the paper's *weighted*
        group envelope (WGSEF) could not be retrieved; this implements the unweighted group envelope on group norms
        (penalty ``½‖v‖²_(k) - ½‖v‖²`` by default) and its exact prox, not the paper's O(n) algorithm.

    Fidelity:
        reconstruction. Confirmed (OpenReview reviews of the withdrawn ICLR submission, stored in the code
        index): the group term is ``θᵀA_{s_j}θ = ‖θ_{s_j}‖²`` (squared ℓ2 norm of group j) and the envelope is the
        SEF ``s_k^**`` of Beck & Refael 2022, applied by proximal gradient (HSPG in the experiments). Not found:
        the WGSEF's group weights, its value formula and its O(n) prox, and any official code. Searched: the
        ``code`` corpus (title, "weighted group sparse envelope function WGSEF proximal operator Refael Arbel
        Huleihel", "sparse envelope function prox k-support group weights"), ``find_string`` ("group sparse
        envelope", "sparse envelope function": only abstracts and the reviews), ``find_repos`` ("refael",
        "yehonathan", "wgsef"), the ``pages`` corpus (sciencestack.ai/paper/2212.12921 and deepai.org: abstracts
        only; ar5iv/arxiv html of 2212.12921 and Beck & Refael "sparse regularization via bidualization": not
        stored).

    Math:
        .. math::
            v_g = \lVert W_g \rVert_2,\quad q = \mathrm{prox}_{\mu h}(v),\quad W_g \leftarrow W_g\, q_g / v_g,
            \qquad h(v) = \tfrac12 \lVert v \rVert_{(k)}^2 - \tfrac12 \lVert v \rVert_2^2

        with ``μ`` = ``prox_step`` (learning rate × regularization strength).

    Args:
        k: groups kept per layer (int), or ``density`` of groups if a float in (0, 1]. Default 0.5.
        prox_step: μ = lr·λ; ``μ ≥ 1`` is exact top-k group selection. Default 0.1 (regkit default).
        group_dim: 0 = output filters/neurons, 1 = input channels. Default 0.
        mode: ``"gap"`` (non-convex, zero iff ≤ k groups) or ``"envelope"`` (convex SEF). Default ``"gap"``.
        targets / exclude / module_types: see :class:`MaskSchedulerBase`.
    """

    exact_density: ClassVar[bool] = False
    config_keys: ClassVar[tuple[str, ...]] = (
        "k", "prox_step", "group_dim", "mode", "targets", "exclude", "module_types"
    )

    def __init__(
        self,
        k: int | float = 0.5,
        prox_step: float = 0.1,
        *,
        group_dim: int = 0,
        mode: Literal["gap", "envelope"] = "gap",
        targets: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        module_types: Sequence[str] = DEFAULT_MODULE_TYPES,
    ) -> None:
        super().__init__(targets=targets, exclude=exclude, module_types=module_types)
        if isinstance(k, float) and not 0 < k <= 1:
            raise ValueError(f"`k` as a density must be in (0, 1], got {k}.")
        if isinstance(k, int) and k < 1:
            raise ValueError(f"`k` as a group count must be >= 1, got {k}.")
        if prox_step < 0:
            raise ValueError(f"`prox_step` must be >= 0, got {prox_step}.")
        if group_dim not in (0, 1):
            raise ValueError(f"`group_dim` must be 0 or 1, got {group_dim}.")
        if mode not in ("gap", "envelope"):
            raise ValueError(f"`mode` must be 'gap' or 'envelope', got {mode!r}.")
        self.k, self.prox_step, self.group_dim, self.mode = k, float(prox_step), group_dim, mode
        self._hard = False

    def groups_kept(self, weight: Tensor) -> int:
        n_groups = weight.shape[self.group_dim]
        return max(1, round(self.k * n_groups)) if isinstance(self.k, float) else min(self.k, n_groups)

    def _on_prepare(self) -> None:
        self.set_fill(1.0)
        self._refresh_masks()

    def _update(self, ctx: TrainContext | None) -> None:
        del ctx
        for _, _, weight in self._items():
            norms = group_norms(weight, self.group_dim)
            new = sparse_envelope_prox(norms, self.groups_kept(weight), self.prox_step, self.mode)
            scale = torch.where(norms > 0, new / norms.clamp_min(torch.finfo(norms.dtype).tiny), torch.zeros_like(new))
            shape = [1] * weight.ndim
            shape[self.group_dim] = -1
            weight.mul_(scale.view(shape))
        self._refresh_masks()

    def _refresh_masks(self) -> None:
        for _, mask, weight in self._items():
            alive = (group_norms(weight, self.group_dim) > 0).to(mask.dtype)
            shape = [1] * weight.ndim
            shape[self.group_dim] = -1
            mask.copy_(alive.view(shape).expand_as(mask))
