"""Fixtures for the kernels tests (helpers live in kernels_testutil.py)."""

import pytest

from kernels_testutil import DEVICE


@pytest.fixture
def device() -> str:
    return DEVICE
