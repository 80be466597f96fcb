"""Shared types of the data package: the calibration result and the request passed to adapters."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from wanda_engine.errors import UserError


@dataclass
class CalibrationSet:
    """Calibration samples, ready to batch.

    input_ids:      int64 [nsamples, seqlen], right-padded (pad id: tokenizer.pad_token_id, else
                    eos_token_id, else 0) where a sample is shorter than seqlen.
    attention_mask: int64 [nsamples, seqlen], 1 = real token, 0 = padding (all ones for windows).
    description:    which source, which files/split, how sampled, padding or packing.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    description: str

    @property
    def nsamples(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def seqlen(self) -> int:
        return int(self.input_ids.shape[1])

    @property
    def n_real_tokens(self) -> int:
        return int(self.attention_mask.sum())


@dataclass
class Request:
    """Everything an adapter needs; built once by ``load_calibration``."""

    spec: str
    tokenizer: object
    nsamples: int
    seqlen: int
    seed: int = 0
    data_dir: str | None = None
    text_field: str | None = None
    text_template: str | None = None
    squad_format: str = "context_question"
    packing: bool = False

    def with_(self, **changes) -> "Request":
        values = dict(self.__dict__)
        values.update(changes)
        return Request(**values)


def check_positive_int(value, flag: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{flag} {value!r} is invalid: the number of {what} must be an integer >= 1")
    return value


def pad_token_id(tokenizer) -> int:
    """Pad id used for right-padding: pad_token_id, else eos_token_id, else 0."""
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    return 0


def eos_token_id(tokenizer) -> int | None:
    value = getattr(tokenizer, "eos_token_id", None)
    return value if isinstance(value, int) else None


def one_line(text: str, limit: int = 240) -> str:
    """First line of an exception text, shortened: messages of UserError must stay on one line."""
    line = " ".join(str(text).strip().splitlines()[:1]) or type(text).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


@contextlib.contextmanager
def quiet_datasets():
    """`datasets` without its progress bars and log lines for one call: a failure is reported by the
    engine in one line, which the library's own error log would otherwise precede."""
    import datasets

    logging = datasets.utils.logging
    bars, verbosity = logging.is_progress_bar_enabled(), logging.get_verbosity()
    logging.disable_progress_bar()
    logging.set_verbosity(logging.CRITICAL)
    try:
        yield datasets
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()
