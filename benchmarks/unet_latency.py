"""Bench item 13's batch-1 latencies, in this fresh process: one export's serving_default through the reloaded
SavedModel, model.onnx and model-int8.onnx (export.onnx_int8), the runtimes taking turns.

    python -m benchmarks.unet_latency VERSION_DIR IMAGE.npy CALLS ROUNDS

prints one JSON line, {runtime: [the median ms of CALLS calls, one a round]}. Rounds run A B C C B A ..., so a
drifting load falls on every runtime alike. A process of its own: in the bench's own, after minutes of training
and serving, both ONNX Runtime files took about 5 ms more a call than in a fresh one while the SavedModel's time
was unchanged (2026-11-29, the Zen 5: int8 ÷ SavedModel 0.54 against 0.475).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tensorflow as tf

from benchmarks.figures import timed_in_turn
from kerasline.export.onnx_int8 import INT8_FILE, int8_session


def latencies(version: Path, image: np.ndarray, calls: int, rounds: int) -> dict[str, list[float]]:
    serve = tf.saved_model.load(str(version)).signatures["serving_default"]
    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    int8 = int8_session(version / INT8_FILE)
    runs = {
        "saved_model": lambda: serve(image=tf.constant(image))["probabilities"].numpy(),
        "onnxruntime": lambda: session.run(["probabilities"], {"image": image})[0],
        "onnxruntime_int8": lambda: int8.run(["probabilities"], {"image": image})[0],
    }
    return timed_in_turn(runs, calls * rounds, rounds)


if __name__ == "__main__":
    version, image, calls, rounds = Path(sys.argv[1]), np.load(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(latencies(version, image, calls, rounds)))
