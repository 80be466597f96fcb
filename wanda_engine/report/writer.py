"""Rendering and writing the run report."""

from __future__ import annotations

import json
from pathlib import Path

from ..outputs import atomic_output_dir


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render_markdown(report: dict) -> str:
    timings = report.get("timings", {})
    lines = [
        f"# Pruning report: {report['model']}",
        "",
        "| | |",
        "|---|---|",
        f"| method | {report['prune_method']} ({report['sparsity_type']}, target {report['sparsity_ratio']:g}) |",
        f"| actual sparsity (pruned linears) | {report['actual_sparsity']:.4f} |",
        f"| calibration | {report['calibration_dataset']}: {report['nsamples']} × {report['seqlen']} tokens, seed {report['seed']} |",
        f"| calibration detail | {report.get('calibration_description', '')} |",
        f"| evaluation | {report.get('eval_dataset') or 'none'} ({_fmt(report.get('eval_windows'))} windows) |",
        f"| perplexity dense → pruned | {_fmt(report.get('ppl_dense'))} → {_fmt(report.get('ppl_pruned'))} |",
        f"| schedule / allocation | {report.get('schedule')} / {report.get('sparsity_allocation')} |",
        f"| device / dtype | {report['device']} / {report['dtype']} |",
        f"| peak RSS | {report['peak_rss_mb']:.0f} MB |",
        "",
        "## Timings (s)",
        "",
        "| stage | seconds |",
        "|---|---|",
        *[f"| {name} | {seconds:.2f} |" for name, seconds in timings.items()],
        "",
        "## Sparsity per layer",
        "",
        "| layer | sparsity |",
        "|---|---|",
        *[f"| {name} | {value:.4f} |" for name, value in report.get("per_layer", {}).items()],
        "",
    ]
    return "\n".join(lines)


def write_report(target: Path, report: dict) -> None:
    """Write report.json and report.md into `target` atomically."""
    with atomic_output_dir(Path(target)) as tmp:
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (tmp / "report.md").write_text(render_markdown(report))
