"""Stochastic regularization (family F5): multi-sample dropout, scheduled drop-path, ordered truncation, DropPos."""

from __future__ import annotations

from common_regs.stochastic.drop_pos import DropPos, drop_pos_loss, drop_pos_masks, position_smoothing
from common_regs.stochastic.multi_sample_dropout import MultiSampleDropout, multi_sample_dropout_loss
from common_regs.stochastic.ordered_truncation import OrderedTruncation, prefix_mask, truncation_probabilities
from common_regs.stochastic.scheduled_drop_path import DropPath, ScheduledDropPath, drop_path, scheduled_drop_prob
from common_regs.stochastic.tail_token_drop import TailTokenDrop

__all__ = [
    "DropPath",
    "DropPos",
    "MultiSampleDropout",
    "OrderedTruncation",
    "ScheduledDropPath",
    "TailTokenDrop",
    "drop_path",
    "drop_pos_loss",
    "drop_pos_masks",
    "multi_sample_dropout_loss",
    "position_smoothing",
    "prefix_mask",
    "scheduled_drop_prob",
    "truncation_probabilities",
]
