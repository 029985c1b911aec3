"""A keras.applications backbone under a new classification head, taking the raw image; the same backbone as a
U-Net's encoder (models/unet.py) gives its feature maps instead.

The builders make the architecture only (weights=None); a new run loads the pretrained weights into the layer
named `backbone` (training/phases.py), so rebuilding a trained model (export, evaluate) never downloads.
"""

import warnings

import keras
from keras import layers

from kerasline.config import DataConfig, PretrainedConfig, UNetConfig
from kerasline.models.heads import PROBABILITIES, float32_head

BACKBONE = "backbone"  # the nested model's name: what the first phase freezes and the weights load into

# name → (constructor, its preprocessing is inside it: it takes pixels in [0, 255])
BACKBONES = {
    "mobilenet_v3_small": (keras.applications.MobileNetV3Small, True),
    "efficientnet_v2_b0": (keras.applications.EfficientNetV2B0, True),
    "resnet50_v2": (keras.applications.ResNet50V2, False),  # keras.applications.resnet_v2.preprocess_input: [-1, 1]
}

# name → the first layer at strides 4, 8, 16 and 32: the input of each is the last feature map at strides 2, 4, 8
# and 16, a U-Net's skips. (MobileNetV3's activations have no names of their own, only a process-wide count.)
NEXT_STRIDE = {
    "mobilenet_v3_small": (
        "expanded_conv_depthwise_pad",
        "expanded_conv_1_depthwise_pad",
        "expanded_conv_3_depthwise_pad",
        "expanded_conv_8_depthwise_pad",
    ),
    "efficientnet_v2_b0": ("block2a_expand_conv", "block3a_expand_conv", "block4a_dwconv2", "block6a_dwconv2"),
    "resnet50_v2": ("pool1_pad", "conv2_block3_2_pad", "conv3_block4_2_pad", "conv4_block6_2_pad"),
}


def build_backbone(cfg: PretrainedConfig | UNetConfig, weights: str | None = None) -> keras.Model:
    """The backbone without its top. A classifier's (PretrainedConfig), global-average-pooled: (B, S, S, 3) pixels
    → (B, features), S = input_size. A U-Net's encoder (UNetConfig), its feature maps: (B, H, W, 3) pixels, H and
    W dividing by 32 → [(B, H/2, W/2, C1), (B, H/4, W/4, C2), ... (B, H/32, W/32, C5)]. The two have the same
    weights: a weights file of one loads into the other."""
    constructor, inside = BACKBONES[cfg.backbone]
    options = {"include_preprocessing": True} if inside else {}
    features = isinstance(cfg, UNetConfig)
    shape, pooling = ((None, None, 3), None) if features else ((cfg.input_size, cfg.input_size, 3), "avg")
    with warnings.catch_warnings():  # Keras 3.15 warns that MobileNetV3's weights are for 224: without the top
        warnings.filterwarnings("ignore", message=".*is not 224")  # they fit any size
        backbone = constructor(include_top=False, weights=weights, input_shape=shape, pooling=pooling, **options)
    if features:
        skips = [backbone.get_layer(name).input for name in NEXT_STRIDE[cfg.backbone]]
        backbone = keras.Model(backbone.input, [*skips, backbone.output])
    backbone.name = BACKBONE
    return backbone


def backbone_input(x: keras.KerasTensor, backbone: str) -> keras.KerasTensor:
    """Float pixels in [0, 255], 1 or 3 channels → what `backbone` takes: 3 channels (grayscale repeated), in its
    own range (those without their preprocessing inside take [-1, 1])."""
    if x.shape[-1] == 1:
        x = layers.Concatenate(name="to_rgb")([x, x, x])
    if not BACKBONES[backbone][1]:
        x = layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")(x)
    return x


def build_pretrained(cfg: PretrainedConfig, data: DataConfig) -> keras.Model:
    """(B, H, W, C) float pixels in [0, 255], C 1 or 3 → (B, num_classes) class probabilities."""
    inputs = keras.Input(shape=tuple(data.image_shape), name="image")
    x = layers.Resizing(cfg.input_size, cfg.input_size, name="resize")(inputs)
    x = build_backbone(cfg)(backbone_input(x, cfg.backbone))
    x = layers.Dropout(cfg.dropout)(x)
    probabilities = float32_head(x, data.num_classes, "softmax", PROBABILITIES)
    return keras.Model(inputs, probabilities, name="pretrained")
