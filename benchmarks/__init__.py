"""pytest-benchmark suites (bench_*.py); a package so that the suites share benchmarks/conftest.py's helpers
and the gate runs as ``python -m benchmarks.gate``."""
