"""Pruning schedules (`--schedule`): how one decoder block's linears get their statistics, are pruned,
and how the block's outputs for the next block are produced. One file per schedule.

The block loop itself (loading blocks, progress, bookkeeping) is `prune.block_loop.prune_blocks`; a
schedule handles one materialised block at a time. Methods that need no activation statistics
(magnitude) are pruned by `WEIGHTS_ONLY`, which runs nothing: `schedule_for` picks it for them.
"""

from __future__ import annotations

from ..methods import PruningMethod
from .base import SCHEDULES, Schedule
from . import reference, sequential  # noqa: E402,F401  (registration side effects)
from .weights_only import WEIGHTS_ONLY  # noqa: E402


def schedule_for(method: PruningMethod, name: str) -> Schedule:
    """The schedule that prunes with `method`: the `--schedule` named `name`, or WEIGHTS_ONLY for a
    method that needs no statistics (there are no calibration batches to run then)."""
    return SCHEDULES.get(name) if method.needs_statistics else WEIGHTS_ONLY


__all__ = ["SCHEDULES", "Schedule", "WEIGHTS_ONLY", "schedule_for"]
