"""Numbers, ratios and tables as BENCHMARKS.md and the progress lines show them: one spelling of "–" for a
missing figure, and one markdown table writer."""

from __future__ import annotations


def fmt(value, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}{suffix}"


def secs(value: float | None) -> str:
    """Seconds with enough digits to compare small sides (0.04 s) as well as large ones (412.3 s)."""
    if value is None:
        return "–"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def ratio(a: float | None, b: float | None, fmt: str = "{:.2f}×") -> str:
    if a is None or b is None or b == 0:
        return "–"
    return fmt.format(a / b)


def sparsity_label(sparsity_type: str, ratio: float | None) -> str:
    return f"{sparsity_type} {ratio:g}" if ratio is not None else sparsity_type


def md_table(header: list[str], rows: list[list[str]], align: list[str] | None = None, numbers: bool = False) -> str:
    """A markdown table; `numbers`: every column but the first right-aligned."""
    if numbers:
        align = ["---"] + ["---:"] * (len(header) - 1)
    align = align or ["---"] * len(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
