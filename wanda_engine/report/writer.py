"""Rendering and writing the run report."""

from __future__ import annotations

import json
from pathlib import Path

from ..outputs import atomic_output_dir
from .plot import ALLOCATION_PNG, plot_allocation
from .types import Report


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _allocation_section(report: Report, plot_skipped: str | None) -> list[str]:
    allocation, block_sparsity = report.allocation, report.block_sparsity or []
    if not block_sparsity:
        return []
    importance = report.block_importance
    statistic = allocation.statistic
    values = importance.values(statistic) if statistic and importance is not None else None
    tiers = allocation.tiers or [None] * len(block_sparsity)
    types = allocation.block_types or [None] * len(block_sparsity)
    achieved = allocation.block_achieved or [None] * len(block_sparsity)
    settings = dict(allocation.settings or {})
    if "tier_delta" in settings and settings["tier_delta"] is None and allocation.tier_delta_used is not None:
        settings["tier_delta"] = f"auto ({allocation.tier_delta_used:.3g})"
    settings = ", ".join(f"{k}={v}" for k, v in settings.items()) or "—"
    lines = [
        "## Sparsity allocation",
        "",
        f"Policy **{allocation.policy}** ({settings}); parameter-weighted mean of the block targets "
        f"{_fmt(allocation.mean_ratio, 4)}{'' if allocation.mean_forced else ' (achieved, not forced to the target)'}; "
        f"achieved {report.actual_sparsity:.4f}.",
    ]
    if statistic:
        source = importance.source if importance is not None else "measured"
        where = "measured in this run" if source == "measured" else f"reused from {source}"
        lines.append(f"Block statistic: {statistic} ({where}; dense model, calibration data).")
    for note in allocation.notes or []:
        lines.append(f"Note: {note}.")
    lines.append("")
    if plot_skipped is None:
        lines += [f"![importance and sparsity per block]({ALLOCATION_PNG})", ""]
    else:
        lines += [f"(No plot: {plot_skipped}.)", ""]
    header = "| block | tier | type |" + (f" {statistic} |" if values else "") + " target | achieved |"
    lines += [header, "|---" * (header.count("|") - 1) + "|"]
    for index, ratio in enumerate(block_sparsity):
        row = f"| {index} | {tiers[index] or '—'} | {types[index] or '—'} |"
        if values:
            row += f" {_fmt(values[index], 4)} |"
        row += f" {ratio:.4f} | {_fmt(achieved[index], 4)} |"
        lines.append(row)
    lines.append("")
    return lines


def render_markdown(report: Report, plot_skipped: str | None = None) -> str:
    """The Markdown report; `plot_skipped` is why the allocation plot is absent (None: it was written)."""
    lines = [
        f"# Pruning report: {report.model}",
        "",
        "| | |",
        "|---|---|",
        f"| method | {report.prune_method} ({report.sparsity_type}, target {report.sparsity_ratio:g}) |",
        f"| actual sparsity (pruned linears) | {report.actual_sparsity:.4f} |",
        f"| calibration | {report.calibration_dataset}: {report.nsamples} × {report.seqlen} tokens, seed {report.seed} |",
        f"| calibration detail | {report.calibration_description} |",
        f"| evaluation | {report.eval_dataset or 'none'} ({_fmt(report.eval_windows)} windows) |",
        f"| perplexity dense → pruned | {_fmt(report.ppl_dense)} → {_fmt(report.ppl_pruned)} |",
        f"| schedule / allocation | {report.schedule} / {report.sparsity_allocation} |",
        f"| device / dtype | {report.device} / {report.dtype} |",
        f"| peak RSS | {report.peak_rss_mb:.0f} MB |",
        "",
        "## Timings (s)",
        "",
        "| stage | seconds |",
        "|---|---|",
        *[f"| {name} | {seconds:.2f} |" for name, seconds in report.timings.items()],
        "",
        "## Sparsity per layer",
        "",
        "| layer | sparsity |",
        "|---|---|",
        *[f"| {name} | {value:.4f} |" for name, value in report.per_layer.items()],
        "",
    ]
    # Before the long per-layer table, so the plot is near the top.
    at = lines.index("## Sparsity per layer")
    lines[at:at] = _allocation_section(report, plot_skipped)
    return "\n".join(lines)


def write_report(target: Path, report: Report) -> None:
    """Write report.json and report.md into `target` atomically."""
    with atomic_output_dir(Path(target)) as tmp:
        (tmp / "report.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
        plot_skipped = plot_allocation(report, tmp / ALLOCATION_PNG)
        (tmp / "report.md").write_text(render_markdown(report, plot_skipped))
