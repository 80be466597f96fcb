"""Mask-keeping recovery fine-tuning (`cli.py finetune`): data sources, templates, the kept mask, the
Trainer run."""

from .mask import SparsityMask, zero_counts
from .trainer import FinetuneReport, run_finetune

__all__ = ["FinetuneReport", "SparsityMask", "run_finetune", "zero_counts"]
