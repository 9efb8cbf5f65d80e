"""Benchmarks (see bench/runtime.py and docs/benchmarks.md)."""
