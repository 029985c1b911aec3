"""The course's wider CIFAR-10 CNN: three blocks of two 3×3 convs, BatchNorm on each block's first conv."""

import keras
from keras import layers

from kerasline.config import DataConfig, WideCNNConfig
from kerasline.models.cnn import batch_norm
from kerasline.models.heads import PROBABILITIES, float32_head


def build_wide_cnn(cfg: WideCNNConfig, data: DataConfig) -> keras.Model:
    """(B, H, W, C) float pixels in [0, 255] → (B, num_classes). On 32×32×3 and 10 classes: 5,852,170 trainable
    parameters (the flattened 4×4×256 = 4096 features feed dense 1024 → 512 → 10)."""
    inputs = keras.Input(shape=tuple(data.image_shape), name="image")
    x = layers.Rescaling(1 / 255)(inputs)
    for block, (first, second) in enumerate([(32, 64), (128, 128), (256, 256)]):
        x = layers.Conv2D(first, 3, padding="same", name=f"block{block}_conv0")(x)
        x = layers.ReLU()(batch_norm(cfg, name=f"block{block}_bn")(x))
        x = layers.Conv2D(second, 3, padding="same", activation="relu", name=f"block{block}_conv1")(x)
        x = layers.MaxPooling2D()(x)
        if block == 1:
            x = layers.Dropout(cfg.dropout)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(1024, activation="relu", name="fc1")(x)
    x = layers.Dense(512, activation="relu", name="fc2")(layers.Dropout(cfg.dropout)(x))
    return keras.Model(inputs, float32_head(x, data.num_classes, "softmax", PROBABILITIES), name="wide_cnn")
