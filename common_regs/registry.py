"""Name → method registry, so configs and the CLI can refer to methods by name.

Every public method class decorates itself with :func:`register`; ``build({"name": "flops", ...})`` constructs
it from a config mapping. Nothing here keeps a hand-written name → class table.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from common_regs.api import HOOK_KINDS

__all__ = ["MethodInfo", "build", "get", "list_methods", "load_all", "register"]

T = TypeVar("T")


@dataclass(frozen=True)
class MethodInfo:
    """One registered method: its config name, hook kind, implementing object and paper."""

    name: str
    kind: str
    obj: Any
    paper: str
    seed: int | None

    @property
    def module(self) -> str:
        return self.obj.__module__


_REGISTRY: dict[str, MethodInfo] = {}


def register(name: str, *, kind: str, paper: str, seed: int | None = None) -> Callable[[T], T]:
    """Class (or function) decorator adding a method to the registry.

    Args:
        name: config name, snake_case (``nm_sparsity``).
        kind: one of :data:`common_regs.api.HOOK_KINDS`.
        paper: short citation, "Authors, Title, Venue Year, arXiv:NNNN.NNNNN" (or "regkit original").
        seed: the paper's number in ``shared/seeds/papers.txt``, when it is one of the seed papers.
    """
    if kind not in HOOK_KINDS:
        raise ValueError(f"`kind` must be one of {HOOK_KINDS}, got {kind!r} for method {name!r}.")

    def decorator(obj: T) -> T:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.obj is not obj:
            raise ValueError(f"method name {name!r} is already registered by {existing.module}.")
        _REGISTRY[name] = MethodInfo(name=name, kind=kind, obj=obj, paper=paper, seed=seed)
        if isinstance(obj, type):
            obj.hook_kind = kind  # RegHooks dispatches on this (a name unlikely to clash with a method's own fields)
            obj.registry_name = name
        return obj

    return decorator


def load_all() -> None:
    """Import every common_regs submodule so that all methods are registered."""
    import common_regs

    for info in pkgutil.walk_packages(common_regs.__path__, prefix="common_regs."):
        if not info.name.rsplit(".", 1)[-1].startswith("_"):
            importlib.import_module(info.name)


def get(name: str) -> MethodInfo:
    load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise KeyError(f"unknown method {name!r}; registered methods: {known}") from None


def list_methods(kind: str | None = None) -> list[MethodInfo]:
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
