"""How a fine-tuning record becomes training text (`--template`): `plain` is language modelling on
text windows (loss on every token); `qa` and `alpaca` lay a record out as a prompt and an answer, and
the loss covers the answer tokens only."""

from __future__ import annotations

from .sources import Example

TEMPLATES = ("plain", "qa", "alpaca")


def qa_prompt(example: Example) -> str:
    context = f"Context: {example.context}\n" if example.context else ""
    return f"{context}Question: {example.question}\nAnswer:"


def alpaca_prompt(example: Example) -> str:
    text = f"### Instruction:\n{example.question}\n\n"
    if example.context:
        text += f"### Input:\n{example.context}\n\n"
    return text + "### Response:\n"


def prompt_and_answer(template: str, example: Example) -> tuple[str, str]:
    """(prompt, answer) of a record under a templated layout: qa answers after a space, alpaca on
    the line after "### Response:"."""
    if template == "qa":
        return qa_prompt(example), f" {example.answer}"
    if template == "alpaca":
        return alpaca_prompt(example), example.answer
    raise ValueError(f"template {template!r} has no prompt")


def plain_text(example: Example) -> str:
    """A record as running text, for `plain` on record data."""
    parts = [example.context, example.question, example.answer]
    return "\n".join(part for part in parts if part)
