"""The run report: a typed structure (types.Report), report.json (machine-readable) and report.md (for people)."""

from .types import AllocationReport, BlockImportance, MemoryReport, Report
from .writer import render_markdown, write_report

__all__ = ["AllocationReport", "BlockImportance", "MemoryReport", "Report", "render_markdown", "write_report"]
