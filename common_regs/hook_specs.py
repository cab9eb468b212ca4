"""Training hooks from a run config, the same way in every domain.

A run config's ``hooks`` is a list of entries ``{name: <registry name>, weight: λ, warmup_steps: T, <options>}``;
:func:`build_hooks` turns them into hook objects for :class:`common_regs.training.RegHooks`. An entry is resolved
in the domain ``domain`` (``recsys``, ``retrieval``, or a third party's), in this order:

1. the domain's adapter of the method (:func:`common_regs.registry.register_adapter`), for methods that need a view
   of the domain's model (multi-sample dropout on a two-tower's user tower, on the MLM head of a sparse encoder):
   ``adapter.from_setup(setup, **options)``, options from the adapter's ``config_keys``;
2. otherwise the registered method's own class, built with the options as constructor keywords; its constructor
   arguments that are runtime objects rather than configuration (the class's ``runtime_keys``: an IDF table, the
   teachers' score readers) are taken by name from ``runtime`` when the domain supplies them.

``weight`` and ``warmup_steps`` belong to the entry, not to the method's options: for a ``loss`` hook they are its
coefficient λ (default: the term's own ``weight`` attribute, else 1) and the steps T of its quadratic warm-up
``λ·min(1, s/T)²`` (default 0: constant λ), so each term carries its own weight and schedule
(:class:`common_regs.training.Weighted`). Other kinds take neither.

Entries are checked before anything is built (:func:`check_hook_specs`, which a config loader calls when it reads
the file): an unknown name (with a did-you-mean), a kind that does not act during a training step, an unknown or a
missing option, each raise one ``ValueError`` naming the entry (``hooks[1]``) and what is allowed.
"""

from __future__ import annotations

import difflib
import inspect
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from common_regs.api import STEP_KINDS
from common_regs.registry import adapter_for, get, list_methods
from common_regs.schedules import QuadraticWarmup
from common_regs.training import Weighted

logger = logging.getLogger(__name__)

__all__ = ["ENTRY_KEYS", "build_hooks", "check_hook_specs", "entry_schedule"]

ENTRY_KEYS = ("name", "weight", "warmup_steps")
"""Keys of a hooks entry that are not options of the method."""


@dataclass(frozen=True)
class _Resolved:
    """What one entry names: the object that builds it, its hook kind, its allowed and required options."""

    target: Any
    kind: str
    adapter: bool
    allowed: frozenset[str]
    required: frozenset[str]
    runtime: tuple[str, ...]


def _where(position: int) -> str:
    return f"`hooks[{position}]`"


def _unknown_name(position: int, name: str) -> ValueError:
    known = [method.name for method in list_methods() if method.kind in STEP_KINDS]
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean {' / '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(f"{_where(position)}: unknown method `name`={name!r}.{hint} Known training-hook methods: "
                      f"{', '.join(sorted(known))} (see `regkit regs list`).")


def _resolve(position: int, name: str, domain: str, runtime: Collection[str]) -> _Resolved:
    adapter = adapter_for(name, domain)
    if adapter is not None:
        return _Resolved(adapter, adapter.hook_kind, True, frozenset(adapter.config_keys), frozenset(), ())
    try:
        info = get(name)
    except KeyError:
        raise _unknown_name(position, name) from None
    if info.kind not in STEP_KINDS:
        raise ValueError(f"{_where(position)}: method {name!r} is a {info.kind!r}, not a training-step hook; the "
                         f"trainer applies only the kinds {STEP_KINDS}.")
    parameters = list(inspect.signature(info.obj).parameters.values())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        raise ValueError(f"{_where(position)}: method {name!r} takes arbitrary keywords; it cannot be checked.")
    supplied = tuple(key for key in getattr(info.obj, "runtime_keys", ()) if key in runtime)
    named = {p.name: p for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    allowed = set(named) - set(supplied) - set(ENTRY_KEYS)
    required = {key for key in allowed if named[key].default is inspect.Parameter.empty}
    return _Resolved(info.obj, info.kind, False, frozenset(allowed), frozenset(required), supplied)


def _check_entry_keys(position: int, name: str, spec: Mapping[str, Any], kind: str) -> None:
    given = [key for key in ("weight", "warmup_steps") if key in spec]
    if given and kind != "loss":
        verb = "apply" if len(given) > 1 else "applies"
        raise ValueError(f"{_where(position)} ({name}): {' and '.join(f'`{k}`' for k in given)} only {verb} to loss "
                         f"terms; {name!r} is a {kind!r} hook.")
    weight, warmup = spec.get("weight", 1.0), spec.get("warmup_steps", 0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
        raise ValueError(f"{_where(position)} ({name}): `weight` must be a number >= 0, got {weight!r}.")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"{_where(position)} ({name}): `warmup_steps` must be an integer >= 0, got {warmup!r}.")


def _check_spec(position: int, spec: Any, domain: str, runtime: Collection[str]) -> _Resolved:
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
        raise ValueError(f"{_where(position)} must be a mapping with a string `name` (a common_regs registry name "
                         f"such as 'ps_kd'), got {spec!r}.")
    name = spec["name"]
    resolved = _resolve(position, name, domain, runtime)
    _check_entry_keys(position, name, spec, resolved.kind)
    options = set(spec) - set(ENTRY_KEYS)
    unknown = options - resolved.allowed
    if unknown:
        entry = " (and the entry's `weight`, `warmup_steps`)" if resolved.kind == "loss" else ""
        raise ValueError(f"{_where(position)} ({name}): unknown option(s) {sorted(unknown)}; allowed: "
                         f"{sorted(resolved.allowed)}{entry}.")
    missing = resolved.required - options
    if missing:
        raise ValueError(
            f"{_where(position)} ({name}): the constructor needs {sorted(missing)}, which the {domain} trainer does "
            f"not supply; set them in the entry if they are plain values, or register a {domain} adapter of "
            f"{name!r} (common_regs.registry.register_adapter) that builds them from the run."
        )
    return resolved


def check_hook_specs(specs: Any, *, domain: str, runtime: Collection[str] = ()) -> None:
    """Validate a ``hooks`` section without building anything (names, kinds, options, weights).

    Args:
        specs: the section (a list of mappings).
        domain: the domain whose adapters apply.
        runtime: names of the runtime objects the domain's trainer supplies to constructors (``idf``).
    """
    if not isinstance(specs, Sequence) or isinstance(specs, (str, bytes)):
        raise ValueError(f"`hooks` must be a list of {{name: ..., options}} mappings, got {type(specs).__name__}.")
    for position, spec in enumerate(specs):
        _check_spec(position, spec, domain, runtime)


def entry_schedule(spec: Mapping[str, Any], default: float = 1.0) -> float | QuadraticWarmup:
    """The weight of a loss entry: λ = ``weight`` (else ``default``), warmed up over ``warmup_steps`` when > 0."""
    weight = float(spec.get("weight", default))
    warmup = spec.get("warmup_steps", 0)
    return QuadraticWarmup(weight, warmup) if warmup else weight


def build_hooks(
    specs: Sequence[Mapping[str, Any]],
    *,
    domain: str,
    setup: Any = None,
    runtime: Mapping[str, Any] | None = None,
) -> list[Any]:
    """Fresh hook objects for one trainer (build once per fit: adapters attach to the setup's model).

    Args:
        specs: the ``hooks`` section.
        domain: the domain whose adapters apply.
        setup: what the domain's adapters read (``from_setup(setup, ...)``): its model, its loss settings.
        runtime: runtime objects by constructor-argument name, for registered classes that declare them in
            ``runtime_keys``.

    Returns:
        the hooks in entry order; a loss entry with ``weight`` or ``warmup_steps`` as a
        :class:`~common_regs.training.Weighted`.
    """
    runtime = dict(runtime or {})
    hooks: list[Any] = []
    for position, spec in enumerate(specs):
        resolved = _check_spec(position, spec, domain, runtime)
        options = {key: value for key, value in spec.items() if key not in ENTRY_KEYS}
        if resolved.adapter:
            hook = resolved.target.from_setup(setup, **options)
        else:
            hook = resolved.target(**options, **{key: runtime[key] for key in resolved.runtime})
        if "weight" in spec or "warmup_steps" in spec:
            hooks.append(Weighted(hook, entry_schedule(spec, getattr(hook, "weight", 1.0))))
        else:
            hooks.append(hook)
        logger.info("hook %s (%s): %s", spec["name"], type(hook).__name__,
                    {k: v for k, v in spec.items() if k != "name"} or "defaults")
    return hooks
