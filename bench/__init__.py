"""Benchmarks: run from the repo root as `python -m bench.<name>`; each prints a table and
writes JSON."""
