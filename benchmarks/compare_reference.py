"""Engine (`--schedule reference`, batched) against the batch-1 re-statement of the reference schedule,
on the same calibration windows of the embedded SmolLM2: prune-stage time, mask agreement, perplexity.

    python -m benchmarks.compare_reference [--data_dir ../shared/data] [--nsamples 32 --seqlen 512]

Calibration: DATA_DIR/wikitext2/wiki.valid.tokens when present, else the built-in corpus.
Evaluation: WikiText-2 test (DATA_DIR/wikitext2/wiki.test.raw) when present, else the built-in held-out part.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

from benchmarks.reference_wanda import reference_prune
from wanda_engine import data
from wanda_engine.eval import perplexity
from wanda_engine.models import decoder_blocks, linear_layers, load_model
from wanda_engine.prune.methods import METHODS
from wanda_engine.prune.batches import capture_block_inputs
from wanda_engine.prune.block_loop import prune_blocks
from wanda_engine.prune.schedules import SCHEDULES
from wanda_engine.prune.sparsity import parse_sparsity


def _masks(model) -> list[torch.Tensor]:
    return [layer.weight.data == 0 for block in decoder_blocks(model) for layer in linear_layers(block).values()]


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--eval_limit", type=int, default=40)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--sparsity_types", default="unstructured,2:4")
    args = parser.parse_args(argv)
    hf_logging.disable_progress_bar()
    torch.manual_seed(0)
    data_dir = Path(args.data_dir)
    valid = data_dir / "wikitext2" / "wiki.valid.tokens"
    calibration = str(valid) if valid.is_file() else "builtin"
    eval_spec = "wikitext2" if (data_dir / "wikitext2" / "wiki.test.raw").is_file() else "builtin"

    loaded = load_model(None)
    tokenizer = loaded.tokenizer
    calib = data.load_calibration(calibration, tokenizer, nsamples=args.nsamples, seqlen=args.seqlen, seed=0)
    text, eval_description = data.load_eval_text(eval_spec, data_dir=str(data_dir) if data_dir.is_dir() else None)
    eval_ids = tokenizer(text, return_tensors="pt").input_ids[0]
    ppl_dense, windows = perplexity(loaded.model, eval_ids, args.seqlen, limit=args.eval_limit, batch_size=args.batch_size, progress=False)

    rows = []
    for sparsity_type in args.sparsity_types.split(","):
        target = parse_sparsity(sparsity_type, None)
        engine_model = load_model(None, log=lambda *_: None).model
        started = time.perf_counter()
        batches = capture_block_inputs(engine_model, calib.input_ids, calib.attention_mask, args.batch_size, torch.device("cpu"))
        outcome = prune_blocks(engine_model, batches, METHODS.get("wanda"), [target] * len(decoder_blocks(engine_model)),
                               schedule=SCHEDULES.get("reference"), progress=False)
        engine_s = time.perf_counter() - started
        del batches
        reference_model = load_model(None, log=lambda *_: None).model
        started = time.perf_counter()
        reference_prune(reference_model, calib.input_ids, target.ratio, target.n, target.m)
        reference_s = time.perf_counter() - started
        same = sum(int((a == b).sum()) for a, b in zip(_masks(engine_model), _masks(reference_model)))
        total = sum(a.numel() for a in _masks(engine_model))
        ppl_engine, _ = perplexity(engine_model, eval_ids, args.seqlen, limit=args.eval_limit, batch_size=args.batch_size, progress=False)
        ppl_reference, _ = perplexity(reference_model, eval_ids, args.seqlen, limit=args.eval_limit, batch_size=args.batch_size, progress=False)
        rows.append(
            f"| {target.label} {target.ratio:g} | {outcome.actual_sparsity:.4f} | {engine_s:.1f} | {outcome.prune_s:.1f} | "
            f"{reference_s:.1f} | {reference_s / engine_s:.2f}× | {same / total:.5%} | {ppl_dense:.3f} | {ppl_engine:.3f} | {ppl_reference:.3f} |"
        )
        del engine_model, reference_model

    table = "\n".join(
        [
            f"SmolLM2-135M-Instruct, fp32, CPU ({torch.get_num_threads()} threads); calibration {calib.description}; "
            f"eval {eval_description}, first {windows} windows of {args.seqlen}.",
            "",
            "| sparsity | actual | engine capture+prune s | engine prune_s | re-statement s | speed-up | identical mask entries | ppl dense | ppl engine | ppl re-statement |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print(table)
    return table


if __name__ == "__main__":
    main()
