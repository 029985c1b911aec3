"""Run a SavedModel's signatures in this (fresh) process:

python -m kerasline.export.reload    then, on stdin, one a line: DIR, IN.npz, OUT.npz

The paths come on stdin so the process can start before they exist: it imports TensorFlow while its parent writes
the SavedModel (export/verify.py, SavedModelReloader).
"""

import sys

import numpy as np
import tensorflow as tf


def main(saved_model: str, inputs: str, outputs: str) -> None:
    """Inputs named `signature/input` go to that signature (outputs come back as `signature/output`);
    plain names go to serving_default."""
    signatures = tf.saved_model.load(saved_model).signatures
    with np.load(inputs, allow_pickle=False) as arrays:
        grouped = {}
        for key in arrays.files:
            signature, _, name = key.rpartition("/")
            grouped.setdefault(signature, {})[name] = tf.constant(arrays[key])
    results = {}
    for signature, given in grouped.items():
        prefix = f"{signature}/" if signature else ""
        result = signatures[signature or "serving_default"](**given)
        results |= {f"{prefix}{name}": _savable(t.numpy()) for name, t in result.items()}
    np.savez(outputs, **results)


def _savable(array: np.ndarray) -> np.ndarray:
    """Strings (object arrays of bytes) as fixed-width bytes: an .npz read without pickle cannot hold objects."""
    return array.astype(bytes) if array.dtype == object else array


if __name__ == "__main__":
    main(*(sys.stdin.readline().rstrip("\n") for _ in range(3)))
