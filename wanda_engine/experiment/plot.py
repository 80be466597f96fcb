"""The matrix's grouped bar chart: one group per task score, one bar per row; perplexity on its own axis."""

from __future__ import annotations

from pathlib import Path


def plot_results(results: dict, path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed"
    rows = results["rows"]
    columns = list(dict.fromkeys(key for row in rows for key in row["scores"]))
    scores = [c for c in columns if not c.endswith("perplexity")]
    perplexities = [c for c in columns if c.endswith("perplexity")]
    # fractions (acc, exact_match) drawn as percentages beside SQuAD's percent scores
    fractions = {c for c in scores if c.split(" ", 1)[-1].startswith(("acc", "exact_match"))}
    panels = [(scores, "score (%)"), (perplexities, "perplexity (lower is better)")]
    panels = [(cols, label) for cols, label in panels if cols]
    figure, axes = plt.subplots(1, len(panels), figsize=(5 + 2.2 * len(columns), 4.5), squeeze=False,
                                gridspec_kw={"width_ratios": [max(1, len(cols)) for cols, _ in panels]})
    width = 0.8 / max(1, len(rows))
    for axis, (cols, label) in zip(axes[0], panels):
        for index, row in enumerate(rows):
            values = [(row["scores"].get(c) or 0.0) * (100 if c in fractions else 1) for c in cols]
            positions = [i + (index - (len(rows) - 1) / 2) * width for i in range(len(cols))]
            axis.bar(positions, values, width, label=row["label"])
        axis.set_xticks(range(len(cols)))
        axis.set_xticklabels([c.replace(" ", "\n", 1) for c in cols], fontsize=8)
        axis.set_ylabel(label)
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return None
