"""A multilayer perceptron on the flattened pixels, or on a bag of words."""

import keras
from keras import layers

from kerasline.config import DataConfig, MLPConfig
from kerasline.models.heads import PROBABILITIES, PROBABILITY, VALUE, float32_head

ACTIVATIONS = {"leaky_relu": layers.LeakyReLU}  # the rest are keras activation names
OUTPUTS = {"softmax": PROBABILITIES, "sigmoid": PROBABILITY, "linear": VALUE}  # a head is its activation's name


def build_mlp(cfg: MLPConfig, data: DataConfig) -> keras.Model:
    """(B, H, W, C) float pixels in [0, 255], or (B, L) int token ids (0 pads) → the head's output:
    softmax (B, num_classes) `probabilities`, sigmoid (B, 1) `probability` of class 1, linear (B, 1) `value`."""
    regularizer = keras.regularizers.L2(cfg.l2) if cfg.l2 else None
    if data.input == "image":
        inputs = keras.Input(shape=tuple(data.image_shape), name="image")
        x = layers.Flatten()(layers.Rescaling(1 / 255)(inputs))
    else:  # which words occur, padding excluded (a multi-hot count, not one-hot then max: 4x faster in ONNX Runtime)
        inputs = keras.Input(shape=(data.sequence_length,), dtype="int32", name="tokens")
        x = layers.CategoryEncoding(data.vocab_size, output_mode="multi_hot", name="bag_of_words")(inputs)[:, 1:]
    for i, units in enumerate(cfg.hidden_units):
        x = layers.Dense(units, kernel_initializer=cfg.initializer, kernel_regularizer=regularizer, name=f"dense{i}")(x)
        x = ACTIVATIONS[cfg.activation]()(x) if cfg.activation in ACTIVATIONS else layers.Activation(cfg.activation)(x)
        if cfg.dropout:
            x = layers.Dropout(cfg.dropout)(x)
    units = data.num_classes if cfg.head == "softmax" else 1
    outputs = float32_head(x, units, cfg.head, OUTPUTS[cfg.head], kernel_regularizer=regularizer)
    return keras.Model(inputs, outputs, name="mlp")
