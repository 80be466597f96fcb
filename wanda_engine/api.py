"""The pruning pipeline behind `python cli.py prune`: load → calibrate → prune → evaluate → save."""

from __future__ import annotations

import math
import platform
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import data
from .errors import UserError
from .memory import peak_rss_mb
from .eval import perplexity
from .eval.perplexity import eval_windows as cut_eval_windows, perplexity_from_hidden
from .models import decoder_blocks, load_model
from .models.cache import describe, remove_conversions
from .digests import files_digest, json_digest, tensors_digest
from .models.architecture import (
    check_blocks_share_kwargs, check_pattern_fits, check_prunable, context_length, text_config,
)
from .models.loading import default_cache_dir
from .models.streaming import (
    ShardWriter, StreamedBlocks, head_is_stored, load_outside_blocks, model_files, non_block_tensors,
    return_freed_memory,
)
from .outputs import OutputDir, atomic_output_dir, replace_dir
from .resume import RunCheckpoint, clear_partial, copy_batches, fingerprint, partial_dir_for
from .prune.allocation import ALLOCATIONS, allocation_options
from .prune.importance import (
    achieved_block_sparsity, block_profile, check_cached_importance, importance_from_report, load_block_importance,
    measure_block_importance,
)
from .prune.methods import METHODS
from .prune.schedule import PruneOutcome, Riders, capture_block_inputs, prune_blocks
from .prune.schedules import SCHEDULES
from .prune.sparsity import SparsityTarget, parse_sparsity
from .report import write_report

# The embedded demo model runs on CPU by default, where the reference's 128 × 2048 calibration would
# take most of an hour: these smaller defaults keep the no-argument run under 3 minutes on 2 cores.
EMBEDDED_DEFAULTS = {"nsamples": 32, "seqlen": 512, "eval_limit": 24}
DEFAULT_NSAMPLES = 128
DEFAULT_SEQLEN_CAP = 2048
PRUNE_METHODS = ("wanda", "magnitude")  # what --prune_method names


@dataclass
class PruneConfig:
    model: str | None = None
    prune_method: str = "wanda"
    sparsity_ratio: float | None = None
    sparsity_type: str = "unstructured"
    use_variant: bool = False
    nsamples: int | None = None
    seed: int = 0
    calibration_dataset: str | None = None
    calibration_format: str = "context_question"
    calibration_packing: bool = False
    text_field: str | None = None
    text_template: str | None = None
    seqlen: int | None = None
    batch_size: int = 8
    dtype: str | None = None
    device: str | None = None
    eval: str = "auto"
    eval_limit: int | None = None
    data_dir: str | None = None
    cache_dir: str | None = None
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


def _resolve_device(device: str | None) -> str:
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


def _validate(config: PruneConfig) -> None:
    """Checks that need no model, so bad input fails before any loading."""
    if config.nsamples is not None and config.nsamples < 1:
        raise UserError(f"--nsamples {config.nsamples}: must be at least 1, e.g. 128")
    if config.seqlen is not None and config.seqlen < 2:
        raise UserError(f"--seqlen {config.seqlen}: must be at least 2, e.g. 2048")
    if config.batch_size < 1:
        raise UserError(f"--batch_size {config.batch_size}: must be at least 1")
    if config.eval_limit is not None and config.eval_limit < 1:
        raise UserError(f"--eval_limit {config.eval_limit}: must be at least 1 (use --eval none to skip evaluation)")
    SCHEDULES.get(config.schedule)
    if config.dtype not in (None, "float32", "float16", "bfloat16"):
        raise UserError(f"--dtype {config.dtype!r}: choose float32, float16 or bfloat16")
    if config.calibration_format not in ("context", "context_question", "template"):
        raise UserError(f"--calibration_format {config.calibration_format!r}: choose context, context_question or template")
    ALLOCATIONS.get(config.sparsity_allocation)
    if config.resume and not config.save_model:
        raise UserError("--resume continues a streamed --save_model run; give the same --save_model DIR as the interrupted run")
    if config.resume and not config.stream:
        raise UserError("--resume works with streaming only; drop --no_stream")
    if not math.isfinite(config.checkpoint_every) or config.checkpoint_every < 0:
        raise UserError(f"--checkpoint_every {config.checkpoint_every:g}: must be a number of seconds >= 0, e.g. 300")
    if config.prune_method not in PRUNE_METHODS:  # METHODS also holds the variant, chosen by --use_variant
        raise UserError(f"--prune_method {config.prune_method!r}: unknown pruning method; choose one of {', '.join(PRUNE_METHODS)}"
                        + (" (the variant is --prune_method wanda --use_variant)" if config.prune_method == "wanda_variant" else ""))
    if config.use_variant and config.prune_method != "wanda":
        raise UserError(f"--use_variant applies to --prune_method wanda, not {config.prune_method!r}; drop --use_variant")


def _eval_window_count(eval_ids: torch.Tensor, seqlen: int, limit: int | None) -> int:
    count = eval_ids.numel() // seqlen
    return min(count, limit) if limit else count


def _hidden_states_bytes(loaded, windows: int, seqlen: int) -> int:
    hidden = int(getattr(text_config(loaded.model.config), "hidden_size", 0) or 0)
    return windows * seqlen * hidden * loaded.dtype.itemsize


def _memory_parts(loaded, windows: int, seqlen: int) -> dict[str, float | None]:
    """What a streamed run must hold, in MiB, beside the Python/torch baseline: the largest block's
    weights, the input embeddings, an untied lm_head (read for evaluation and saving; 0 when tied) and
    one copy of the hidden states (report.json `memory`; the benchmarks compare peak_rss_mb with their
    sum). Sizes in the model dtype; works on a meta skeleton."""
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
        # As load_head decides for a streamed run; in memory, tied means the very same parameter.
        untied = head_is_stored(model, loaded.checkpoint) if loaded.streamed else head_weight is not embeddings.weight
        lm_head_mb = mib([head_weight]) if untied else 0.0
    return {
        "block_weights_mb": max((mib(block.parameters()) for block in decoder_blocks(model)), default=0.0),
        "embeddings_mb": embeddings_mb,
        "lm_head_mb": lm_head_mb,
        "hidden_states_mb": _hidden_states_bytes(loaded, windows, seqlen) / 2**20,
    }


def _activation_storage(
    device: str, loaded, nsamples: int, eval_windows: int, seqlen: int, schedule: str
) -> tuple[torch.device, str]:
    """Where the hidden states live: on the compute device when they fit (with room for a block and its
    intermediates), else in pinned host memory, moved to the device one batch at a time."""
    model_config = text_config(loaded.model.config)
    hidden = int(getattr(model_config, "hidden_size", 0) or 0)
    intermediate = int(getattr(model_config, "intermediate_size", 0) or 0)
    # Copies alive at once, in units of the inputs: reference = inputs + outputs + slack; sequential
    # = inputs (updated in place) + every batch's MLP intermediate for one block + slack.
    copies = 3 if schedule == "reference" else 2 + max(1.0, intermediate / max(hidden, 1))
    nbytes = _hidden_states_bytes(loaded, nsamples + eval_windows, seqlen)
    size = f"{(nsamples + eval_windows)} × {seqlen} × {hidden} hidden states, {nbytes / 2**20:.0f} MiB"
    if not device.startswith("cuda"):
        return torch.device(device), f"{device} ({size})"
    free, _total = torch.cuda.mem_get_info(torch.device(device))
    if copies * nbytes < free // 2:
        return torch.device(device), f"{device} ({size})"
    return torch.device("cpu"), f"pinned host memory ({size}; did not fit beside the model on {device})"


def run_prune(config: PruneConfig, log=print) -> dict:
    """Run the whole pipeline and return the report (also written to --save when given).

    The output directories are claimed (made, checked writable, locked) before any work and released on
    every exit path; a second run aimed at one of them meanwhile is refused."""
    started = time.perf_counter()
    _validate(config)
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
    _resolve_device(config.device)
    claimed: list[OutputDir] = []
    try:
        for output in outputs.values():
            claimed.append(output)  # before claim(): released on every path, however far the claim got
            note = output.claim()
            if note:
                log(f"note: {note}")
        return _run(config, target, policy, allocation_settings, cached_importance,
                    save_dir=outputs["--save"].target if "--save" in outputs else None,
                    model_dir=outputs["--save_model"].target if "--save_model" in outputs else None,
                    log=log, started=started)
    finally:
        for output in claimed:
            output.release()


def _run(config: PruneConfig, target: SparsityTarget, policy, allocation_settings, cached_importance, *,
         save_dir: Path | None, model_dir: Path | None, log, started: float) -> dict:
    block_statistic = policy.statistic(allocation_settings)
    method_name = "wanda_variant" if config.use_variant else config.prune_method
    method = METHODS.get(method_name)
    schedule = SCHEDULES.get(config.schedule)
    if config.schedule == "sequential" and target.structured and method.needs_statistics:
        log(f"note: on SmolLM2, --schedule sequential gave higher perplexity than --schedule reference at N:M sparsity "
            f"(2:4: +5.6-7.1%, 4:8: +0.2-3.8%; docs/schedules.md); compare the two on your model at {config.sparsity_type}")
    device = _resolve_device(config.device)
    dtype = config.dtype or ("float16" if device.startswith("cuda") else "float32")
    embedded = config.model is None
    calibration = config.calibration_dataset or ("builtin" if embedded else "wikitext2")
    if config.calibration_dataset is None:
        why = "embedded demo, works offline" if embedded else "the recommended general-purpose default"
        log(f"calibration: {calibration} (no --calibration_dataset given; {why})")
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    timings: dict[str, float] = {}

    # --- load ---
    # Resolved before loading, so that a bad --eval, and a model this run cannot handle (checked on
    # its structure, before its weights are read), fail before the long stages.
    eval_spec, eval_reason = data.resolve_eval_with_reason(config.eval, calibration, config.data_dir)
    measure_importance = block_statistic is not None and cached_importance is None
    batches_used = method.needs_statistics or measure_importance
    defaults = EMBEDDED_DEFAULTS if embedded else {}

    def seqlen_for(model_config) -> int:
        return config.seqlen or defaults.get("seqlen", min(DEFAULT_SEQLEN_CAP, context_length(model_config)))

    def check_model(structure: torch.nn.Module) -> None:
        check_prunable(structure)
        if target.structured:
            check_pattern_fits(structure, target.n, target.m)
        if method.needs_statistics:
            schedule.check_block(decoder_blocks(structure)[0])
        seqlen, context = seqlen_for(structure.config), context_length(structure.config)
        if seqlen > context:
            raise UserError(f"--seqlen {seqlen}: longer than the model's context ({context}); use --seqlen {context} or less")
        if batches_used or (config.stream and eval_spec is not None):  # block-0 kwargs replayed in every block
            check_blocks_share_kwargs(structure.config, seqlen)

    stage = time.perf_counter()
    loaded = load_model(
        config.model, dtype=dtype, device=device, cache_dir=config.cache_dir,
        trust_remote_code=config.trust_remote_code, stream=config.stream, check=check_model, log=log,
        progress=config.progress,
    )
    timings["load_s"] = time.perf_counter() - stage
    partial_dir = partial_dir_for(model_dir) if loaded.streamed and model_dir is not None else None
    checkpoint = None
    try:
        model, tokenizer = loaded.model, loaded.tokenizer
        log(f"model: {loaded.name} ({loaded.why}; weights: {loaded.source}) on {device}, {dtype}")
        if loaded.streamed:
            log(f"streaming: blocks read one at a time from {loaded.checkpoint.directory} (--no_stream loads the whole model)")
        nsamples = config.nsamples or defaults.get("nsamples", DEFAULT_NSAMPLES)
        seqlen = seqlen_for(model.config)
        eval_limit = config.eval_limit or defaults.get("eval_limit")
        if embedded and not (config.nsamples and config.seqlen):
            log(f"embedded demo defaults: nsamples={nsamples} seqlen={seqlen} eval_limit={eval_limit} (flags override)")

        # --- evaluation text ---
        eval_ids = None
        if eval_spec is not None:
            text, eval_description = data.load_eval_text(eval_spec, data_dir=config.data_dir)
            eval_ids = tokenizer(text, return_tensors="pt").input_ids[0]
            if eval_spec == "c4":  # the reference scores only the first 256 windows of its C4 validation text
                eval_ids = eval_ids[: 256 * seqlen]
            log(f"evaluation: {eval_description} ({eval_reason})")

        # --- calibration ---
        stage = time.perf_counter()
        batches = []
        calibration_description = "not needed by this method"
        if batches_used:
            calib = data.load_calibration(
                calibration, tokenizer, nsamples=nsamples, seqlen=seqlen, seed=config.seed, data_dir=config.data_dir,
                text_field=config.text_field, text_template=config.text_template,
                squad_format=config.calibration_format, packing=config.calibration_packing,
            )
            calibration_description = calib.description
            log(f"calibration data: {calib.description}")
        # Hidden-state rows carried through the blocks: the calibration samples, and with streamed evaluation
        # its windows twice (through the dense and through the pruned block).
        calibration_rows = nsamples if batches_used else 0
        eval_rows = 0 if eval_ids is None or not loaded.streamed else 2 * _eval_window_count(eval_ids, seqlen, eval_limit)
        storage, activations_where = _activation_storage(device, loaded, calibration_rows, eval_rows, seqlen, config.schedule)
        if batches_used:
            batches = capture_block_inputs(
                model, calib.input_ids, calib.attention_mask, config.batch_size, torch.device(device), storage=storage
            )
        timings["calibration_s"] = time.perf_counter() - stage
        riders = None
        windows = None
        if loaded.streamed and eval_ids is not None:
            # Streamed evaluation: the windows ride through each block beside the calibration batches,
            # through the dense block (dense perplexity) and the pruned one (pruned perplexity).
            windows = cut_eval_windows(eval_ids, seqlen, eval_limit)
            dense = capture_block_inputs(
                model, windows, torch.ones_like(windows), config.batch_size, torch.device(device), storage=storage
            )
            riders = Riders(dense=dense, pruned=copy_batches(dense))

        # report.json `memory`, taken before pruning so that nothing it reads can fail once the model is saved.
        memory = _memory_parts(loaded, calibration_rows + eval_rows, seqlen)
        eval_seconds: list[float] = []

        def evaluate(label: str) -> tuple[float | None, int | None]:
            """Perplexity of the model as it is now (None when --eval none), timed into eval_s."""
            if eval_ids is None:
                return None, None
            stage = time.perf_counter()
            ppl, windows = perplexity(
                model, eval_ids, seqlen, limit=eval_limit, batch_size=config.batch_size, progress=config.progress,
                desc=f"{label} ppl",
            )
            eval_seconds.append(time.perf_counter() - stage)
            log(f"{label} perplexity: {ppl:.3f} ({windows} windows of {seqlen})")
            return ppl, windows

        ppl_dense, eval_windows = (None, None) if loaded.streamed else evaluate("dense")

        # --- prune ---
        blocks = decoder_blocks(model)
        resumed_state: dict = {}
        start_block, outcome_so_far = 0, None
        if partial_dir is not None:
            inputs = {
                "calibration tokens": tensors_digest(calib.input_ids, calib.attention_mask) if batches_used else None,
                "evaluation tokens": tensors_digest(eval_ids) if eval_ids is not None else None,
                "model files": files_digest(model_files(loaded.checkpoint)),
                "--importance_from block importance": json_digest(cached_importance.to_report()) if cached_importance else None,
            }
            checkpoint = RunCheckpoint(partial_dir, fingerprint(config, inputs), config.checkpoint_every)
            if config.resume:
                start_block, outcome_so_far, resumed_state = checkpoint.load(batches, riders)
                log(f"resuming from block {start_block} of {len(blocks)} ({partial_dir})")
                if resumed_state.get("importance") is not None:
                    cached_importance = importance_from_report(resumed_state["importance"], source=f"checkpoint in {partial_dir}")
            else:
                if partial_dir.exists():
                    log(f"removing the partial output of an earlier interrupted run: {partial_dir}")
                clear_partial(partial_dir)
                partial_dir.mkdir(parents=True)
        dense_blocks = StreamedBlocks(model, loaded.checkpoint, loaded.dtype, device) if loaded.streamed else model
        importance = None
        allocation_notes: list[str] = []
        if block_statistic is not None:
            measured_on = {
                "model": loaded.name, "calibration_dataset": calibration, "nsamples": nsamples, "seqlen": seqlen,
                "seed": config.seed,
            }
            if cached_importance is not None:
                allocation_notes += check_cached_importance(
                    cached_importance, model_name=loaded.name, num_blocks=len(blocks), statistic=block_statistic,
                    owl_m=allocation_settings.owl_m, measured_on=measured_on,
                )
                importance = cached_importance
                log(f"block importance: read from {importance.source}")
            else:
                importance = measure_block_importance(
                    dense_blocks, batches, owl_m=allocation_settings.owl_m, progress=config.progress, measured_on=measured_on
                )
                timings["importance_s"] = importance.seconds
                log(f"block importance: one dense pass over {len(blocks)} blocks in {importance.seconds:.1f}s")
        profile = block_profile(
            model, importance.values(block_statistic) if importance is not None else None,
            row_rounding=method_name == "wanda" and not target.structured,
        )
        allocation = policy.allocate(target, profile, allocation_settings)
        allocation_notes += allocation.notes
        for note in allocation_notes:
            log(f"allocation: {note}")
        writer = ShardWriter(partial_dir, len(blocks)) if partial_dir is not None else None
        pruned_blocks = StreamedBlocks(model, loaded.checkpoint, loaded.dtype, device, writer) if loaded.streamed else model

        def after_block(index: int) -> None:
            if checkpoint is not None and checkpoint.due(index, len(blocks)):
                checkpoint.save(index + 1, batches, riders, outcome_box[0], {"importance": importance.to_report() if importance is not None else None})

        outcome_box = [outcome_so_far or PruneOutcome(block_sparsity=[t.ratio for t in allocation.targets])]
        outcome = prune_blocks(
            pruned_blocks, batches, method, allocation.targets, schedule=schedule, progress=config.progress,
            start=start_block, riders=riders, after_block=after_block, outcome=outcome_box[0],
        )
        batches.clear()  # their hidden states are no longer needed
        if loaded.streamed:
            return_freed_memory()  # before the head (evaluation) and the rest of the model (saving) are read
        timings["prune_s"] = outcome.prune_s
        if loaded.streamed:
            timings["block_io_s"] = outcome.block_io_s
        log(f"pruned {outcome.pruned_params:,} of the {outcome.total_params:,} weights in the weight matrices of {len(blocks)} "
            f"blocks: actual sparsity {outcome.actual_sparsity:.4f}")

        if loaded.streamed:
            if riders is not None:
                stage = time.perf_counter()
                load_outside_blocks(model, loaded.checkpoint, loaded.dtype, device)
                as_tuple = riders.blocks_return_tuple
                ppl_dense = perplexity_from_hidden(model, [b.hidden for b in riders.dense], windows, blocks_return_tuple=as_tuple)
                ppl_pruned = perplexity_from_hidden(model, [b.hidden for b in riders.pruned], windows, blocks_return_tuple=as_tuple)
                eval_windows = int(windows.shape[0])
                eval_seconds.append(riders.seconds + time.perf_counter() - stage)
                log(f"dense perplexity: {ppl_dense:.3f}; pruned perplexity: {ppl_pruned:.3f} ({eval_windows} windows of {seqlen}, streamed)")
                del riders
            else:
                ppl_pruned = None
        else:
            ppl_pruned, _ = evaluate("pruned")
        timings["eval_s"] = sum(eval_seconds)

        if model_dir is not None:
            stage = time.perf_counter()
            if writer is not None:
                writer.finish(non_block_tensors(model, loaded.checkpoint, loaded.dtype), model.config, tokenizer)
                clear_partial(partial_dir / "resume")
                replace_dir(partial_dir, model_dir)
            else:
                with atomic_output_dir(model_dir) as tmp:
                    model.save_pretrained(tmp, safe_serialization=True)
                    tokenizer.save_pretrained(tmp)
            timings["save_model_s"] = time.perf_counter() - stage
            log(f"pruned model saved to {model_dir}")

        timings["total_s"] = time.perf_counter() - started
        report = {
            "model": loaded.name,
            "model_source": loaded.source,
            "prune_method": method_name,
            "sparsity_type": target.label,
            "sparsity_ratio": target.ratio,
            "actual_sparsity": outcome.actual_sparsity,
            "per_layer": outcome.per_layer,
            "block_sparsity": outcome.block_sparsity,
            "sparsity_allocation": config.sparsity_allocation,
            "allocation": {
                "policy": config.sparsity_allocation,
                "statistic": block_statistic,
                "settings": policy.settings(allocation_settings),
                "tier_delta_used": allocation.delta,
                "tiers": allocation.tiers,
                "block_types": [t.label for t in allocation.targets],
                "block_params": list(profile.params),
                "mean_ratio": sum(r * n for r, n in zip(allocation.ratios, profile.params)) / max(sum(profile.params), 1),
                "block_achieved": achieved_block_sparsity(model, outcome.per_layer),
                "mean_forced": allocation.mean_forced,
                "notes": allocation_notes,
            },
            "block_importance": importance.to_report() if importance is not None else None,
            "schedule": config.schedule,
            "streamed": loaded.streamed,
            "activations": activations_where,
            "resumed_from_block": start_block if config.resume else None,
            "ppl_dense": ppl_dense,
            "ppl_pruned": ppl_pruned,
            "eval_dataset": eval_spec,
            "eval_windows": eval_windows,
            "nsamples": nsamples if batches_used else 0,
            "seqlen": seqlen,
            "seed": config.seed,
            "batch_size": config.batch_size,
            "calibration_dataset": calibration if batches_used else None,
            "calibration_description": calibration_description,
            "device": device,
            "dtype": dtype,
            "timings": timings,
            "peak_rss_mb": peak_rss_mb(),
            "memory": memory,
            "versions": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "transformers": __import__("transformers").__version__,
            },
            "config": asdict(config),
        }
        if save_dir is not None:
            write_report(save_dir, report)
            log(f"report written to {save_dir}/report.json and report.md")
        log(
            "timings: " + ", ".join(f"{name} {seconds:.1f}s" for name, seconds in timings.items())
            + f"; peak RSS {report['peak_rss_mb']:.0f} MB"
        )
        return report
    except BaseException:
        if partial_dir is not None and partial_dir.exists():
            if checkpoint is not None and checkpoint.valid:
                log(f"stopped: the blocks done so far are kept in {partial_dir}; rerun the same command with --resume to continue")
            elif not config.resume:  # this run made it and checkpointed nothing; a refused resume leaves it as it was
                clear_partial(partial_dir)
        raise
    finally:
        loaded.close()


def run_cache(cache_dir: str | None, *, remove: list[str] = (), remove_all: bool = False, log=print) -> None:
    """`python cli.py cache`: remove the named conversions (or all), then list what the cache holds."""
    cache_root = Path(cache_dir) if cache_dir else default_cache_dir()
    if remove or remove_all:
        removed = remove_conversions(cache_root, None if remove_all else list(remove))
        freed = sum(conversion.size_bytes for conversion in removed)
        log(f"removed {len(removed)} conversion(s), {freed / 2**20:,.0f} MB freed")
    for line in describe(cache_root):
        log(line)

