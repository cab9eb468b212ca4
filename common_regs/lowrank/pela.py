"""PELA: low-rank approximation of a pretrained model, trained with feature distillation and a weight penalty."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from common_regs.lowrank._base import ParametrizedReparam, WeightParametrization
from common_regs.lowrank._utils import factor_split, keep_ratio_rank, validate_rank
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["PELA", "feature_distillation", "weight_perturbation"]


def feature_distillation(student: Sequence[Tensor], teacher: Sequence[Tensor]) -> Tensor:
    """``L_fm = (1/L) Σ_l mean((F_l^low − F_l^orig)²)``: per-layer MSE averaged over the L feature pairs.

    As the official ``train_one_epoch`` (``DeiT/engine.py``): ``F.mse_loss`` per pair, summed, divided by the
    number of pairs; teacher features are detached.
    """
    if len(student) != len(teacher):
        raise ValueError(f"`student` and `teacher` must hold as many features, got {len(student)} and {len(teacher)}.")
    if not student:
        raise ValueError("`student` holds no feature to distill.")
    return torch.stack([(s - t.detach()).pow(2).mean() for s, t in zip(student, teacher, strict=True)]).mean()


def weight_perturbation(a: Tensor, b: Tensor, original: Tensor, eps: float = 1e-3) -> Tensor:
    """``(max_ij |(A B − W)_ij| − ε)²``: squared gap between the largest entry error of the recovered matrix and ε.

    As the official ``inf_norm`` (``DeiT/engine.py``): ``F.mse_loss(torch.norm(AB − W, inf), ε)``, where
    ``torch.norm(·, inf)`` of a matrix is the largest absolute entry.
    """
    residual = a @ b - original.reshape(original.shape[0], -1)
    return (residual.abs().amax() - eps).pow(2)


class _PelaWeight(WeightParametrization):
    trainable = (True, True)

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank
        self.shape: tuple[int, ...] = ()

    def initial_originals(self, weight: Tensor) -> tuple[Tensor, ...]:
        a, b = factor_split(weight, self.rank)
        self.shape = tuple(weight.shape)
        self.register_buffer("original_weight", weight.detach().clone())
        return a, b

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return (a @ b).reshape(self.shape)


@register("pela", kind="reparam", seed=50,
          fidelity="official-code",
          verified_by="tests/common_regs/lowrank/test_pela.py",
          paper="Guo, Wang, Kankanhalli, PELA: Learning Parameter-Efficient Models with Low-Rank Approximation, "
                "CVPR 2024, arXiv:2310.10700")
class PELA(ParametrizedReparam):
    r"""Compress a pretrained model by truncated SVD, then train the factors with distillation and a weight penalty.

    Each target weight W is replaced by the factors A = U_r√S_r, B = √S_r V_rᵀ (the best rank-r approximation).
    In PELA's intermediate pre-training the low-rank model trains with feature distillation from the frozen
    original model and a weight-perturbation regularizer that bounds the largest entry of A·B − W.

    Reference:
        Guo, Wang, Kankanhalli, "PELA: Learning Parameter-Efficient Models with Low-Rank Approximation", CVPR 2024,
        arXiv:2310.10700 (§3: low-rank approximation, feature distillation, weight perturbation regularization).
        Official code github.com/guoyang9/PELA: ``DeiT/low_rank.py`` (``low_rank_approximate``: balanced SVD
        factors; ``ModuleLowRank._apply``: rank = ⌊in·out / (c·(in + out))⌋), ``DeiT/engine.py``
        (``inf_norm``: the weight-perturbation term; ``train_one_epoch``: per-block feature MSE averaged over
        blocks), defaults from ``DeiT/main.py`` and ``Swin/scripts/train_swin_b.sh``.

    Math:
        .. math::
            W \approx A B,\ A = U_r\sqrt{S_r},\ B = \sqrt{S_r}V_r^\top,\quad
            L = L_{task} + \alpha \frac1L\sum_{l=1}^{L} \overline{(F^{low}_l - F^{orig}_l)^2}
                + \beta \frac1K\sum_{k=1}^{K} \big(\max_{ij}|(A_k B_k - W_k)_{ij}| - \epsilon\big)^2

        F_l are the outputs of the L distilled blocks (every transformer block in the official code), the bar is
        the mean over all entries, K the number of factorized layers. r = ``rank`` or the largest r with
        r·(out + in) ≤ ``keep_ratio``·out·in (the official rank with compression ratio c = 1 / ``keep_ratio``).

    Args:
        rank: rank r of every factorized weight; None derives it from ``keep_ratio``. Default None.
        keep_ratio: fraction of each layer's parameters kept when ``rank`` is None. Default 0.5 (source: official
            ``--compression_ratio 2`` of ``DeiT/main.py`` and the DeiT scripts; the paper reports 1/3 to 2/3).
        eps: target ε of the largest entry error in the weight-perturbation term. Default 1e-3 (source: official
            ``--inf_norm_eps`` default of ``DeiT/main.py`` and ``inf_norm``'s signature).
        module_types: module types to factorize. Default ("linear",) (convention).
        include: fnmatch patterns of module names; None = all. Default None.
        exclude: fnmatch patterns to skip. Default None.
        freeze_base: freeze every other model parameter. Default False (source: official DeiT/Swin training,
            which optimizes all parameters of the low-rank model).

    Shape:
        weight (out, in) → trainable A (out, r), B (r, in); buffer ``original_weight`` (out, in) for the penalty.

    Returns:
        ``prepare(model)`` returns the model; ``weight_perturbation()`` the layer-averaged penalty.

    Note:
        Deviations from the official code: layers are chosen by ``include`` / ``exclude`` instead of its fixed
        name list (``norm``, ``head``, ``patch_embed``, ``downsample``) and its skip of layers with fewer than 10
        outputs; the factors stay inside one parametrization instead of two ``nn.Linear`` modules (parameter count
        is reduced, FLOPs are not); the optional logit MSE term (``kd_beta``, 0 in every official script) is left
        out. The dense ``original_weight`` buffer is kept only for the penalty; after ``merge`` the effective
        weight has rank ≤ r.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(8, 8)); pela = PELA(rank=2); _ = pela.prepare(model)
        >>> int(torch.linalg.matrix_rank(model[0].weight.detach())), pela.num_trainable()
        (2, 32)
    """

    identity_at_init: ClassVar[bool] = False
    config_keys: ClassVar[tuple[str, ...]] = (
        "rank", "keep_ratio", "eps", "module_types", "include", "exclude", "freeze_base"
    )
    runtime_keys: ClassVar[tuple[str, ...]] = ()
    citation: ClassVar[str] = (
        "@inproceedings{guo2024pela, title={PELA: Learning Parameter-Efficient Models with Low-Rank Approximation}, "
        "author={Guo, Yangyang and Wang, Guangzhi and Kankanhalli, Mohan}, booktitle={CVPR}, year={2024}}"
    )

    def __init__(self, rank: int | None = None, keep_ratio: float = 0.5, eps: float = 1e-3, *,
                 module_types: Sequence[str] = ("linear",), include: Sequence[str] | None = None,
                 exclude: Sequence[str] | None = None, freeze_base: bool = False) -> None:
        super().__init__(module_types=module_types, include=include, exclude=exclude, freeze_base=freeze_base)
        validate_rank(rank)
        if not 0.0 < keep_ratio <= 1.0:
            raise ValueError(f"`keep_ratio` must be in (0, 1], got {keep_ratio}.")
        if eps < 0:
            raise ValueError(f"`eps` must be >= 0, got {eps}.")
        self.rank, self.keep_ratio, self.eps = rank, float(keep_ratio), float(eps)

    def make_parametrization(self, name: str, module: nn.Module, weight: Tensor) -> WeightParametrization:
        matrix_in = weight[0].numel()
        rank = self.rank if self.rank is not None else keep_ratio_rank(weight.shape[0], matrix_in, self.keep_ratio)
        return _PelaWeight(rank)

    def weight_perturbation(self) -> Tensor:
        """Mean over factorized layers of ``(max|A B − W| − ε)²`` (unweighted β-term, official ``inf_norm``)."""
        self._require_prepared()
        terms = []
        for site in self.sites:
            if site.stash is not None:
                raise ValueError("PELA penalty is not available while merged; call `unmerge()` first.")
            plist = site.module.parametrizations[site.tensor_name]
            terms.append(weight_perturbation(plist.original0, plist.original1, site.parametrization.original_weight,
                                             self.eps))
        return torch.stack(terms).mean()

    def loss(self, task_loss: Tensor, student_features: Sequence[Tensor], teacher_features: Sequence[Tensor], *,
             distill_weight: float = 1.0, perturbation_weight: float = 1.0) -> Tensor:
        """``task + α·L_fm + β·R_wp`` with α = ``distill_weight``, β = ``perturbation_weight``.

        Defaults are the official ``--kd_alpha 1`` (DeiT and Swin scripts) and ``--inf_norm_weight 1`` (Swin
        script; the ALBEF pre-training adds ``loss_norm`` with weight 1 as well).
        """
        return (task_loss + distill_weight * feature_distillation(student_features, teacher_features)
                + perturbation_weight * self.weight_perturbation())
