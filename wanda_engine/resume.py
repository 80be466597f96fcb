"""Checkpoints of a streamed run, so `--resume` continues from the last saved block.

A streamed run with --save_model DIR builds the pruned model in a hidden sibling `.DIR.partial`
(renamed to DIR only when complete, so DIR is never half-written). Beside the block shards it keeps
`resume/`: the hidden states of every calibration batch (and evaluation windows) at the input of the
next block, the bookkeeping of the blocks done so far, and the settings that produced them. Tensors
are stored as safetensors (never pickle); the state file is replaced last, so a crash while
checkpointing leaves the previous checkpoint valid.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .distributed import SINGLE_PROCESS, DataParallel
from .errors import UserError
from .outputs import write_text_atomic
from .prune.batches import BlockBatch
from .prune.block_loop import CarriedWindows, PruneOutcome

STATE_FILE = "state.json"
# Settings that do not change the pruned weights or the measured numbers.
_NOT_FINGERPRINTED = {"resume", "overwrite", "progress", "save", "save_model", "checkpoint_every", "dist_timeout",
                      "log_all_ranks"}


def partial_dir_for(model_dir: Path) -> Path:
    return model_dir.parent / f".{model_dir.name}.partial"


def fingerprint(config, inputs: dict[str, str | None]) -> dict:
    """What a resumed run must share with the interrupted one: its settings, and the contents of its
    inputs (`inputs`: digests by what they are of, e.g. the calibration tokens), so that a file changed
    at the same path is not resumed as if it were the same."""
    settings = {key: value for key, value in sorted(asdict(config).items()) if key not in _NOT_FINGERPRINTED}
    return {**settings, **{f"content of the {what}": digest for what, digest in sorted(inputs.items())}}


class RunCheckpoint:
    """The resume checkpoints of one run. In a data-parallel run every rank checkpoints its own share
    of the hidden states (`activations-N.rankR.safetensors`, `state.rankR.json`), the ranks moving
    from one checkpoint to the next together (`save`), so that a resumed run finds one checkpoint that
    every rank holds; resuming with another number of ranks is refused."""

    def __init__(self, partial_dir: Path, settings: dict, every_s: float, replicas: DataParallel = SINGLE_PROCESS) -> None:
        self.directory = partial_dir / "resume"
        self.settings = settings
        self.every_s = every_s
        self.replicas = replicas
        # A plain run's files keep their names; a rank's carry its number.
        self.suffix = f".rank{replicas.rank}" if replicas.active else ""
        self.state_file = f"state{self.suffix}.json" if replicas.active else STATE_FILE
        self._last = time.monotonic()
        self._state: dict | None = None
        self.valid = False  # whether it holds a checkpoint this run loaded or saved (one to --resume from)
        self.saving_started = False  # whether this run began writing a checkpoint (files of its own to remove)

    def due(self, index: int, num_blocks: int) -> bool:
        """Whether to checkpoint after block `index` (rank 0's clock decides for every rank)."""
        return self.replicas.rank0_decides(index + 1 < num_blocks and time.monotonic() - self._last >= self.every_s)

    def save(self, next_block: int, batches: list[BlockBatch], windows: CarriedWindows | None, outcome: PruneOutcome,
             extra: dict) -> None:
        """Checkpoint the inputs of block `next_block`. Data-parallel: every rank writes its hidden states,
        then (all written) its state, keeping the previous checkpoint in it, then (all states written)
        removes its older files; so whenever a run stops, some checkpoint is held by every rank."""
        self.saving_started = True
        self.directory.mkdir(exist_ok=True)  # in the partial output, never made again once it is removed
        tensors = {f"calibration.{i}": b.hidden for i, b in enumerate(batches)}
        if windows is not None:
            tensors.update({f"dense.{i}": b.hidden for i, b in enumerate(windows.dense)})
            tensors.update({f"pruned.{i}": b.hidden for i, b in enumerate(windows.pruned)})
        activations = f"activations-{next_block:05d}{self.suffix}.safetensors"
        tmp = self.directory / f".{activations}.tmp"
        save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp))
        os.replace(tmp, self.directory / activations)
        state = {
            "settings": self.settings,
            "world_size": self.replicas.world_size,
            "next_block": next_block,
            "activations": activations,
            "outcome": asdict(outcome),
            "windows_seconds": windows.seconds if windows is not None else 0.0,
            **extra,
        }
        if self.replicas.active:
            self.replicas.barrier()  # every rank's hidden states are written
            previous = self._state
            state["previous"] = {k: v for k, v in previous.items() if k != "previous"} if previous else None
        write_text_atomic(self.directory / self.state_file, json.dumps(state))
        self.replicas.barrier()  # every rank's state names this checkpoint: the older ones can go
        for old in self.directory.glob(f"activations-*{self.suffix}.safetensors"):
            if old.name != activations:
                old.unlink()
        self._state = state
        self._last = time.monotonic()
        self.valid = True

    def load(self, batches: list[BlockBatch], windows: CarriedWindows | None) -> tuple[int, PruneOutcome, dict]:
        """Restore the hidden states into `batches`/`windows` (captured again, so their kwargs are fresh);
        return (next block, outcome so far, the whole state)."""
        state = self._read_state()
        if self.replicas.active:
            state = self._common_checkpoint(state)
        activations = self.directory / state["activations"]
        try:
            saved = load_file(str(activations))
        except (OSError, SafetensorError) as exc:
            raise UserError(f"--resume: the checkpoint {activations} cannot be read ({exc}); run again without --resume") from None
        groups = [("calibration", batches)]
        if windows is not None:
            groups += [("dense", windows.dense), ("pruned", windows.pruned)]
            windows.seconds = state["windows_seconds"]
        expected = {f"{label}.{i}": batch.hidden for label, group in groups for i, batch in enumerate(group)}
        if set(saved) != set(expected) or any(saved[k].shape != v.shape for k, v in expected.items()):
            raise UserError(f"--resume: the checkpoint in {self.directory} holds other hidden states than this run's; "
                            "run again without --resume")
        for label, group in groups:
            for i, batch in enumerate(group):
                hidden = saved[f"{label}.{i}"]
                batch.hidden = hidden.to(batch.hidden.device, batch.hidden.dtype)
        outcome = PruneOutcome(**state["outcome"])
        self._state = state
        self.valid = True
        return int(state["next_block"]), outcome, state

    def _read_state(self) -> dict:
        """This rank's state file, checked against this run's settings and number of ranks (no collective)."""
        partial = self.directory.parent
        if not partial.is_dir():
            raise UserError(f"--resume: there is no interrupted run to continue (no {partial}); run again without --resume")
        state_path = self.directory / self.state_file
        found = self._world_size_found()
        world_size = self.replicas.world_size
        if found is not None and found != world_size:
            raise UserError(
                f"--resume: the partial run in {partial} ran as {_processes(found)}, this one as {_processes(world_size)}; "
                f"resume it with {_launch_for(found)}, or run without --resume to start over"
            )
        if not state_path.is_file():
            raise UserError(
                f"--resume: no checkpoint in {partial} (the run ended before its first checkpoint); "
                "run again without --resume"
            )
        state = json.loads(state_path.read_text())
        if state["settings"] != self.settings:
            changed = sorted(k for k in set(state["settings"]) | set(self.settings)
                             if state["settings"].get(k) != self.settings.get(k))
            raise UserError(
                f"--resume: the partial run in {partial} used other settings ({', '.join(changed)}); "
                "repeat its exact command, or run without --resume to start over"
            )
        return state

    def _world_size_found(self) -> int | None:
        """The number of ranks of the checkpointed run, from whichever state files are present."""
        for path in sorted(self.directory.glob("state*.json")):
            try:
                return int(json.loads(path.read_text()).get("world_size", 1))
            except (OSError, ValueError, TypeError, AttributeError):
                continue
        return None

    def _common_checkpoint(self, state: dict) -> dict:
        """The latest checkpoint every rank holds: a run stopped while the ranks were saving one may
        have some ranks' states one checkpoint ahead (each keeps its previous one for that case)."""
        common = min(self.replicas.gather_ints([int(state["next_block"])]))
        for candidate in (state, state.get("previous")):
            if candidate and int(candidate["next_block"]) == common:
                return candidate
        raise UserError(f"--resume: {self.directory / self.state_file} does not hold the checkpoint of block {common} that "
                        "the other ranks resume from; run again without --resume")

    def discard_own(self, *, empty_dirs: bool = False) -> None:
        """Remove this rank's files (a data-parallel rank other than 0: rank 0 owns the directory), and with
        `empty_dirs` the directories when that leaves them empty (a machine of its own, once rank 0 is done)."""
        mine = [*self.directory.glob(f"activations-*{self.suffix}.safetensors"),
                *self.directory.glob(f".activations-*{self.suffix}.safetensors.tmp"), self.directory / self.state_file]
        for path in mine:
            with contextlib.suppress(OSError):
                path.unlink()
        for directory in (self.directory, self.directory.parent) if empty_dirs else ():
            with contextlib.suppress(OSError):
                directory.rmdir()


def _processes(world_size: int) -> str:
    return "one process" if world_size == 1 else f"{world_size} processes"


def _launch_for(world_size: int) -> str:
    return "`python cli.py prune ...`" if world_size == 1 else f"`torchrun --nproc_per_node {world_size} cli.py prune ...` (or {world_size} ranks over several machines)"


def clear_partial(partial_dir: Path) -> None:
    shutil.rmtree(partial_dir, ignore_errors=True)


__all__ = ["RunCheckpoint", "clear_partial", "fingerprint", "partial_dir_for"]
