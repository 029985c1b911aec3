"""Batch latencies of one export, in this fresh process: its serving_default through the reloaded SavedModel,
model.onnx, and any other ONNX files, the runtimes taking turns (`timed_in_turn`).

    python -m benchmarks.latency VERSION_DIR INPUTS.npz BATCH=CALLS[,BATCH=CALLS ...] [NAME=FILE.onnx ...]

INPUTS.npz holds the signature's inputs by name, at least as many rows as the largest batch. Prints one JSON line,
{batch: {runtime: [the median ms of each block of calls]}}. The export's own int8 file (export.onnx_int8) runs in
the session the export prescribes (threads that do not spin); any other file in a plain ONNX Runtime session.

A process of its own, as a server holds one model: in the bench's own, after minutes of training and serving, both
of the U-Net's ONNX Runtime files took about 5 ms more a call than in a fresh one (2026-11-29, the Zen 5: int8 ÷
SavedModel 0.54 against 0.475). On 2 EPYC Zen 4 cores (2026-12-07) the transformer's ONNX Runtime call read 1.40 ms
in the bench's process against 0.65 in fresh ones, but also 1.77 once in a fresh one: that machine's slow spells of
2-thread work (benchmarks/README.md) explain as much of it.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tensorflow as tf

from benchmarks.figures import timed_in_turn
from kerasline.export.onnx_int8 import INT8_FILE, int8_session

ROOT = Path(__file__).resolve().parents[1]


def session(path: Path) -> ort.InferenceSession:
    if path.name == INT8_FILE:
        return int8_session(path)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def latencies(version: Path, inputs: dict[str, np.ndarray], calls: dict[int, int], files: dict[str, Path]) -> dict:
    serve = tf.saved_model.load(str(version)).signatures["serving_default"]
    sessions = {name: session(path) for name, path in {"onnxruntime": version / "model.onnx", **files}.items()}
    out = {}
    for batch, n in calls.items():
        feeds = {name: array[:batch] for name, array in inputs.items()}
        tensors = {name: tf.constant(array) for name, array in feeds.items()}
        runs = {"saved_model": lambda t=tensors: {k: v.numpy() for k, v in serve(**t).items()}}
        runs |= {name: (lambda s=s, f=feeds: s.run(None, f)) for name, s in sessions.items()}
        out[batch] = timed_in_turn(runs, n)
    return out


def in_fresh_process(
    version: Path, inputs: dict[str, np.ndarray], calls: dict[int, int], files: dict[str, Path] | None = None
) -> dict[int, dict[str, list]]:
    """`latencies`, measured by this module in a process of its own."""
    with tempfile.TemporaryDirectory(prefix="kerasline-latency-") as tmp:
        np.savez(Path(tmp) / "inputs.npz", **inputs)
        batches = ",".join(f"{batch}={n}" for batch, n in calls.items())
        extra = [f"{name}={path}" for name, path in (files or {}).items()]
        command = [sys.executable, "-m", "benchmarks.latency", str(version), f"{tmp}/inputs.npz", batches, *extra]
        proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{proc.stderr[-3000:]}")
    return {int(batch): rounds for batch, rounds in json.loads(proc.stdout.splitlines()[-1]).items()}


def main(argv: list[str]) -> int:
    version, inputs, calls, *files = argv
    with np.load(inputs) as npz:
        arrays = {name: npz[name] for name in npz.files}
    batches = dict(tuple(int(v) for v in pair.split("=")) for pair in calls.split(","))
    extra = {name: Path(path) for name, path in (pair.split("=", 1) for pair in files)}
    print(json.dumps(latencies(Path(version), arrays, batches, extra)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
