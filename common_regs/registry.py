"""Name → method registry, so configs and the CLI can refer to methods by name.

Every public method class decorates itself with :func:`register`; ``build({"name": "flops", ...})`` constructs
it from a config mapping. Nothing here keeps a hand-written name → class table.

Methods registered outside common_regs (the domains' own, and those of third-party packages) are found through the
``regkit.methods`` entry-point group: a package lists the modules that call :func:`register` or
:func:`register_adapter`, and :func:`load_all` imports them, so no caller has to import the right module first::

    # pyproject.toml of a package that brings methods
    [project.entry-points."regkit.methods"]
    my_methods = "my_package.regularizers"

A domain adapter (:func:`register_adapter`) is a domain's view of a registered method, for methods that need more
than their options to act in that domain (multi-sample dropout needs the features and the head of a two-tower model
in recsys, of the MLM head in retrieval); config hooks resolve to it in that domain
(:mod:`common_regs.hook_specs`).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, get_args

from common_regs.api import HOOK_KINDS

__all__ = [
    "ENTRY_POINT_GROUP",
    "FIDELITIES",
    "Fidelity",
    "MethodInfo",
    "adapter_for",
    "build",
    "get",
    "list_methods",
    "load_all",
    "register",
    "register_adapter",
]

T = TypeVar("T")

ENTRY_POINT_GROUP = "regkit.methods"
"""Entry-point group naming the modules (outside common_regs) that register methods or adapters."""

Fidelity = Literal["paper-equation", "official-code", "reconstruction", "diagnostic"]
"""How closely a registered method follows its paper.

* ``paper-equation``: implemented from the equation the paper states;
* ``official-code``: checked against the authors' code (the docstring names the files);
* ``reconstruction``: a stand-in with the paper's described behaviour whose exact equation could not be confirmed
  (the docstring says what is regkit's and where it searched);
* ``diagnostic``: a measurement or helper for an analytical paper (or a survey), not a training method.
"""
FIDELITIES: tuple[str, ...] = get_args(Fidelity)


@dataclass(frozen=True)
class MethodInfo:
    """One registered method: config name, hook kind, implementing object, paper, seed numbers and fidelity."""

    name: str
    kind: str
    obj: Any
    paper: str
    seeds: tuple[int, ...]
    fidelity: Fidelity
    verified_by: str | None

    @property
    def module(self) -> str:
        return self.obj.__module__


_REGISTRY: dict[str, MethodInfo] = {}
_ADAPTERS: dict[tuple[str, str], type] = {}
_loaded = False


def register(
    name: str,
    *,
    kind: str,
    paper: str,
    fidelity: Fidelity,
    verified_by: str | None = None,
    seed: int | Sequence[int] | None = None,
) -> Callable[[T], T]:
    """Class (or function) decorator adding a method to the registry.

    Args:
        name: config name, snake_case (``nm_sparsity``).
        kind: one of :data:`common_regs.api.HOOK_KINDS`.
        paper: short citation, "Authors, Title, Venue Year, arXiv:NNNN.NNNNN" (or "regkit original").
        fidelity: how closely the code follows the paper, one of :data:`FIDELITIES` (see :data:`Fidelity`).
        verified_by: the test that checks the method against the paper's formula, as a path from the repository
            root, optionally with ``::test_name`` (``tests/common_regs/sparsity/test_dsl.py::test_update_count``).
        seed: the paper's number in ``shared/seeds/papers.txt`` (or several numbers), when it is a seed paper.
    """
    if kind not in HOOK_KINDS:
        raise ValueError(f"`kind` must be one of {HOOK_KINDS}, got {kind!r} for method {name!r}.")
    if fidelity not in FIDELITIES:
        raise ValueError(f"`fidelity` must be one of {FIDELITIES}, got {fidelity!r} for method {name!r}.")
    if verified_by is not None and not re.fullmatch(r"tests/[\w/.-]+\.py(::\w+)?", verified_by):
        raise ValueError(f"`verified_by` must be 'tests/<path>.py' or 'tests/<path>.py::<test>', got {verified_by!r} "
                         f"for method {name!r}.")
    seeds = () if seed is None else (seed,) if isinstance(seed, int) else tuple(seed)
    if not all(isinstance(number, int) and number > 0 for number in seeds):
        raise ValueError(f"`seed` must be a positive int or a list of them, got {seed!r} for method {name!r}.")

    def decorator(obj: T) -> T:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.obj is not obj:
            raise ValueError(f"method name {name!r} is already registered by {existing.module}.")
        _REGISTRY[name] = MethodInfo(name=name, kind=kind, obj=obj, paper=paper, seeds=seeds, fidelity=fidelity,
                                     verified_by=verified_by)
        if isinstance(obj, type):
            obj.hook_kind = kind  # RegHooks dispatches on this (a name unlikely to clash with a method's own fields)
            obj.registry_name = name
        return obj

    return decorator


def register_adapter(method: str, *, domain: str, kind: str) -> Callable[[type[T]], type[T]]:
    """Class decorator registering ``cls`` as domain ``domain``'s adapter of the registered method ``method``.

    The class builds itself with ``cls.from_setup(setup, **options)`` (``setup``: what the domain's trainer shares
    with its hooks) and lists the options a config may give in ``config_keys``.

    Args:
        method: the registry name of the method adapted (``multi_sample_dropout``).
        domain: the domain whose configs resolve ``method`` to this class (``recsys``, ``retrieval``).
        kind: the hook kind of the adapter (one of :data:`common_regs.api.HOOK_KINDS`); may differ from the
            method's (PS-KD is a target provider, its ranking adapters are loss terms).
    """
    if kind not in HOOK_KINDS:
        raise ValueError(f"`kind` must be one of {HOOK_KINDS}, got {kind!r} for the {domain} adapter of {method!r}.")

    def decorator(cls: type[T]) -> type[T]:
        existing = _ADAPTERS.get((domain, method))
        if existing is not None and existing is not cls:
            raise ValueError(f"the {domain} adapter of {method!r} is already registered by {existing.__module__}.")
        for needed in ("from_setup", "config_keys"):
            if not hasattr(cls, needed):
                raise TypeError(f"{cls.__name__}: a domain adapter needs `{needed}`.")
        _ADAPTERS[(domain, method)] = cls
        cls.hook_kind = kind  # type: ignore[attr-defined]
        cls.registry_name = method  # type: ignore[attr-defined]
        return cls

    return decorator


def load_all() -> None:
    """Import every common_regs submodule and every module of the ``regkit.methods`` entry points, once.

    All methods and adapters are then registered, whatever was imported before.
    """
    global _loaded
    if _loaded:
        return
    import common_regs

    for info in pkgutil.walk_packages(common_regs.__path__, prefix="common_regs."):
        if not info.name.rsplit(".", 1)[-1].startswith("_"):
            importlib.import_module(info.name)
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        entry.load()
    _loaded = True


def get(name: str) -> MethodInfo:
    """The registered method ``name``; a KeyError lists the registered names when there is none."""
    load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise KeyError(f"unknown method {name!r}; registered methods: {known}") from None


def adapter_for(name: str, domain: str) -> type | None:
    """Domain ``domain``'s adapter of the method ``name``, or None (the method's own class is used there)."""
    load_all()
    return _ADAPTERS.get((domain, name))


def list_methods(kind: str | None = None) -> list[MethodInfo]:
    """Every registered method (of hook kind ``kind`` when given), sorted by kind and name."""
    load_all()
    return sorted((m for m in _REGISTRY.values() if kind is None or m.kind == kind), key=lambda m: (m.kind, m.name))


def build(config: Mapping[str, Any]) -> Any:
    """Construct a method from ``{"name": <registry name>, **constructor kwargs}``."""
    if "name" not in config:
        raise ValueError(f"a method config needs a `name` key, got keys {sorted(config)}.")
    params = {k: v for k, v in config.items() if k != "name"}
    info = get(config["name"])
    try:
        return info.obj(**params)
    except TypeError as err:
        raise TypeError(f"cannot build method {info.name!r} from {params}: {err}") from err
