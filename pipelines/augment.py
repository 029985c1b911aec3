"""Seeded, vectorised augmentation for whole batches, built from stateless random ops: geometric and
photometric changes for images, word dropout for token ids.

Each batch comes with its own seed pair, so the same seed gives the same augmented stream on
every run, whatever the parallelism of the map that calls it.
"""

import math
from collections.abc import Callable

import tensorflow as tf

from kerasline.config import AugmentConfig, DataConfig

Augment = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def make_augment(data: DataConfig) -> Augment:
    """Returns `augment(x, seed)` for a batch of raw inputs: uint8 images [B, H, W, C] → float32 in
    [0, 255], same shape; int32 token ids [B, L] → the same, some hidden as padding (0)."""
    if data.input == "image":
        augment_images = _image_augment(data.augment)
        return lambda images, seed: augment_images(tf.cast(images, tf.float32), seed)
    rate = data.augment.word_dropout
    if not rate:
        return lambda tokens, seed: tokens
    return lambda tokens, seed: tf.where(tf.random.stateless_uniform(tf.shape(tokens), seed) < rate, 0, tokens)


def _image_augment(cfg: AugmentConfig) -> Augment:
    """float32 [B, H, W, C] in [0, 255] → same shape and range."""
    geometric = cfg.rotation or cfg.translation or cfg.zoom or cfg.flip != "none"

    def augment(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        geometry_seed, contrast_seed, brightness_seed, noise_seed = tf.unstack(
            tf.random.experimental.stateless_split(seed, num=4)
        )
        if geometric:
            images = affine(images, affine_params(cfg, images, geometry_seed), cfg.fill_mode)
        return photometric(cfg, images, (contrast_seed, brightness_seed, noise_seed))

    return augment


def photometric(cfg: AugmentConfig, images: tf.Tensor, seeds: tuple[tf.Tensor, tf.Tensor, tf.Tensor]) -> tf.Tensor:
    """Contrast, brightness and noise on float32 [B, H, W, C] in [0, 255]; clipped back into that range."""
    contrast_seed, brightness_seed, noise_seed = seeds
    batch = tf.shape(images)[0]
    if cfg.contrast:
        factor = _uniform(contrast_seed, [batch, 1, 1, 1], 1 - cfg.contrast, 1 + cfg.contrast)
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        images = (images - mean) * factor + mean
    if cfg.brightness:
        images += _uniform(brightness_seed, [batch, 1, 1, 1], -cfg.brightness, cfg.brightness) * 255.0
    if cfg.noise_stddev:
        images += tf.random.stateless_normal(tf.shape(images), noise_seed, stddev=cfg.noise_stddev * 255.0)
    return tf.clip_by_value(images, 0.0, 255.0)


def _uniform(seed: tf.Tensor, shape: list, low: float, high: float) -> tf.Tensor:
    return tf.random.stateless_uniform(shape, seed, minval=low, maxval=high)


def affine_params(cfg: AugmentConfig, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Per-image 8-vectors mapping output pixels to input pixels, as ImageProjectiveTransform wants.

    The content is flipped, rotated by θ, scaled by z and shifted by t about the image centre; the
    inverse map is p_in = c + (1/z) R(-θ) F (p_out - c - t).
    """
    batch, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    s_theta, s_zoom, s_tx, s_ty, s_fx, s_fy = tf.unstack(tf.random.experimental.stateless_split(seed, num=6))
    theta = _uniform(s_theta, [batch], -cfg.rotation, cfg.rotation) * 2 * math.pi
    zoom = _uniform(s_zoom, [batch], 1 - cfg.zoom, 1 + cfg.zoom)
    tx = _uniform(s_tx, [batch], -cfg.translation, cfg.translation) * w
    ty = _uniform(s_ty, [batch], -cfg.translation, cfg.translation) * h
    fx = _random_sign(s_fx, batch) if cfg.flip in ("horizontal", "both") else tf.ones([batch])
    fy = _random_sign(s_fy, batch) if cfg.flip in ("vertical", "both") else tf.ones([batch])
    cos, sin = tf.cos(theta) / zoom, tf.sin(theta) / zoom
    a0, a1, a3, a4 = cos * fx, sin * fy, -sin * fx, cos * fy
    cx, cy = (w - 1) / 2, (h - 1) / 2
    a2 = cx - (a0 * (cx + tx) + a1 * (cy + ty))
    a5 = cy - (a3 * (cx + tx) + a4 * (cy + ty))
    zeros = tf.zeros([batch])
    return tf.stack([a0, a1, a2, a3, a4, a5, zeros, zeros], axis=1)


def _random_sign(seed: tf.Tensor, batch: tf.Tensor) -> tf.Tensor:
    return tf.where(tf.random.stateless_uniform([batch], seed) < 0.5, -1.0, 1.0)


def affine(images: tf.Tensor, transforms: tf.Tensor, fill_mode: str, interpolation: str = "BILINEAR") -> tf.Tensor:
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.shape(images)[1:3],
        fill_value=0.0,
        interpolation=interpolation,
        fill_mode=fill_mode.upper(),
    )
    out.set_shape(images.shape)
    return out
