"""How every model ends: a float32 output layer, under the names that training, exports and benchmarks look up.

The output is float32 even under mixed precision, for the loss's numeric stability (a float16 softmax rounds
small probabilities to 0) and so that every export serves float32.
"""

import keras
from keras import layers

LOGITS = "logits"  # the pre-activation Dense (or 1×1 conv) that feeds the output layer
PROBABILITIES = "probabilities"  # softmax over the classes (per pixel for the U-Net)
PROBABILITY = "probability"  # sigmoid: the probability of class 1
VALUE = "value"  # linear: a regression's prediction
PIXELS = "pixels"  # an autoencoder's decoder: the reconstruction in [0, 1]
IMAGE = "image"  # the GAN's generator: an image in [-1, 1]


def float32_output(x: keras.KerasTensor, activation: str, name: str) -> keras.KerasTensor:
    """Activation(activation) computed in float32, named `name`: the model's output. Shape unchanged."""
    return layers.Activation(activation, dtype="float32", name=name)(x)


def float32_head(x: keras.KerasTensor, units: int, activation: str, name: str, **dense_kwargs) -> keras.KerasTensor:
    """(B, D) → Dense(units) named `logits` → float32 `activation` named `name`: (B, units)."""
    logits = layers.Dense(units, name=LOGITS, **dense_kwargs)(x)
    return float32_output(logits, activation, name)
