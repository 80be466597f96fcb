"""Fine-tuning data: what a source yields (records of context / question / answer, or running text)
and the registry of sources (`--dataset NAME`; a file path otherwise)."""

from __future__ import annotations

from dataclasses import dataclass, field

from wanda_engine.registry import Registry

SOURCES = Registry("fine-tuning dataset", "--dataset")


@dataclass
class Example:
    """One record; the templates lay it out (qa: Context/Question/Answer; alpaca: instruction = question,
    input = context, response = answer). `context` may be empty (GSM8K)."""

    context: str
    question: str
    answer: str


@dataclass
class FinetuneData:
    examples: list[Example] | None  # records, or None for running text
    text: str | None
    source: str  # in words: which file, which split
    files: list[str] = field(default_factory=list)  # the files read (checked against the evaluation files)
