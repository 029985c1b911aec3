"""LeNet-style (LeCun et al., 1998), with max-pooling and ReLU as the course uses it."""

import keras
from keras import layers

from kerasline.config import DataConfig, LeNetConfig
from kerasline.models.heads import PROBABILITIES, float32_head


def build_lenet(cfg: LeNetConfig, data: DataConfig) -> keras.Model:
    """(B, H, W, C) float pixels in [0, 255] → (B, num_classes). On 32×32×3 and 10 classes: 62,006 parameters."""
    inputs = keras.Input(shape=tuple(data.image_shape), name="image")
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.MaxPooling2D()(layers.Conv2D(6, 5, activation=cfg.activation, name="conv1")(x))
    x = layers.MaxPooling2D()(layers.Conv2D(16, 5, activation=cfg.activation, name="conv2")(x))
    x = layers.Flatten()(x)
    x = layers.Dense(120, activation=cfg.activation, name="fc1")(x)
    x = layers.Dense(84, activation=cfg.activation, name="fc2")(x)
    return keras.Model(inputs, float32_head(x, data.num_classes, "softmax", PROBABILITIES), name="lenet")
