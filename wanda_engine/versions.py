"""The software a run used, for its report."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

import torch


def software_versions(*packages: str) -> dict[str, str]:
    """Python's and torch's versions, and those of `packages` ("not installed" where absent)."""
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for package in packages:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions
