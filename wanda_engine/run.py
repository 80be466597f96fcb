"""What lives for the whole of one pruning run (`PruneRun`): its claimed output directories, the partial
output of a streamed --save_model with its resume checkpoints, the evaluation windows carried through the
blocks, the loaded model's hold on its files, and the stage timings."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Callable, Iterator

from .distributed import SINGLE_PROCESS, DataParallel
from .models.loading import LoadedModel
from .outputs import OutputDir, release_all
from .plan import Plan
from .prune.block_loop import CarriedWindows
from .resume import RunCheckpoint, clear_partial, partial_dir_for


class PruneRun:
    """A context manager around one run. Entering it claims the output directories (made, checked
    writable, locked: a second run aimed at one of them is refused); leaving it, however the run ends,
    releases them and the loaded model's files, and removes the partial output of a streamed
    --save_model, or keeps it when it holds a checkpoint to --resume from (and says so).

    In a data-parallel run rank 0 owns the outputs (it alone claims, writes and removes them); the
    other ranks write only their own resume checkpoints into the partial output. `replicas` is set once
    the process group is joined (after the claim, so a refused claim needs no collective)."""

    def __init__(self, plan: Plan, log: Callable[[str], None] = print) -> None:
        self.plan = plan
        self.log = log
        self.started = time.perf_counter()
        self.timings: dict[str, float] = {}
        self.eval_seconds = 0.0  # evaluation time, before and after pruning (timings["eval_s"] once done)
        self.loaded: LoadedModel | None = None
        self.partial_dir: Path | None = None  # where a streamed --save_model is built (renamed when complete)
        self.made_partial = False  # whether this run made it (an earlier run's is not this run's to remove)
        self.checkpoint: RunCheckpoint | None = None
        self.windows: CarriedWindows | None = None  # streamed evaluation: windows carried through the blocks
        self.replicas: DataParallel = SINGLE_PROCESS
        self._claimed: list[OutputDir] = []

    def __enter__(self) -> "PruneRun":
        if not self.plan.launch.is_main:
            return self
        try:
            for output in self.plan.outputs.values():
                self._claimed.append(output)  # before claim(): released however far the claim got
                note = output.claim()
                if note:
                    self.log(f"note: {note}")
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        try:
            if exc_type is not None:
                self._keep_or_remove_partial()
        finally:
            self._release()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block into `timings[name]` (added up when a stage runs more than once)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - started

    def holds(self, loaded: LoadedModel) -> LoadedModel:
        """Keep the loaded model until the run ends (its hold on a cached conversion is released then);
        a streamed --save_model is built in a partial directory from now on."""
        self.loaded = loaded
        if loaded.streamed and self.plan.model_dir is not None:
            self.partial_dir = partial_dir_for(self.plan.model_dir)
        return loaded

    def _keep_or_remove_partial(self) -> None:
        partial = self.partial_dir
        if partial is None or not partial.exists():
            return
        if self.checkpoint is not None and self.checkpoint.valid:
            self.log(f"stopped: the blocks done so far are kept in {partial}; rerun the same command with --resume to continue")
        elif self.made_partial:  # nothing to resume from: what this run made goes
            clear_partial(partial)
        elif self.checkpoint is not None and self.checkpoint.saving_started and not self.plan.launch.is_main:
            self.checkpoint.discard_own(empty_dirs=True)  # what this rank began writing (rank 0 owns the rest)

    def _release(self) -> None:
        if self.loaded is not None:
            self.loaded.close()
        release_all(self._claimed)
        self._claimed.clear()
