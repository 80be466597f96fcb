"""The settings of a pruning run, as `python cli.py prune` takes them: its flags are these fields, and
their defaults are these defaults (the CLI reads them from here). `plan.make_plan` resolves what is
left open (None) and checks every value."""

from __future__ import annotations

from dataclasses import dataclass

# --calibration_format: how a SQuAD record becomes calibration text (answers are never used).
SQUAD_TEXT_FORMATS = {
    "context": "{context}",
    "context_question": "{context} {question}",
    "template": "Context: {context}\nQuestion: {question}",
}
DTYPES = ("float32", "float16", "bfloat16")


@dataclass
class PruneConfig:
    model: str | None = None  # None: the embedded SmolLM2
    prune_method: str = "wanda"
    sparsity_ratio: float | None = None  # None: 0.5, or N/M for N:M
    sparsity_type: str = "unstructured"
    use_variant: bool = False
    nsamples: int | None = None  # None: 128 (32 for the embedded demo)
    seed: int = 0
    calibration_dataset: str | None = None  # None: builtin for the embedded demo, else wikitext2
    calibration_format: str = "context_question"
    calibration_packing: bool = False
    text_field: str | None = None
    text_template: str | None = None
    seqlen: int | None = None  # None: min(2048, the model's context) (512 for the embedded demo)
    batch_size: int = 8
    dtype: str | None = None  # None: float16 on CUDA, float32 on CPU
    device: str | None = None  # None: cuda if available
    eval: str = "auto"
    eval_limit: int | None = None  # None: every window (24 for the embedded demo)
    data_dir: str | None = None
    cache_dir: str | None = None  # None: $WANDA_ENGINE_CACHE or ~/.cache/wanda_engine
    save: str | None = None
    save_model: str | None = None
    overwrite: bool = False
    schedule: str = "reference"
    sparsity_allocation: str = "uniform"
    # Allocation settings; None = the policy's default (see docs/allocation.md).
    importance: str | None = None
    tier_fractions: str | None = None
    tier_delta: float | None = None
    tier_types: str | None = None
    owl_m: float | None = None
    owl_lambda: float | None = None
    importance_from: str | None = None
    trust_remote_code: bool = False
    # Streaming (safetensors sources): blocks read from the shards one at a time; False = whole model.
    stream: bool = True
    resume: bool = False
    checkpoint_every: float = 300.0  # seconds between resume checkpoints of a streamed --save_model run
    progress: bool = True
