"""Layers the sequence and attention models share: positions, a Transformer encoder block, masked pooling."""

import math

import keras
import numpy as np
from keras import layers, ops

from kerasline.models.heads import PROBABILITIES, float32_head


class PositionEmbedding(layers.Layer):
    """Adds a position code to a sequence: learned, or the fixed sinusoids of Vaswani et al. (2017).

    (B, L, D) → (B, L, D).
    """

    def __init__(self, kind: str = "learned", **kwargs):
        super().__init__(**kwargs)
        self.kind = kind

    def build(self, input_shape):
        length, width = input_shape[-2], input_shape[-1]
        if self.kind == "learned":
            self.positions = self.add_weight(shape=(length, width), initializer="random_normal", name="positions")
        else:
            angle = np.arange(length)[:, None] / np.power(10_000, (np.arange(width) // 2 * 2) / width)
            table = np.where(np.arange(width) % 2 == 0, np.sin(angle), np.cos(angle))
            self.positions = self.add_weight(
                shape=(length, width), initializer=keras.initializers.Constant(table), trainable=False, name="positions"
            )

    def call(self, inputs):
        return inputs + ops.cast(self.positions, inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind}


class TransformerEncoder(layers.Layer):
    """Post-LN encoder block: x + MHA(x) → LayerNorm → x + FFN(x) → LayerNorm. The feed-forward network is
    ReLU, as in Vaswani et al.: exact GELU becomes an Erfc that ONNX does not define.

    (B, L, D) and an optional padding mask (B, L) bool → (B, L, D); with return_attention_scores=True, also the
    attention scores (B, heads, L, L), as Keras's MultiHeadAttention returns them.
    """

    def __init__(self, d_model: int, heads: int, ff_dim: int, dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.d_model, self.heads, self.ff_dim, self.dropout = d_model, heads, ff_dim, dropout
        self.attention = layers.MultiHeadAttention(heads, d_model // heads, dropout=dropout, name="attention")
        self.feed_forward = keras.Sequential(
            [layers.Dense(ff_dim, activation="relu"), layers.Dense(d_model)], name="feed_forward"
        )
        self.norm1, self.norm2 = layers.LayerNormalization(name="norm1"), layers.LayerNormalization(name="norm2")
        self.drop1, self.drop2 = layers.Dropout(dropout), layers.Dropout(dropout)

    def build(self, input_shape):
        self.attention.build(input_shape, input_shape)
        self.feed_forward.build(input_shape)
        self.norm1.build(input_shape)
        self.norm2.build(input_shape)

    def call(self, inputs, padding_mask=None, training=None, return_attention_scores=False):
        attention_mask = None
        if padding_mask is not None:  # every query may look at every non-padding key
            attention_mask = ops.repeat(ops.expand_dims(padding_mask, 1), ops.shape(inputs)[1], axis=1)
        # Scores even when not returned: asked for them, MHA keeps its explicit masked softmax; without them (and
        # dropout 0) it switches to ops.dot_product_attention, and the graph would depend on who calls.
        attended, scores = self.attention(
            inputs, inputs, attention_mask=attention_mask, return_attention_scores=True, training=training
        )
        x = self.norm1(inputs + self.drop1(attended, training=training))
        x = self.norm2(x + self.drop2(self.feed_forward(x), training=training))
        return (x, scores) if return_attention_scores else x

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, inputs, padding_mask=None, training=None, return_attention_scores=False):
        # compute_output_shape sees shapes only, not the flag: the scores' spec is added here, as in Keras's MHA.
        x = keras.KerasTensor(self.compute_output_shape(inputs.shape), dtype=self.compute_dtype)
        if not return_attention_scores:
            return x
        batch, length = inputs.shape[0], inputs.shape[1]
        return x, keras.KerasTensor((batch, self.heads, length, length), dtype=self.compute_dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "d_model": self.d_model,
            "heads": self.heads,
            "ff_dim": self.ff_dim,
            "dropout": self.dropout,
        }


class MaskedPooling(layers.Layer):
    """Mean or max over the steps that the mask keeps. (B, L, D) and a mask (B, L) → (B, D)."""

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        self.mode = mode
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            mask = ops.ones(ops.shape(inputs)[:2], "bool")
        keep = ops.expand_dims(ops.cast(mask, "bool"), -1)
        if self.mode == "max":  # an all-padding sequence pools to 0, not -inf
            pooled = ops.max(ops.where(keep, inputs, ops.cast(-math.inf, inputs.dtype)), axis=1)
            return ops.where(ops.any(keep, axis=1), pooled, ops.zeros_like(pooled))
        weights = ops.cast(keep, inputs.dtype)
        return ops.sum(inputs * weights, axis=1) / ops.maximum(ops.sum(weights, axis=1), 1.0)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def classifier_head(x: keras.KerasTensor, num_classes: int, dropout: float) -> keras.KerasTensor:
    """(B, D) → dropout → logits → float32 softmax named `probabilities`: (B, num_classes)."""
    return float32_head(layers.Dropout(dropout)(x), num_classes, "softmax", PROBABILITIES)
