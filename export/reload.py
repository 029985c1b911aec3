"""Run a SavedModel's serving signature in this (fresh) process: `python -m export.reload DIR IN.npz OUT.npz`."""

import sys

import numpy as np
import tensorflow as tf


def main(saved_model: str, inputs: str, outputs: str) -> None:
    serve = tf.saved_model.load(saved_model).signatures["serving_default"]
    with np.load(inputs, allow_pickle=False) as arrays:
        result = serve(**{name: tf.constant(arrays[name]) for name in arrays.files})
    np.savez(outputs, **{name: t.numpy() for name, t in result.items()})


if __name__ == "__main__":
    main(*sys.argv[1:])
