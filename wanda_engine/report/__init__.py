"""The run report: report.json (machine-readable) and report.md (for people)."""

from .writer import render_markdown, write_report

__all__ = ["render_markdown", "write_report"]
