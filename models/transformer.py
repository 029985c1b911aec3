"""Transformer encoder classifiers: over token ids (text) and over image patches (ViT)."""

import keras
from keras import layers, ops

from kerasline.config import DataConfig, EncoderKnobs, TransformerConfig, ViTConfig
from kerasline.models.blocks import MaskedPooling, PositionEmbedding, TransformerEncoder, classifier_head
from kerasline.models.text_features import wide_and_deep


def build_transformer(cfg: TransformerConfig, data: DataConfig) -> keras.Model:
    """(B, L) int token ids, 0 = padding → (B, num_classes) class probabilities; model.bag_of_words: the bag of
    words beside the pooled encoding (wide & deep)."""
    tokens = keras.Input(shape=(data.sequence_length,), dtype="int32", name="tokens")
    padding_mask = ops.not_equal(tokens, 0)
    x = layers.Embedding(data.vocab_size, cfg.d_model, name="token_embedding")(tokens)
    x = PositionEmbedding(cfg.position, name="position_embedding")(x)
    x = _encoder(x, cfg, padding_mask)
    x = MaskedPooling("mean", name="mean_pool")(x, mask=padding_mask)
    x = wide_and_deep(x, tokens, cfg, data)
    return keras.Model(tokens, classifier_head(x, data.num_classes, cfg.dropout), name="transformer")


def build_vit(cfg: ViTConfig, data: DataConfig) -> keras.Model:
    """(B, H, W, C) float pixels in [0, 255] → (B, num_classes) class probabilities."""
    image = keras.Input(shape=tuple(data.image_shape), name="image")
    x = layers.Rescaling(1 / 255)(image)
    # A strided convolution is the linear projection of each non-overlapping patch.
    x = layers.Conv2D(cfg.d_model, cfg.patch_size, strides=cfg.patch_size, name="patch_embedding")(x)
    x = layers.Reshape((-1, cfg.d_model), name="patches")(x)
    x = PositionEmbedding("learned", name="position_embedding")(x)
    x = _encoder(x, cfg, padding_mask=None)
    x = layers.GlobalAveragePooling1D(name="mean_pool")(x)
    return keras.Model(image, classifier_head(x, data.num_classes, cfg.dropout), name="vit")


def _encoder(x, cfg: EncoderKnobs, padding_mask):
    x = layers.Dropout(cfg.dropout)(x)
    for i in range(cfg.layers):
        x = TransformerEncoder(cfg.d_model, cfg.heads, cfg.ff_dim, cfg.dropout, name=f"encoder{i}")(
            x, padding_mask=padding_mask
        )
    return x
