"""common_regs: regularization and compression methods as reusable torch components.

Methods are grouped by family in subpackages and reached through the registry
(:mod:`common_regs.registry`); the hook kinds are defined in :mod:`common_regs.api`.
"""

from __future__ import annotations

from common_regs import api, registry, schedules, training

__all__ = ["api", "registry", "schedules", "training"]
