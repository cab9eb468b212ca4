"""The ``hooks:`` switch of recsys runs: any registered ``common_regs`` method by name + keyword options.

``hooks`` in a recsys YAML config is a list of ``{name: <registry name>, <option>: <value>, ...}``. Each entry is
resolved here, in this order:

1. ``embedding_l2``: :class:`recsys.losses.EmbeddingL2` (``weight``);
2. a registry name with a recsys adapter (:data:`recsys.regularizers.ADAPTERS`): the adapter, which wires the
   method into the trainer's in-batch softmax: ``multi_sample_dropout`` (options ``num_samples``, ``p``, ``at``)
   and ``ps_kd`` (``alpha_final``, ``total_epochs``), see :mod:`recsys.regularizers`;
3. any other registered method: its common_regs class, built with the options as constructor keywords (``dsl``,
   ``flops``, ...), so a method whose constructor takes only config values needs no code here.

Names and options are checked before anything is built: an unknown name, an unknown option, an option missing
for the constructor, or a method whose kind does not act during a training step (``solver``, ``post_hoc``) raise
a ``ValueError`` naming the entry (``hooks[1]``), the offending value and what is allowed.
"""

from __future__ import annotations

import difflib
import inspect
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from common_regs.registry import get, list_methods
from recsys.losses import EmbeddingL2
from recsys.regularizers import ADAPTERS, TrainSetup, adapter_for

logger = logging.getLogger(__name__)

__all__ = ["STEP_KINDS", "build_hooks", "check_hook_specs"]

#: hook kinds the recsys trainer applies (RegHooks); solvers and post-hoc transforms are not training hooks.
STEP_KINDS = ("batch_transform", "target_provider", "loss", "grad_transform", "mask_scheduler", "reparam")
_BUILTIN = {"embedding_l2": EmbeddingL2}


def _where(position: int) -> str:
    return f"`hooks[{position}]`"


def _allowed_options(position: int, name: str) -> tuple[set[str], set[str]]:
    """(allowed, required) option names of the method ``name``."""
    adapter = adapter_for(name)
    if adapter is not None:
        return set(adapter.config_keys), set()
    target = _BUILTIN.get(name) or get(name).obj
    parameters = inspect.signature(target).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        raise ValueError(f"{_where(position)}: method {name!r} takes arbitrary keywords; it cannot be checked.")
    allowed = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    required = {p.name for p in parameters if p.default is inspect.Parameter.empty and p.name in allowed}
    return allowed, required


def check_hook_specs(specs: Any) -> None:
    """Validate the ``hooks`` section without building anything (names, kinds, option names)."""
    if not isinstance(specs, Sequence) or isinstance(specs, (str, bytes)):
        raise ValueError(f"`hooks` must be a list of {{name: ..., options}} mappings, got {type(specs).__name__}.")
    for position, spec in enumerate(specs):
        if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
            raise ValueError(f"{_where(position)} must be a mapping with a string `name` (a common_regs registry "
                             f"name such as 'ps_kd'), got {spec!r}.")
        name = spec["name"]
        if name not in _BUILTIN:
            try:
                info = get(name)
            except KeyError:
                known = [m.name for m in list_methods() if m.kind in STEP_KINDS] + sorted(_BUILTIN)
                close = difflib.get_close_matches(name, known, n=3)
                hint = f" Did you mean {' / '.join(repr(c) for c in close)}?" if close else ""
                raise ValueError(
                    f"{_where(position)}: unknown method `name`={name!r}.{hint} Known training-hook methods: "
                    f"{', '.join(sorted(known))} (see `regkit regs list`)."
                ) from None
            if info.kind not in STEP_KINDS:
                raise ValueError(f"{_where(position)}: method {name!r} is a {info.kind!r}, not a training-step hook; "
                                 f"the trainer applies only the kinds {STEP_KINDS}.")
        allowed, required = _allowed_options(position, name)
        options = set(spec) - {"name"}
        unknown = options - allowed
        if unknown:
            raise ValueError(f"{_where(position)} ({name}): unknown option(s) {sorted(unknown)}; allowed: "
                             f"{sorted(allowed)}.")
        missing = required - options
        if missing:
            adapted = sorted(adapter.adapts for adapter in ADAPTERS)
            raise ValueError(
                f"{_where(position)} ({name}): the constructor needs {sorted(missing)}, which a config cannot give "
                f"unless they are plain values; set them in the entry, or use a method with a recsys adapter "
                f"({', '.join(adapted)}) that supplies model-dependent arguments itself."
            )


def build_hooks(specs: Sequence[Mapping[str, Any]], setup: TrainSetup) -> list[Any]:
    """Fresh hook objects for one trainer (call once per fit: adapters attach to ``setup.model``)."""
    check_hook_specs(specs)
    hooks: list[Any] = []
    for spec in specs:
        name = spec["name"]
        options = {key: value for key, value in spec.items() if key != "name"}
        adapter = adapter_for(name)
        if name in _BUILTIN:
            hooks.append(_BUILTIN[name](**options))
        elif adapter is not None:
            hooks.append(adapter.from_setup(setup, **options))
        else:
            hooks.append(get(name).obj(**options))
        logger.info("hook %s (%s): %s", name, type(hooks[-1]).__name__, options or "defaults")
    return hooks
