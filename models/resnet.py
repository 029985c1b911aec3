"""A small ResNet (He et al., 2016): residual connections let deeper plain stacks keep training."""

import keras
from keras import layers

from kerasline.config import DataConfig, ResNetConfig
from kerasline.models.cnn import batch_norm
from kerasline.models.heads import PROBABILITIES, float32_head


def build_resnet(cfg: ResNetConfig, data: DataConfig) -> keras.Model:
    """(B, H, W, C) float pixels in [0, 255] → (B, num_classes)."""
    inputs = keras.Input(shape=tuple(data.image_shape), name="image")
    x = layers.Rescaling(1 / 255)(inputs)
    x = conv_bn(x, cfg.width, 1, cfg, "stem")
    x = layers.ReLU()(x)
    for stage, blocks in enumerate(cfg.stages):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            x = basic_block(x, cfg.width * 2**stage, stride, cfg, f"stage{stage}_block{block}")
    x = layers.GlobalAveragePooling2D()(x)
    probabilities = float32_head(x, data.num_classes, "softmax", PROBABILITIES, kernel_regularizer=_regularizer(cfg))
    return keras.Model(inputs, probabilities, name="resnet")


def basic_block(x, filters: int, stride: int, cfg: ResNetConfig, name: str):
    """relu(bn(conv(relu(bn(conv(x))))) + shortcut(x)); the shortcut is a 1×1 conv where the shape changes."""
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = conv_bn(x, filters, stride, cfg, f"{name}_shortcut", kernel=1)
    y = layers.ReLU()(conv_bn(x, filters, stride, cfg, f"{name}_a"))
    y = conv_bn(y, filters, 1, cfg, f"{name}_b")
    return layers.ReLU()(layers.Add()([y, shortcut]))


def conv_bn(x, filters: int, stride: int, cfg: ResNetConfig, name: str, kernel: int = 3):
    x = layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        kernel_regularizer=_regularizer(cfg),
        name=f"{name}_conv",
    )(x)
    return batch_norm(cfg, name=f"{name}_bn")(x)


def _regularizer(cfg: ResNetConfig) -> keras.regularizers.Regularizer | None:
    return keras.regularizers.L2(cfg.l2) if cfg.l2 else None
