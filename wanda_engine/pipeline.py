"""The pruning pipeline, stage by stage: plan → load → evaluation text → calibration → block inputs →
prune → evaluate → save → report. `run_prune` runs them in that order; each stage is a function of its
own, so other pipelines can use them one by one:

    plan = make_plan(PruneConfig(model="my-model", stream=False, eval="none"))
    loaded = load(plan)                                      # once
    seqlen = plan.seqlen_for(loaded.model.config)
    calibration = calibrate(plan, loaded, seqlen)
    batches = capture_calibration(plan, loaded, calibration)
    pruned = prune(plan, loaded, batches)                    # loaded.model is pruned in place
    # ... evaluate loaded.model with anything

A streamed model (the default for safetensors sources) is never whole in memory: its evaluation windows
are carried through the blocks beside the calibration batches (`carry_windows`), and its pruned blocks
are written as they finish; `run_prune` does both inside a `PruneRun`.

Launched by torchrun, the run is data-parallel (distributed.py): every rank loads the model and runs
every block on its share of the calibration samples and evaluation windows (`Plan.calibration_share`),
the statistics are combined and the masks shared, and rank 0 alone writes the outputs.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from . import data
from .config import PruneConfig
from .data.base import CalibrationSet
from .digests import files_digest, json_digest, tensors_digest
from .distributed import SINGLE_PROCESS, DataParallel, host_name, joined, stopped_by_sigterm
from .eval import perplexity
from .eval.perplexity import eval_batch_size, eval_windows, perplexity_from_hidden, reference_eval_ids, window_count
from .memory import peak_rss_mb
from .models import decoder_blocks, load_model
from .models.architecture import text_config
from .models.loading import LoadedModel
from .models.streaming import (
    ShardWriter, StreamedBlocks, head_is_stored, load_outside_blocks, model_files, non_block_tensors,
    return_freed_memory,
)
from .outputs import atomic_output_dir, replace_dir
from .plan import Plan, make_plan
from .prune.allocation import Allocation, BlockProfile
from .prune.batches import BlockBatch, capture_block_inputs, copy_batches
from .prune.block_loop import CarriedWindows, PruneOutcome, prune_blocks
from .prune.importance import achieved_block_sparsity, block_profile, check_cached_importance, measure_block_importance
from .eval.harness import score_tasks
from .report import (
    AllocationReport, BlockImportance, DistributedReport, MemoryReport, RankReport, Report, TaskResult, write_report,
)
from .resume import RunCheckpoint, clear_partial, fingerprint
from .run import PruneRun
from .versions import software_versions

Log = Callable[[str], None]


def run_prune(config: PruneConfig, log: Log = print) -> Report:
    """Run the whole pipeline and return the report (also written to --save when given)."""
    plan = make_plan(config)
    log = rank_log(plan, log)
    for note in plan.notes:
        log(note)
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    with stopped_by_sigterm(plan.launch), PruneRun(plan, log) as run, \
            joined(plan.launch, plan.device, config.dist_timeout) as replicas:
        run.replicas = replicas
        if replicas.active:
            log(f"data parallel: {replicas.world_size} ranks ({replicas.backend})"
                + ("" if config.log_all_ranks else "; only rank 0 logs (--log_all_ranks: every rank)"))
        with run.stage("load_s"):
            loaded = run.holds(load(plan, log))
        seqlen = plan.seqlen_for(loaded.model.config)
        _describe_load(plan, loaded, seqlen, log)
        eval_ids = evaluation_tokens(plan, loaded, seqlen, log)
        tasks_dense = evaluate_tasks(plan, loaded, seqlen, "dense", run) if plan.config.dense_eval else []
        with run.stage("calibration_s"):
            calibration = calibrate(plan, loaded, seqlen, log)
            storage, activations = hidden_states_place(plan, loaded, seqlen, eval_ids)
            batches = capture_calibration(plan, loaded, calibration, storage)
        run.windows = carry_windows(plan, loaded, eval_ids, seqlen, storage)
        memory = memory_parts(loaded, _hidden_state_rows(plan, loaded, eval_ids, seqlen), seqlen)
        ppl_dense = None if loaded.streamed else evaluate(plan, loaded, eval_ids, seqlen, "dense", run)
        pruned = prune(plan, loaded, batches, run=run, calibration=calibration, eval_ids=eval_ids, seqlen=seqlen)
        ppl_pruned = evaluate(plan, loaded, eval_ids, seqlen, "pruned", run)
        if loaded.streamed and run.windows is not None:
            ppl_dense, ppl_pruned = evaluate_carried(plan, loaded, run)
        run.timings["eval_s"] = run.eval_seconds
        ranks = describe_ranks(plan, loaded, run, eval_ids, seqlen)
        save(plan, loaded, run)  # before the task scores: a failure there must not lose the pruned model
        drop_rank_checkpoints(run)
        tasks_pruned = evaluate_tasks(plan, loaded, seqlen, "pruned", run)
        run.timings["total_s"] = time.perf_counter() - run.started
        report = make_report(plan, loaded, run, pruned, calibration, seqlen=seqlen, activations=activations,
                             memory=memory, ppl_dense=ppl_dense, ppl_pruned=ppl_pruned,
                             eval_windows=_window_count(plan, eval_ids, seqlen), tasks_dense=tasks_dense,
                             tasks_pruned=tasks_pruned, distributed=ranks)
        if plan.save_dir is not None and replicas.is_main:
            write_report(plan.save_dir, report)
            log(f"report written to {plan.save_dir}/report.json and report.md")
        log("timings: " + ", ".join(f"{name} {seconds:.1f}s" for name, seconds in run.timings.items())
            + f"; peak RSS {report.peak_rss_mb:.0f} MB")
        return report


def rank_log(plan: Plan, log: Log) -> Log:
    """Rank 0 logs; the other ranks of a data-parallel run are quiet unless --log_all_ranks."""
    launch = plan.launch
    if launch.is_main:
        return log
    if plan.config.log_all_ranks:
        return lambda message: log(f"[{launch.label()}] {message}")
    return lambda message: None


# --- load ---------------------------------------------------------------------------------------


def load(plan: Plan, log: Log = print) -> LoadedModel:
    """The model and its tokenizer; a model the run cannot handle is refused on its structure, before
    its weights are read (`Plan.check_structure`). Streamed: a meta skeleton with the embeddings read."""
    config = plan.config
    return load_model(
        config.model, dtype=plan.dtype, device=plan.device, cache_dir=config.cache_dir,
        trust_remote_code=config.trust_remote_code, stream=config.stream, check=plan.check_structure, log=log,
        progress=config.progress,
        # the ranks on one machine share the GGUF cache: one converts, the others wait for it, however long
        wait_for_conversion_s=math.inf if plan.launch.distributed else 0.0,
    )


def _describe_load(plan: Plan, loaded: LoadedModel, seqlen: int, log: Log) -> None:
    log(f"model: {loaded.name} ({loaded.why}; weights: {loaded.source}) on {plan.device}, {plan.dtype}")
    if loaded.streamed:
        log(f"streaming: blocks read one at a time from {loaded.checkpoint.directory} (--no_stream loads the whole model)")
    if plan.embedded and not (plan.config.nsamples and plan.config.seqlen):
        log(f"embedded demo defaults: nsamples={plan.nsamples} seqlen={seqlen} eval_limit={plan.eval_limit} (flags override)")


# --- data ---------------------------------------------------------------------------------------


def evaluation_tokens(plan: Plan, loaded: LoadedModel, seqlen: int, log: Log = print) -> torch.Tensor | None:
    """The evaluation text tokenized once (None for --eval none); C4 cut to the reference's 256 windows."""
    if plan.eval_spec is None:
        return None
    text, description = data.load_eval_text(plan.eval_spec, data_dir=plan.config.data_dir)
    eval_ids = reference_eval_ids(plan.eval_spec, loaded.tokenizer(text, return_tensors="pt").input_ids[0], seqlen)
    log(f"evaluation: {description} ({plan.eval_reason})")
    return eval_ids


def calibrate(plan: Plan, loaded: LoadedModel, seqlen: int, log: Log = print) -> CalibrationSet | None:
    """The calibration samples (None when the method and the allocation need none)."""
    if not plan.uses_calibration:
        return None
    config = plan.config
    calibration = data.load_calibration(
        plan.calibration, loaded.tokenizer, nsamples=plan.nsamples, seqlen=seqlen, seed=config.seed,
        data_dir=config.data_dir, text_field=config.text_field, text_template=config.text_template,
        squad_format=config.calibration_format, packing=config.calibration_packing,
    )
    log(f"calibration data: {calibration.description}")
    return calibration


# --- hidden states at the first block -------------------------------------------------------------


def _window_count(plan: Plan, eval_ids: torch.Tensor | None, seqlen: int) -> int | None:
    return None if eval_ids is None else window_count(eval_ids.numel(), seqlen, plan.eval_limit)


def _window_share(plan: Plan, loaded: LoadedModel, eval_ids: torch.Tensor | None, seqlen: int) -> range:
    """This rank's evaluation windows (none for --eval none): whole batches of --batch_size where they are
    carried through the blocks (streamed), else of the batches `perplexity` scores (it takes this share)."""
    batch_size = plan.config.batch_size
    unit = batch_size if loaded.streamed else eval_batch_size(loaded.model.config, seqlen, batch_size)
    return plan.share(_window_count(plan, eval_ids, seqlen) or 0, unit)


def _hidden_state_rows(plan: Plan, loaded: LoadedModel, eval_ids: torch.Tensor | None, seqlen: int) -> int:
    """Rows of hidden states carried through the blocks (this rank's share): the calibration samples,
    and with streamed evaluation its windows twice (through the dense and through the pruned block)."""
    windows = len(_window_share(plan, loaded, eval_ids, seqlen)) if loaded.streamed else 0
    return len(plan.calibration_share) + 2 * windows


def _hidden_states_bytes(loaded: LoadedModel, rows: int, seqlen: int) -> int:
    hidden = int(getattr(text_config(loaded.model.config), "hidden_size", 0) or 0)
    return rows * seqlen * hidden * loaded.dtype.itemsize


def hidden_states_place(plan: Plan, loaded: LoadedModel, seqlen: int, eval_ids: torch.Tensor | None = None
                        ) -> tuple[torch.device, str]:
    """Where the hidden states live: on the compute device when they fit (with room for a block and its
    intermediates), else in pinned host memory, moved to the device one batch at a time; and in words."""
    rows = _hidden_state_rows(plan, loaded, eval_ids, seqlen)
    model_config = text_config(loaded.model.config)
    hidden = int(getattr(model_config, "hidden_size", 0) or 0)
    intermediate = int(getattr(model_config, "intermediate_size", 0) or 0)
    # Copies alive at once, in units of the inputs: reference = inputs + outputs + slack; sequential
    # = inputs (updated in place) + every batch's MLP intermediate for one block + slack.
    copies = 3 if plan.config.schedule == "reference" else 2 + max(1.0, intermediate / max(hidden, 1))
    nbytes = _hidden_states_bytes(loaded, rows, seqlen)
    size = f"{rows} × {seqlen} × {hidden} hidden states, {nbytes / 2**20:.0f} MiB"
    device = plan.device
    if not device.startswith("cuda"):
        return torch.device(device), f"{device} ({size})"
    free, _total = torch.cuda.mem_get_info(torch.device(device))
    if copies * nbytes < free // 2:
        return torch.device(device), f"{device} ({size})"
    return torch.device("cpu"), f"pinned host memory ({size}; did not fit beside the model on {device})"


def capture_calibration(plan: Plan, loaded: LoadedModel, calibration: CalibrationSet | None,
                        storage: torch.device | None = None) -> list[BlockBatch]:
    """What the first decoder block receives for each calibration batch of this rank's share (none
    without calibration)."""
    if calibration is None:
        return []
    share = plan.calibration_share
    return capture_block_inputs(loaded.model, calibration.input_ids[share.start : share.stop],
                                calibration.attention_mask[share.start : share.stop], plan.config.batch_size,
                                torch.device(plan.device), storage=storage)


def carry_windows(plan: Plan, loaded: LoadedModel, eval_ids: torch.Tensor | None, seqlen: int,
                  storage: torch.device | None = None) -> CarriedWindows | None:
    """Streamed evaluation: the windows' inputs to the first block (this rank's share), to be carried
    through each block beside the calibration batches, through the dense block (dense perplexity) and
    the pruned one."""
    if not loaded.streamed or eval_ids is None:
        return None
    share = _window_share(plan, loaded, eval_ids, seqlen)
    windows = eval_windows(eval_ids, seqlen, plan.eval_limit)[share.start : share.stop]
    dense = capture_block_inputs(loaded.model, windows, torch.ones_like(windows), plan.config.batch_size,
                                 torch.device(plan.device), storage=storage)
    return CarriedWindows(dense=dense, pruned=copy_batches(dense), token_ids=windows)


def memory_parts(loaded: LoadedModel, rows: int, seqlen: int) -> MemoryReport:
    """What a streamed run must hold beside the Python/torch baseline: the largest block's weights, the
    input embeddings, an untied lm_head (read for evaluation and saving; 0 when tied) and one copy of the
    hidden states (the benchmarks compare peak_rss_mb with their sum). Sizes in the model dtype; works
    on a meta skeleton, so it is taken before pruning and nothing it reads can fail once the model is saved."""
    def mib(tensors) -> float:
        return sum(t.numel() * loaded.dtype.itemsize for t in tensors) / 2**20

    model = loaded.model
    try:
        embeddings = model.get_input_embeddings()
        embeddings_mb: float | None = mib(embeddings.parameters())
        head = model.get_output_embeddings()
    except NotImplementedError:  # remote model code without get_input_embeddings / get_output_embeddings
        embeddings_mb, head = None, None
    head_weight = getattr(head, "weight", None)
    if head is None:
        lm_head_mb: float | None = 0.0 if embeddings_mb is not None else None
    elif head_weight is None:  # an output module of unknown make-up
        lm_head_mb = None
    else:
        # As a streamed run reads it; in memory, tied means the very same parameter.
        untied = head_is_stored(model, loaded.checkpoint) if loaded.streamed else head_weight is not embeddings.weight
        lm_head_mb = mib([head_weight]) if untied else 0.0
    return MemoryReport(
        block_weights_mb=max((mib(block.parameters()) for block in decoder_blocks(model)), default=0.0),
        embeddings_mb=embeddings_mb, lm_head_mb=lm_head_mb,
        hidden_states_mb=_hidden_states_bytes(loaded, rows, seqlen) / 2**20,
    )


# --- prune --------------------------------------------------------------------------------------


@dataclass
class Pruned:
    """What the prune stage decided and did."""

    outcome: PruneOutcome
    allocation: Allocation
    profile: BlockProfile
    importance: BlockImportance | None
    notes: list[str] = field(default_factory=list)  # about the allocation
    resumed_from_block: int | None = None


def prune(plan: Plan, loaded: LoadedModel, batches: list[BlockBatch], *, run: PruneRun | None = None,
          calibration: CalibrationSet | None = None, eval_ids: torch.Tensor | None = None,
          seqlen: int | None = None) -> Pruned:
    """Allocate the sparsity over the blocks (measuring block importance when the policy needs it) and
    prune every block; `batches` are advanced through the blocks. With a `run`, the evaluation windows it
    carries go along, a streamed --save_model is written into its partial directory with checkpoints,
    and --resume continues from the last one (`calibration`, `eval_ids` and `seqlen` are then needed for
    the resume fingerprint and the importance's provenance)."""
    if loaded.streamed and run is None:
        raise ValueError("prune(): a streamed model is written block by block as it is pruned, into a PruneRun's "
                         "partial output; pass run= (as run_prune does) or load the model with stream=False")
    log = run.log if run is not None else print
    replicas = run.replicas if run is not None else SINGLE_PROCESS
    model, blocks = loaded.model, decoder_blocks(loaded.model)
    windows = run.windows if run is not None else None
    checkpoint, start_block, outcome_so_far, cached_importance = None, 0, None, plan.cached_importance
    partial_dir = run.partial_dir if run is not None else None
    if partial_dir is not None:
        checkpoint = run.checkpoint = RunCheckpoint(
            partial_dir, fingerprint(plan.config, _input_digests(plan, loaded, calibration, eval_ids)),
            plan.config.checkpoint_every, replicas,
        )
        if plan.config.resume:
            start_block, outcome_so_far, resumed_state = checkpoint.load(batches, windows)
            log(f"resuming from block {start_block} of {len(blocks)} ({partial_dir})")
            if resumed_state.get("importance") is not None:
                cached_importance = BlockImportance(**{**resumed_state["importance"], "source": f"checkpoint in {partial_dir}",
                                                       "seconds": 0.0})
        else:
            _start_partial(partial_dir, run, replicas, checkpoint)

    importance, notes = _block_importance(plan, loaded, batches, cached_importance, seqlen, run, log)
    profile = block_profile(
        model, importance.values(plan.block_statistic) if importance is not None else None,
        row_rounding=plan.method.counts_per_row and not plan.target.structured,
    )
    allocation = plan.allocation.allocate(plan.target, profile, plan.allocation_settings)
    notes += allocation.notes
    for note in notes:
        log(f"allocation: {note}")

    if loaded.streamed:
        writer = ShardWriter(partial_dir, len(blocks)) if partial_dir is not None and replicas.is_main else None
        store = StreamedBlocks(model, loaded.checkpoint, loaded.dtype, plan.device, writer)
    else:
        store = model
    outcome = outcome_so_far or PruneOutcome(block_sparsity=[t.ratio for t in allocation.targets])
    saved_importance = asdict(importance) if importance is not None else None

    def after_block(index: int) -> None:
        if checkpoint is not None and checkpoint.due(index, len(blocks)):
            checkpoint.save(index + 1, batches, windows, outcome, {"importance": saved_importance})

    prune_blocks(
        store, batches, replicas.shared_masks(plan.method), allocation.targets, schedule=plan.schedule,
        progress=plan.config.progress, start=start_block, windows=windows, after_block=after_block, outcome=outcome,
        replicas=replicas,
    )
    batches.clear()  # their hidden states are no longer needed (a weights-only schedule does not advance them)
    if loaded.streamed:
        return_freed_memory()  # before the rest of the model is read (evaluation, saving)
    if run is not None:
        run.timings["prune_s"] = outcome.prune_s
        if loaded.streamed:
            run.timings["block_io_s"] = outcome.block_io_s
    log(f"pruned {outcome.pruned_params:,} of the {outcome.total_params:,} weights in the weight matrices of "
        f"{len(blocks)} blocks: actual sparsity {outcome.actual_sparsity:.4f}")
    return Pruned(outcome=outcome, allocation=allocation, profile=profile, importance=importance, notes=notes,
                  resumed_from_block=start_block if plan.config.resume else None)


def _start_partial(partial_dir, run: PruneRun, replicas: DataParallel, checkpoint: RunCheckpoint) -> None:
    """A fresh partial output for this run: rank 0 removes an earlier run's and makes it; the other
    ranks then add only their own checkpoints (and remove their own leftovers, on a machine of their own)."""
    if replicas.is_main:
        if partial_dir.exists():
            run.log(f"removing the partial output of an earlier interrupted run: {partial_dir}")
        clear_partial(partial_dir)
        partial_dir.mkdir(parents=True)
        run.made_partial = True
    replicas.barrier()
    if not replicas.is_main:
        partial_dir.mkdir(parents=True, exist_ok=True)
        checkpoint.discard_own()


def _input_digests(plan: Plan, loaded: LoadedModel, calibration: CalibrationSet | None,
                   eval_ids: torch.Tensor | None) -> dict[str, str | None]:
    """The contents a resumed run must share with the interrupted one, beside its settings."""
    cached = plan.cached_importance
    return {
        "calibration tokens": tensors_digest(calibration.input_ids, calibration.attention_mask) if calibration else None,
        "evaluation tokens": tensors_digest(eval_ids) if eval_ids is not None else None,
        "model files": files_digest(model_files(loaded.checkpoint)),
        "--importance_from block importance": json_digest(asdict(cached)) if cached is not None else None,
    }


def _block_importance(plan: Plan, loaded: LoadedModel, batches: list[BlockBatch], cached: BlockImportance | None,
                      seqlen: int | None, run: PruneRun | None, log: Log) -> tuple[BlockImportance | None, list[str]]:
    """The block statistic the allocation policy ranks by: reused (--importance_from, a checkpoint) or
    measured in one dense pass; and notes on how a reused one differs from this run."""
    if plan.block_statistic is None:
        return None, []
    blocks = decoder_blocks(loaded.model)
    measured_on = {
        "model": loaded.name, "calibration_dataset": plan.calibration, "nsamples": plan.nsamples,
        "seqlen": seqlen or plan.seqlen_for(loaded.model.config), "seed": plan.config.seed,
    }
    if cached is not None:
        notes = check_cached_importance(
            cached, model_name=loaded.name, num_blocks=len(blocks), statistic=plan.block_statistic,
            owl_m=plan.allocation_settings.owl_m, measured_on=measured_on,
        )
        log(f"block importance: read from {cached.source}")
        return cached, notes
    dense_blocks = StreamedBlocks(loaded.model, loaded.checkpoint, loaded.dtype, plan.device) if loaded.streamed else loaded.model
    importance = measure_block_importance(
        dense_blocks, batches, owl_m=plan.allocation_settings.owl_m, progress=plan.config.progress, measured_on=measured_on,
        replicas=run.replicas if run is not None else SINGLE_PROCESS,
    )
    if run is not None:
        run.timings["importance_s"] = importance.seconds
    log(f"block importance: one dense pass over {len(blocks)} blocks in {importance.seconds:.1f}s")
    return importance, []


# --- evaluate -----------------------------------------------------------------------------------


def evaluate(plan: Plan, loaded: LoadedModel, eval_ids: torch.Tensor | None, seqlen: int, label: str,
             run: PruneRun | None = None) -> float | None:
    """Perplexity of an in-memory model as it is now (None for --eval none or a streamed model, whose
    perplexities come from the carried windows: `evaluate_carried`); timed into eval_s."""
    if eval_ids is None or loaded.streamed:
        return None
    started = time.perf_counter()
    ppl, windows = perplexity(
        loaded.model, eval_ids, seqlen, limit=plan.eval_limit, batch_size=plan.config.batch_size,
        progress=plan.config.progress, desc=f"{label} ppl", replicas=run.replicas if run is not None else SINGLE_PROCESS,
    )
    if run is not None:
        run.eval_seconds += time.perf_counter() - started
    (run.log if run is not None else print)(f"{label} perplexity: {ppl:.3f} ({windows} windows of {seqlen})")
    return ppl


def evaluate_carried(plan: Plan, loaded: LoadedModel, run: PruneRun) -> tuple[float, float]:
    """Dense and pruned perplexity of a streamed model from the windows carried through its blocks; the
    logits come from the model's own forward (everything outside the blocks is read for it)."""
    windows, started = run.windows, time.perf_counter()
    load_outside_blocks(loaded.model, loaded.checkpoint, loaded.dtype, plan.device)
    as_tuple, replicas = windows.blocks_return_tuple, run.replicas
    ppl_dense = perplexity_from_hidden(loaded.model, [b.hidden for b in windows.dense], windows.token_ids,
                                       blocks_return_tuple=as_tuple, replicas=replicas)
    ppl_pruned = perplexity_from_hidden(loaded.model, [b.hidden for b in windows.pruned], windows.token_ids,
                                        blocks_return_tuple=as_tuple, replicas=replicas)
    run.eval_seconds += windows.seconds + time.perf_counter() - started
    count, seqlen = sum(replicas.gather_ints([windows.token_ids.shape[0]])), windows.token_ids.shape[1]
    run.log(f"dense perplexity: {ppl_dense:.3f}; pruned perplexity: {ppl_pruned:.3f} ({count} windows of {seqlen}, streamed)")
    run.windows = None
    return ppl_dense, ppl_pruned


def evaluate_tasks(plan: Plan, loaded: LoadedModel, seqlen: int, label: str, run: PruneRun | None = None
                   ) -> list[TaskResult]:
    """--tasks scores of the in-memory model as it is now (lm-eval tasks and perplexity tasks, as
    `cli.py eval` scores them); timed into tasks_s."""
    if not plan.tasks:
        return []
    started = time.perf_counter()
    config = plan.config
    scores = score_tasks(loaded.model, loaded.tokenizer, plan.tasks, limit=config.task_limit, batch_size=config.batch_size,
                         seqlen=seqlen, max_gen_toks=config.max_gen_toks, progress=config.progress, label=label,
                         log=run.log if run is not None else print)
    if run is not None:
        run.timings["tasks_s"] = run.timings.get("tasks_s", 0.0) + time.perf_counter() - started
    return scores.results


# --- save ---------------------------------------------------------------------------------------


def save(plan: Plan, loaded: LoadedModel, run: PruneRun | None = None) -> None:
    """Write the pruned model to --save_model: a streamed one's blocks are already in the run's partial
    directory (the rest is added and the directory renamed into place), a whole one is saved at once."""
    model_dir = plan.model_dir
    if model_dir is None or not plan.launch.is_main:  # rank 0 writes a data-parallel run's model
        return
    if loaded.streamed and (run is None or run.partial_dir is None):
        raise ValueError("save(): a streamed model's pruned blocks are in the run's partial output; pass the run")
    started = time.perf_counter()
    partial_dir = run.partial_dir if run is not None else None
    if partial_dir is not None:
        writer = ShardWriter(partial_dir, len(decoder_blocks(loaded.model)))
        writer.finish(non_block_tensors(loaded.model, loaded.checkpoint, loaded.dtype), loaded.model.config, loaded.tokenizer)
        clear_partial(partial_dir / "resume")
        replace_dir(partial_dir, model_dir)
    else:
        with atomic_output_dir(model_dir) as tmp:
            loaded.model.save_pretrained(tmp, safe_serialization=True)
            loaded.tokenizer.save_pretrained(tmp)
    if run is not None:
        run.timings["save_model_s"] = time.perf_counter() - started
        run.log(f"pruned model saved to {model_dir}")


def drop_rank_checkpoints(run: PruneRun) -> None:
    """Data-parallel: once rank 0 has saved the model, the other ranks remove their resume checkpoints
    (on a shared file system rank 0 already removed them with the partial output). Until then they are
    kept, so that a failure while saving can still be resumed."""
    replicas = run.replicas
    if not replicas.active:
        return
    replicas.barrier()
    if not replicas.is_main and run.checkpoint is not None:
        run.checkpoint.discard_own(empty_dirs=True)


# --- report -------------------------------------------------------------------------------------


def describe_ranks(plan: Plan, loaded: LoadedModel, run: PruneRun, eval_ids: torch.Tensor | None, seqlen: int
                   ) -> DistributedReport | None:
    """What each rank of a data-parallel run ran and used (a collective: every rank calls it, once its
    work is done)."""
    replicas = run.replicas
    if not replicas.active:
        return None
    calibration, share = plan.calibration_share, _window_share(plan, loaded, eval_ids, seqlen)
    windows = None if eval_ids is None else [share.start, share.stop]
    device_mb = torch.cuda.max_memory_allocated(plan.device) / 2**20 if plan.device.startswith("cuda") else None
    mine = RankReport(rank=replicas.rank, host=host_name(), device=plan.device,
                      calibration_samples=[calibration.start, calibration.stop], eval_windows=windows,
                      prune_s=run.timings.get("prune_s", 0.0), peak_rss_mb=peak_rss_mb(), peak_device_mb=device_mb)
    ranks = [RankReport(**rank) for rank in replicas.gather_objects(asdict(mine))]
    return DistributedReport(world_size=replicas.world_size, backend=replicas.backend or "", ranks=ranks)


def make_report(plan: Plan, loaded: LoadedModel, run: PruneRun, pruned: Pruned, calibration: CalibrationSet | None, *,
                seqlen: int, activations: str, memory: MemoryReport, ppl_dense: float | None,
                ppl_pruned: float | None, eval_windows: int | None, tasks_dense: list[TaskResult] | None = None,
                tasks_pruned: list[TaskResult] | None = None, distributed: DistributedReport | None = None) -> Report:
    config, outcome, allocation, profile = plan.config, pruned.outcome, pruned.allocation, pruned.profile
    return Report(
        model=loaded.name,
        model_source=loaded.source,
        prune_method=plan.method.name,
        sparsity_type=plan.target.label,
        sparsity_ratio=plan.target.ratio,
        actual_sparsity=outcome.actual_sparsity,
        per_layer=outcome.per_layer,
        block_sparsity=outcome.block_sparsity,
        sparsity_allocation=config.sparsity_allocation,
        allocation=AllocationReport(
            policy=config.sparsity_allocation,
            statistic=plan.block_statistic,
            settings=plan.allocation.settings(plan.allocation_settings),
            tier_delta_used=allocation.delta,
            tiers=allocation.tiers,
            block_types=[t.label for t in allocation.targets],
            block_params=list(profile.params),
            mean_ratio=sum(r * n for r, n in zip(allocation.ratios, profile.params)) / max(sum(profile.params), 1),
            block_achieved=achieved_block_sparsity(loaded.model, outcome.per_layer),
            mean_forced=allocation.mean_forced,
            notes=pruned.notes,
        ),
        block_importance=pruned.importance,
        schedule=config.schedule,
        streamed=loaded.streamed,
        activations=activations,
        resumed_from_block=pruned.resumed_from_block,
        ppl_dense=ppl_dense,
        ppl_pruned=ppl_pruned,
        eval_dataset=plan.eval_spec,
        eval_windows=eval_windows,
        tasks_dense=tasks_dense or [],
        tasks_pruned=tasks_pruned or [],
        nsamples=plan.nsamples if plan.uses_calibration else 0,
        seqlen=seqlen,
        seed=config.seed,
        batch_size=config.batch_size,
        calibration_dataset=plan.calibration if plan.uses_calibration else None,
        calibration_description=calibration.description if calibration is not None else "not needed by this method",
        device=plan.device,
        dtype=plan.dtype,
        timings=run.timings,
        peak_rss_mb=peak_rss_mb(),
        memory=memory,
        distributed=distributed,
        versions=software_versions("transformers"),
        config=asdict(config),
    )
