"""A multilayer perceptron on the flattened pixels, on a bag of words, or on a table's encoded columns."""

import keras
from keras import layers

from kerasline.config import DataConfig, MLPConfig
from kerasline.models.heads import LOGITS, PROBABILITIES, PROBABILITY, VALUE, float32_head, float32_output
from kerasline.models.text_features import bag_of_words
from kerasline.pipelines.columns import NUMBERS, Table

ACTIVATIONS = {"leaky_relu": layers.LeakyReLU}  # the rest are keras activation names
OUTPUTS = {"softmax": PROBABILITIES, "sigmoid": PROBABILITY, "linear": VALUE}  # a head is its activation's name


def build_mlp(cfg: MLPConfig, data: DataConfig, table: Table | None = None) -> keras.Model:
    """(B, H, W, C) float pixels in [0, 255], (B, L) int token ids (0 pads), or a `table`'s encoded columns
    (pipelines/table.py) → the head's output: softmax (B, num_classes) `probabilities`, sigmoid (B, 1)
    `probability` of class 1, linear (B, 1) `value`."""
    regularizer = keras.regularizers.L2(cfg.l2) if cfg.l2 else None
    if data.input == "columns":
        inputs, x = table_features(table)
    elif data.input == "image":
        inputs = keras.Input(shape=tuple(data.image_shape), name="image")
        x = layers.Flatten()(layers.Rescaling(1 / 255)(inputs))
    else:  # which words (and hashed bigrams) occur, weighed by model.naive_bayes
        inputs = keras.Input(shape=(data.sequence_length,), dtype="int32", name="tokens")
        x = bag_of_words(inputs, data.vocab_size, cfg.bigram_buckets, cfg.naive_bayes)
    for i, units in enumerate(cfg.hidden_units):
        x = layers.Dense(units, kernel_initializer=cfg.initializer, kernel_regularizer=regularizer, name=f"dense{i}")(x)
        x = ACTIVATIONS[cfg.activation]()(x) if cfg.activation in ACTIVATIONS else layers.Activation(cfg.activation)(x)
        if cfg.dropout:
            x = layers.Dropout(cfg.dropout)(x)
    units = data.num_classes if cfg.head == "softmax" else 1
    if table is not None and cfg.head == "linear":  # learn the standardised value: the scale of grams, not of 0.1
        logits = layers.Dense(1, name=LOGITS, kernel_regularizer=regularizer)(x)
        scaled = layers.Rescaling(table.label_std, offset=table.label_mean, dtype="float32", name="label_scale")(logits)
        return keras.Model(inputs, float32_output(scaled, "linear", VALUE), name="mlp")
    outputs = float32_head(x, units, cfg.head, OUTPUTS[cfg.head], kernel_regularizer=regularizer)
    return keras.Model(inputs, outputs, name="mlp")


def table_features(table: Table) -> tuple[dict[str, keras.KerasTensor], keras.KerasTensor]:
    """The encoded columns' inputs, and their features (B, D): the numbers as they are, each id one-hot or
    embedded. Id 0, a category training never saw, encodes as zeros: it adds nothing to the prediction."""
    inputs, features = {}, []
    if table.numbers:
        inputs[NUMBERS] = keras.Input(shape=(len(table.numbers),), name=NUMBERS)
        features.append(inputs[NUMBERS])
    for name, (size, embedding_dim) in table.id_inputs().items():
        ids = inputs[name] = keras.Input(shape=(), dtype="int32", name=name)
        if embedding_dim is None:
            features.append(layers.CategoryEncoding(size, output_mode="one_hot", name=f"{name}_one_hot")(ids)[:, 1:])
        else:
            embedded = layers.Embedding(size, embedding_dim, name=f"{name}_embedding")(ids)
            features.append(embedded * keras.ops.expand_dims(keras.ops.cast(ids > 0, embedded.dtype), -1))
    return inputs, features[0] if len(features) == 1 else layers.Concatenate()(features)
