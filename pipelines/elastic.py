"""Elastic deformation (Simard et al., 2003), the augmentation the U-Net paper credits most for training on few
images: every pixel moves by its own displacement, drawn as white noise and blurred by a Gaussian of std σ pixels
(data.augment.elastic_sigma), so that neighbours move alike. The field is scaled so that each component of a
displacement has std α pixels (data.augment.elastic_alpha).

Simard's α multiplies noise uniform in [-1, 1] blurred by a kernel summing to 1, so a component's std is
α · 0.577 / (2√π · σ): his (α, σ) = (34, 4) on MNIST is elastic_alpha = 1.4 here. The U-Net paper draws vectors
on a coarse 3 × 3 grid and interpolates them bicubically instead; a Gaussian blur gives the same kind of smooth
field with one knob for its smoothness.

An image and its mask move by the same field: the image resampled bilinearly, the mask at the nearest pixel, so
labels stay labels. A displacement that points past the border takes the edge pixel.
"""

import math

import numpy as np
import tensorflow as tf

from kerasline.config import AugmentConfig

STREAM = 2003  # folded into a batch's augmentation seed for the displacement field


def displacements(
    batch: tf.Tensor, height: tf.Tensor, width: tf.Tensor, cfg: AugmentConfig, seed: tf.Tensor
) -> tf.Tensor:
    """A smooth random field per image, float32 [B, H, W, 2] of (row, column) displacements in pixels: unit normal
    noise blurred by a Gaussian kernel of unit L2 norm (so the blurred noise keeps unit std), times α. The noise
    reaches 3σ past each border and the blur keeps only the valid part, so the field is as smooth at the border."""
    radius = math.ceil(3 * cfg.elastic_sigma)
    taps = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-(taps**2) / (2 * cfg.elastic_sigma**2))
    kernel = np.tile((kernel / np.linalg.norm(kernel))[:, None, None], (1, 2, 1))  # [taps, 2 channels, 1]
    noise = tf.random.stateless_normal([batch, height + 2 * radius, width + 2 * radius, 2], seed)
    field = tf.nn.depthwise_conv2d(noise, kernel[:, None], [1, 1, 1, 1], "VALID")  # down the columns
    field = tf.nn.depthwise_conv2d(field, kernel[None], [1, 1, 1, 1], "VALID")  # along the rows
    return cfg.elastic_alpha * field


def elastic_coordinates(images: tf.Tensor, cfg: AugmentConfig, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Where each output pixel of images [B, H, W, C] reads from: (rows, columns), float32 [B, H, W] each, inside
    the image. `seed`: the batch's augmentation seed, whose split the other knobs share; the field draws from a
    stream folded out of it, so switching elastic on leaves their draws as they were."""
    batch, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    field = displacements(batch, height, width, cfg, tf.random.experimental.stateless_fold_in(seed, STREAM))
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    grid_rows, grid_cols = tf.meshgrid(tf.range(h), tf.range(w), indexing="ij")
    rows = tf.clip_by_value(grid_rows + field[..., 0], 0.0, h - 1)
    cols = tf.clip_by_value(grid_cols + field[..., 1], 0.0, w - 1)
    return rows, cols


def bilinear(images: tf.Tensor, rows: tf.Tensor, cols: tf.Tensor) -> tf.Tensor:
    """float32 [B, H, W, C] read at (rows, cols) [B, H, W], each pixel the weighted mean of its 4 neighbours."""
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    r0, c0 = tf.floor(rows), tf.floor(cols)
    fy, fx = (rows - r0)[..., None], (cols - c0)[..., None]  # how far past the top-left neighbour
    r0, c0 = tf.cast(r0, tf.int32), tf.cast(c0, tf.int32)
    r1, c1 = tf.minimum(r0 + 1, height - 1), tf.minimum(c0 + 1, width - 1)

    def at(r: tf.Tensor, c: tf.Tensor) -> tf.Tensor:
        return tf.gather_nd(images, tf.stack([r, c], axis=-1), batch_dims=1)

    top = (1 - fx) * at(r0, c0) + fx * at(r0, c1)
    bottom = (1 - fx) * at(r1, c0) + fx * at(r1, c1)
    out = (1 - fy) * top + fy * bottom
    out.set_shape(images.shape)
    return out


def nearest(masks: tf.Tensor, rows: tf.Tensor, cols: tf.Tensor) -> tf.Tensor:
    """int32 [B, H, W] read at (rows, cols) [B, H, W], each pixel its nearest neighbour's class."""
    index = tf.stack([tf.cast(tf.round(rows), tf.int32), tf.cast(tf.round(cols), tf.int32)], axis=-1)
    out = tf.gather_nd(masks, index, batch_dims=1)
    out.set_shape(masks.shape)
    return out
