"""The non-engine sides of `python -m benchmarks`, each meant to run in a process of its own so that its
peak RSS is its own (the suite reads it back with os.wait4; each also reports ru_maxrss itself).

    python -m benchmarks.sides restatement --out DIR [--model DIR] --calibration SPEC --nsamples N --seqlen L \
        --sparsity_type unstructured|N:M [--sparsity_ratio R]
        batch-1 re-statement of the reference schedule (benchmarks/reference_wanda.py); writes
        DIR/result.json and the pruned model to DIR/model (save_pretrained, like the engine's --save_model)
    python -m benchmarks.sides floor --out DIR [--model DIR] --calibration SPEC --nsamples N --seqlen L [--batch_size 8]
        the floor: capture block-0 inputs, then one batched forward pass over all decoder blocks (no
        statistics, no pruning); only the block loop is timed; writes DIR/result.json
    python -m benchmarks.sides eval --out FILE.json --eval SPEC --seqlen L --eval_limit K MODEL...
        perplexity of each model (a saved directory, or "embedded") with the engine's evaluator
    python -m benchmarks.sides random-model --out DIR --layers N [--hidden 1024 ...]
        a random-initialised LLaMA saved as several safetensors shards, with the tiny tokenizer of
        wanda_engine.testing
    python -m benchmarks.sides random-gguf --out FILE.gguf --layers N [--hidden 1024 ...]
        the same shape of random LLaMA as a GGUF file (Q8_0 matrices, F16 v_proj, F32 norms), as llama.cpp
        lays it out
    python -m benchmarks.sides gguf-convert --out DIR --gguf FILE.gguf
        the engine's GGUF → safetensors conversion (a block at a time) into DIR/model; DIR/result.json
    python -m benchmarks.sides gguf-whole --out DIR --gguf FILE.gguf
        transformers' own GGUF loading, whole model in float32 (what a conversion through it holds)
    python -m benchmarks.sides baseline --out DIR
        imports torch, transformers and the engine and stops: the peak RSS every side starts from

`--model` omitted or "embedded" = the embedded SmolLM2 (the engine's default model).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from wanda_engine.memory import peak_rss_mb  # light: no torch import

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)


def _model_spec(spec: str | None) -> str | None:
    return None if spec in (None, "", "embedded") else spec


def _load(spec: str | None):
    from transformers.utils import logging as hf_logging

    from wanda_engine.models import load_model

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    return load_model(_model_spec(spec), dtype="float32", device="cpu", log=_log)


def _calibration(loaded, args):
    from wanda_engine import data

    return data.load_calibration(
        args.calibration, loaded.tokenizer, nsamples=args.nsamples, seqlen=args.seqlen, seed=args.seed,
        data_dir=args.data_dir,
    )


def _common(args, loaded, calib) -> dict:
    import torch

    return {
        "model": loaded.name,
        "calibration": calib.description,
        "nsamples": args.nsamples,
        "seqlen": args.seqlen,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def restatement(args) -> int:
    from benchmarks.reference_wanda import reference_prune
    from wanda_engine.prune.sparsity import parse_sparsity

    target = parse_sparsity(args.sparsity_type, args.sparsity_ratio)
    started = time.perf_counter()
    loaded = _load(args.model)
    load_s = time.perf_counter() - started
    calib = _calibration(loaded, args)
    if calib.attention_mask is not None and not bool(calib.attention_mask.all()):
        raise SystemExit("the re-statement takes full windows only (no padding); use a window-sampled calibration source")
    started = time.perf_counter()
    masks = reference_prune(loaded.model, calib.input_ids, target.ratio, target.n, target.m)
    prune_s = time.perf_counter() - started
    pruned = sum(int(mask.sum()) for mask in masks.values())
    total = sum(mask.numel() for mask in masks.values())
    del masks
    rss_after_prune = peak_rss_mb()
    save_s = None
    out = Path(args.out)
    if not args.no_save:
        started = time.perf_counter()
        loaded.model.save_pretrained(out / "model", safe_serialization=True)
        loaded.tokenizer.save_pretrained(out / "model")
        save_s = time.perf_counter() - started
    result = _common(args, loaded, calib) | {
        "side": "restatement",
        "sparsity_type": target.label,
        "sparsity_ratio": target.ratio,
        "actual_sparsity": pruned / max(total, 1),
        "prune_s": prune_s,
        "load_s": load_s,
        "save_s": save_s,
        "peak_rss_mb_after_prune": rss_after_prune,
        "peak_rss_mb": peak_rss_mb(),
    }
    _write_json(out / "result.json", result)
    _log(f"re-statement: prune {prune_s:.1f}s, sparsity {result['actual_sparsity']:.4f}, peak RSS {result['peak_rss_mb']:.0f} MB")
    return 0


def floor(args) -> int:
    import torch

    from wanda_engine.models import decoder_blocks
    from wanda_engine.prune.batches import call_block, capture_block_inputs

    loaded = _load(args.model)
    calib = _calibration(loaded, args)
    with torch.no_grad():
        started = time.perf_counter()
        batches = capture_block_inputs(
            loaded.model, calib.input_ids, calib.attention_mask, args.batch_size, torch.device("cpu")
        )
        capture_s = time.perf_counter() - started
        blocks = decoder_blocks(loaded.model)
        started = time.perf_counter()
        for block in blocks:
            for batch in batches:
                batch.hidden = call_block(block, batch)
        block_loop_s = time.perf_counter() - started
    result = _common(args, loaded, calib) | {
        "side": "floor",
        "blocks": len(blocks),
        "batch_size": args.batch_size,
        "capture_s": capture_s,
        "prune_s": block_loop_s,  # the block loop, under the name every side's prune stage has
        "peak_rss_mb": peak_rss_mb(),
    }
    _write_json(Path(args.out) / "result.json", result)
    _log(f"floor: {len(blocks)} blocks in {block_loop_s:.1f}s, peak RSS {result['peak_rss_mb']:.0f} MB")
    return 0


def evaluate(args) -> int:
    from wanda_engine import data
    from wanda_engine.eval import perplexity

    results = []
    text = description = None
    tokenized: dict[str, object] = {}  # tokenizer definition → token ids: the text is tokenized once per tokenizer
    for spec in args.models:
        started = time.perf_counter()
        loaded = _load(spec)
        if text is None:
            text, description = data.load_eval_text(args.eval, data_dir=args.data_dir)
        backend = getattr(loaded.tokenizer, "backend_tokenizer", None)
        key = backend.to_str() if backend is not None else repr(loaded.tokenizer)
        if key not in tokenized:
            tokenized[key] = loaded.tokenizer(text, return_tensors="pt").input_ids[0]
        eval_ids = tokenized[key]
        ppl, windows = perplexity(
            loaded.model, eval_ids, args.seqlen, limit=args.eval_limit, batch_size=args.batch_size, progress=False
        )
        results.append({"model": spec, "ppl": ppl, "windows": windows, "seconds": time.perf_counter() - started})
        _log(f"eval {spec}: ppl {ppl:.3f} over {windows} windows of {args.seqlen} ({results[-1]['seconds']:.0f}s)")
        del loaded
    _write_json(Path(args.out), {"eval": description, "seqlen": args.seqlen, "results": results})
    return 0


def random_model(args) -> int:
    from transformers.utils import logging as hf_logging

    from wanda_engine.testing import random_llama, tiny_tokenizer

    hf_logging.disable_progress_bar()
    tokenizer = tiny_tokenizer()
    if args.vocab < len(tokenizer):
        raise SystemExit(f"--vocab {args.vocab} is smaller than the tokenizer's {len(tokenizer)} entries")
    model = random_llama(
        layers=args.layers, hidden=args.hidden, heads=args.heads, kv_heads=args.kv_heads,
        intermediate=args.intermediate, vocab=args.vocab, max_positions=args.max_positions, seed=args.seed,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    out = Path(args.out)
    model.save_pretrained(out, safe_serialization=True, max_shard_size=args.shard_size)
    tokenizer.save_pretrained(out)
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    size = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    params = sum(p.numel() for p in model.parameters())
    _write_json(out / "benchmark_model.json", {"layers": args.layers, "params": params, "bytes": size, "shards": shards})
    _log(f"random LLaMA, {args.layers} blocks, {params / 1e6:.0f}M params, {len(shards)} shards, {size / 2**20:.0f} MB")
    return 0


def random_gguf(args) -> int:
    from wanda_engine.testing import write_random_gguf

    facts = write_random_gguf(
        Path(args.out), layers=args.layers, hidden=args.hidden, heads=args.heads, kv_heads=args.kv_heads,
        intermediate=args.intermediate, vocab=args.vocab, seed=args.seed,
    )
    _write_json(Path(args.out).with_suffix(".json"), {"layers": args.layers, **facts})
    _log(f"random LLaMA GGUF, {args.layers} blocks, {facts['params'] / 1e6:.0f}M params, {facts['bytes'] / 2**20:.0f} MB")
    return 0


def gguf_convert(args) -> int:
    from transformers.utils import logging as hf_logging

    from wanda_engine.models.gguf.convert import convert_gguf

    hf_logging.disable_progress_bar()
    model_dir = Path(args.out) / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    convert_gguf(Path(args.gguf), model_dir)
    seconds = time.perf_counter() - started
    _write_json(Path(args.out) / "result.json", {"side": "gguf-convert", "seconds": seconds, "peak_rss_mb": peak_rss_mb()})
    return 0


def gguf_whole(args) -> int:
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    gguf = Path(args.gguf)
    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    seconds = time.perf_counter() - started
    params = sum(p.numel() for p in model.parameters())
    _write_json(Path(args.out) / "result.json",
                {"side": "gguf-whole", "seconds": seconds, "params": params, "peak_rss_mb": peak_rss_mb()})
    return 0


def baseline(args) -> int:
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import kernels  # noqa: F401
    import wanda_engine.api  # noqa: F401
    from benchmarks import reference_wanda  # noqa: F401

    _write_json(Path(args.out) / "result.json", {"side": "baseline", "peak_rss_mb": peak_rss_mb()})
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sides", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def calibrated(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--out", required=True)
        sub.add_argument("--model", default=None, help="model directory, or 'embedded' (default)")
        sub.add_argument("--calibration", default="builtin", help="calibration spec, as --calibration_dataset")
        sub.add_argument("--data_dir", default=None)
        sub.add_argument("--nsamples", type=int, default=32)
        sub.add_argument("--seqlen", type=int, default=512)
        sub.add_argument("--seed", type=int, default=0)
        return sub

    sub = calibrated("restatement", "batch-1 re-statement of the reference schedule")
    sub.add_argument("--sparsity_type", default="unstructured")
    sub.add_argument("--sparsity_ratio", type=float, default=None)
    sub.add_argument("--no_save", action="store_true", help="do not write the pruned model")
    sub.set_defaults(run=restatement)

    sub = calibrated("floor", "one batched forward pass over all blocks")
    sub.add_argument("--batch_size", type=int, default=8)
    sub.set_defaults(run=floor)

    sub = commands.add_parser("eval", help="perplexity of saved models")
    sub.add_argument("models", nargs="+", help="model directories, or 'embedded'")
    sub.add_argument("--out", required=True, help="JSON file")
    sub.add_argument("--eval", default="builtin", help="wikitext2, builtin, c4 or a text file")
    sub.add_argument("--data_dir", default=None)
    sub.add_argument("--seqlen", type=int, default=512)
    sub.add_argument("--eval_limit", type=int, default=None)
    sub.add_argument("--batch_size", type=int, default=8)
    sub.set_defaults(run=evaluate)

    def random_llama(name: str, help_text: str, out_help: str, run) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--out", required=True, help=out_help)
        sub.add_argument("--layers", type=int, default=8)
        sub.add_argument("--hidden", type=int, default=1024)
        sub.add_argument("--heads", type=int, default=16)
        sub.add_argument("--kv_heads", type=int, default=4)
        sub.add_argument("--intermediate", type=int, default=2816)
        sub.add_argument("--vocab", type=int, default=32000)
        sub.add_argument("--seed", type=int, default=0)
        sub.set_defaults(run=run)
        return sub

    sub = random_llama("random-model", "random-initialised LLaMA in safetensors shards", "the model directory", random_model)
    sub.add_argument("--max_positions", type=int, default=2048)
    sub.add_argument("--shard_size", default="200MB")
    random_llama("random-gguf", "random-initialised LLaMA as a GGUF file", "the .gguf file to write", random_gguf)

    for name, run, help_text in (("gguf-convert", gguf_convert, "the engine's GGUF conversion, a block at a time"),
                                 ("gguf-whole", gguf_whole, "transformers' GGUF loading, whole model")):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--out", required=True)
        sub.add_argument("--gguf", required=True)
        sub.set_defaults(run=run)

    sub = commands.add_parser("baseline", help="imports only: the RSS every side starts from")
    sub.add_argument("--out", required=True)
    sub.set_defaults(run=baseline)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
