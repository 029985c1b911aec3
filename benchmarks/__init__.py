"""Benchmarks for kerasline: `python -m benchmarks.run` prints a table and writes benchmarks/results.json."""

# First, so that every item starts TensorFlow as kerasline does (oneDNN on for every x86 CPU; kerasline/__init__.py).
import kerasline  # noqa: F401
