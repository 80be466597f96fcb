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
    # Task scores of the pruned model (and of the dense one before it), as `cli.py eval` computes them.
    tasks: str | None = None
    task_limit: int | None = None  # the first N examples of each task; None: all
    num_fewshot: int | None = None  # None: each task's own default
    max_gen_toks: int = 256
    squad_unanswerable: bool = False
    dense_eval: bool = True  # score the dense model on --tasks too (before pruning)
    # Data-parallel runs (torchrun): how long a collective waits for the other ranks, and whether ranks
    # other than 0 print their logs too.
    dist_timeout: float = 1800.0
    log_all_ranks: bool = False
    progress: bool = True


@dataclass
class EvalConfig:
    """The settings of `python cli.py eval` (its flags are these fields, with these defaults)."""

    tasks: str = ""  # comma-separated: wikitext2, c4, squad, gsm8k, boolq, wanda_zero_shot, any lm-eval task, a text file
    model: str | None = None  # None: the embedded SmolLM2
    limit: int | None = None  # the first N examples (windows for perplexity) of each task; None: all
    num_fewshot: int | None = None  # None: each task's own default
    data_dir: str | None = None
    batch_size: int = 8
    seqlen: int | None = None  # perplexity windows; None: as `prune` (512 embedded, else min(2048, context))
    max_gen_toks: int = 256  # lm-eval's default cap on generated tokens (gsm8k, squad)
    squad_unanswerable: bool = False
    device: str | None = None
    dtype: str | None = None
    cache_dir: str | None = None
    save: str | None = None
    overwrite: bool = False
    trust_remote_code: bool = False
    progress: bool = True


@dataclass
class FinetuneConfig:
    """The settings of `python cli.py finetune` (its flags are these fields, with these defaults)."""

    model: str | None = None  # the pruned model (a --save_model directory); None: the embedded SmolLM2
    dataset: str = "squad"  # squad, gsm8k, boolq, wikitext2 (train splits), or a .txt / .jsonl file
    template: str | None = None  # plain, qa, alpaca; None: plain for running text, qa for records
    output: str | None = None
    lora: bool = False
    lora_rank: int = 8
    lora_alpha: float = 16.0
    keep_adapter: bool = False  # --lora: save the adapter unmerged (a peft adapter directory, not a whole model)
    max_steps: int = 100
    lr: float = 1e-4
    weight_decay: float = 0.0
    batch_size: int = 4
    seqlen: int = 256
    eval_examples: int = 32  # held out from the fine-tuning data for the evaluation loss
    eval_every: int | None = None  # steps between evaluation losses; None: max_steps // 5
    seed: int = 0
    data_dir: str | None = None
    device: str | None = None
    cache_dir: str | None = None
    overwrite: bool = False
    trust_remote_code: bool = False
    progress: bool = True


@dataclass
class ExperimentConfig:
    """The settings of `python cli.py experiment`; the size flags override the --config file."""

    output: str | None = None
    model: str | None = None  # None: the embedded SmolLM2
    config: str | None = None  # TOML matrix (wanda_engine/experiment/matrix.py); None: the default study
    data_dir: str | None = None
    sparsity_ratio: float | None = None
    nsamples: int | None = None
    tasks: str | None = None
    task_limit: int | None = None
    max_gen_toks: int | None = None
    max_steps: int | None = None
    finetune_seqlen: int | None = None
    lora: bool | None = None
    device: str | None = None
    cache_dir: str | None = None
    progress: bool = True
