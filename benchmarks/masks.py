"""How many mask entries two saved pruned models share, read from their safetensors weights (pruned =
exactly zero): the masks are compared on what each side saved, not on anything it reports."""

from __future__ import annotations

import re
from pathlib import Path

_BLOCK_WEIGHT = re.compile(r"(^|\.)layers\.\d+\..+\.weight$")


def pruned_linear_tensors(model_dir: Path) -> dict[str, Path]:
    """Decoder-block linear weights (2-D tensors under `layers.N.`) of a saved model → their shard file."""
    from safetensors import safe_open

    found: dict[str, Path] = {}
    for shard in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            for key in f.keys():
                if _BLOCK_WEIGHT.search(key) and len(f.get_slice(key).get_shape()) == 2:
                    found[key] = shard
    return found


def mask_agreement(dir_a: Path, dir_b: Path) -> tuple[int, int]:
    """(entries whose zero / non-zero state agrees, entries) over the pruned linears of two saved models."""
    from safetensors import safe_open

    a, b = pruned_linear_tensors(dir_a), pruned_linear_tensors(dir_b)
    if set(a) != set(b) or not a:
        raise ValueError(f"the saved models hold different pruned linears ({len(a)} vs {len(b)} tensors)")
    same = total = 0
    for key in sorted(a):
        with safe_open(str(a[key]), framework="pt") as fa, safe_open(str(b[key]), framework="pt") as fb:
            wa, wb = fa.get_tensor(key), fb.get_tensor(key)
        if wa.shape != wb.shape:
            raise ValueError(f"{key}: shapes {tuple(wa.shape)} and {tuple(wb.shape)} differ")
        same += int(((wa == 0) == (wb == 0)).sum())
        total += wa.numel()
    return same, total
