"""Benchmarks: pytest-benchmark suites and a re-statement of the reference schedule."""
