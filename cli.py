#!/usr/bin/env python
"""wanda-engine command line: argument parsing only; the work is in wanda_engine.api.

Flags of `prune` follow the reference implementation's main.py where they exist there.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from wanda_engine.config import DTYPES, SQUAD_TEXT_FORMATS, PruneConfig

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


def build_parser() -> argparse.ArgumentParser:
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0].endswith(("cli.py", "wanda-engine")) else "cli.py"
    parser = _OneLineErrors(prog=program, description="Wanda pruning for LLaMA-family models.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineErrors)
    prune = commands.add_parser(
        "prune",
        help="prune a model (default: the embedded SmolLM2-135M-Instruct, 50%% unstructured Wanda)",
        formatter_class=_DefaultsHelp,
    )
    defaults = PruneConfig()

    def add(flag: str, **options) -> None:  # each flag's default is PruneConfig's
        if options.get("action") != "store_true":  # switches are off unless given (--no_stream: stream=False)
            options["default"] = getattr(defaults, flag.removeprefix("--"))
        prune.add_argument(flag, **options)

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
    add("--trust_remote_code", action="store_true", help="allow model code from the hub (off by default)")
    add("--no_progress", action="store_true", help="no progress bars")

    cache = commands.add_parser("cache", help="list the cached GGUF conversions and hub downloads; remove conversions")
    cache.add_argument("--cache_dir", default=None, help="the cache (default ~/.cache/wanda_engine or $WANDA_ENGINE_CACHE)")
    removal = cache.add_mutually_exclusive_group()
    removal.add_argument("--remove", nargs="+", metavar="NAME", default=None,
                         help="remove these conversions (names as listed); a later run converts again")
    removal.add_argument("--remove_all", action="store_true", help="remove every conversion")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Read by torch once, at its first tensor allocation (so set before any work): large tensors get
    # huge-page-backed memory, which keeps glibc's heap from fragmenting as block after block allocates
    # and frees its intermediates (README.md, Memory, has the figures).
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Import after parsing so --help is instant and bad flags fail before torch loads.
    from transformers.utils import logging as hf_logging

    from wanda_engine.api import run_prune
    from wanda_engine.errors import UserError
    from wanda_engine.models.cache import cache_command

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    options = vars(args)
    command = options.pop("command")
    try:
        if command == "cache":
            cache_command(options["cache_dir"], remove=options["remove"] or [], remove_all=options["remove_all"])
            return 0
        options["progress"] = not options.pop("no_progress")
        options["stream"] = not options.pop("no_stream")
        run_prune(PruneConfig(**options))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; no output directory was written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
