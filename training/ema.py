"""training.ema: validation and best.weights.h5 (so the test metrics, the report and the export) on an exponential
moving average of the weights, while training goes on with the raw weights.

Keras 3.15's optimizers keep the average (use_ema=True, training/optim.py): after every step, for each trainable
variable, average = d · average + (1 − d) · weight, the first step's average being the weight itself and d the decay
ema warmed up (warmed_up_decay). The averages are optimizer variables, so save_weights writes them and a resumed run
(training/checkpoint.py) reloads them exactly. Only trainable variables are averaged: BatchNorm's moving mean and
variance stay the raw model's, as they are when the averages are validated or saved.

keras.callbacks.SwapEMAWeights swaps by adding and subtracting in place ((a + b) − b is not always a in floating
point), so every validation would nudge the raw weights; here they are copied out and put back exactly.
"""

import contextlib
from collections.abc import Iterator

import keras
import numpy as np
import tensorflow as tf


def warmed_up_decay(decay: float, step: tf.Tensor | int) -> tf.Tensor:
    """A moving average's decay at step `step` (0 is the first): 0 there, so the average starts as the weights, then
    min(decay, (1 + t) / (10 + t)), as TensorFlow's ExponentialMovingAverage(num_updates) and Model Garden's EMA
    optimizer (dynamic_decay) warm it up. A fixed decay keeps decay^t of the first step's weights in the average:
    0.999 on `mnist_best` (49 steps an epoch) still held 43% of them after 17 epochs and validated at 11.5%."""
    t = keras.ops.cast(step, "float32")
    return keras.ops.where(t > 0, keras.ops.minimum(decay, (1 + t) / (10 + t)), 0.0)


def averages(model: keras.Model) -> list[tuple[keras.Variable, keras.Variable]]:
    """(weight, its average) for each averaged weight; [] without training.ema or before the optimizer is built."""
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)  # under mixed_float16, the wrapped one
    if not (getattr(optimizer, "use_ema", False) and optimizer.built):
        return []
    pairs = zip(optimizer._trainable_variables, optimizer._model_variables_moving_average, strict=True)
    return [(weight, average) for weight, average in pairs if average is not None]


def swap_in(model: keras.Model) -> list[np.ndarray]:
    """Sets each averaged weight to its average; returns the raw values, for `put_back`."""
    pairs = averages(model)
    raw = [keras.ops.convert_to_numpy(weight) for weight, _ in pairs]
    for weight, average in pairs:
        weight.assign(average)
    return raw


def put_back(model: keras.Model, raw: list[np.ndarray]) -> None:
    for (weight, _), value in zip(averages(model), raw, strict=True):
        weight.assign(value)


@contextlib.contextmanager
def averaged(model: keras.Model) -> Iterator[None]:
    """The averages in the model's weights inside the block (nothing changes without training.ema)."""
    raw = swap_in(model)
    try:
        yield
    finally:
        put_back(model, raw)


class AveragedValidation(keras.callbacks.Callback):
    """Each epoch's validation on the averages, so the val_ metrics, the monitor, early stopping and the choice of
    best.weights.h5 are theirs; the raw weights are back before the next step."""

    def on_test_begin(self, logs=None):
        self.raw = swap_in(self.model)

    def on_test_end(self, logs=None):
        put_back(self.model, self.raw)
