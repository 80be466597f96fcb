"""Checkpoints of a streamed run, so `--resume` continues from the last saved block.

A streamed run with --save_model DIR builds the pruned model in a hidden sibling `.DIR.partial`
(renamed to DIR only when complete, so DIR is never half-written). Beside the block shards it keeps
`resume/`: the hidden states of every calibration batch (and evaluation windows) at the input of the
next block, the bookkeeping of the blocks done so far, and the settings that produced them. Tensors
are stored as safetensors (never pickle); the state file is replaced last, so a crash while
checkpointing leaves the previous checkpoint valid.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import UserError
from .outputs import write_text_atomic
from .prune.batches import BlockBatch
from .prune.block_loop import CarriedWindows, PruneOutcome

STATE_FILE = "state.json"
# Settings that do not change the pruned weights or the measured numbers.
_NOT_FINGERPRINTED = {"resume", "overwrite", "progress", "save", "save_model", "checkpoint_every"}


def partial_dir_for(model_dir: Path) -> Path:
    return model_dir.parent / f".{model_dir.name}.partial"


def fingerprint(config, inputs: dict[str, str | None]) -> dict:
    """What a resumed run must share with the interrupted one: its settings, and the contents of its
    inputs (`inputs`: digests by what they are of, e.g. the calibration tokens), so that a file changed
    at the same path is not resumed as if it were the same."""
    settings = {key: value for key, value in sorted(asdict(config).items()) if key not in _NOT_FINGERPRINTED}
    return {**settings, **{f"content of the {what}": digest for what, digest in sorted(inputs.items())}}


class RunCheckpoint:
    def __init__(self, partial_dir: Path, settings: dict, every_s: float) -> None:
        self.directory = partial_dir / "resume"
        self.settings = settings
        self.every_s = every_s
        self._last = time.monotonic()
        self.valid = False  # whether it holds a checkpoint this run loaded or saved (one to --resume from)

    def due(self, index: int, num_blocks: int) -> bool:
        return index + 1 < num_blocks and time.monotonic() - self._last >= self.every_s

    def save(self, next_block: int, batches: list[BlockBatch], windows: CarriedWindows | None, outcome: PruneOutcome,
             extra: dict) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"calibration.{i}": b.hidden for i, b in enumerate(batches)}
        if windows is not None:
            tensors.update({f"dense.{i}": b.hidden for i, b in enumerate(windows.dense)})
            tensors.update({f"pruned.{i}": b.hidden for i, b in enumerate(windows.pruned)})
        activations = f"activations-{next_block:05d}.safetensors"
        tmp = self.directory / f".{activations}.tmp"
        save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp))
        os.replace(tmp, self.directory / activations)
        state = {
            "settings": self.settings,
            "next_block": next_block,
            "activations": activations,
            "outcome": asdict(outcome),
            "windows_seconds": windows.seconds if windows is not None else 0.0,
            **extra,
        }
        write_text_atomic(self.directory / STATE_FILE, json.dumps(state))
        for old in self.directory.glob("activations-*.safetensors"):
            if old.name != activations:
                old.unlink()
        self._last = time.monotonic()
        self.valid = True

    def load(self, batches: list[BlockBatch], windows: CarriedWindows | None) -> tuple[int, PruneOutcome, dict]:
        """Restore the hidden states into `batches`/`windows` (captured again, so their kwargs are fresh);
        return (next block, outcome so far, the whole state)."""
        state_path = self.directory / STATE_FILE
        if not self.directory.parent.is_dir():
            raise UserError(
                f"--resume: there is no interrupted run to continue (no {self.directory.parent}); run again without --resume"
            )
        if not state_path.is_file():
            raise UserError(
                f"--resume: no checkpoint in {self.directory.parent} (the run ended before its first checkpoint); "
                "run again without --resume"
            )
        state = json.loads(state_path.read_text())
        if state["settings"] != self.settings:
            changed = sorted(k for k in set(state["settings"]) | set(self.settings)
                             if state["settings"].get(k) != self.settings.get(k))
            raise UserError(
                f"--resume: the partial run in {self.directory.parent} used other settings ({', '.join(changed)}); "
                "repeat its exact command, or run without --resume to start over"
            )
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
        self.valid = True
        return int(state["next_block"]), outcome, state


def clear_partial(partial_dir: Path) -> None:
    shutil.rmtree(partial_dir, ignore_errors=True)


__all__ = ["RunCheckpoint", "clear_partial", "fingerprint", "partial_dir_for"]
