"""Coefficient schedules: pure functions of the optimizer step, shared by every method.

A schedule is a callable ``schedule(step) -> float`` holding only scalars, so it is trivially
checkpointable (``get_config_dict`` / ``from_config``).
"""

from __future__ import annotations

import abc
import math
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

__all__ = [
    "Constant",
    "Cosine",
    "Linear",
    "QuadraticWarmup",
    "Schedule",
    "Step",
    "as_schedule",
    "schedule_from_config",
]


class Schedule(abc.ABC):
    """Base class: subclasses are frozen dataclasses implementing ``__call__(step) -> float``."""

    name: ClassVar[str]

    @abc.abstractmethod
    def __call__(self, step: int) -> float:
        """The coefficient at optimizer step ``step`` (0-based)."""

    def get_config_dict(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self)}  # type: ignore[call-overload]


def _check_steps(total_steps: int, field: str = "total_steps") -> None:
    if total_steps <= 0:
        raise ValueError(f"`{field}` must be a positive integer, got {total_steps}.")


@dataclass(frozen=True)
class Constant(Schedule):
    """``value`` at every step."""

    value: float
    name: ClassVar[str] = "constant"

    def __call__(self, step: int) -> float:
        return float(self.value)


@dataclass(frozen=True)
class Linear(Schedule):
    """Linear interpolation from ``start`` to ``end`` over ``total_steps``, then constant at ``end``."""

    start: float
    end: float
    total_steps: int
    name: ClassVar[str] = "linear"

    def __post_init__(self) -> None:
        _check_steps(self.total_steps)

    def __call__(self, step: int) -> float:
        t = min(max(step, 0), self.total_steps) / self.total_steps
        return self.start + (self.end - self.start) * t


@dataclass(frozen=True)
class QuadraticWarmup(Schedule):
    """``value · min(1, step / warmup_steps)²``: the λ warm-up of SPLADE's FLOPS (Formal et al. 2021)."""

    value: float
    warmup_steps: int
    name: ClassVar[str] = "quadratic_warmup"

    def __post_init__(self) -> None:
        _check_steps(self.warmup_steps, "warmup_steps")

    def __call__(self, step: int) -> float:
        t = min(max(step, 0), self.warmup_steps) / self.warmup_steps
        return self.value * t * t


@dataclass(frozen=True)
class Cosine(Schedule):
    """``end + (start - end) · (1 + cos(π · t)) / 2`` with ``t = min(step, total_steps) / total_steps``."""

    start: float
    end: float
    total_steps: int
    name: ClassVar[str] = "cosine"

    def __post_init__(self) -> None:
        _check_steps(self.total_steps)

    def __call__(self, step: int) -> float:
        t = min(max(step, 0), self.total_steps) / self.total_steps
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * t))


@dataclass(frozen=True)
class Step(Schedule):
    """``value · gamma ** (step // step_size)``."""

    value: float
    gamma: float
    step_size: int
    name: ClassVar[str] = "step"

    def __post_init__(self) -> None:
        _check_steps(self.step_size, "step_size")

    def __call__(self, step: int) -> float:
        return self.value * self.gamma ** (max(step, 0) // self.step_size)


_SCHEDULES: dict[str, type[Schedule]] = {cls.name: cls for cls in (Constant, Linear, QuadraticWarmup, Cosine, Step)}


def schedule_from_config(config: dict[str, Any]) -> Schedule:
    """Inverse of :meth:`Schedule.get_config_dict`."""
    params = dict(config)
    name = params.pop("name", None)
    if name not in _SCHEDULES:
        raise ValueError(f"schedule `name` must be one of {sorted(_SCHEDULES)}, got {name!r}.")
    return _SCHEDULES[name](**params)


def as_schedule(value: float | Schedule | dict[str, Any]) -> Schedule:
    """Accept a number (constant), a schedule, or a schedule config."""
    if isinstance(value, Schedule):
        return value
    if isinstance(value, dict):
        return schedule_from_config(value)
    if isinstance(value, (int, float)):
        return Constant(float(value))
    raise TypeError(f"expected a number, a Schedule or a schedule config dict, got {type(value).__name__}.")
