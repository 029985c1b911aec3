"""Benchmarks for kerasline: `python -m benchmarks.run` prints a table and writes benchmarks/results.json."""
