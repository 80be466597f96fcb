"""The prune × fine-tune × evaluate matrix (`cli.py experiment`)."""

from .matrix import Matrix, Row, load_matrix
from .runner import run_experiment

__all__ = ["Matrix", "Row", "load_matrix", "run_experiment"]
