"""Shared machinery for weight reparametrizations built on ``torch.nn.utils.parametrize``.

Every reparametrization of the low-rank and quantization families (SVFit, SORSA, Maestro, PELA, weight compander,
regularized mask tuning, EQ-Net elastic quantization, QuantNAS quantization noise) is a :class:`ParametrizedReparam`:
it selects target modules, registers one :class:`WeightParametrization` per target tensor, and offers the lifecycle
of the ``Reparam`` hook kind:

* ``prepare(model)``: register the parametrizations (``right_inverse`` initializes the trainable originals from the
  pretrained weight; frozen pieces live in buffers of the parametrization module);
* ``merge(safe=True)``: bake the current effective weight into a plain parameter (idempotent; with ``safe`` the
  merged weight must be finite or nothing is changed);
* ``unmerge()``: re-attach the parametrizations with the *same* original ``Parameter`` objects (an optimizer built
  before ``merge`` keeps updating them), in reverse order of ``merge``.

Merging is exact: the merged weight is the parametrization's output, so the merged forward equals the unmerged one.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from common_regs.api import ConfigFromKeys

logger = logging.getLogger(__name__)

__all__ = ["ParametrizedReparam", "ReparamSite", "WeightParametrization", "resolve_targets"]

_TARGET_TYPES: dict[str, type[nn.Module]] = {"linear": nn.Linear, "conv2d": nn.Conv2d, "conv1d": nn.Conv1d}


def resolve_targets(model: nn.Module, module_types: Sequence[str], include: Sequence[str] | None,
                    exclude: Sequence[str] | None) -> list[tuple[str, nn.Module]]:
    """Modules of ``model`` whose type is in ``module_types`` and whose qualified name matches the patterns.

    ``include`` / ``exclude`` are ``fnmatch`` patterns on the qualified module name (``"encoder.*"``);
    ``include=None`` selects every module of a matching type.
    """
    unknown = sorted(set(module_types) - set(_TARGET_TYPES))
    if unknown:
        raise ValueError(f"`module_types` entries must be in {sorted(_TARGET_TYPES)}, got unknown {unknown}.")
    types = tuple(_TARGET_TYPES[name] for name in module_types)
    selected = []
    for name, module in model.named_modules():
        if not issubclass(parametrize.type_before_parametrizations(module), types):
            continue
        if include is not None and not any(fnmatch.fnmatchcase(name, pattern) for pattern in include):
            continue
        if exclude is not None and any(fnmatch.fnmatchcase(name, pattern) for pattern in exclude):
            continue
        selected.append((name, module))
    return selected


class WeightParametrization(nn.Module):
    """One parametrization ``W = forward(*originals)``; ``initial_originals(W)`` computes the originals.

    Subclasses set ``trainable`` (one flag per original) and implement ``initial_originals`` and ``forward``.
    Frozen tensors (pretrained residuals, singular vectors) are buffers of the subclass, so they are in the
    model's ``state_dict`` under ``<module>.parametrizations.<tensor>.0.<buffer>``.
    """

    trainable: tuple[bool, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self._pending: tuple[Tensor, ...] | None = None

    def initial_originals(self, weight: Tensor) -> tuple[Tensor, ...]:
        raise TypeError(f"{type(self).__name__} must implement `initial_originals(weight)`.")

    def right_inverse(self, weight: Tensor) -> tuple[Tensor, ...]:
        # During ``unmerge`` the stored originals are handed back verbatim instead of re-deriving them.
        if self._pending is not None:
            pending, self._pending = self._pending, None
            return pending
        originals = self.initial_originals(weight)
        if len(originals) != len(self.trainable):
            raise ValueError(
                f"{type(self).__name__}.initial_originals returned {len(originals)} tensors but `trainable` has "
                f"{len(self.trainable)} flags."
            )
        return originals


@dataclass
class ReparamSite:
    """One parametrized tensor: the module, the tensor name, its parametrization and (when merged) the stash."""

    name: str
    module: nn.Module
    tensor_name: str
    parametrization: WeightParametrization
    stash: list[tuple[nn.Parameter, Tensor]] | None = None


class ParametrizedReparam(ConfigFromKeys):
    """Base class of the parametrize-based reparametrizations (hook kind ``reparam``).

    Args:
        module_types: which module types to reparametrize (``"linear"``, ``"conv2d"``, ``"conv1d"``).
        include: ``fnmatch`` patterns on qualified module names to select; ``None`` selects all of the types.
        exclude: patterns to skip (e.g. the classifier head ``["head"]``).
        freeze_base: set ``requires_grad=False`` on every parameter of the model that is not a trainable
            original of this reparametrization (PEFT convention); unfreeze a head yourself afterwards.

    Subclasses implement :meth:`make_parametrization` and set ``identity_at_init`` (whether the reparametrized
    model computes exactly the pretrained function right after ``prepare``).
    """

    hook_kind: ClassVar[str] = "reparam"
    identity_at_init: ClassVar[bool] = True
    tensor_name: ClassVar[str] = "weight"
    config_keys: ClassVar[tuple[str, ...]] = ("module_types", "include", "exclude", "freeze_base")

    def __init__(self, *, module_types: Sequence[str] = ("linear",), include: Sequence[str] | None = None,
                 exclude: Sequence[str] | None = None, freeze_base: bool = False) -> None:
        if isinstance(module_types, str):
            raise TypeError(f"`module_types` must be a sequence of names, got the string {module_types!r}.")
        self.module_types = tuple(module_types)
        self.include = None if include is None else tuple(include)
        self.exclude = None if exclude is None else tuple(exclude)
        self.freeze_base = bool(freeze_base)
        self.sites: list[ReparamSite] = []
        self.model: nn.Module | None = None

    # -- to implement ---------------------------------------------------------------------------------------
    def make_parametrization(self, name: str, module: nn.Module, weight: Tensor) -> WeightParametrization:
        raise TypeError(f"{type(self).__name__} must implement `make_parametrization`.")

    # -- lifecycle -----------------------------------------------------------------------------------------
    def prepare(self, model: nn.Module) -> nn.Module:
        """Register the parametrizations on every target module of ``model``; returns ``model``."""
        if self.model is not None:
            raise ValueError(f"{type(self).__name__} is already prepared on a model; build a new instance.")
        targets = resolve_targets(model, self.module_types, self.include, self.exclude)
        if not targets:
            raise ValueError(
                f"{type(self).__name__} found no module to reparametrize: `module_types`={self.module_types}, "
                f"`include`={self.include}, `exclude`={self.exclude}."
            )
        for name, module in targets:
            if parametrize.is_parametrized(module, self.tensor_name):
                raise ValueError(f"module {name!r} already has a parametrization on `{self.tensor_name}`.")
            weight = getattr(module, self.tensor_name)
            param = self.make_parametrization(name, module, weight.detach())
            parametrize.register_parametrization(module, self.tensor_name, param)
            plist = module.parametrizations[self.tensor_name]
            for index, flag in enumerate(param.trainable):
                getattr(plist, f"original{index}").requires_grad_(flag)
            self.sites.append(ReparamSite(name, module, self.tensor_name, param))
        self.model = model
        if self.freeze_base:
            trainable = {id(p) for p in self.trainable_parameters()}
            for parameter in model.parameters():
                if id(parameter) not in trainable:
                    parameter.requires_grad_(False)
        logger.info("%s: reparametrized %d module(s): %s", type(self).__name__, len(self.sites),
                    [site.name for site in self.sites])
        return model

    def _require_prepared(self) -> None:
        if self.model is None:
            raise ValueError(f"{type(self).__name__} is not prepared; call `prepare(model)` first.")

    @property
    def merged(self) -> bool:
        return bool(self.sites) and all(site.stash is not None for site in self.sites)

    def parametrizations(self) -> Iterator[WeightParametrization]:
        for site in self.sites:
            yield site.parametrization

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The trainable originals (and trainable parameters inside the parametrization modules)."""
        self._require_prepared()
        params: list[nn.Parameter] = []
        for site in self.sites:
            if site.stash is not None:
                params.extend(p for p, _ in site.stash if p.requires_grad)
                continue
            plist = site.module.parametrizations[site.tensor_name]
            params.extend(getattr(plist, f"original{i}") for i, flag in enumerate(site.parametrization.trainable)
                          if flag)
            params.extend(p for p in site.parametrization.parameters() if p.requires_grad)
        return params

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    @torch.no_grad()
    def merge(self, safe: bool = True) -> None:
        """Replace every parametrized weight by a plain parameter holding its current value (idempotent)."""
        self._require_prepared()
        if self.merged:
            return
        merged_values = []
        for site in self.sites:
            was_training = site.parametrization.training
            site.parametrization.eval()  # merge bakes the inference-time weight (no train-time noise)
            value = getattr(site.module, site.tensor_name).detach().clone()
            site.parametrization.train(was_training)
            if safe and not torch.isfinite(value).all():
                raise ValueError(
                    f"merging `{site.name}.{site.tensor_name}` would produce non-finite values; nothing was merged. "
                    "Pass `safe=False` to merge anyway."
                )
            merged_values.append(value)
        for site, value in zip(self.sites, merged_values, strict=True):
            plist = site.module.parametrizations[site.tensor_name]
            originals = [getattr(plist, f"original{i}") for i in range(plist.ntensors)]
            site.stash = [(p, p.detach().clone()) for p in originals]
            parametrize.remove_parametrizations(site.module, site.tensor_name, leave_parametrized=True)
            if hasattr(site.module, site.tensor_name):
                delattr(site.module, site.tensor_name)
            site.module.register_parameter(site.tensor_name, nn.Parameter(value, requires_grad=False))

    @torch.no_grad()
    def unmerge(self) -> None:
        """Restore the parametrizations (reverse order of ``merge``) with the original parameter objects."""
        self._require_prepared()
        for site in reversed(self.sites):
            if site.stash is None:
                continue
            site.parametrization._pending = tuple(data.clone() for _, data in site.stash)
            parametrize.register_parametrization(site.module, site.tensor_name, site.parametrization, unsafe=True)
            plist = site.module.parametrizations[site.tensor_name]
            for index, (param, data) in enumerate(site.stash):
                param.data = data
                setattr(plist, f"original{index}", param)
            site.stash = None

    def state_dict(self) -> dict[str, Any]:
        """Hyperparameters only: every tensor of a reparametrization lives in the model's ``state_dict``."""
        return {"method": getattr(self, "registry_name", type(self).__name__), "merged": self.merged}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("merged") and not self.merged:
            self.merge()
        elif not state.get("merged", False) and self.merged:
            self.unmerge()
