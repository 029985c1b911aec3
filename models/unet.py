"""U-Net (Ronneberger et al., 2015): a contracting path of conv blocks and 2×2 max-pools, an expanding path
that upsamples and concatenates the contracting path's block at the same scale (the skip connections),
then a per-pixel softmax. Convs are padded ("same"), so the mask has the image's size.

With model.backbone, a pretrained keras.applications model is the contracting path (as in Iglovikov & Shvets's
TernausNet, 2018): its feature maps at strides 2 to 16 are the skips, its output the bottleneck."""

import keras
from keras import layers

from kerasline.config import DataConfig, UNetConfig
from kerasline.models.cnn import batch_norm
from kerasline.models.heads import LOGITS, PROBABILITIES, float32_output
from kerasline.models.pretrained import backbone_input, build_backbone


def build_unet(cfg: UNetConfig, data: DataConfig) -> keras.Model:
    """(B, H, W, C) float pixels in [0, 255] → (B, H, W, num_classes) per-pixel class probabilities. H and W are
    free (training crops, whole images at validation), but must divide by 2**depth (by 32 with a backbone)."""
    inputs = keras.Input(shape=(None, None, data.image_shape[2]), name="image")
    x, skips = _backbone_encoder(inputs, cfg) if cfg.has_backbone else _encoder(inputs, cfg)
    for level in reversed(range(len(skips))):  # skips[level]: the encoder's map at stride 2**level, or None
        filters = cfg.filters * 2**level
        if cfg.decoder == "transposed":
            x = layers.Conv2DTranspose(filters, 2, strides=2, name=f"up{level}_transposed")(x)
        else:
            x = layers.UpSampling2D(interpolation="bilinear", name=f"up{level}_upsample")(x)
            x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"up{level}_reduce")(x)
        if skips[level] is not None:
            x = layers.Concatenate(name=f"up{level}_skip")([skips[level], x])
        x = _conv_block(x, filters, cfg, f"up{level}")
    logits = layers.Conv2D(data.num_classes, 1, name=LOGITS)(x)  # a dense head per pixel
    return keras.Model(inputs, float32_output(logits, "softmax", PROBABILITIES), name="unet")


def _encoder(inputs, cfg: UNetConfig):
    """Conv blocks and 2×2 max-pools: the bottleneck (B, H/2**depth, W/2**depth, F·2**depth) and the blocks
    before each pool, the skips at strides 1 to 2**(depth - 1)."""
    x = layers.Rescaling(1 / 255)(inputs)
    skips = []
    for level in range(cfg.depth):
        x = _conv_block(x, cfg.filters * 2**level, cfg, f"down{level}")
        skips.append(x)
        x = layers.MaxPooling2D(name=f"down{level}_pool")(x)
    x = layers.Dropout(cfg.dropout)(x)
    return _conv_block(x, cfg.filters * 2**cfg.depth, cfg, "bottleneck"), skips


def _backbone_encoder(inputs, cfg: UNetConfig):
    """The backbone (the layer named `backbone`) on the image as it takes it: its output at stride 32 is the
    bottleneck, its feature maps at strides 2 to 16 the skips; at full resolution there is none."""
    *skips, x = build_backbone(cfg)(backbone_input(inputs, cfg.backbone))
    return layers.Dropout(cfg.dropout)(x), [None, *skips]


def _conv_block(x, filters: int, cfg: UNetConfig, name: str):
    """Two 3×3 convs, each followed by (BatchNorm and) ReLU."""
    for i in range(2):
        x = layers.Conv2D(
            filters,
            3,
            padding="same",
            use_bias=not cfg.batch_norm,
            kernel_initializer="he_normal",
            name=f"{name}_conv{i}",
        )(x)
        if cfg.batch_norm:
            # A few large images make few steps per epoch: the moving statistics that inference uses must
            # follow faster than Keras's default momentum (0.99) lets them, or validation sees stale ones.
            x = batch_norm(cfg, momentum=0.9, name=f"{name}_bn{i}")(x)
        x = layers.ReLU()(x)
    return x
