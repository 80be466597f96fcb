"""The engine's entry points for callers: `run_prune` (what `python cli.py prune` runs) with its
`PruneConfig`, and `run_eval` (`python cli.py eval`) with its `EvalConfig`; the stages `run_prune` is
made of are in `wanda_engine.pipeline`, the task scoring in `wanda_engine.eval.harness`."""

from .config import EvalConfig, PruneConfig
from .evaluate import run_eval
from .pipeline import run_prune

__all__ = ["EvalConfig", "PruneConfig", "run_eval", "run_prune"]
