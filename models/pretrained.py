"""A keras.applications backbone under a new classification head, taking the raw image.

The builder makes the architecture only (weights=None); a new run loads the pretrained weights into the layer
named `backbone` (training/pretrained.py), so rebuilding a trained model (export, evaluate) never downloads.
"""

import warnings

import keras
from keras import layers

from kerasline.config import DataConfig, PretrainedConfig
from kerasline.models.heads import PROBABILITIES, float32_head

BACKBONE = "backbone"  # the nested model's name: what the first phase freezes and the weights load into

# name → (constructor, its preprocessing is inside it: it takes pixels in [0, 255])
BACKBONES = {
    "mobilenet_v3_small": (keras.applications.MobileNetV3Small, True),
    "efficientnet_v2_b0": (keras.applications.EfficientNetV2B0, True),
    "resnet50_v2": (keras.applications.ResNet50V2, False),  # keras.applications.resnet_v2.preprocess_input: [-1, 1]
}


def build_backbone(cfg: PretrainedConfig, weights: str | None = None) -> keras.Model:
    """The backbone without its top, global-average-pooled: (B, S, S, 3) pixels → (B, features)."""
    constructor, inside = BACKBONES[cfg.backbone]
    options = {"include_preprocessing": True} if inside else {}
    shape = (cfg.input_size, cfg.input_size, 3)
    with warnings.catch_warnings():  # Keras 3.15 warns that MobileNetV3's weights are for 224: without the top
        warnings.filterwarnings("ignore", message=".*is not 224")  # they fit any size
        backbone = constructor(include_top=False, weights=weights, input_shape=shape, pooling="avg", **options)
    backbone.name = BACKBONE
    return backbone


def build_pretrained(cfg: PretrainedConfig, data: DataConfig) -> keras.Model:
    """(B, H, W, C) float pixels in [0, 255], C 1 or 3 → (B, num_classes) class probabilities."""
    inputs = keras.Input(shape=tuple(data.image_shape), name="image")
    x = inputs
    if data.image_shape[2] == 1:
        x = layers.Concatenate(name="to_rgb")([x, x, x])
    x = layers.Resizing(cfg.input_size, cfg.input_size, name="resize")(x)
    if not BACKBONES[cfg.backbone][1]:
        x = layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")(x)
    x = build_backbone(cfg)(x)
    x = layers.Dropout(cfg.dropout)(x)
    probabilities = float32_head(x, data.num_classes, "softmax", PROBABILITIES)
    return keras.Model(inputs, probabilities, name="pretrained")
