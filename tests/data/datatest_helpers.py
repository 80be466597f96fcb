"""Helpers for the data-adapter tests: synthetic text in the official file layouts."""

from __future__ import annotations

import gzip
import json
import random

VOCAB = [f"w{i}" for i in range(300)] + ["=", "Title", "?", "ANSWERWORD", "TITLEWORD"]


def words(n: int, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(VOCAB[:300]) for _ in range(n))


def wiki_lines(n_articles: int, seed: int) -> str:
    """Text in the official wiki.*.raw layout: titles, blank lines (" \\n" and "\\n"), paragraphs."""
    rng = random.Random(seed)
    out = [" \n"]
    for a in range(n_articles):
        out += [f" = Title w{a} = \n", " \n"]
        for p in range(3):
            out += [" " + words(rng.randint(20, 60), seed * 1000 + a * 10 + p) + " \n", "\n" if p % 2 else " \n"]
    return "".join(out)


def squad_obj(n_articles: int = 3, seed: int = 0, long_context: bool = False) -> dict:
    data = []
    for a in range(n_articles):
        paragraphs = []
        for p in range(3):
            n = 400 if (long_context and p == 0) else 15 + 5 * p
            context = words(n, seed * 100 + a * 10 + p)
            qas = [
                {"question": words(6, 7000 + a * 100 + p * 10 + q) + " ?", "id": f"{a}-{p}-{q}",
                 "answers": [{"text": context.split()[0], "answer_start": 0}], "is_impossible": False}
                for q in range(2)
            ]
            paragraphs.append({"context": context, "qas": qas})
        data.append({"title": f"Article_{a}", "paragraphs": paragraphs})
    return {"version": "v2.0", "data": data}


def squad_pairs(obj: dict) -> list[tuple[str, str]]:
    return [(p["context"], q["question"]) for a in obj["data"] for p in a["paragraphs"] for q in p["qas"]]


def c4_docs(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [words(rng.choice([5, 10, 80, 150]), seed * 10000 + i) for i in range(n)]


def write_jsonl(path, records, gz: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in records)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
