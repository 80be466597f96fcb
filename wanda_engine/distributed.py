"""Data-parallel pruning over torch.distributed, launched by torchrun (one process per rank).

What is split, and how it is combined so that the masks are the single process's, bit for bit:

- The calibration samples and the evaluation windows: each rank takes a contiguous share of whole
  batches (`shares`: rank 0 the first, uneven shares allowed), so every batch is one the single process
  runs too, with the same rows and the same padding. Every rank reads and runs every decoder block.
- The Wanda statistic: the reference folds a running mean sample by sample, so per-rank sums or means
  would round differently and near-ties would flip. Each rank records the folds it would make (one
  squared-norm vector per sample, or per batch where the kernel sums a batch), every rank gathers all of
  them in global order and folds them as the single process does (`GatheredSqNorms`): the same
  operations on the same numbers in the same order.
- The masks: each is selected by one rank (the ranks share a block's selections, balanced by size) and
  broadcast, and every other rank applies it (`SharedMasks`): identical on every rank by construction,
  whatever the hardware.
- Perplexity: each rank's per-window losses, gathered in global order and averaged as one process does.
- Block importance (three_tier, owl): the per-batch cosine sums gathered in order; the outlier ratios
  come from the combined statistic.

A plain `python cli.py prune` has no process group: `SINGLE_PROCESS` does no communication and every
function here is then the identity.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import signal
import socket
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist

import kernels

from .errors import UserError
from .prune.methods import PruningMethod
from .prune.sparsity import SparsityTarget

# torchrun's environment: https://pytorch.org/docs/stable/elastic/run.html#environment-variables
_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Launch:
    """Which process of a launch this is, as torchrun's environment says (a plain run: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @staticmethod
    def from_env(environ: "os._Environ[str] | dict[str, str] | None" = None) -> "Launch":
        environ = os.environ if environ is None else environ
        if environ.get("WORLD_SIZE") is None:
            return Launch()
        values = {}
        for name in _ENV:
            text = environ.get(name, "0")
            try:
                values[name] = int(text)
            except ValueError:
                raise UserError(f"environment {name}={text!r}: not an integer; launch with torchrun, which sets it") from None
        rank, world_size, local_rank = values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"]
        if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
            raise UserError(f"environment RANK={rank} WORLD_SIZE={world_size} LOCAL_RANK={local_rank}: inconsistent; "
                            "launch with torchrun, which sets them")
        return Launch(rank, world_size, local_rank)

    def label(self) -> str:
        return f"rank {self.rank} of {self.world_size}"


def shares(count: int, parts: int, unit: int = 1) -> list[range]:
    """Contiguous shares of range(count) for `parts` ranks in whole units of `unit` items (the last unit
    may be short), as even as whole units allow, the earlier ranks taking the extra units; a share may be
    empty when there are fewer units than parts."""
    units = -(-count // unit)
    base, extra = divmod(units, parts)
    result, first_unit = [], 0
    for part in range(parts):
        taken = base + (1 if part < extra else 0)
        result.append(range(min(first_unit * unit, count), min((first_unit + taken) * unit, count)))
        first_unit += taken
    return result


class PeerFailed(RuntimeError):
    """A collective failed: another rank stopped (its own error is in its output) or the link broke."""


class Stopped(BaseException):
    """SIGTERM reached a rank (torchrun stops the surviving ranks so when one fails): unwinds the run so
    that its partial outputs are cleaned up, as Ctrl-C does."""


class DataParallel:
    """The ranks of one run and the few collectives pruning needs. `SINGLE_PROCESS` (world size 1)
    communicates nothing."""

    def __init__(self, launch: Launch = Launch(), backend: str | None = None, device: str = "cpu") -> None:
        self.launch = launch
        self.backend = backend
        # NCCL moves CUDA tensors only; gloo is used here for CPU tensors.
        self.comm_device = torch.device(device) if backend == "nccl" else torch.device("cpu")

    @property
    def rank(self) -> int:
        return self.launch.rank

    @property
    def world_size(self) -> int:
        return self.launch.world_size

    @property
    def active(self) -> bool:
        return self.launch.distributed

    @property
    def is_main(self) -> bool:
        return self.launch.is_main

    def share(self, count: int, unit: int = 1) -> range:
        return shares(count, self.world_size, unit)[self.rank]

    # --- collectives (each a no-op in a single process) -----------------------------------------

    @contextlib.contextmanager
    def _collective(self, what: str) -> Iterator[None]:
        try:
            yield
        except torch.OutOfMemoryError:
            raise  # this rank's own failure, not another's
        except RuntimeError as exc:  # torch.distributed.DistError and the backends' own errors
            raise PeerFailed(f"{self.launch.label()}: a collective ({what}) failed: another rank stopped or the connection broke "
                             f"({_reason(exc)}); see that rank's own error") from None

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        """Every rank's `local` rows (first dimension; any count, 0 included), concatenated in rank order."""
        if not self.active:
            return local
        sizes = self._row_counts(local.shape[0])
        padded = torch.zeros((max(sizes), *local.shape[1:]), dtype=local.dtype, device=self.comm_device)
        padded[: local.shape[0]] = local
        parts = [torch.empty_like(padded) for _ in sizes]
        with self._collective("all_gather"):
            dist.all_gather(parts, padded)
        return torch.cat([part[:size] for part, size in zip(parts, sizes)]).to(local.device)

    def _row_counts(self, rows: int) -> list[int]:
        local = torch.tensor([rows], dtype=torch.int64, device=self.comm_device)
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        with self._collective("all_gather"):
            dist.all_gather(parts, local)
        return [int(part.item()) for part in parts]

    def gather_ints(self, values: list[int]) -> list[int]:
        """Every rank's ints (any count), concatenated in rank order."""
        if not self.active:
            return list(values)
        return [int(v) for v in self.gather(torch.tensor(values, dtype=torch.int64).reshape(-1)).tolist()]

    def gather_floats(self, values: list[float]) -> list[float]:
        """Every rank's floats (any count), concatenated in rank order, exactly (as float64)."""
        if not self.active:
            return list(values)
        return self.gather(torch.tensor(values, dtype=torch.float64).reshape(-1)).tolist()

    def gather_objects(self, value: object) -> list[object]:
        """Every rank's small JSON-like value, in rank order (for the report)."""
        if not self.active:
            return [value]
        values: list[object] = [None] * self.world_size
        with self._collective("all_gather_object"):
            dist.all_gather_object(values, value)
        return values

    def broadcast_(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Overwrite `tensor` with rank `src`'s, in place, and return it."""
        if not self.active:
            return tensor
        view = tensor.view(torch.uint8) if tensor.dtype == torch.bool else tensor
        moved = view if view.device == self.comm_device else view.to(self.comm_device)
        with self._collective("broadcast"):
            dist.broadcast(moved, src=src)
        if moved is not view:
            view.copy_(moved)
        return tensor

    def rank0_decides(self, decision: bool) -> bool:
        """Rank 0's `decision`, on every rank (where ranks could decide differently, e.g. on a clock)."""
        if not self.active:
            return decision
        flag = torch.tensor([int(decision)], dtype=torch.int64, device=self.comm_device)
        return bool(self.broadcast_(flag).item())

    def barrier(self) -> None:
        if self.active:
            with self._collective("barrier"):
                dist.barrier()

    # --- the statistic and the masks ------------------------------------------------------------

    def new_statistic(self, in_features: int, device: torch.device | str) -> kernels.RunningSqNorms:
        """A statistic to accumulate into; read it through `complete`."""
        if not self.active:
            return kernels.RunningSqNorms(in_features, device)
        return GatheredSqNorms(in_features, device)

    def complete(self, statistic: kernels.RunningSqNorms) -> torch.Tensor:
        """The statistic over every rank's samples (fp32 [in_features]): a collective in a data-parallel
        run, so every rank completes the same statistics in the same order."""
        if isinstance(statistic, GatheredSqNorms):
            statistic.combine(self)
        return statistic.mean_sq

    def shared_masks(self, method: PruningMethod) -> PruningMethod:
        """`method`, each of its masks selected by one rank and applied on every rank (SharedMasks)."""
        return SharedMasks(method, self) if self.active else method


SINGLE_PROCESS = DataParallel()


class GatheredSqNorms(kernels.RunningSqNorms):
    """One rank's part of the reference's running-mean statistic: the folds it would make are recorded
    (a squared-norm vector and its sample count each), and `combine` folds every rank's, gathered in
    global order, as one process folds them all. `mean_sq` is valid only after `combine`."""

    def __init__(self, in_features: int, device: torch.device | str | None = None) -> None:
        super().__init__(in_features, device)
        self.parts: list[torch.Tensor] = []
        self.counts: list[int] = []
        self.combined = False

    def fold(self, batch_sq_norms: torch.Tensor, samples: int) -> None:
        if self.combined:
            raise RuntimeError("the statistic was already combined across ranks")
        if samples > 0:
            self.parts.append(batch_sq_norms)
            self.counts.append(samples)

    def combine(self, replicas: DataParallel) -> None:
        if self.combined:
            return
        device = self.mean_sq.device
        local = torch.stack(self.parts) if self.parts else torch.zeros(0, self.mean_sq.numel(), device=device)
        gathered, counts = replicas.gather(local.float()), replicas.gather_ints(self.counts)
        self.parts, self.counts, self.combined = [], [], True
        for part, samples in zip(gathered, counts):
            super().fold(part, samples)


class SharedMasks:
    """A pruning method whose masks are selected once and broadcast: every rank ends with identical
    pruned weights by construction. Given several matrices together (`prune_together`, as the schedules
    do), the ranks share the selection, each taking some of the matrices (balanced by size); one matrix
    alone is rank 0's."""

    def __init__(self, method: PruningMethod, replicas: DataParallel) -> None:
        self.method = method
        self.replicas = replicas
        self.name = method.name
        self.needs_statistics = method.needs_statistics
        self.counts_per_row = method.counts_per_row

    def prune_(self, weight: torch.Tensor, sq_norms: torch.Tensor | None, target: SparsityTarget) -> torch.Tensor:
        return self.prune_together([(weight, sq_norms)], target)[0]

    def prune_together(self, items: list[tuple[torch.Tensor, torch.Tensor | None]], target: SparsityTarget
                       ) -> list[torch.Tensor]:
        owners = owners_by_size([weight.numel() for weight, _ in items], self.replicas.world_size)
        rank = self.replicas.rank
        masks: list[torch.Tensor | None] = [
            self.method.prune_(weight, sq_norms, target) if owner == rank else None
            for (weight, sq_norms), owner in zip(items, owners)
        ]
        for index, ((weight, _), owner) in enumerate(zip(items, owners)):
            if owner == rank:
                self.replicas.broadcast_(masks[index], src=owner)
            else:
                mask = self.replicas.broadcast_(torch.empty(weight.shape, dtype=torch.bool, device=weight.device), src=owner)
                weight.masked_fill_(mask, 0)
                masks[index] = mask
        return masks


def owners_by_size(sizes: list[int], ranks: int) -> list[int]:
    """Which rank selects each mask: the largest first, each to the rank with the least so far (the
    lower rank on a tie); the same answer on every rank."""
    load, owners = [0] * ranks, [0] * len(sizes)
    for index in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        owner = min(range(ranks), key=lambda r: (load[r], r))
        owners[index] = owner
        load[owner] += sizes[index]
    return owners


# --- joining and leaving the process group ---------------------------------------------------------


@contextlib.contextmanager
def stopped_by_sigterm(launch: Launch) -> Iterator[None]:
    """While a data-parallel run lasts, SIGTERM (what torchrun sends every surviving rank when one fails)
    raises `Stopped` once, so the run unwinds and removes its partial outputs as Ctrl-C does; a second
    SIGTERM during that clean-up is ignored. Enter it outside everything that cleans up."""
    if not launch.distributed:
        yield
        return
    raised = []

    def stop(_signum, _frame):
        if raised:
            return
        raised.append(True)
        raise Stopped(f"{launch.label()}: stopped by SIGTERM (torchrun stops every rank when one fails; "
                      "see that rank's own error)")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def joined(launch: Launch, device: str, timeout_s: float) -> Iterator[DataParallel]:
    """The process group of a torchrun launch for the duration of a run (SINGLE_PROCESS for a plain
    run): NCCL on CUDA, gloo on CPU; a collective waits at most `timeout_s` for the other ranks. A
    default group the caller already made is used as it is, and left to the caller."""
    if not launch.distributed:
        yield SINGLE_PROCESS
        return
    backend = "nccl" if device.startswith("cuda") else "gloo"
    made_here = not dist.is_initialized()
    if made_here:
        options: dict = {"timeout": datetime.timedelta(seconds=timeout_s)}
        if backend == "nccl":
            # NCCL collectives return before they complete; a blocking wait makes a failed or timed-out one
            # raise in the call, where it becomes PeerFailed, instead of surfacing later or aborting.
            os.environ.setdefault("TORCH_NCCL_BLOCKING_WAIT", "1")
            torch.cuda.set_device(torch.device(device))
            options["device_id"] = torch.device(device)
        try:
            dist.init_process_group(backend, **options)
        except (RuntimeError, ValueError) as exc:
            raise PeerFailed(f"{launch.label()}: joining the process group ({backend}) failed: {_reason(exc)}") from None
    else:
        backend = dist.get_backend()
        if dist.get_world_size() != launch.world_size or dist.get_rank() != launch.rank:
            raise PeerFailed(f"{launch.label()}: the process group already made is rank {dist.get_rank()} of "
                             f"{dist.get_world_size()}, not what WORLD_SIZE and RANK say")
    try:
        yield DataParallel(launch, backend, device)
    finally:
        if made_here:
            with contextlib.suppress(Exception):
                dist.destroy_process_group()


def _reason(exc: BaseException) -> str:
    """The gist of a backend's error: its first sentence, without the source location gloo puts first."""
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    line = re.sub(r"^\[[^\]]*\]\s*", "", line)
    return line.split(". ")[0][:200]


def host_name() -> str:
    return socket.gethostname()


__all__ = [
    "DataParallel", "GatheredSqNorms", "Launch", "PeerFailed", "SINGLE_PROCESS", "SharedMasks", "Stopped", "joined",
    "owners_by_size", "shares", "stopped_by_sigterm",
]
