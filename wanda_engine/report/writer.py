"""Rendering and writing the run report."""

from __future__ import annotations

import json
from pathlib import Path

from ..outputs import atomic_output_dir
from .plot import ALLOCATION_PNG, plot_allocation


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _allocation_section(report: dict, plot_skipped: str | None) -> list[str]:
    allocation = report.get("allocation")
    block_sparsity = report.get("block_sparsity") or []
    if not allocation or not block_sparsity:
        return []
    importance = report.get("block_importance") or {}
    statistic = allocation.get("statistic")
    values = importance.get(statistic) if statistic else None
    tiers = allocation.get("tiers") or [None] * len(block_sparsity)
    types = allocation.get("block_types") or [None] * len(block_sparsity)
    achieved = allocation.get("block_achieved") or [None] * len(block_sparsity)
    settings = dict(allocation.get("settings") or {})
    if "tier_delta" in settings and settings["tier_delta"] is None and allocation.get("tier_delta_used") is not None:
        settings["tier_delta"] = f"auto ({allocation['tier_delta_used']:.3g})"
    settings = ", ".join(f"{k}={v}" for k, v in settings.items()) or "—"
    mean = allocation.get("mean_ratio")
    lines = [
        "## Sparsity allocation",
        "",
        f"Policy **{allocation.get('policy')}** ({settings}); parameter-weighted mean of the block targets "
        f"{_fmt(mean, 4)}{'' if allocation.get('mean_forced', True) else ' (achieved, not forced to the target)'}; "
        f"achieved {report['actual_sparsity']:.4f}.",
    ]
    if statistic:
        source = importance.get("source", "measured")
        where = "measured in this run" if source == "measured" else f"reused from {source}"
        lines.append(f"Block statistic: {statistic} ({where}; dense model, calibration data).")
    for note in allocation.get("notes") or []:
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


def render_markdown(report: dict, plot_skipped: str | None = None) -> str:
    """The Markdown report; `plot_skipped` is why the allocation plot is absent (None: it was written)."""
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
    # Before the long per-layer table, so the plot is near the top.
    at = lines.index("## Sparsity per layer")
    lines[at:at] = _allocation_section(report, plot_skipped)
    return "\n".join(lines)


def write_report(target: Path, report: dict) -> None:
    """Write report.json and report.md into `target` atomically."""
    with atomic_output_dir(Path(target)) as tmp:
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        plot_skipped = plot_allocation(report, tmp / ALLOCATION_PNG) if report.get("allocation") else "no allocation"
        (tmp / "report.md").write_text(render_markdown(report, plot_skipped))
