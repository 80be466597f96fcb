"""Calibration data and evaluation text for wanda-engine.

Calibration specs (``load_calibration``):
  wikitext2            reference windows from the WikiText-2 train split (hub or DIR/wikitext2/wiki.train.raw)
  c4                   reference C4 document loop (hub train shard 00000 or DIR/c4/*.json[.gz])
  squad, gsm8k, boolq  variable-length task text (answers unused), right-padded or packed
  builtin              offline corpus: pydoc_data.topics (calibration part; eval part held out)
  <file>.txt/.raw/.tokens (any other extension too)   text read whole, reference windows
  <file>.jsonl/.json/.parquet                         records via datasets + --text_field/--text_template
  hf:<name>[:<config>[:<split>]]                      any hub dataset + --text_field/--text_template
  mix:<source>=<weight>,...                           weighted mix of the above (not nested)

Evaluation text (``load_eval_text``): wikitext2 (test split joined with "\\n\\n"), c4 (first 1100 validation
documents joined with " "), builtin (held-out part), or a text file path read whole.

Every bad input raises ``wanda_engine.errors.UserError`` with a one-line message; hub loads fail fast
(HF_HUB_OFFLINE=1 or an unreachable hub → only the local datasets cache is tried).
"""

from __future__ import annotations

import os
import random

import torch

from wanda_engine.errors import UserError

from .registry import CALIBRATION, EVAL_TEXTS, eval_adapter
from .base import CalibrationSet, Request, check_positive_int

# adapters register themselves on import
from . import wikitext2, c4, squad, gsm8k, boolq, builtin, textfile, jsonfile, hf, mix  # noqa: F401,E401
from .dispatch import load_one
from .files import check_data_dir, read_text
from .hub import hub_reachable, hub_state
from .squad import check_format

__all__ = [
    "CalibrationSet",
    "calibration_names",
    "eval_names",
    "load_calibration",
    "load_eval_text",
    "resolve_eval",
    "resolve_eval_with_reason",
]


def calibration_names() -> list[str]:
    """Registered calibration source names (besides hf:..., mix:... and file paths)."""
    return CALIBRATION.names()


def eval_names() -> list[str]:
    """Named evaluation texts (besides a text file path)."""
    return EVAL_TEXTS.names()


def load_calibration(
    spec: str,
    tokenizer,
    *,
    nsamples: int,
    seqlen: int,
    seed: int = 0,
    data_dir: str | None = None,
    text_field: str | None = None,
    text_template: str | None = None,
    squad_format: str = "context_question",
    packing: bool = False,
) -> CalibrationSet:
    """Calibration samples for ``spec`` (see the module docstring) as int64 [nsamples, seqlen] tensors."""
    check_positive_int(nsamples, "--nsamples", "calibration samples")
    check_positive_int(seqlen, "--seqlen", "tokens per sample")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UserError(f"--seed {seed!r} is invalid; pass an integer")
    if not isinstance(spec, str):
        raise UserError(f"calibration source {spec!r} is not a string; pass a source name or a file path")
    check_data_dir(data_dir)
    check_format(squad_format)
    req = Request(
        spec=spec.strip(), tokenizer=tokenizer, nsamples=nsamples, seqlen=seqlen, seed=seed, data_dir=data_dir,
        text_field=text_field, text_template=text_template, squad_format=squad_format, packing=bool(packing),
    )
    state = random.getstate()  # the reference procedures reseed the global generator: restore it afterwards
    try:
        result = load_one(spec, req)
    finally:
        random.setstate(state)
    if tuple(result.input_ids.shape) != (nsamples, seqlen) or result.input_ids.dtype != torch.int64:
        raise RuntimeError(f"adapter for {spec!r} returned {tuple(result.input_ids.shape)} {result.input_ids.dtype}")
    return result


def load_eval_text(spec: str, *, data_dir: str | None = None) -> tuple[str, str]:
    """(text to tokenize once, description) for spec in {wikitext2, c4, builtin} or a text file path."""
    check_data_dir(data_dir)
    text = (spec or "").strip()
    fn = eval_adapter(text) if text else None
    if fn is not None:
        result, description = fn(data_dir)
    elif text and os.path.isfile(os.path.expanduser(text)):
        path = os.path.expanduser(text)
        result = read_text(path, "evaluation text file")
        description = f"text file {path} read whole ({len(result):,} characters)"
    else:
        raise UserError(f"unknown evaluation text {spec!r}; use one of: {', '.join(eval_names())}, or a text file path")
    if not result.strip():
        raise UserError(f"evaluation text {spec!r} is empty ({description}); pass another --eval")
    return result, description


def resolve_eval_with_reason(eval_flag: str, calibration_spec: str, data_dir: str | None) -> tuple[str | None, str]:
    """``--eval`` → (evaluation spec for ``load_eval_text`` or None for 'none', reason in words).

    'auto': wikitext2 calibration → wikitext2; builtin calibration → builtin; any other source → wikitext2
    when its test split is reachable (DIR/wikitext2/wiki.test.raw, .joined.txt or .tokens present, or the hub
    answers a quick probe; HF_HUB_OFFLINE=1 counts as unreachable), else builtin.
    Any other value is checked (a name from ``eval_names()`` or an existing file) and returned.
    """
    flag = (eval_flag or "").strip()
    if flag.lower() == "none":
        return None, "--eval none: no evaluation"
    if flag.lower() == "auto":
        calib = CALIBRATION.canonical((calibration_spec or "").strip().lower())
        if calib == "wikitext2":
            return "wikitext2", "--eval auto: calibration is wikitext2, so its test split"
        if calib == "builtin":
            return "builtin", "--eval auto: calibration is builtin, so its held-out part"
        local = wikitext2.local_test_file(data_dir)
        if local:
            return "wikitext2", f"--eval auto: wikitext2 test split found at {local}"
        if hub_reachable():
            return "wikitext2", "--eval auto: wikitext2 test split from the Hugging Face hub (reachable)"
        where = f"no wikitext2/wiki.test.raw in --data_dir {data_dir}" if data_dir else "no --data_dir"
        return "builtin", f"--eval auto: wikitext2 unreachable ({where}, hub not used: {hub_state()}), so builtin"
    if flag and eval_adapter(flag) is not None:
        name = flag.lower() if flag.lower() in eval_names() else CALIBRATION.canonical(flag.strip().lower())
        return name, f"--eval {flag}"
    if flag and os.path.isfile(os.path.expanduser(flag)):
        return flag, f"--eval {flag}: text file read whole"
    raise UserError(f"--eval {eval_flag!r} is unknown; use auto, none, {', '.join(eval_names())}, or a text file path")


def resolve_eval(eval_flag: str, calibration_spec: str, data_dir: str | None) -> str | None:
    """``--eval`` → spec for ``load_eval_text``, or None for 'none' (see ``resolve_eval_with_reason``)."""
    return resolve_eval_with_reason(eval_flag, calibration_spec, data_dir)[0]
