"""Mixup (Zhang et al., 2018) and CutMix (Yun et al., 2019) of a training batch, after its augmentation.

Each example is mixed with a partner from the same batch (a seeded permutation) by a weight of its own,
λ ~ Beta(α, α), as KerasCV's MixUp and CutMix draw it: mixup blends the two images, λ·x + (1 − λ)·x', and CutMix
pastes a box of the partner's image over a fraction 1 − λ of the image. Labels become the same mix of one-hot
labels, soft targets float32 [B, K]; a segmentation mask takes the partner's mask inside the pasted box, and stays
class ids. Validation and test batches are never mixed.

The draws come from the batch's seed pair folded into a stream of their own, so the training stream stays a pure
function of (seed, epoch, step) and augmentation's own draws are unchanged.
"""

from collections.abc import Callable

import tensorflow as tf

from kerasline.config import AugmentConfig, DataConfig

STREAM = 0x6D6978  # "mix": folded into the batch's seed pair, apart from augmentation's streams

Mixing = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]


def make_mixing(data: DataConfig) -> Mixing | None:
    """`mix(images, labels, seed)` of image classification's training batches: float32 images [B, H, W, C] in
    [0, 255] and int32 labels [B] → the images mixed, in the same range, and float32 soft targets [B, K]. When both
    mixup and CutMix are on, each batch takes one of them (even odds, seeded). None where neither is on.
    (Segmentation's joint augment pastes masks itself: `cutmix_masks`.)"""
    augment = data.augment
    if not (augment.mixup or augment.cutmix):
        return None
    num_classes = data.num_classes

    def mix(images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        choice_seed, partner_seed, mix_seed = _split(_own_stream(seed), 3)
        partner = partners(tf.shape(images)[0], partner_seed)
        mixed, weight = _mix_images(augment, images, partner, mix_seed, choice_seed)
        one_hot = tf.one_hot(labels, num_classes)
        return mixed, weight[:, None] * one_hot + (1.0 - weight[:, None]) * tf.gather(one_hot, partner)

    return mix


def cutmix_masks(images: tf.Tensor, masks: tf.Tensor, seed: tf.Tensor, alpha: float) -> tuple[tf.Tensor, tf.Tensor]:
    """Segmentation's CutMix: float32 images [B, H, W, C] and int32 masks [B, H, W] → each with a box of its
    partner's image and mask pasted in, the same box in both."""
    partner_seed, box_seed = _split(_own_stream(seed), 2)
    partner = partners(tf.shape(images)[0], partner_seed)
    inside = cutmix_boxes(tf.shape(images), alpha, box_seed)
    images = tf.where(inside[..., None], tf.gather(images, partner), images)
    return images, tf.where(inside, tf.gather(masks, partner), masks)


def _mix_images(
    cfg: AugmentConfig, images: tf.Tensor, partner: tf.Tensor, seed: tf.Tensor, choice_seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """The images mixed by mixup or CutMix, and each image's own weight λ [B] (the partner's is 1 − λ)."""

    def by_mixup() -> tuple[tf.Tensor, tf.Tensor]:
        weight = beta(tf.shape(images)[:1], cfg.mixup, seed)
        w = weight[:, None, None, None]
        return w * images + (1.0 - w) * tf.gather(images, partner), weight

    def by_cutmix() -> tuple[tf.Tensor, tf.Tensor]:
        inside = cutmix_boxes(tf.shape(images), cfg.cutmix, seed)
        pasted = tf.where(inside[..., None], tf.gather(images, partner), images)
        return pasted, 1.0 - tf.reduce_mean(tf.cast(inside, tf.float32), axis=[1, 2])

    if cfg.mixup and cfg.cutmix:
        return tf.cond(tf.random.stateless_uniform([], choice_seed) < 0.5, by_mixup, by_cutmix)
    return by_mixup() if cfg.mixup else by_cutmix()


def partners(batch: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """A random permutation of [0, batch): example i is mixed with example partners[i]."""
    return tf.argsort(tf.random.stateless_uniform([batch], seed))


def beta(shape: tf.Tensor, alpha: float, seed: tf.Tensor) -> tf.Tensor:
    """Beta(α, α) draws, as G₁ / (G₁ + G₂) of two Gamma(α) draws."""
    first, second = _split(seed, 2)
    g1 = tf.random.stateless_gamma(shape, first, alpha=alpha)
    g2 = tf.random.stateless_gamma(shape, second, alpha=alpha)
    return tf.math.divide_no_nan(g1, g1 + g2)  # both can underflow to 0 at a tiny α: then all partner


def cutmix_boxes(shape: tf.Tensor, alpha: float, seed: tf.Tensor) -> tf.Tensor:
    """bool [B, H, W], True inside each image's pasted box: sides √(1 − λ) of the image's, λ ~ Beta(α, α), about a
    uniform centre, clipped at the edges (so the pasted fraction is the box's area after clipping, as in CutMix)."""
    batch, height, width = shape[0], shape[1], shape[2]
    weight_seed, row_seed, col_seed = _split(seed, 3)
    cut = tf.sqrt(1.0 - beta([batch], alpha, weight_seed))
    rows, cols = tf.range(height)[None, :], tf.range(width)[None, :]
    top, bottom = _span(height, cut, row_seed)
    left, right = _span(width, cut, col_seed)
    in_rows = (rows >= top[:, None]) & (rows < bottom[:, None])  # [B, H]
    in_cols = (cols >= left[:, None]) & (cols < right[:, None])  # [B, W]
    return in_rows[:, :, None] & in_cols[:, None, :]


def _span(side: tf.Tensor, cut: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """[start, end) [B] of a span of cut · side pixels about a uniform centre, clipped to [0, side)."""
    half = tf.cast(tf.round(cut * tf.cast(side, tf.float32)), tf.int32) // 2
    centre = tf.random.stateless_uniform(tf.shape(cut), seed, minval=0, maxval=side, dtype=tf.int32)
    return tf.maximum(centre - half, 0), tf.minimum(centre + half, side)


def _own_stream(seed: tf.Tensor) -> tf.Tensor:
    return tf.random.experimental.stateless_fold_in(seed, tf.constant(STREAM, seed.dtype))


def _split(seed: tf.Tensor, num: int) -> list[tf.Tensor]:
    return tf.unstack(tf.random.experimental.stateless_split(seed, num=num))
