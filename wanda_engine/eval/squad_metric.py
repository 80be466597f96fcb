"""SQuAD exact match and F1 as the official v2.0 evaluation script defines them, computed here so that
scoring needs no download (lm-eval's own `squadv2` fetches its metric from the hub at run time).

Answers are compared after normalisation: lower case, punctuation removed, the articles a/an/the
removed, whitespace collapsed. A question scores the best over its gold answers; an unanswerable one
has the single gold answer "" (so only an empty prediction matches it).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Iterable

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text: str) -> str:
    lowered = text.lower()
    without_punctuation = "".join(ch for ch in lowered if ch not in _PUNCTUATION)
    without_articles = _ARTICLES.sub(" ", without_punctuation)
    return " ".join(without_articles.split())


def exact_match(gold: str, prediction: str) -> float:
    return float(normalize_answer(gold) == normalize_answer(prediction))


def f1(gold: str, prediction: str) -> float:
    """Token-overlap F1 of the normalised answers; two empty answers agree (1.0), one empty does not."""
    gold_tokens, predicted_tokens = normalize_answer(gold).split(), normalize_answer(prediction).split()
    if not gold_tokens or not predicted_tokens:
        return float(gold_tokens == predicted_tokens)
    shared = sum((Counter(gold_tokens) & Counter(predicted_tokens)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(predicted_tokens), shared / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def gold_answers(answers: Iterable[str]) -> list[str]:
    """The answers a prediction is compared with: those that normalise to something, or [""] when none
    does (an unanswerable v2 question)."""
    kept = [answer for answer in answers if normalize_answer(answer)]
    return kept or [""]


def best_exact_match(answers: Iterable[str], prediction: str) -> float:
    return max(exact_match(gold, prediction) for gold in gold_answers(answers))


def best_f1(answers: Iterable[str], prediction: str) -> float:
    return max(f1(gold, prediction) for gold in gold_answers(answers))
