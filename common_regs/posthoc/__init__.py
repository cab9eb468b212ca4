"""Post-hoc prediction rules (``post_hoc`` hook kind) that need no training."""

from __future__ import annotations

from common_regs.posthoc.loki import Loki

__all__ = ["Loki"]
