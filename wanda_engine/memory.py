"""Peak resident set size as the kernel reports it (getrusage's ru_maxrss), in MB."""

from __future__ import annotations

import resource
import sys

# ru_maxrss is in KiB on Linux and in bytes on macOS.
_RU_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024


def maxrss_mb(usage: resource.struct_rusage) -> float:
    """ru_maxrss of a getrusage/os.wait4 result, in MB."""
    return usage.ru_maxrss * _RU_MAXRSS_UNIT / 2**20


def peak_rss_mb() -> float:
    """This process's peak RSS so far."""
    return maxrss_mb(resource.getrusage(resource.RUSAGE_SELF))
