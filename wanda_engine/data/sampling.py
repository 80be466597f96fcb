"""Sampling helpers shared by every adapter.

Two procedures:

* windows (WikiText-2 reference): the whole text tokenized once, ``random.seed(seed)``, then per sample
  ``i = random.randint(0, n_tokens - seqlen - 1)`` and the window ``[i, i + seqlen)``;
* records (SQuAD-style): per sample a random record ``random.randint(0, n - 1)`` tokenized with truncation
  to seqlen, right-padded (default), or, with packing, records concatenated (EOS-separated) and cut into
  full windows.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from wanda_engine.errors import UserError

from .base import CalibrationSet, Request, eos_token_id, pad_token_id


# ----------------------------------------------------------------------------- windows
def tokenize_once(tokenizer, text: str) -> torch.Tensor:
    """``tokenizer(text, return_tensors='pt').input_ids`` as a 1-D int64 tensor (what the reference does)."""
    ids = tokenizer(text, return_tensors="pt").input_ids
    return ids.reshape(-1).to(torch.int64)


def window_start(n_tokens: int, seqlen: int) -> int:
    """One reference draw: a start index such that [i, i + seqlen) lies inside n_tokens."""
    return random.randint(0, n_tokens - seqlen - 1)


def too_few_tokens(what: str, n_tokens: int, seqlen: int) -> UserError:
    hint = f"use --seqlen {n_tokens - 1} or less" if n_tokens > 1 else "use a longer text"
    return UserError(
        f"{what} has only {n_tokens} tokens, fewer than one window of --seqlen {seqlen} plus one; {hint} "
        f"or a larger calibration source"
    )


def sample_windows(ids: torch.Tensor, nsamples: int, seqlen: int, seed: int, what: str) -> torch.Tensor:
    """The WikiText-2 reference procedure on a 1-D token tensor → int64 [nsamples, seqlen]."""
    n_tokens = int(ids.numel())
    if n_tokens <= seqlen:
        raise too_few_tokens(what, n_tokens, seqlen)
    random.seed(seed)
    out = torch.empty((nsamples, seqlen), dtype=torch.int64)
    for k in range(nsamples):
        i = window_start(n_tokens, seqlen)
        out[k] = ids[i : i + seqlen]
    return out


def windows_set(text: str, req: Request, source: str) -> CalibrationSet:
    """Tokenize ``text`` once and draw reference windows; ``source`` says where the text came from."""
    if not text.strip():
        raise UserError(f"calibration source {req.spec!r} is empty ({source}); pass a source with text in it")
    ids = tokenize_once(req.tokenizer, text)
    input_ids = sample_windows(ids, req.nsamples, req.seqlen, req.seed, f"calibration source {req.spec!r}")
    description = (
        f"{source}; {len(text):,} characters tokenized once = {ids.numel():,} tokens; "
        f"{req.nsamples} windows of {req.seqlen} tokens at random.randint(0, n_tokens - seqlen - 1) "
        f"after random.seed({req.seed}) (reference WikiText-2 procedure); no padding"
    )
    return CalibrationSet(input_ids, torch.ones_like(input_ids), description)


# ----------------------------------------------------------------------------- records
@dataclass
class Records:
    """n records; ``get(i)`` gives record i's calibration text. ``label`` names the source for messages."""

    n: int
    get: Callable[[int], str]
    label: str


def _draw_ids(records: Records, empty: set, req: Request) -> list:
    """Token ids of a random record (``random.randint(0, n - 1)``), truncated to seqlen.

    Records whose text is blank or tokenizes to nothing are skipped (drawn again); the source is
    reported empty once every record has been found so.
    """
    while True:
        i = random.randint(0, records.n - 1)
        if i in empty:
            continue
        text = records.get(i)
        ids = req.tokenizer(text, truncation=True, max_length=req.seqlen)["input_ids"] if text.strip() else []
        if len(ids):
            return list(ids)
        empty.add(i)
        if len(empty) == records.n:
            raise UserError(
                f"calibration source {req.spec!r} is empty: none of the {records.n} records of {records.label} "
                f"has text; check the source (or --text_field / --text_template)"
            )


def records_set(records: Records, req: Request, source: str) -> CalibrationSet:
    """Variable-length samples from records: right-padded (default) or packed (``req.packing``)."""
    if records.n < 1:
        raise UserError(f"calibration source {req.spec!r} is empty: {records.label} has no records")
    tok, seqlen, nsamples = req.tokenizer, req.seqlen, req.nsamples
    pad = pad_token_id(tok)
    input_ids = torch.full((nsamples, seqlen), pad, dtype=torch.int64)
    mask = torch.zeros((nsamples, seqlen), dtype=torch.int64)
    empty: set = set()
    random.seed(req.seed)
    if not req.packing:
        for k in range(nsamples):
            ids = _draw_ids(records, empty, req)
            input_ids[k, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
            mask[k, : len(ids)] = 1
        real = int(mask.sum())
        how = (
            f"{nsamples} random records (random.randint after random.seed({req.seed})), each tokenized with "
            f"truncation to {seqlen} tokens and right-padded with id {pad}; attention_mask marks the "
            f"{real:,} real tokens of {nsamples * seqlen:,} positions (padding, the default; packing is off)"
        )
        return CalibrationSet(input_ids, mask, f"{source}; {how}")

    eos = eos_token_id(tok)
    sep = [eos] if eos is not None else []
    stream: list = []
    drawn = 0
    for k in range(nsamples):
        while len(stream) < seqlen:
            stream.extend(_draw_ids(records, empty, req) + sep)
            drawn += 1
        input_ids[k] = torch.tensor(stream[:seqlen], dtype=torch.int64)
        del stream[:seqlen]
    mask.fill_(1)
    sep_text = f"each followed by EOS id {eos}" if sep else "with no separator (the tokenizer has no EOS)"
    how = (
        f"packing: {drawn} random records (random.randint after random.seed({req.seed})), each tokenized with "
        f"truncation to {seqlen} tokens, {sep_text}, concatenated into one stream cut into {nsamples} full "
        f"windows of {seqlen} tokens (no padding; the unused tail is dropped)"
    )
    return CalibrationSet(input_ids, mask, f"{source}; {how}")


# ----------------------------------------------------------------------------- record → text
def template_fields(template: str, flag: str = "--text_template") -> list[str]:
    """Top-level field names used by a str.format template; positional fields are rejected."""
    names = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise UserError(f"{flag} {template!r} is not a valid str.format template ({exc}); escape literal braces as {{{{ and }}}}")
    for _, field, _, _ in parsed:
        if field is None:
            continue
        top = field.split(".", 1)[0].split("[", 1)[0]
        if top == "" or top.isdigit():
            raise UserError(f"{flag} {template!r} uses a positional field {{{field}}}; name record fields, e.g. {{question}}")
        if top not in names:
            names.append(top)
    return names


def record_to_text(
    columns: Sequence[str], text_field: str | None, text_template: str | None, where: str
) -> tuple[Callable[[dict], str], str]:
    """Checks --text_field / --text_template against the record columns; returns (record → text, how)."""
    columns = list(columns)
    shown = ", ".join(columns) if columns else "(none)"
    if text_field and text_template:
        raise UserError("--text_field and --text_template were both given; pass only one of them")
    if text_template is not None:
        missing = [f for f in template_fields(text_template) if f not in columns]
        if missing:
            raise UserError(
                f"--text_template {text_template!r} uses field {missing[0]!r}, which {where} does not have; "
                f"available fields: {shown}"
            )

        def from_template(record: dict) -> str:
            try:
                return text_template.format(**{k: ("" if v is None else v) for k, v in record.items()})
            except (KeyError, IndexError, ValueError, TypeError, AttributeError) as exc:
                raise UserError(f"--text_template {text_template!r} failed on a record of {where} ({exc!r}); fix the template")

        return from_template, f"text = --text_template {text_template!r}"
    field = text_field
    how = f"text field {field!r}"
    if field is None:
        if "text" not in columns:
            raise UserError(
                f"{where} has no 'text' field; pass --text_field NAME or --text_template '...{{NAME}}...' "
                f"with one of its fields: {shown}"
            )
        field, how = "text", "text field 'text' (default)"
    elif field not in columns:
        raise UserError(f"--text_field {field!r} is not a field of {where}; available fields: {shown}")

    def from_field(record: dict) -> str:
        value = record.get(field)
        return "" if value is None else str(value)

    return from_field, how
