r"""Shared mask machinery of the sparsity family: mask ops, the mask parametrization and the base scheduler.

Every mask scheduler of :mod:`common_regs.sparsity` (and ``dsl.py``, built later on the same base) follows one
ownership rule (regkit style guide, "Each mask has one owner"): the scheduler owns one mask tensor per target
parameter, keyed by the parameter's fully qualified name (``"0.weight"``); a :class:`MaskParametrization`
registered with ``torch.nn.utils.parametrize`` reads the *same* tensor (updated in place with ``copy_``) and has an
empty ``state_dict``. The effective weight is

.. math::
    \tilde W = W \odot \big(m + (1 - m)\,\phi\big),

with ``m`` the binary mask and ``φ`` (``fill``) the value pruned entries are multiplied by: ``φ = 0`` is hard
masking, ``0 < φ < 1`` the decaying mask of progressive gradient flow, ``φ = 1`` the identity (soft-shrinkage
schedules that rescale the raw weights themselves). With ``straight_through=True`` the backward pass hands the
output gradient to every entry of the dense ``W`` (STE), optionally plus the SR-STE term ``λ_W (1 - m) ⊙ W``.

Pure helpers: :func:`nm_mask` (keep the N largest of every M consecutive input weights), :func:`topk_mask`
(exact-count unstructured magnitude mask), :func:`zero_optimizer_state`, :func:`select_weights`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from common_regs.api import ConfigFromKeys, TrainContext

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MODULE_TYPES",
    "MODULE_TYPES",
    "MaskParametrization",
    "MaskSchedulerBase",
    "check_fraction",
    "module_classes",
    "nm_mask",
    "resolve_parameter",
    "select_weights",
    "topk_mask",
    "zero_optimizer_state",
]

MODULE_TYPES: dict[str, type[nn.Module]] = {
    "conv1d": nn.Conv1d,
    "conv2d": nn.Conv2d,
    "embedding": nn.Embedding,
    "embedding_bag": nn.EmbeddingBag,
    "linear": nn.Linear,
}
"""Layer types a scheduler can select by name (``module_types``), so that the choice is a config value."""
DEFAULT_MODULE_TYPES: tuple[str, ...] = ("linear", "conv1d", "conv2d")


def module_classes(names: Sequence[str]) -> tuple[type[nn.Module], ...]:
    """The layer classes named in ``names`` (keys of :data:`MODULE_TYPES`)."""
    if isinstance(names, str) or not all(isinstance(name, str) for name in names):
        raise TypeError(f"`module_types` must be a list of layer names from {sorted(MODULE_TYPES)}, got {names!r}.")
    unknown = sorted(set(names) - set(MODULE_TYPES))
    if unknown:
        raise ValueError(f"`module_types` entries must be in {sorted(MODULE_TYPES)}, got unknown {unknown}.")
    return tuple(MODULE_TYPES[name] for name in names)


def check_fraction(
    name: str, value: float, *, low: float = 0.0, high: float = 1.0, closed_high: bool = False
) -> float:
    """Validate ``low <= value < high`` (``<= high`` if ``closed_high``) and return it as a float."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"`{name}` must be a number, got {type(value).__name__}.")
    ok = low <= value <= high if closed_high else low <= value < high
    if not ok:
        bracket = "]" if closed_high else ")"
        raise ValueError(f"`{name}` must be in [{low}, {high}{bracket}, got {value}.")
    return float(value)


def _channels_last(weight: Tensor) -> Tensor:
    """View a weight so the input-channel axis is last: (O, I) stays, (O, I, *k) becomes (O, *k, I)."""
    if weight.ndim <= 2:
        return weight
    return weight.movedim(1, -1)


def _from_channels_last(mask: Tensor, like: Tensor) -> Tensor:
    if like.ndim <= 2:
        return mask
    return mask.movedim(-1, 1).contiguous()


def nm_mask(weight: Tensor, n: int, m: int, scores: Tensor | None = None) -> Tensor:
    """Binary mask keeping the ``n`` largest-|score| entries of every ``m`` consecutive input weights.

    Groups run along the input dimension (for convolutions: along input channels at each kernel position, the
    layout sparse tensor cores use), as in ``get_sparse_mask`` of Bambhaniya et al.'s code. Exactly ``n`` entries
    per group are kept, ties broken by ``topk``.

    Args:
        weight: (O, I) or (O, I, *kernel) tensor; ``I`` must be divisible by ``m``.
        n: entries kept per group, ``0 < n <= m``.
        m: group size.
        scores: importance (default ``|weight|``), same shape as ``weight``.
    """
    if not 0 < n <= m:
        raise ValueError(f"N:M sparsity needs 0 < `n` <= `m`, got n={n}, m={m}.")
    if weight.ndim < 2:
        raise ValueError(f"N:M masks need a weight with >= 2 dims, got shape {tuple(weight.shape)}.")
    if weight.shape[1] % m:
        raise ValueError(
            f"the input dimension {weight.shape[1]} of a weight of shape {tuple(weight.shape)} is not divisible by "
            f"`m`={m}; exclude this layer or pick an `m` that divides it."
        )
    score = (weight if scores is None else scores).detach().abs()
    grouped = _channels_last(score).reshape(-1, m)
    keep = torch.topk(grouped, n, dim=1).indices
    mask = torch.zeros_like(grouped).scatter_(1, keep, 1.0)
    return _from_channels_last(mask.reshape(_channels_last(score).shape), weight).to(weight.dtype)


def topk_mask(scores: Tensor, keep: int) -> Tensor:
    """Binary mask with exactly ``keep`` ones at the largest entries of ``scores`` (ties broken by ``topk``)."""
    numel = scores.numel()
    if not 0 <= keep <= numel:
        raise ValueError(f"`keep` must be in [0, {numel}], got {keep}.")
    flat = torch.zeros(numel, dtype=scores.dtype, device=scores.device)
    if keep:
        flat[torch.topk(scores.detach().flatten(), keep).indices] = 1.0
    return flat.view_as(scores)


def zero_optimizer_state(optimizer: torch.optim.Optimizer | None, parameter: Tensor, keep: Tensor) -> None:
    """Multiply every per-entry optimizer state of ``parameter`` (momentum, Adam moments) by the 0/1 ``keep`` mask."""
    if optimizer is None:
        return
    state = optimizer.state.get(parameter)
    if not state:
        return
    with torch.no_grad():
        for value in state.values():
            if torch.is_tensor(value) and value.shape == parameter.shape:
                value.mul_(keep.to(value.dtype))


def select_weights(
    model: nn.Module,
    *,
    targets: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    module_types: Sequence[str] = DEFAULT_MODULE_TYPES,
) -> list[str]:
    """FQNs (``"<module>.weight"``) of the weights a scheduler should own.

    Args:
        model: the model whose parameters are selected.
        targets: explicit parameter names; default: the ``weight`` of every module of ``module_types``.
        exclude: module-name prefixes to skip (e.g. the classifier head).
        module_types: names of the layer types (:data:`MODULE_TYPES`) selected when ``targets`` is None.
    """
    classes = module_classes(module_types)
    if targets is not None:
        names = list(targets)
        for name in names:
            resolve_parameter(model, name)
        return names
    names = []
    for module_name, module in model.named_modules():
        if not isinstance(module, classes) or any(module_name.startswith(prefix) for prefix in exclude):
            continue
        names.append(f"{module_name}.weight" if module_name else "weight")
    if not names:
        raise ValueError(
            f"no parameter selected: the model has no module of types {list(module_types)} outside "
            f"`exclude`={list(exclude)}; pass `targets` explicitly."
        )
    return names


def _split(fqn: str) -> tuple[str, str]:
    module_name, _, attr = fqn.rpartition(".")
    return module_name, attr


def resolve_parameter(model: nn.Module, fqn: str) -> tuple[nn.Module, str]:
    """The module owning parameter ``fqn`` and the attribute name; raises ValueError naming ``fqn`` if absent."""
    module_name, attr = _split(fqn)
    try:
        module = model.get_submodule(module_name) if module_name else model
    except AttributeError:
        raise ValueError(f"target {fqn!r}: the model has no submodule {module_name!r}.") from None
    if not isinstance(getattr(module, attr, None), Tensor):
        raise ValueError(f"target {fqn!r}: module {module_name or '<root>'!r} has no tensor attribute {attr!r}.")
    return module, attr


class _SoftMaskSTE(torch.autograd.Function):
    """Forward ``W ⊙ (m + (1 - m) φ)``; backward passes the dense gradient, plus ``λ (1 - m) ⊙ W`` (SR-STE)."""

    @staticmethod
    def forward(ctx: Any, weight: Tensor, mask: Tensor, fill: float, decay: float) -> Tensor:
        ctx.save_for_backward(weight, mask)
        ctx.decay = decay
        return weight * (mask + (1.0 - mask) * fill)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, None, None, None]:
        weight, mask = ctx.saved_tensors
        grad = grad_output
        if ctx.decay:
            grad = grad + ctx.decay * (1.0 - mask) * weight
        return grad, None, None, None


class MaskParametrization(nn.Module):
    """``W ↦ W ⊙ (m + (1 - m) φ)`` reading a mask owned by a scheduler; its own ``state_dict`` is empty.

    Args:
        mask: the scheduler's mask tensor (kept by reference, never copied).
        straight_through: pass the dense output gradient to every entry (STE) instead of ``grad ⊙ mask``.
        srste_decay: SR-STE's ``λ_W``; only used with ``straight_through``.
    """

    def __init__(self, mask: Tensor, *, straight_through: bool = False, srste_decay: float = 0.0) -> None:
        super().__init__()
        self.mask = mask  # plain attribute, not a buffer: the scheduler owns and checkpoints it
        self.fill = 0.0
        self.straight_through = straight_through
        self.srste_decay = srste_decay

    def forward(self, weight: Tensor) -> Tensor:
        if self.straight_through:
            return _SoftMaskSTE.apply(weight, self.mask, self.fill, self.srste_decay)
        if self.fill == 0.0:
            return weight * self.mask
        if self.fill == 1.0:
            return weight
        return weight * (self.mask + (1.0 - self.mask) * self.fill)


class MaskSchedulerBase(ConfigFromKeys):
    """Base of every mask scheduler: owns masks by FQN, parametrizes the weights, zeros pruned optimizer state.

    Subclasses implement :meth:`_on_prepare` (initial masks) and :meth:`_update` (called after each optimizer
    step, once the step counter has advanced), and may override :meth:`_extra_state` / :meth:`_load_extra_state`.
    After every :meth:`step` the base enforces the contract when :attr:`is_hard` is true: raw weights *and* their
    optimizer state are zero wherever the mask is zero.

    Class attributes read by the family contract tests:
        semantics: ``"prune"`` (mask 0 = removed weight) or ``"freeze"`` (mask 0 = weight kept at its value).
        exact_density: the mask has exactly :meth:`expected_nnz` ones after every step.

    Args:
        targets: parameter FQNs to own; default: the weights of all ``module_types`` modules.
        exclude: module-name prefixes left dense (e.g. ``("head",)``).
        module_types: names of the layer types (:data:`MODULE_TYPES`) selected when ``targets`` is None.
    """

    hook_kind: ClassVar[str] = "mask_scheduler"
    registry_name: ClassVar[str] = ""
    semantics: ClassVar[str] = "prune"
    exact_density: ClassVar[bool] = True
    straight_through: ClassVar[bool] = False
    config_keys: ClassVar[tuple[str, ...]] = ("targets", "exclude", "module_types")

    def __init__(
        self,
        *,
        targets: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        module_types: Sequence[str] = DEFAULT_MODULE_TYPES,
    ) -> None:
        module_classes(module_types)  # a bad name fails here, not at prepare()
        self.targets = list(targets) if targets is not None else None
        self.exclude = tuple(exclude)
        self.module_types = tuple(module_types)
        self.model: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.steps_done = 0
        self._masks: dict[str, Tensor] = {}
        self._parametrizations: dict[str, MaskParametrization] = {}
        self._hard = True
        self._srste_decay = 0.0

    # ----------------------------------------------------------------------------------------- lifecycle
    def prepare(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Select the target weights, register the mask parametrizations and build the initial masks."""
        if self.model is not None:
            raise ValueError(f"{type(self).__name__} is already prepared on a model; create a new scheduler.")
        self.model = model
        self.optimizer = optimizer
        names = select_weights(model, targets=self.targets, exclude=self.exclude, module_types=self.module_types)
        for name in names:
            module, attr = resolve_parameter(model, name)
            if parametrize.is_parametrized(module, attr):
                raise ValueError(f"target {name!r} is already parametrized; one mask scheduler per weight.")
            weight = getattr(module, attr)
            mask = torch.ones_like(weight, memory_format=torch.contiguous_format)
            parametrization = MaskParametrization(
                mask, straight_through=self.straight_through, srste_decay=self._srste_decay
            )
            parametrize.register_parametrization(module, attr, parametrization, unsafe=True)
            self._masks[name] = mask
            self._parametrizations[name] = parametrization
        logger.info("%s: owns masks on %d weights: %s", type(self).__name__, len(names), names)
        with torch.no_grad():
            self._on_prepare()
            self._enforce()

    def step(self, ctx: TrainContext | None = None) -> None:
        """Advance one optimizer step: update the masks (subclass rule), then enforce hard masks."""
        self._check_prepared()
        self.steps_done += 1
        with torch.no_grad():
            self._update(ctx)
            self._enforce()

    def squash(self) -> nn.Module:
        """Bake the effective weights into plain parameters and remove the parametrizations; returns the model."""
        model = self._check_prepared()
        for name in self._masks:
            module, attr = resolve_parameter(model, name)
            parametrize.remove_parametrizations(module, attr, leave_parametrized=True)
        self._parametrizations.clear()
        return model

    # ----------------------------------------------------------------------------------------- access
    @property
    def masks(self) -> dict[str, Tensor]:
        return dict(self._masks)

    @property
    def is_hard(self) -> bool:
        """True when pruned entries are held at zero in the raw weights and in the optimizer state."""
        return self._hard and self.semantics == "prune"

    def original(self, name: str) -> nn.Parameter:
        """The raw (unmasked) parameter behind target ``name``."""
        module, attr = resolve_parameter(self._check_prepared(), name)
        return getattr(module.parametrizations, attr).original

    def effective(self, name: str) -> Tensor:
        """The weight the forward pass uses for target ``name``."""
        module, attr = resolve_parameter(self._check_prepared(), name)
        return getattr(module, attr)

    def expected_nnz(self, name: str) -> int:
        """Number of ones the mask of ``name`` must have now (only meaningful when ``exact_density``)."""
        return int(self._masks[name].numel())

    def nm_pattern(self) -> tuple[int, int] | None:
        """The (N, M) pattern every mask follows now, or None for unstructured masks."""
        return None

    def density(self) -> dict[str, float]:
        return {name: float(mask.mean()) for name, mask in self._masks.items()}

    def set_fill(self, fill: float) -> None:
        for parametrization in self._parametrizations.values():
            parametrization.fill = float(fill)

    @property
    def fill(self) -> float:
        values = {p.fill for p in self._parametrizations.values()}
        return values.pop() if len(values) == 1 else float("nan")

    # ----------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "steps_done": self.steps_done,
            "masks": {name: mask.detach().clone() for name, mask in self._masks.items()},
            "fill": self.fill if self._parametrizations else 0.0,
            "hard": self._hard,
            "extra": self._extra_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore masks and counters; the scheduler must already be prepared on a model with the same targets."""
        self._check_prepared()
        missing = set(self._masks) ^ set(state["masks"])
        if missing:
            raise ValueError(
                f"state_dict masks do not match the prepared targets; differing names: {sorted(missing)}."
            )
        with torch.no_grad():
            for name, mask in state["masks"].items():
                self._masks[name].copy_(mask)
        self.steps_done = int(state["steps_done"])
        self._hard = bool(state["hard"])
        self.set_fill(float(state["fill"]))
        self._load_extra_state(state.get("extra", {}))

    # ----------------------------------------------------------------------------------------- subclass hooks
    def _on_prepare(self) -> None:
        """Build the initial masks (default: all ones)."""

    def _update(self, ctx: TrainContext | None) -> None:
        """Update masks after optimizer step number ``self.steps_done`` (default: static masks)."""

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        del state

    # ----------------------------------------------------------------------------------------- helpers
    def _check_prepared(self) -> nn.Module:
        if self.model is None:
            raise ValueError(f"{type(self).__name__} is not prepared: call `prepare(model, optimizer)` first.")
        return self.model

    def _items(self) -> Iterable[tuple[str, Tensor, nn.Parameter]]:
        for name, mask in self._masks.items():
            yield name, mask, self.original(name)

    def _enforce(self) -> None:
        if not self.is_hard:
            return
        for _, mask, weight in self._items():
            weight.mul_(mask)
            zero_optimizer_state(self.optimizer, weight, mask)
