"""A VGG-style image classifier: [conv → (BN) → ReLU] × n → max-pool, per block; then a dense head."""

import keras
from keras import layers

from kerasline.config import BatchNormKnob, CNNConfig, DataConfig
from kerasline.models.heads import PROBABILITIES, float32_head


def batch_norm(cfg: BatchNormKnob, **kwargs) -> layers.BatchNormalization:
    """BatchNorm whose statistics span every replica where the config asks (only the TensorFlow backend has
    that: synchronized=True raises on the others)."""
    synchronized = cfg.sync_batch_norm and keras.backend.backend() == "tensorflow"
    return layers.BatchNormalization(synchronized=synchronized, **kwargs)


def build_cnn(cfg: CNNConfig, data: DataConfig) -> keras.Model:
    """(B, H, W, C) float pixels in [0, 255] → (B, num_classes) class probabilities."""
    regularizer = keras.regularizers.L1L2(l1=cfg.l1, l2=cfg.l2) if cfg.l1 or cfg.l2 else None
    conv_kwargs = dict(
        padding=cfg.padding,
        kernel_initializer=cfg.initializer,
        kernel_regularizer=regularizer,
        use_bias=not cfg.batch_norm,
    )

    inputs = keras.Input(shape=tuple(data.image_shape), name="image")
    x = layers.Rescaling(1 / 255)(inputs)
    if cfg.input_size:
        x = layers.Resizing(cfg.input_size, cfg.input_size, name="resize")(x)
    for block, filters in enumerate(cfg.filters):
        for i in range(cfg.convs_per_block):
            x = layers.Conv2D(filters, 3, name=f"block{block}_conv{i}", **conv_kwargs)(x)
            if cfg.batch_norm:
                # Statistics over the global batch under tf.distribute, so replicas train like one device.
                x = batch_norm(cfg, name=f"block{block}_bn{i}")(x)
            x = layers.ReLU()(x)
        x = layers.MaxPooling2D(name=f"block{block}_pool")(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(cfg.dropout)(x)
    if cfg.dense_units:
        dense = dict(activation="relu", kernel_initializer=cfg.initializer, kernel_regularizer=regularizer)
        x = layers.Dense(cfg.dense_units, name="hidden", **dense)(x)  # named: model.init_from matches by name
        x = layers.Dropout(cfg.dropout)(x)
    probabilities = float32_head(x, data.num_classes, "softmax", PROBABILITIES, kernel_regularizer=regularizer)
    return keras.Model(inputs, probabilities, name="cnn")
