"""What one run of `python -m benchmarks` measures with: sizes for the full and the --quick run, where the
data and work dirs are, how many threads each side gets. One object, handed to every step, so that no step
reads a module global."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("e2e", "scaling", "parallel", "kernels")
DEFAULT_DATA_DIR = "../shared/data"  # relative to the repository root


@dataclass
class Settings:
    quick: bool
    data_dir: Path
    work_dir: Path
    threads: int | None = None  # --threads: intra-op threads of every side (OMP_NUM_THREADS); None = torch's
    # e2e
    e2e_nsamples: int = 32
    e2e_seqlen: int = 512
    e2e_eval_limit: int = 40
    batch_size: int = 8
    # Each e2e side runs this many times, the sides interleaved, and the fastest run counts: one run's
    # prune stage moves by ±10% on a shared 2-core machine, as much as the margins the goals test.
    e2e_repeats: int = 2
    sparsities: tuple = (("unstructured", 0.5), ("unstructured", 0.6), ("2:4", None))
    # scaling
    depths: tuple = (8, 32)
    model_shape: dict = field(
        default_factory=lambda: dict(hidden=1024, heads=16, kv_heads=4, intermediate=2816, vocab=32000)
    )
    shard_size: str = "200MB"
    scaling_nsamples: int = 8
    scaling_seqlen: int = 256
    # parallel: data-parallel pruning (torchrun, gloo) against one process, on the e2e calibration
    parallel_ranks: int = 2
    parallel_repeats: int = 2
    # kernels
    kernel_args: tuple = ("--threads", "1", "--rounds", "7")
    timeout_s: int = 4 * 3600

    @classmethod
    def make(cls, quick: bool, data_dir: Path, work_dir: Path, threads: int | None = None) -> "Settings":
        settings = cls(quick=quick, data_dir=data_dir, work_dir=work_dir, threads=threads)
        if quick:
            settings.e2e_nsamples, settings.e2e_seqlen, settings.e2e_eval_limit = 4, 64, 2
            settings.e2e_repeats = settings.parallel_repeats = 1
            settings.depths = (2, 4)
            settings.model_shape = dict(hidden=256, heads=4, kv_heads=2, intermediate=704, vocab=1024)
            settings.shard_size = "2MB"
            settings.scaling_nsamples, settings.scaling_seqlen = 2, 64
            settings.kernel_args = ("--threads", "1", "--rounds", "1", "--rows", "8")
            settings.timeout_s = 900
        return settings

    def calibration(self) -> str:
        valid = self.data_dir / "wikitext2" / "wiki.valid.tokens"
        return str(valid) if valid.is_file() else "builtin"

    def eval_spec(self) -> str:
        return "wikitext2" if (self.data_dir / "wikitext2" / "wiki.test.raw").is_file() else "builtin"

    def data_dir_arg(self) -> list[str]:
        return ["--data_dir", str(self.data_dir)] if self.data_dir.is_dir() else []


def repo_path(value: str | None, default: str) -> Path:
    """A given path from the current directory; the default from the repository root."""
    if value is None:
        return (REPO_ROOT / default).resolve()
    return Path(value).expanduser().resolve()
