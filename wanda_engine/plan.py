"""A run's settings resolved into a plan: every default filled in and every check that needs no model
made here, before anything is loaded; the checks on the model's structure (made before its weights are
read) are the plan's too (`Plan.check_structure`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn as nn

from . import data
from .config import DTYPES, PruneConfig
from .data.squad import check_format
from .distributed import Launch, shares
from .errors import UserError
from .eval.harness import check_fits_context, check_task_limits
from .eval.tasks import TaskRequest, TaskSpec, resolve_tasks
from .models.architecture import (
    check_blocks_share_kwargs, check_pattern_fits, check_prunable, context_length,
)
from .models.blocks import decoder_blocks
from .outputs import OutputDir
from .prune.allocation import ALLOCATIONS, AllocationOptions, AllocationPolicy, allocation_options
from .prune.importance import load_block_importance
from .prune.methods import METHODS, PruningMethod
from .prune.schedules import SCHEDULES, Schedule, schedule_for
from .prune.sparsity import SparsityTarget, parse_sparsity
from .report.types import BlockImportance

# The embedded demo model runs on CPU by default, where the reference's 128 × 2048 calibration would
# take most of an hour: smaller defaults keep the no-argument run within a few minutes on 2 cores.
EMBEDDED_DEFAULTS = {"nsamples": 32, "seqlen": 512, "eval_limit": 24}
DEFAULT_NSAMPLES = 128
DEFAULT_SEQLEN_CAP = 2048


@dataclass
class Plan:
    config: PruneConfig
    target: SparsityTarget
    method: PruningMethod  # the variant when --use_variant
    schedule: Schedule  # what prunes each block with `method` (schedules.schedule_for)
    allocation: AllocationPolicy
    allocation_settings: AllocationOptions
    block_statistic: str | None  # what the allocation policy ranks blocks by, if anything
    cached_importance: BlockImportance | None  # --importance_from
    outputs: dict[str, OutputDir]  # "--save" / "--save_model" → the checked directory (claimed by the run)
    device: str
    dtype: str
    embedded: bool  # no --model: the embedded SmolLM2 and its demo defaults
    calibration: str  # the calibration source
    uses_calibration: bool  # the method's statistics or the importance measurement need calibration batches
    nsamples: int
    eval_limit: int | None
    eval_spec: str | None  # None: --eval none
    eval_reason: str
    tasks: list[TaskSpec] = field(default_factory=list)  # --tasks, resolved (files checked)
    notes: list[str] = field(default_factory=list)  # said before the run starts
    launch: Launch = field(default_factory=Launch)  # which rank of a torchrun launch (rank 0 of 1: a plain run)

    @property
    def save_dir(self) -> Path | None:
        return self.outputs["--save"].target if "--save" in self.outputs else None

    @property
    def model_dir(self) -> Path | None:
        return self.outputs["--save_model"].target if "--save_model" in self.outputs else None

    @property
    def calibration_share(self) -> range:
        """The calibration samples this rank runs: a contiguous share of whole batches (all of them in
        a plain run)."""
        return self.share(self.nsamples if self.uses_calibration else 0, self.config.batch_size)

    def share(self, count: int, unit: int) -> range:
        """This rank's contiguous share of `count` items in whole units of `unit` (distributed.shares)."""
        return shares(count, self.launch.world_size, unit)[self.launch.rank]

    @property
    def measures_importance(self) -> bool:
        return self.block_statistic is not None and self.cached_importance is None

    def seqlen_for(self, model_config) -> int:
        """--seqlen, or the default for this model (`default_seqlen`)."""
        return self.config.seqlen or default_seqlen(model_config, self.embedded)

    def check_structure(self, structure: nn.Module) -> None:
        """Refuse a model this run cannot handle, from its structure (parameters may be on meta)."""
        check_prunable(structure)
        if self.target.structured:
            check_pattern_fits(structure, self.target.n, self.target.m)
        self.schedule.check_block(decoder_blocks(structure)[0])
        seqlen, context = self.seqlen_for(structure.config), context_length(structure.config)
        if seqlen > context:
            raise UserError(f"--seqlen {seqlen}: longer than the model's context ({context}); use --seqlen {context} or less")
        if self.tasks:
            check_fits_context(self.tasks, seqlen, self.config.max_gen_toks, context)
        if self.uses_calibration or (self.config.stream and self.eval_spec is not None):  # block-0 kwargs replayed in every block
            check_blocks_share_kwargs(structure.config, seqlen)


def default_seqlen(model_config, embedded: bool) -> int:
    """Tokens per window when --seqlen is not given: the demo's for the embedded model, else the model's
    context capped at 2048."""
    return EMBEDDED_DEFAULTS["seqlen"] if embedded else min(DEFAULT_SEQLEN_CAP, context_length(model_config))


def make_plan(config: PruneConfig) -> Plan:
    """Resolve `config`; every bad value is a one-line UserError here, before any loading."""
    _check_values(config)
    target = parse_sparsity(config.sparsity_type, config.sparsity_ratio)
    policy = ALLOCATIONS.get(config.sparsity_allocation)
    allocation_settings = allocation_options(
        config.sparsity_allocation, target, importance=config.importance, tier_fractions=config.tier_fractions,
        tier_delta=config.tier_delta, tier_types=config.tier_types, owl_m=config.owl_m, owl_lambda=config.owl_lambda,
        importance_from=config.importance_from,
    )
    cached_importance = load_block_importance(config.importance_from) if config.importance_from else None
    outputs = {flag: OutputDir(path, flag, config.overwrite)
               for flag, path in (("--save", config.save), ("--save_model", config.save_model)) if path}
    if len(outputs) == 2:
        report_dir, model_dir = outputs["--save"].target.resolve(), outputs["--save_model"].target.resolve()
        if report_dir == model_dir or report_dir in model_dir.parents or model_dir in report_dir.parents:
            # each is replaced whole when it is written: one inside the other would be lost
            raise UserError(f"--save {config.save!r} and --save_model {config.save_model!r}: one is or contains the "
                            "other; give them separate directories")
    launch = Launch.from_env()
    device = resolve_device(config.device)
    if launch.distributed:
        device = rank_device(device, config.device, launch)
    method = METHODS.get(config.prune_method)
    if config.use_variant:
        if not hasattr(method, "variant"):
            raise UserError(f"--use_variant applies to --prune_method wanda, not {config.prune_method!r}; drop --use_variant")
        method = method.variant()
    schedule = schedule_for(method, config.schedule)
    notes = []
    if config.schedule == "sequential" and target.structured and method.needs_statistics:
        notes.append(f"note: on SmolLM2, --schedule sequential gave higher perplexity than --schedule reference at N:M "
                     f"sparsity (2:4: +5.6-7.1%, 4:8: +0.2-3.8%; docs/schedules.md); compare the two on your model at "
                     f"{config.sparsity_type}")
    embedded = config.model is None
    calibration = config.calibration_dataset or ("builtin" if embedded else "wikitext2")
    if config.calibration_dataset is None:
        why = "embedded demo, works offline" if embedded else "the recommended general-purpose default"
        notes.append(f"calibration: {calibration} (no --calibration_dataset given; {why})")
    eval_spec, eval_reason = data.resolve_eval_with_reason(config.eval, calibration, config.data_dir)
    tasks = []
    if config.tasks:
        tasks = resolve_tasks(config.tasks, TaskRequest(config.data_dir, config.num_fewshot, config.squad_unanswerable))
        if config.stream:  # lm-eval runs the model whole
            config = replace(config, stream=False)
            notes.append("--tasks: the model is loaded whole (task evaluation runs the whole model), not streamed")
    block_statistic = policy.statistic(allocation_settings)
    defaults = EMBEDDED_DEFAULTS if embedded else {}
    uses_calibration = method.needs_statistics or (block_statistic is not None and cached_importance is None)
    nsamples = config.nsamples or defaults.get("nsamples", DEFAULT_NSAMPLES)
    if launch.distributed:
        _check_distributed(config, launch, nsamples if uses_calibration else None)
        if not launch.is_main and not config.log_all_ranks:  # one progress bar per run, rank 0's
            config = replace(config, progress=False)
    return Plan(
        config=config, target=target, method=method, schedule=schedule, allocation=policy,
        allocation_settings=allocation_settings, block_statistic=block_statistic, cached_importance=cached_importance,
        outputs=outputs, device=device, dtype=resolve_dtype(config.dtype, device),
        embedded=embedded, calibration=calibration, uses_calibration=uses_calibration, nsamples=nsamples,
        eval_limit=config.eval_limit or defaults.get("eval_limit"), eval_spec=eval_spec, eval_reason=eval_reason,
        tasks=tasks, notes=notes, launch=launch,
    )


def rank_device(device: str, given: str | None, launch: Launch) -> str:
    """The device of one rank of a torchrun launch: on CUDA, the GPU of its LOCAL_RANK."""
    if not device.startswith("cuda"):
        return device
    if given not in (None, "auto") and torch.device(given).index is not None:
        raise UserError(f"--device {given}: under torchrun each rank computes on the GPU numbered by its LOCAL_RANK; "
                        "pass --device cuda (or choose the GPUs with CUDA_VISIBLE_DEVICES)")
    count = torch.cuda.device_count()
    if launch.local_rank >= count:
        raise UserError(f"LOCAL_RANK {launch.local_rank}: only {count} GPU(s) are visible to this process; "
                        f"start at most {count} processes per machine (torchrun --nproc_per_node {count})")
    return f"cuda:{launch.local_rank}"


def _check_distributed(config: PruneConfig, launch: Launch, nsamples: int | None) -> None:
    """What a data-parallel run refuses, checked on every rank alike before any collective."""
    if config.tasks:
        raise UserError(f"--tasks runs in one process, not under torchrun ({launch.world_size} processes here); prune "
                        "with torchrun and --save_model, then score with `python cli.py eval --model DIR --tasks ...`")
    if nsamples is not None:
        batches = -(-nsamples // config.batch_size)
        if batches < launch.world_size:
            fixes = [f"--batch_size {nsamples // launch.world_size} or less"] if nsamples >= launch.world_size else []
            fixes.append(f"--nsamples {(launch.world_size - 1) * config.batch_size + 1} or more")
            raise UserError(f"--nsamples {nsamples} with --batch_size {config.batch_size} makes {batches} calibration "
                            f"batch(es) for {launch.world_size} ranks, and every rank needs one; use {' or '.join(fixes)}, "
                            "or start fewer ranks")


def resolve_device(device: str | None) -> str:
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise UserError(f"--device {device!r}: not a torch device; use cpu, cuda or cuda:N") from None
    if kind not in ("cpu", "cuda"):
        raise UserError(f"--device {device!r}: the engine computes on cpu or cuda only; use --device cpu or cuda")
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device is available here; use --device cpu")
    return device


def check_seqlen_and_batch(seqlen: int | None, batch_size: int) -> None:
    """--seqlen (None: the default) and --batch_size, as every command that runs windows takes them."""
    if seqlen is not None and seqlen < 2:
        raise UserError(f"--seqlen {seqlen}: must be at least 2, e.g. 2048")
    if batch_size < 1:
        raise UserError(f"--batch_size {batch_size}: must be at least 1")


def check_dtype(dtype: str | None) -> None:
    if dtype not in (None, *DTYPES):
        raise UserError(f"--dtype {dtype!r}: choose {', '.join(DTYPES[:-1])} or {DTYPES[-1]}")


def resolve_dtype(dtype: str | None, device: str) -> str:
    """--dtype checked, or the default for the device: float16 on CUDA, float32 elsewhere."""
    check_dtype(dtype)
    return dtype or ("float16" if device.startswith("cuda") else "float32")


def _check_values(config: PruneConfig) -> None:
    """Checks of single values and of flags that only make sense together."""
    if config.nsamples is not None and config.nsamples < 1:
        raise UserError(f"--nsamples {config.nsamples}: must be at least 1, e.g. 128")
    check_seqlen_and_batch(config.seqlen, config.batch_size)
    if config.eval_limit is not None and config.eval_limit < 1:
        raise UserError(f"--eval_limit {config.eval_limit}: must be at least 1 (use --eval none to skip evaluation)")
    if config.prune_method == "wanda_variant":  # the variant is an option of wanda, not a method of its own
        raise UserError("--prune_method 'wanda_variant': unknown pruning method; the variant is --prune_method wanda --use_variant")
    METHODS.get(config.prune_method)
    SCHEDULES.get(config.schedule)
    check_dtype(config.dtype)
    check_format(config.calibration_format)
    ALLOCATIONS.get(config.sparsity_allocation)
    if config.resume and not config.save_model:
        raise UserError("--resume continues a streamed --save_model run; give the same --save_model DIR as the interrupted run")
    if config.resume and not config.stream:
        raise UserError("--resume works with streaming only; drop --no_stream")
    if config.tasks:
        check_task_limits(config.task_limit, config.max_gen_toks, limit_flag="--task_limit")
        if config.resume:
            raise UserError("--tasks needs the whole model in memory and --resume a streamed run; drop --tasks and score "
                            "the saved model with `cli.py eval --model DIR --tasks ...`")
    elif not config.dense_eval:
        raise UserError("--no_dense_eval skips the dense model's --tasks scores; give --tasks, or drop --no_dense_eval")
    if not math.isfinite(config.dist_timeout) or config.dist_timeout <= 0:
        raise UserError(f"--dist_timeout {config.dist_timeout:g}: must be a number of seconds > 0, e.g. 1800")
    if not math.isfinite(config.checkpoint_every) or config.checkpoint_every < 0:
        raise UserError(f"--checkpoint_every {config.checkpoint_every:g}: must be a number of seconds >= 0, e.g. 300")
