"""Benchmarks: `python -m bench.bench_<area>` prints figures (see each module)."""
