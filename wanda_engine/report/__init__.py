"""The run report: a typed structure (types.Report), report.json (machine-readable) and report.md (for people)."""

from .types import (
    AllocationReport, BlockImportance, DistributedReport, EvalReport, MemoryReport, RankReport, Report, TaskResult,
)
from .writer import render_eval_markdown, render_markdown, write_eval_report, write_report

__all__ = [
    "AllocationReport", "BlockImportance", "DistributedReport", "EvalReport", "MemoryReport", "RankReport", "Report",
    "TaskResult", "render_eval_markdown", "render_markdown", "write_eval_report", "write_report",
]
