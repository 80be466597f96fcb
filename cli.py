#!/usr/bin/env python
"""wanda-engine command line: argument parsing only; the work is in wanda_engine.api.

Flags of `prune` follow the reference implementation's main.py where they exist there.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from wanda_engine.config import DTYPES, SQUAD_TEXT_FORMATS, EvalConfig, ExperimentConfig, FinetuneConfig, PruneConfig

_ESCAPES = {"\\\\": "\\", "\\n": "\n", "\\t": "\t"}


def shell_escapes(text: str) -> str:
    r"""A shell passes '\n' in single quotes as a backslash and an n: read \n, \t and \\ as the
    characters they name, so --text_template 'Context: {context}\nQuestion: {question}' means two lines."""
    return re.sub(r"\\[\\nt]", lambda m: _ESCAPES[m.group(0)], text)


class _OneLineErrors(argparse.ArgumentParser):
    """Bad flags are reported like every other bad input: one line naming the value and the fix, exit 2
    (argparse's own error prints the whole usage first)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


class _DefaultsHelp(argparse.HelpFormatter):
    """Appends '(default: X)' to a flag's help unless the help already says its default, or the default
    is None or off."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is None or action.default is False or action.default == argparse.SUPPRESS \
                or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


TASKS_HELP = ("comma-separated: wikitext2, c4 (engine perplexity), squad, gsm8k, boolq (offline from --data_dir), "
              "wanda_zero_shot (the Wanda paper's 7 tasks), any lm-eval task (needs the hub), or a text file")


def build_parser() -> argparse.ArgumentParser:
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0].endswith(("cli.py", "wanda-engine")) else "cli.py"
    parser = _OneLineErrors(prog=program, description="Wanda pruning for LLaMA-family models.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineErrors)
    prune = commands.add_parser(
        "prune",
        help="prune a model (default: the embedded SmolLM2-135M-Instruct, 50%% unstructured Wanda)",
        formatter_class=_DefaultsHelp,
    )
    add = _flags_with_defaults(prune, PruneConfig())  # --no_stream: stream=False (see main)

    add("--model", help="HF hub id, local model directory or .gguf file (default: embedded SmolLM2-135M-Instruct)")
    add("--prune_method", help="wanda or magnitude")
    add("--sparsity_ratio", type=float, help="fraction of weights to prune (default 0.5; N/M for N:M)")
    add("--sparsity_type", help="unstructured, 2:4, 4:8 or any N:M")
    add("--use_variant", action="store_true", help="Wanda variant: per-row cumulative-score threshold, alpha by bisection")
    add("--nsamples", type=int, help="calibration samples (default 128; 32 for the embedded demo)")
    add("--seed", type=int, help="seed for calibration sampling")
    add("--calibration_dataset",
        help="wikitext2, c4, squad, gsm8k, boolq, builtin, a .txt/.raw/.tokens/.jsonl/.json/.parquet file, "
             "hf:NAME[:CONFIG[:SPLIT]] or mix:A=W,B=W (default: builtin for the embedded model, else wikitext2)")
    add("--calibration_format", choices=list(SQUAD_TEXT_FORMATS),
        help="SQuAD text form: context / 'context question' / 'Context: ...\\nQuestion: ...'")
    add("--calibration_packing", action="store_true",
        help="pack several short examples into full windows instead of padding each (padding is the default)")
    add("--text_field", help="record field holding the text (jsonl/json/parquet/hf sources)")
    add("--text_template", type=shell_escapes,
        help="str.format template over record fields, e.g. 'Context: {context}\\nQuestion: {question}' (\\n, \\t: newline, tab)")
    add("--seqlen", type=int, help="tokens per calibration/eval window (default min(2048, model context); 512 for the embedded demo)")
    add("--batch_size", type=int, help="calibration samples per forward")
    add("--dtype", choices=DTYPES, help="model dtype (default float16 on CUDA, float32 on CPU)")
    add("--device", help="cpu, cuda, cuda:N (default: cuda if available)")
    add("--eval", help="auto, wikitext2, c4, builtin, none, or a text file path")
    add("--eval_limit", type=int, help="evaluate on the first N windows only (default: all; 24 for the embedded demo)")
    add("--data_dir", help="folder with local dataset copies (wikitext2/, c4/, squad/, gsm8k/, boolq/)")
    add("--cache_dir", help="cache for converted GGUF models and hub downloads (default ~/.cache/wanda_engine or $WANDA_ENGINE_CACHE)")
    add("--save", help="directory for report.json and report.md")
    add("--save_model", help="directory for the pruned model (safetensors + config + tokenizer)")
    add("--overwrite", action="store_true", help="replace existing non-empty --save/--save_model directories")
    add("--schedule", help="reference (mask-exact with the reference: dense pass for statistics, pruned pass for outputs) or sequential (each linear applied once; statistics from already-pruned upstream linears)")
    add("--sparsity_allocation",
        help="how sparsity is spread over blocks: uniform; three_tier (blocks ranked by importance into three tiers, "
             "target -/+ --tier_delta); owl (per-block outlier ratio mapped to target +/- --owl_lambda); see docs/allocation.md")
    add("--importance",
        help="three_tier: block importance = influence (1 - cosine of block input vs output; default) or outlier (OWL ratio)")
    add("--tier_fractions", help="three_tier: share of blocks in the high,middle,low tiers (default 0.33,0.34,0.33)")
    add("--tier_delta", type=float, help="three_tier: tiers pruned at target-delta/target/target+delta (default (target-0.4)/2: 0.05 at 50%%, 0.15 at 70%%)")
    add("--tier_types",
        help="three_tier: sparsity type per tier high,middle,low, e.g. 4:8,2:4,unstructured (mean then achieved, not forced)")
    add("--owl_m", type=float, help="owl / --importance outlier: outlier = score above M x the block mean (default 5)")
    add("--owl_lambda", type=float, help="owl: block sparsities span target +/- lambda (default 0.08)")
    add("--importance_from",
        help="reuse the block importance of an earlier three_tier/owl run (its report.json or --save directory)")
    add("--no_stream", action="store_true",
        help="load the whole model into memory instead of streaming one block at a time from its safetensors shards")
    add("--resume", action="store_true",
        help="continue an interrupted streamed --save_model run from its last checkpoint (same command otherwise)")
    add("--checkpoint_every", type=float,
        help="seconds between resume checkpoints of a streamed --save_model run (0 = after every block)")
    add("--tasks", help=f"score the pruned model (and the dense one before it) on these tasks as `eval` does: {TASKS_HELP}")
    add("--task_limit", type=int, help="--tasks: the first N examples of each task (default: all)")
    add("--num_fewshot", type=int, help="--tasks: few-shot examples per prompt (default: each task's own)")
    add("--max_gen_toks", type=int, help="--tasks: most tokens generated per answer")
    add("--squad_unanswerable", action="store_true", help="--tasks: score SQuAD v2's unanswerable questions too")
    add("--no_dense_eval", action="store_true", help="--tasks: score only the pruned model, not the dense one first")
    add("--dist_timeout", type=float,
        help="torchrun: seconds a rank waits for the others at a collective before it gives up")
    add("--log_all_ranks", action="store_true", help="torchrun: every rank prints its log, not only rank 0")
    add("--trust_remote_code", action="store_true", help="allow model code from the hub (off by default)")
    add("--no_progress", action="store_true", help="no progress bars")

    _add_eval_parser(commands)
    _add_finetune_parser(commands)
    _add_experiment_parser(commands)
    cache = commands.add_parser("cache", help="list the cached GGUF conversions and hub downloads; remove conversions")
    cache.add_argument("--cache_dir", default=None, help="the cache (default ~/.cache/wanda_engine or $WANDA_ENGINE_CACHE)")
    removal = cache.add_mutually_exclusive_group()
    removal.add_argument("--remove", nargs="+", metavar="NAME", default=None,
                         help="remove these conversions (names as listed); a later run converts again")
    removal.add_argument("--remove_all", action="store_true", help="remove every conversion")
    return parser


def _flags_with_defaults(parser: argparse.ArgumentParser, defaults):
    """add(flag, ...) for `parser`, each flag's default the field of the same name in `defaults` (a
    config dataclass); switches (store_true) are off unless given."""

    def add(flag: str, **options) -> None:
        if options.get("action") != "store_true":
            options["default"] = getattr(defaults, flag.removeprefix("--"))
        parser.add_argument(flag, **options)

    return add


def _add_eval_parser(commands) -> None:
    evaluate = commands.add_parser(
        "eval", help="score a model on tasks (lm-evaluation-harness in-process; offline SQuAD/GSM8K/BoolQ from --data_dir)",
        formatter_class=_DefaultsHelp,
    )
    add = _flags_with_defaults(evaluate, EvalConfig())

    add("--tasks", required=True, help=TASKS_HELP)
    add("--model", help="saved model directory, HF hub id or .gguf file (default: embedded SmolLM2-135M-Instruct)")
    add("--limit", type=int, help="score the first N examples of each task in file order (windows for perplexity; default: all)")
    add("--num_fewshot", type=int, help="few-shot examples per prompt (default: each task's own: gsm8k 5, boolq 0, squad 0)")
    add("--data_dir", help="folder with squad/*dev*.json, gsm8k/test.jsonl, boolq/dev.jsonl, wikitext2/, c4/ (official formats)")
    add("--batch_size", type=int, help="examples per forward / generate call")
    add("--seqlen", type=int, help="perplexity window (default 512 for the embedded model, else min(2048, model context))")
    add("--max_gen_toks", type=int, help="most tokens generated per answer (gsm8k, squad; lm-eval's default)")
    add("--squad_unanswerable", action="store_true",
        help="score SQuAD v2's unanswerable questions too (a generated 'unanswerable' counts as abstaining)")
    add("--device", help="cpu, cuda, cuda:N (default: cuda if available)")
    add("--dtype", choices=DTYPES, help="model dtype (default float16 on CUDA, float32 on CPU)")
    add("--cache_dir", help="cache for converted GGUF models and hub downloads (default ~/.cache/wanda_engine or $WANDA_ENGINE_CACHE)")
    add("--save", help="directory for results.json, results.md and samples/TASK.jsonl")
    add("--overwrite", action="store_true", help="replace an existing non-empty --save directory")
    add("--trust_remote_code", action="store_true", help="allow model code from the hub (off by default)")
    add("--no_progress", action="store_true", help="no progress bars of the engine's (lm-eval's request bars remain)")


def _add_finetune_parser(commands) -> None:
    finetune = commands.add_parser(
        "finetune", help="recovery fine-tuning of a pruned model, its sparsity mask kept (transformers Trainer; peft for --lora)",
        formatter_class=_DefaultsHelp,
    )
    add = _flags_with_defaults(finetune, FinetuneConfig())

    add("--model", help="the pruned model directory (default: embedded SmolLM2-135M-Instruct)")
    add("--dataset", help="squad, gsm8k, boolq, wikitext2 (their train splits from --data_dir), a text file, or a .jsonl "
                          "file with question/answer (and context) fields")
    add("--template", choices=["plain", "qa", "alpaca"],
        help="plain: language modelling on text windows; qa: 'Context: ...\\nQuestion: ...\\nAnswer: ...'; alpaca: "
             "### Instruction / ### Input / ### Response; templated data: loss on the answer only (default: plain for "
             "running text, qa for records)")
    add("--output", required=True, help="directory for the fine-tuned model, finetune.json and the training curve")
    add("--lora", action="store_true", help="train LoRA adapters on the block linears instead of every weight; merged at the end")
    add("--lora_rank", type=int, help="LoRA rank")
    add("--lora_alpha", type=float, help="LoRA alpha")
    add("--keep_adapter", action="store_true", help="--lora: save the adapter unmerged (the pruned weights untouched)")
    add("--max_steps", type=int, help="optimizer steps")
    add("--lr", type=float, help="peak learning rate (linear decay)")
    add("--weight_decay", type=float, help="AdamW weight decay (pruned entries stay zero regardless)")
    add("--batch_size", type=int, help="examples per step")
    add("--seqlen", type=int, help="tokens per example (prompts are cut from the left)")
    add("--eval_examples", type=int, help="most examples held out for the evaluation loss (at most a tenth of the data)")
    add("--eval_every", type=int, help="steps between evaluation losses (default: max_steps / 5)")
    add("--seed", type=int, help="seed for the data order and initialisation")
    add("--data_dir", help="folder with squad/, gsm8k/, boolq/, wikitext2/ in the official formats")
    add("--device", help="cpu, cuda, cuda:N (default: cuda if available)")
    add("--cache_dir", help="cache for converted GGUF models and hub downloads")
    add("--overwrite", action="store_true", help="replace an existing non-empty --output directory")
    add("--trust_remote_code", action="store_true", help="allow model code from the hub (off by default)")
    add("--no_progress", action="store_true", help="no progress bars")


def _add_experiment_parser(commands) -> None:
    experiment = commands.add_parser(
        "experiment", help="the prune × fine-tune × evaluate matrix, with the dense and pruned models as baselines",
        formatter_class=_DefaultsHelp,
    )
    experiment.add_argument("--output", required=True, help="directory for the cells (kept: a rerun resumes) and results")
    experiment.add_argument("--model", default=None, help="the dense model (default: embedded SmolLM2-135M-Instruct)")
    experiment.add_argument("--config", default=None, help="TOML matrix: rows, sparsity, [prune], [finetune], [eval] settings "
                                                           "(default: the 4-row WikiText-2/SQuAD study; see docs/experiment.md)")
    experiment.add_argument("--data_dir", default=None, help="folder with wikitext2/, squad/, gsm8k/, boolq/")
    experiment.add_argument("--sparsity_ratio", type=float, default=None, help="overrides the config's (default 0.5)")
    experiment.add_argument("--nsamples", type=int, default=None, help="calibration samples per pruning")
    experiment.add_argument("--tasks", default=None, help="overrides the config's (default squad,gsm8k,boolq,wikitext2)")
    experiment.add_argument("--task_limit", type=int, default=None, help="the first N examples of each task")
    experiment.add_argument("--max_gen_toks", type=int, default=None, help="most tokens generated per answer")
    experiment.add_argument("--max_steps", type=int, default=None, help="fine-tuning steps per row")
    experiment.add_argument("--finetune_seqlen", type=int, default=None, help="tokens per fine-tuning example")
    experiment.add_argument("--lora", action="store_true", default=None, help="fine-tune LoRA adapters (merged, mask re-applied)")
    experiment.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
    experiment.add_argument("--cache_dir", default=None, help="cache for converted GGUF models and hub downloads")
    experiment.add_argument("--no_progress", action="store_true", help="no progress bars")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Read by torch once, at its first tensor allocation (so set before any work): large tensors get
    # huge-page-backed memory, which keeps glibc's heap from fragmenting as block after block allocates
    # and frees its intermediates (README.md, Memory, has the figures).
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Import after parsing so --help is instant and bad flags fail before torch loads.
    import torch
    from transformers.utils import logging as hf_logging

    from wanda_engine.api import run_eval, run_prune
    from wanda_engine.distributed import Launch, PeerFailed, Stopped
    from wanda_engine.errors import UserError
    from wanda_engine.models.cache import cache_command

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    options = vars(args)
    command = options.pop("command")
    rank = ""  # a data-parallel run's errors say which rank they come from
    try:
        launch = Launch.from_env()
        if launch.distributed:
            rank = f"{launch.label()}: "
            if command != "prune":
                raise UserError(f"`cli.py {command}` runs in one process; start it with python, not torchrun "
                                f"(only `prune` is data-parallel)")
        if command == "cache":
            cache_command(options["cache_dir"], remove=options["remove"] or [], remove_all=options["remove_all"])
            return 0
        options["progress"] = not options.pop("no_progress")
        if command == "eval":
            run_eval(EvalConfig(**options))
            return 0
        if command == "experiment":
            from wanda_engine.experiment import run_experiment

            run_experiment(ExperimentConfig(**options))
            return 0
        if command == "finetune":
            from wanda_engine.finetune import run_finetune

            run_finetune(FinetuneConfig(**options))
            return 0
        options["stream"] = not options.pop("no_stream")
        options["dense_eval"] = not options.pop("no_dense_eval")
        run_prune(PruneConfig(**options))
    except UserError as exc:
        print(f"error: {rank}{exc}", file=sys.stderr)
        return 2
    except (MemoryError, torch.OutOfMemoryError) as exc:  # host memory; a device's
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        print(f"error: {rank}out of memory ({reason}); lower --batch_size, --nsamples or --seqlen"
              + (", or spread the samples over more ranks" if rank else ""), file=sys.stderr)
        return 1
    except PeerFailed as exc:  # another rank failed first; its error is the one to read
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Stopped as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        if command == "experiment":
            print("interrupted; the finished cells are kept: rerun the same command to resume", file=sys.stderr)
        else:
            print("interrupted; no output directory was written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
