"""Seeded, vectorised augmentation for whole batches, built from stateless random ops: geometric and
photometric changes and a RandAugment policy for images, word dropout for token ids.

Each batch comes with its own seed pair, so the same seed gives the same augmented stream on
every run, whatever the parallelism of the map that calls it.
"""

import math
from collections.abc import Callable

import tensorflow as tf

from kerasline.config import AugmentConfig, DataConfig
from kerasline.pipelines.elastic import bilinear, elastic_coordinates
from kerasline.pipelines.warp import affine

Augment = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]

RANDAUGMENT_STREAM = 0x7261  # "ra": folded into the batch's seed pair, so the other knobs' draws stay as they were
MAX_MAGNITUDE = 10.0  # RandAugment's M runs from 0 to 10, as in timm (its _LEVEL_DENOM)


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
        if cfg.elastic_alpha:
            images = bilinear(images, *elastic_coordinates(images, cfg, seed))
        if cfg.randaugment_ops:
            policy_seed = tf.random.experimental.stateless_fold_in(seed, tf.constant(RANDAUGMENT_STREAM, seed.dtype))
            images = randaugment(images, cfg.randaugment_ops, cfg.randaugment_magnitude, cfg.fill_mode, policy_seed)
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


def randaugment(images: tf.Tensor, ops: int, magnitude: float, fill_mode: str, seed: tf.Tensor) -> tf.Tensor:
    """RandAugment (Cubuk et al., 2020) on float32 [B, H, W, C] in [0, 255] → same shape and range: `ops` rounds,
    in each of which every image takes one of RANDAUGMENT_OPS (uniformly, its own draw) at `magnitude` (0 to 10),
    its direction (sign) drawn per image where the op has one. Magnitudes follow timm's increasing scale: at 10,
    rotate 30°, shear 0.3, translate 45% of the side, colour/contrast/brightness/sharpness factors 1 ± 0.9,
    solarize every pixel (threshold 0), posterize to 0 bits (4 bits at 0)."""
    for round_seed in tf.unstack(tf.random.experimental.stateless_split(seed, num=ops)):
        images = _randaugment_round(images, magnitude / MAX_MAGNITUDE, fill_mode, round_seed)
    return images


def _randaugment_round(images: tf.Tensor, strength: float, fill_mode: str, seed: tf.Tensor) -> tf.Tensor:
    """Every image through its own op: all the geometric ones as one projective transform (the identity for
    images that drew a pixel op), then each pixel op computed for the batch and kept where it was drawn."""
    op_seed, sign_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    batch = tf.shape(images)[0]
    op = tf.random.stateless_uniform([batch], op_seed, minval=0, maxval=len(RANDAUGMENT_OPS), dtype=tf.int32)
    level = strength * _random_sign(sign_seed, batch)  # [B] in [-1, 1]
    height, width = tf.cast(tf.shape(images)[1], tf.float32), tf.cast(tf.shape(images)[2], tf.float32)
    transforms = _projective(level, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    for name, transform in GEOMETRIC_OPS.items():
        chosen = op == RANDAUGMENT_OPS.index(name)
        transforms = tf.where(chosen[:, None], transform(level, height, width), transforms)
    out = affine(images, transforms, fill_mode)  # the identity transform gives the image back exactly
    for name, pixel_op in PIXEL_OPS.items():
        chosen = op == RANDAUGMENT_OPS.index(name)
        out = tf.where(chosen[:, None, None, None], pixel_op(images, level), out)
    return tf.clip_by_value(out, 0.0, 255.0)


def _projective(like: tf.Tensor, *params) -> tf.Tensor:
    """[B, 8] for ImageProjectiveTransform from its first 6 entries (each [B] or a number): output pixel (x, y)
    reads input pixel (a0·x + a1·y + a2, a3·x + a4·y + a5)."""
    ones = tf.ones_like(like)
    return tf.stack([p * ones for p in params] + [0 * ones, 0 * ones], axis=1)


def _rotate(level: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """By level · 30° about the centre."""
    theta = level * math.radians(30)
    cos, sin = tf.cos(theta), tf.sin(theta)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    return _projective(level, cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy)


GEOMETRIC_OPS = {  # level [B] in [-1, 1], height, width → transforms [B, 8]; shears about the origin, as PIL's
    "rotate": _rotate,
    "shear_x": lambda level, h, w: _projective(level, 1.0, 0.3 * level, 0.0, 0.0, 1.0, 0.0),
    "shear_y": lambda level, h, w: _projective(level, 1.0, 0.0, 0.0, 0.3 * level, 1.0, 0.0),
    "translate_x": lambda level, h, w: _projective(level, 1.0, 0.0, 0.45 * level * w, 0.0, 1.0, 0.0),
    "translate_y": lambda level, h, w: _projective(level, 1.0, 0.0, 0.0, 0.0, 1.0, 0.45 * level * h),
}


def _grey(images: tf.Tensor) -> tf.Tensor:
    """[B, H, W, 1]: ITU-R 601 luma of RGB, as PIL's convert("L"); the channel mean otherwise."""
    if images.shape[-1] == 3:
        return tf.reduce_sum(images * tf.constant([0.299, 0.587, 0.114]), axis=-1, keepdims=True)
    return tf.reduce_mean(images, axis=-1, keepdims=True)


def _blend(degenerate: tf.Tensor, images: tf.Tensor, level: tf.Tensor) -> tf.Tensor:
    """PIL's ImageEnhance: degenerate + factor · (images − degenerate), factor 1 + 0.9 · level."""
    factor = (1.0 + 0.9 * level)[:, None, None, None]
    return degenerate + factor * (images - degenerate)


def _auto_contrast(images: tf.Tensor) -> tf.Tensor:
    """Each channel stretched so its darkest pixel is 0 and its brightest 255 (unless it is flat)."""
    low = tf.reduce_min(images, axis=[1, 2], keepdims=True)
    high = tf.reduce_max(images, axis=[1, 2], keepdims=True)
    return tf.where(high > low, (images - low) * 255.0 / tf.maximum(high - low, 1e-3), images)


def _equalize(images: tf.Tensor) -> tf.Tensor:
    """Each channel's histogram equalised, by PIL's ImageOps.equalize lookup table."""
    batch, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    channels = images.shape[-1]
    values = tf.cast(tf.clip_by_value(tf.round(images), 0.0, 255.0), tf.int32)
    rows = tf.reshape(tf.transpose(values, [0, 3, 1, 2]), [batch * channels, height * width])  # one per channel
    counts = tf.math.bincount(rows, minlength=256, maxlength=256, axis=-1)  # [B·C, 256]
    brightest = tf.gather(counts, tf.reduce_max(rows, axis=1), batch_dims=1)  # the top value's own count
    step = (tf.reduce_sum(counts, axis=1) - brightest) // 255
    below = tf.cumsum(counts, axis=1, exclusive=True)
    table = tf.minimum((step[:, None] // 2 + below) // tf.maximum(step, 1)[:, None], 255)
    equalised = tf.where(step[:, None] > 0, tf.gather(table, rows, batch_dims=1), rows)
    equalised = tf.reshape(equalised, [batch, channels, height, width])
    return tf.cast(tf.transpose(equalised, [0, 2, 3, 1]), tf.float32)


def _posterize(images: tf.Tensor, level: tf.Tensor) -> tf.Tensor:
    """The top 4 − ⌊4·|level|⌋ bits of each value kept."""
    bits = 4.0 - tf.floor(4.0 * tf.abs(level))
    step = tf.pow(2.0, 8.0 - bits)[:, None, None, None]
    return tf.floor(images / step) * step


def _sharpness(images: tf.Tensor, level: tf.Tensor) -> tf.Tensor:
    """Blended with PIL's SMOOTH filter (3 × 3, centre 5, the rest 1, over 13); the border pixels stay."""
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, images.shape[-1], 1])
    smooth = tf.nn.depthwise_conv2d(images, kernel, strides=[1, 1, 1, 1], padding="SAME")
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    rows, cols = tf.range(height), tf.range(width)
    inside = ((rows > 0) & (rows < height - 1))[:, None] & ((cols > 0) & (cols < width - 1))[None, :]
    return _blend(tf.where(inside[None, :, :, None], smooth, images), images, level)


PIXEL_OPS = {  # images float32 [B, H, W, C] in [0, 255], level [B] in [-1, 1] → the same shape
    "identity": lambda images, level: images,
    "auto_contrast": lambda images, level: _auto_contrast(images),
    "equalize": lambda images, level: _equalize(images),
    "solarize": lambda images, level: tf.where(
        images >= 256.0 * (1.0 - tf.abs(level))[:, None, None, None], 255.0 - images, images
    ),
    "posterize": _posterize,
    "color": lambda images, level: _blend(_grey(images), images, level),
    "contrast": lambda images, level: _blend(tf.reduce_mean(_grey(images), [1, 2, 3], keepdims=True), images, level),
    "brightness": lambda images, level: _blend(tf.zeros_like(images), images, level),
    "sharpness": _sharpness,
}
RANDAUGMENT_OPS = (*PIXEL_OPS, *GEOMETRIC_OPS)  # the paper's 14
