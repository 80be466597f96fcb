"""``mix:<source>=<weight>,<source>=<weight>,...``: a weighted mix of calibration sources.

Per-source sample counts are proportional to the weights (largest-remainder rounding, ties to the earlier
source, so they sum to nsamples); source k (0-based, in the order written) is sampled with seed + k, so a
source's samples equal the first samples it gives alone with that seed. The concatenated samples are then
shuffled with ``torch.randperm`` on a ``torch.Generator`` seeded with ``seed``. Nested mixes are rejected.
"""

from __future__ import annotations

import math

import torch

from wanda_engine.errors import UserError

from .base import CalibrationSet, Request
from .registry import PREFIXES

USAGE = "mix:<source>=<weight>,<source>=<weight>, e.g. mix:wikitext2=0.5,squad=0.5"


def parse(rest: str, spec: str) -> list[tuple[str, float]]:
    items = []
    for part in rest.split(","):
        name, eq, weight_text = part.strip().rpartition("=")
        name = name.strip()
        if not eq or not name:
            raise UserError(f"mix entry {part.strip()!r} in {spec!r} is not <source>=<weight>; use {USAGE}")
        if name.lower().startswith("mix:"):
            raise UserError(f"nested mix {name!r} in {spec!r} is not allowed; list all sources in one mix: {USAGE}")
        try:
            weight = float(weight_text)
        except ValueError:
            raise UserError(f"mix weight {weight_text.strip()!r} of {name!r} is not a number; use {USAGE}") from None
        if not math.isfinite(weight) or weight <= 0:
            raise UserError(f"mix weight {weight_text.strip()!r} of {name!r} must be a positive number; use {USAGE}")
        if any(n == name for n, _ in items):
            raise UserError(f"source {name!r} appears twice in {spec!r}; give it once with the summed weight")
        items.append((name, weight))
    return items


def split_counts(weights: list[float], total: int) -> list[int]:
    """Largest-remainder apportionment of ``total`` by ``weights`` (ties go to the earlier entry)."""
    s = sum(weights)
    quotas = [w / s * total for w in weights]
    counts = [int(math.floor(q)) for q in quotas]
    left = total - sum(counts)
    order = sorted(range(len(weights)), key=lambda k: (-(quotas[k] - counts[k]), k))
    for k in order[:left]:
        counts[k] += 1
    return counts


@PREFIXES.register("mix")
def load(req: Request, rest: str) -> CalibrationSet:
    from .dispatch import load_one

    items = parse(rest, req.spec)
    counts = split_counts([w for _, w in items], req.nsamples)
    parts, notes = [], []
    for k, ((name, weight), count) in enumerate(zip(items, counts)):
        if count == 0:
            notes.append(f"[{name} weight {weight:g}: 0 samples, not loaded]")
            continue
        sub = load_one(name, req.with_(spec=name, nsamples=count, seed=req.seed + k))
        parts.append(sub)
        notes.append(f"[{name} weight {weight:g}: {count} samples, seed {req.seed + k}: {sub.description}]")
    input_ids = torch.cat([p.input_ids for p in parts])
    mask = torch.cat([p.attention_mask for p in parts])
    perm = torch.randperm(input_ids.shape[0], generator=torch.Generator().manual_seed(req.seed))
    description = (
        f"mix of {len(items)} sources, {req.nsamples} samples split by weight (largest remainder): "
        + " ".join(notes)
        + f"; concatenated then shuffled with torch.randperm(generator seed {req.seed})"
    )
    return CalibrationSet(input_ids[perm], mask[perm], description)
