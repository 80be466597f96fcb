"""`cli.py` with a fault injected into one rank of a torchrun launch, for tests/test_distributed.py:

    torchrun --nproc_per_node 2 tests/distributed_fault.py prune ...      # with WANDA_TEST_FAULT=RANK:BLOCK:KIND

KIND `raise`: that rank raises a UserError (bad input found late); `oom`: torch.OutOfMemoryError; `kill`:
it kills itself with SIGKILL.
Either happens in the middle of block BLOCK, when the rank is about to take part in the first collective
of the block (combining a statistic), so the other ranks are waiting on it.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import cli  # noqa: E402
from wanda_engine.distributed import DataParallel  # noqa: E402
from wanda_engine.errors import UserError  # noqa: E402
from wanda_engine.prune import block_loop  # noqa: E402


def _inject(rank: int, block: int, kind: str) -> None:
    if int(os.environ.get("RANK", "0")) != rank:
        return
    current = {"block": -1}
    as_block_store = block_loop.as_block_store

    def tracking_store(blocks):
        store = as_block_store(blocks)
        load = store.load

        def tracked_load(index):
            current["block"] = index
            return load(index)

        store.load = tracked_load
        return store

    complete = DataParallel.complete

    def faulty_complete(self, statistic):
        if current["block"] == block:
            if kind == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if kind == "oom":
                raise torch.OutOfMemoryError(f"injected: tried to allocate 2.00 GiB in block {block}")
            raise UserError(f"injected fault in block {block}")
        return complete(self, statistic)

    block_loop.as_block_store = tracking_store
    DataParallel.complete = faulty_complete


if __name__ == "__main__":
    fault = os.environ.get("WANDA_TEST_FAULT")
    if fault:
        rank_text, block_text, kind = fault.split(":")
        _inject(int(rank_text), int(block_text), kind)
    sys.exit(cli.main())
