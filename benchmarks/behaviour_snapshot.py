"""Snapshots of what pruning the embedded SmolLM2 gives, to show that a change of code changed nothing:
the mask of every pruned matrix and the perplexities of five runs (reference and sequential at 50% and
2:4, three_tier at 70%).

    python -m benchmarks.behaviour_snapshot save DIR [--data_dir ../shared/data]   # one snapshot.json in DIR
    python -m benchmarks.behaviour_snapshot compare OLD_DIR NEW_DIR                 # exit 1 on any difference

Each run is `python cli.py prune` in a fresh process with the demo's sizes (32 × 512 calibration, 24
evaluation windows), WikiText-2 from --data_dir (valid tokens to calibrate, test split to evaluate), else
the built-in corpus. A mask is stored as the
SHA-256 of its packed bits, so equal digests mean byte-identical masks; perplexities are compared as
floats, exactly.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

RUNS: dict[str, list[str]] = {
    "reference-50": ["--schedule", "reference"],
    "reference-2of4": ["--schedule", "reference", "--sparsity_type", "2:4"],
    "sequential-50": ["--schedule", "sequential"],
    "sequential-2of4": ["--schedule", "sequential", "--sparsity_type", "2:4"],
    "three_tier-70": ["--sparsity_allocation", "three_tier", "--sparsity_ratio", "0.7"],
}
REPORT_FIELDS = ("ppl_dense", "ppl_pruned", "actual_sparsity", "per_layer", "block_sparsity", "nsamples", "seqlen",
                 "calibration_description")


def _mask_digests(model_dir: Path) -> dict[str, str]:
    import torch
    from safetensors.torch import load_file

    digests = {}
    for shard in sorted(model_dir.glob("*.safetensors")):
        for name, tensor in sorted(load_file(str(shard)).items()):
            if ".layers." in name and tensor.dim() >= 2:
                bits = (tensor == 0).reshape(-1).to(torch.uint8).numpy().tobytes()
                digests[name] = hashlib.sha256(bits).hexdigest()
    return digests


def save(directory: Path, data_dir: str | None) -> dict:
    calibration = []
    if data_dir:  # as the benchmark suite: the valid split calibrates (no train split there), the test split evaluates
        valid = Path(data_dir) / "wikitext2" / "wiki.valid.tokens"
        calibration = ["--calibration_dataset", str(valid), "--eval", "wikitext2", "--data_dir", data_dir]
    snapshot = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, flags in RUNS.items():
            report_dir, model_dir = Path(scratch) / f"{name}-report", Path(scratch) / f"{name}-model"
            command = [sys.executable, "cli.py", "prune", "--no_progress", *calibration, *flags,
                       "--save", str(report_dir), "--save_model", str(model_dir)]
            print(f"{name}: {' '.join(command[1:])}", file=sys.stderr)
            subprocess.run(command, cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL,
                           env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
            report = json.loads((report_dir / "report.json").read_text())
            snapshot[name] = {
                "command": " ".join(command[1:]),
                "report": {field: report.get(field) for field in REPORT_FIELDS},
                "masks": _mask_digests(model_dir),
            }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "snapshot.json").write_text(json.dumps(snapshot, indent=1, sort_keys=True) + "\n")
    return snapshot


def differences(old: dict, new: dict) -> list[str]:
    found = []
    for name in sorted(set(old) | set(new)):
        if name not in old or name not in new:
            found.append(f"{name}: only in {'the new' if name in new else 'the old'} snapshot")
            continue
        for field in REPORT_FIELDS:
            if old[name]["report"].get(field) != new[name]["report"].get(field):
                found.append(f"{name}: {field} {old[name]['report'].get(field)!r} -> {new[name]['report'].get(field)!r}")
        masks_old, masks_new = old[name]["masks"], new[name]["masks"]
        changed = sorted(k for k in set(masks_old) | set(masks_new) if masks_old.get(k) != masks_new.get(k))
        if changed:
            found.append(f"{name}: {len(changed)} of {len(masks_old)} masks differ, e.g. {changed[0]}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.behaviour_snapshot", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    saving = commands.add_parser("save", help="run the five prunings and write DIR/snapshot.json")
    saving.add_argument("directory", type=Path)
    saving.add_argument("--data_dir", default=None, help="WikiText-2 calibration and evaluation from here (else built-in)")
    comparing = commands.add_parser("compare", help="compare two snapshots; exit 1 on any difference")
    comparing.add_argument("old", type=Path)
    comparing.add_argument("new", type=Path)
    args = parser.parse_args(argv)
    if args.command == "save":
        snapshot = save(args.directory, args.data_dir)
        masks = sum(len(run["masks"]) for run in snapshot.values())
        print(f"{len(snapshot)} runs, {masks} masks: {args.directory / 'snapshot.json'}")
        return 0
    old = json.loads((args.old / "snapshot.json").read_text())
    new = json.loads((args.new / "snapshot.json").read_text())
    found = differences(old, new)
    for line in found:
        print(line)
    masks = sum(len(run["masks"]) for run in old.values())
    print(f"{'DIFFERENT' if found else 'identical'}: {len(old)} runs, {masks} masks, perplexities and sparsities")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
