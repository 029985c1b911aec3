"""A multilayer perceptron on the flattened pixels."""

import keras
from keras import layers

from kerasline.config import DataConfig, MLPConfig

ACTIVATIONS = {"leaky_relu": layers.LeakyReLU}  # the rest are keras activation names


def build_mlp(cfg: MLPConfig, data: DataConfig) -> keras.Model:
    """(B, H, W, C) float pixels in [0, 255] → (B, num_classes) class probabilities."""
    regularizer = keras.regularizers.L2(cfg.l2) if cfg.l2 else None
    inputs = keras.Input(shape=tuple(data.image_shape), name="image")
    x = layers.Flatten()(layers.Rescaling(1 / 255)(inputs))
    for i, units in enumerate(cfg.hidden_units):
        x = layers.Dense(units, kernel_initializer=cfg.initializer, kernel_regularizer=regularizer, name=f"dense{i}")(x)
        x = ACTIVATIONS[cfg.activation]()(x) if cfg.activation in ACTIVATIONS else layers.Activation(cfg.activation)(x)
        if cfg.dropout:
            x = layers.Dropout(cfg.dropout)(x)
    logits = layers.Dense(data.num_classes, kernel_regularizer=regularizer, name="logits")(x)
    probabilities = layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    return keras.Model(inputs, probabilities, name="mlp")
