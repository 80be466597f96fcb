"""The run report as a typed structure: what `run_prune` returns, what report.json holds (`to_json`, in
this field order) and what the Markdown writer, the plot, the benchmarks and `--importance_from` read
back (`Report.load`), by attribute. Imports no torch, so light tools can read reports."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

BLOCK_STATISTICS = ("influence", "outlier")


@dataclass
class BlockImportance:
    """Per-block statistics of the dense model, for the sparsity-allocation policies (prune/importance.py)."""

    influence: list[float] | None = None  # None: absent from the report read back
    outlier: list[float] | None = None  # fraction of scores above owl_m × the block mean (not a percentage)
    owl_m: float | None = None
    measured_on: dict = field(default_factory=dict)  # model and calibration the values came from
    source: str = "measured"  # "measured" (this run) or the report path they were read from
    seconds: float = 0.0

    @property
    def num_blocks(self) -> int:
        return len(self.influence)

    def values(self, statistic: str) -> list[float]:
        if statistic not in BLOCK_STATISTICS:
            raise ValueError(f"unknown block statistic {statistic!r}")
        return list(getattr(self, statistic))


@dataclass
class AllocationReport:
    """How the sparsity was spread over the blocks (report.json `allocation`)."""

    policy: str = "uniform"
    statistic: str | None = None  # the block statistic the policy ranks by
    settings: dict = field(default_factory=dict)
    tier_delta_used: float | None = None
    tiers: list[str] | None = None
    block_types: list[str] = field(default_factory=list)
    block_params: list[int] = field(default_factory=list)
    mean_ratio: float = 0.0  # parameter-weighted mean of the block targets
    block_achieved: list[float] = field(default_factory=list)
    mean_forced: bool = True
    notes: list[str] = field(default_factory=list)


@dataclass
class MemoryReport:
    """What a streamed run holds beside the Python/torch baseline, in MiB (report.json `memory`)."""

    block_weights_mb: float | None = None
    embeddings_mb: float | None = None
    lm_head_mb: float | None = 0.0  # reports from before the field counted no untied head
    hidden_states_mb: float | None = None

    @classmethod
    def from_json(cls, data: dict) -> "MemoryReport":
        return _known(cls, data)

    @property
    def total_mb(self) -> float | None:
        parts = (self.block_weights_mb, self.embeddings_mb, self.lm_head_mb, self.hidden_states_mb)
        return None if any(part is None for part in parts) else sum(parts)


@dataclass
class RankReport:
    """One rank of a data-parallel run: what it ran and what it used."""

    rank: int = 0
    host: str = ""
    device: str = ""
    calibration_samples: list[int] = field(default_factory=list)  # [start, stop) of the calibration samples
    eval_windows: list[int] | None = None  # [start, stop) of the evaluation windows; None: no evaluation
    prune_s: float = 0.0  # its block loop, waits for the other ranks included
    peak_rss_mb: float = 0.0
    peak_device_mb: float | None = None  # CUDA: torch.cuda.max_memory_allocated


@dataclass
class DistributedReport:
    """A data-parallel run (torchrun): how its work was split."""

    world_size: int = 1
    backend: str = ""
    ranks: list[RankReport] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict) -> "DistributedReport":
        ranks = [_known(RankReport, rank) for rank in data.get("ranks", []) if isinstance(rank, dict)]
        return cls(**{**{k: v for k, v in data.items() if k in ("world_size", "backend")}, "ranks": ranks})


@dataclass
class TaskResult:
    """One task's scores. metrics: lm-eval's metric names, with the filter in parentheses where the task
    has several (e.g. "exact_match (strict-match)"); "perplexity" for a perplexity task."""

    task: str = ""
    metrics: dict[str, float | None] = field(default_factory=dict)
    stderr: dict[str, float | None] = field(default_factory=dict)
    examples: int = 0  # examples scored (windows for perplexity)
    num_fewshot: int | None = None
    source: str = ""  # which definition, which file and split
    seconds: float = 0.0
    prompt: str = ""  # the first example's whole prompt, as the model saw it
    response: str | Any = ""  # the model's answer to it
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: the task, its scores, how many examples, how long."""
        values = ", ".join(f"{name} {_number(value)}" for name, value in self.metrics.items())
        shots = "" if self.num_fewshot is None else f", {self.num_fewshot}-shot"
        unit = self.settings.get("unit", "examples")
        return f"{self.task}: {values} ({self.examples} {unit}{shots}, {self.seconds:.1f}s)"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def task_results(items) -> list[TaskResult]:
    return [_known(TaskResult, item) if isinstance(item, dict) else item for item in items or []]


@dataclass
class EvalReport:
    """What `python cli.py eval` writes (results.json)."""

    model: str = ""
    model_source: str = ""
    tasks: list[TaskResult] = field(default_factory=list)
    device: str = ""
    dtype: str = ""
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "EvalReport":
        report = _known(cls, data)
        report.tasks = task_results(report.tasks)
        return report


@dataclass
class Report:
    model: str = ""
    model_source: str = ""
    prune_method: str = ""
    sparsity_type: str = ""
    sparsity_ratio: float = 0.0
    actual_sparsity: float = 0.0
    per_layer: dict[str, float] = field(default_factory=dict)
    block_sparsity: list[float] = field(default_factory=list)
    sparsity_allocation: str = "uniform"
    allocation: AllocationReport = field(default_factory=AllocationReport)
    block_importance: BlockImportance | None = None
    schedule: str = ""
    streamed: bool = False
    activations: str = ""
    resumed_from_block: int | None = None
    ppl_dense: float | None = None
    ppl_pruned: float | None = None
    eval_dataset: str | None = None
    eval_windows: int | None = None
    # --tasks: the dense model's scores (before pruning) and the pruned model's
    tasks_dense: list[TaskResult] = field(default_factory=list)
    tasks_pruned: list[TaskResult] = field(default_factory=list)
    nsamples: int = 0
    seqlen: int = 0
    seed: int = 0
    batch_size: int = 0
    calibration_dataset: str | None = None
    calibration_description: str = ""
    device: str = ""
    dtype: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    memory: MemoryReport = field(default_factory=MemoryReport)
    distributed: DistributedReport | None = None  # None: one process
    versions: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Report":
        """A report back from its JSON form; fields it lacks (an older report) keep their defaults."""
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        if isinstance(values.get("allocation"), dict):
            values["allocation"] = _known(AllocationReport, values["allocation"])
        if isinstance(values.get("memory"), dict):
            values["memory"] = MemoryReport.from_json(values["memory"])
        distributed = values.get("distributed")
        values["distributed"] = DistributedReport.from_json(distributed) if isinstance(distributed, dict) else None
        for name in ("tasks_dense", "tasks_pruned"):
            values[name] = task_results(values.get(name))
        importance = values.get("block_importance")
        values["block_importance"] = _known(BlockImportance, importance) if isinstance(importance, dict) else None
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> "Report":
        """Read report.json (or the --save directory holding one). Raises OSError / ValueError."""
        path = Path(path).expanduser()
        data = json.loads((path / "report.json" if path.is_dir() else path).read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return cls.from_json(data)


def _known(kind, data: dict):
    names = {f.name for f in fields(kind)}
    return kind(**{key: value for key, value in data.items() if key in names})
