"""Self-distillation for further pre-training: hidden states kept close to a further-pretrained teacher."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from common_regs._batch import batch_inputs
from common_regs.api import ConfigFromKeys, TrainContext
from common_regs.distill._utils import check_positive
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["FurtherPretrainSelfDistillation", "hidden_distance"]


def hidden_distance(student_hidden: Tensor, teacher_hidden: Tensor) -> Tensor:
    """``(1/B) Σ_i ‖h_s(x_i) - sg(h_t(x_i))‖²`` (squared L2 over all non-batch dims, mean over the batch)."""
    if student_hidden.shape != teacher_hidden.shape:
        raise ValueError(
            f"student hidden {tuple(student_hidden.shape)} and teacher hidden {tuple(teacher_hidden.shape)} differ."
        )
    diff = student_hidden - teacher_hidden.detach()
    return diff.pow(2).reshape(diff.shape[0], -1).sum(1).mean()


@register(
    "further_pretrain_self_distill",
    fidelity="official-code",
    verified_by="tests/common_regs/distill/test_further_pretrain_self_distillation.py::test_official_cls_distance",
    kind="loss",
    paper="Lee, Kang, Lee, Hwang, Kawaguchi, Self-Distillation for Further Pre-training of Transformers, "
    "ICLR 2023, arXiv:2210.02871",
    seed=61,
)
class FurtherPretrainSelfDistillation(ConfigFromKeys):
    r"""Representation distillation from a further-pretrained teacher into the *initial* pretrained model.

    Step 1: further pretrain the pretrained model on the target domain (MAE/MLM) → teacher. Step 2: restart from
    the initial pretrained weights (student) and train it with the same self-supervised loss plus this term,
    which keeps its final [CLS] representation close to the teacher's. It regularizes domain-adaptive continued
    pretraining (e.g. of the sparse retriever's MLM backbone), which otherwise overfits small target corpora.

    Reference:
        Lee, Kang, Lee, Hwang, Kawaguchi, "Self-Distillation for Further Pre-training of Transformers", ICLR 2023,
        arXiv:2210.02871. Follows the official code ``seanie12/self-distillation`` ``trainer.py``:
        ``SelfPreTrainer.train`` (``nn.MSELoss(reduction="sum")(student_h, teacher_h) / batch_size``, added to the
        MAE loss with coefficient 1; teacher ``ViTModel(...)[0][:, 0, :]`` under ``torch.no_grad``) and
        ``SelfPreTrainer.get_student_features`` (the student's encoder on the *unmasked* input, final LayerNorm,
        token 0 = [CLS]); defaults from ``run_selftrain.sh``.

    Math:
        .. math::
            L = L_{MAE}(\theta_s) + \lambda\,\tfrac1B\sum_{i=1}^{B} \lVert h_{\theta_s}(x_i)_{[CLS]} -
            \mathrm{sg}(h_{\theta_t}(x_i)_{[CLS]})\rVert_2^2,\quad \lambda = 1

        h is the last hidden layer after the final LayerNorm. This term returns the second summand without λ
        (``weight``, applied by ``RegHooks``).

    Args:
        teacher: the further-pretrained model (frozen here) mapping inputs to hidden states (B, T, D) or (B, D), or
            a callable; a tuple output is read at index 0 (Hugging Face ``last_hidden_state``).
        hidden_key: ``ctx.extras`` key of the student's hidden states; None = use ``ctx.outputs``. Default "hidden".
        token: position compared when the hidden states are (B, T, D). Default 0 (source: official code, the [CLS]
            token); None = every token (a regkit extension).
        weight: λ. Default 1.0 (source: official code, the two losses are summed unweighted).

    Shape:
        student and teacher hidden states (B, T, D) or (B, D) of one shape.

    Returns:
        scalar distance.

    Note:
        The teacher runs under ``torch.no_grad`` and never receives gradients. As in the official code the student
        representation must come from a forward pass on the *unmasked* input (the MAE forward sees only the kept
        patches): put that pass's hidden states in ``ctx.extras[hidden_key]``.

    Example:
        >>> import torch
        >>> from common_regs.api import TrainContext
        >>> teacher = torch.nn.Linear(3, 2)
        >>> term = FurtherPretrainSelfDistillation(teacher, hidden_key=None)
        >>> x = torch.randn(4, 5, 3)
        >>> float(term(TrainContext(model=teacher, batch=x, outputs=teacher(x))))
        0.0
    """

    config_keys: ClassVar[tuple[str, ...]] = ("hidden_key", "token", "weight")
    runtime_keys: ClassVar[tuple[str, ...]] = ("teacher",)
    citation: ClassVar[str] = (
        "@inproceedings{lee2023selfdistillation, title={Self-Distillation for Further Pre-training of "
        "Transformers}, author={Lee, Seanie and Kang, Minki and Lee, Juho and Hwang, Sung Ju and Kawaguchi, Kenji}, "
        "booktitle={ICLR}, year={2023}}"
    )

    def __init__(
        self,
        teacher: nn.Module | Callable[[Tensor], Tensor],
        hidden_key: str | None = "hidden",
        token: int | None = 0,
        weight: float = 1.0,
    ) -> None:
        if token is not None and (isinstance(token, bool) or not isinstance(token, int)):
            raise TypeError(f"`token` must be an int position or None, got {token!r}.")
        if isinstance(teacher, nn.Module):
            teacher.eval().requires_grad_(False)
        self.teacher, self.hidden_key, self.token = teacher, hidden_key, token
        self.weight = check_positive("weight", weight, allow_zero=True)

    @classmethod
    def example_kwargs(cls) -> dict[str, Any]:
        return {"teacher": nn.Linear(4, 4), "hidden_key": None}

    def _select(self, hidden: Tensor) -> Tensor:
        return hidden[:, self.token] if hidden.ndim == 3 and self.token is not None else hidden

    def __call__(self, ctx: TrainContext) -> Tensor:
        if self.hidden_key is None:
            student = ctx.outputs
        else:
            student = ctx.extras.get(self.hidden_key)
        if isinstance(student, Mapping):
            student = student.get("hidden")
        if not isinstance(student, Tensor):
            raise ValueError(f"no student hidden states: set `ctx.extras[{self.hidden_key!r}]` (or `hidden_key`).")
        with torch.no_grad():
            teacher = self.teacher(batch_inputs(ctx))
        if isinstance(teacher, tuple):
            teacher = teacher[0]
        return hidden_distance(self._select(student), self._select(teacher))
