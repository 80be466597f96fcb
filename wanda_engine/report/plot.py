"""Per-block plot of the sparsity allocation (importance and sparsity per block, tiers coloured).

matplotlib is a dependency; where it is missing anyway, no PNG is written and
the Markdown report says why.
"""

from __future__ import annotations

from pathlib import Path

from .types import Report

ALLOCATION_PNG = "block_allocation.png"
TIER_COLOURS = {"high": "#2b83ba", "middle": "#fdae61", "low": "#d7191c"}
DEFAULT_COLOUR = "#5e5e5e"
STATISTIC_LABELS = {
    "influence": "influence (1 − cos(in, out))",
    "outlier": "outlier ratio (OWL)",
}


def plot_allocation(report: Report, path: Path) -> str | None:
    """Write the PNG; return None on success, else the reason it was skipped (for report.md)."""
    block_sparsity = report.block_sparsity or []
    if not block_sparsity:
        return "no per-block sparsity in this report"
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return "matplotlib is not installed (`pip install matplotlib`)"

    allocation, importance = report.allocation, report.block_importance
    statistic = allocation.statistic
    values = importance.values(statistic) if statistic and importance is not None else None
    tiers = allocation.tiers
    blocks = list(range(len(block_sparsity)))
    colours = [TIER_COLOURS.get(t, DEFAULT_COLOUR) for t in tiers] if tiers else [DEFAULT_COLOUR] * len(blocks)
    panels = 2 if values else 1
    figure, axes = plt.subplots(panels, 1, figsize=(max(6.0, 0.28 * len(blocks) + 2) + 2.0, 2.6 * panels + 0.6), sharex=True,
                                squeeze=False)
    axes = [row[0] for row in axes]
    if values:
        axes[0].bar(blocks, values, color=colours)
        axes[0].set_ylabel(STATISTIC_LABELS.get(statistic, statistic))
        axes[0].set_title("block importance (dense model, calibration data)")
    ax = axes[-1]
    ax.bar(blocks, block_sparsity, color=colours)
    achieved = allocation.block_achieved
    if achieved:
        ax.plot(blocks, achieved, "k.", label="achieved")
    ax.axhline(report.sparsity_ratio, color="k", linestyle="--", linewidth=0.8, label="overall target")
    low = max(0.0, min(block_sparsity + (achieved or [])) - 0.15)
    ax.set_ylim(low, min(1.0, max(block_sparsity) + 0.12))
    types = allocation.block_types or []
    for block, label in zip(blocks, types):  # N:M tiers: the pattern written inside the bar
        if label != "unstructured":
            ax.text(block, low + 0.01, label, ha="center", va="bottom", fontsize=7, rotation=90, color="white")
    ax.set_ylabel("sparsity")
    ax.set_xlabel("decoder block")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"target sparsity per block (bars), {report.sparsity_allocation}")
    handles, _ = ax.get_legend_handles_labels()
    if tiers:
        handles += [Patch(color=TIER_COLOURS[t], label=f"{t} importance tier") for t in TIER_COLOURS if t in tiers]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return None


def plot_training_curve(history: list[dict], path: Path, title: str = "") -> str | None:
    """Training and held-out loss by step (Trainer's log history); None on success, else why not."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (`pip install matplotlib`)"
    figure, axes = plt.subplots(figsize=(6, 3.5))
    for key, label in (("loss", "training loss"), ("eval_loss", "held-out loss")):
        points = [(entry["step"], entry[key]) for entry in history if key in entry and "step" in entry]
        if points:
            axes.plot(*zip(*points), marker="o" if key == "eval_loss" else None, label=label)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return None
