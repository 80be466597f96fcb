"""The engine's entry points for callers: `run_prune` (what `python cli.py prune` runs) and its
`PruneConfig`; the stages it is made of are in `wanda_engine.pipeline`."""

from .config import PruneConfig
from .pipeline import run_prune

__all__ = ["PruneConfig", "run_prune"]
