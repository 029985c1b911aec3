"""Segmentation data: (image uint8 [H, W, C], mask int32 [H, W] of class ids) pairs, and their joint augmentation.

Sources: a folder with `image/` and `label/` sub-folders of same-named PNGs (the shipped ISBI 2012 slices are
`data/isbi2012_membrane/`), or a TFDS dataset with a known mask feature. Training takes random square crops
(data.crop) of whole images; validation and test see the whole images.
"""

from pathlib import Path

import numpy as np
import tensorflow as tf

from kerasline.config import DataConfig
from kerasline.errors import DataError
from kerasline.pipelines.augment import affine_params, photometric
from kerasline.pipelines.elastic import bilinear, elastic_coordinates, nearest
from kerasline.pipelines.mixing import cutmix_masks
from kerasline.pipelines.sources import IMAGE_SUFFIXES, BadRecords, Shard, Splits, split_files, tfds_splits_of
from kerasline.pipelines.warp import affine
from kerasline.shipped import find

# TFDS datasets whose masks we know: the mask feature, and the class id its first class is stored as.
TFDS_MASKS = {"oxford_iiit_pet": ("segmentation_mask", 1)}  # trimaps: 1 pet, 2 background, 3 border


def segmentation_splits(cfg: DataConfig, seed: int, shard: Shard | None = None) -> Splits:
    if cfg.source == "tfds":
        return _tfds_splits(cfg, shard)
    bad = BadRecords(cfg.on_error)
    root = find("data", cfg.name) if cfg.source == "samples" else Path(cfg.name)
    return split_files(_list_pairs(root), lambda paths: _read_pairs(root, paths, cfg, bad), bad, cfg, seed, shard)


def _list_pairs(root: Path) -> list[Path]:
    """The image/N.png files (each with its label/N.png), 2.png before 10.png."""
    if not (root / "image").is_dir() or not (root / "label").is_dir():
        raise DataError(f"{root}: a segmentation folder needs image/ and label/ sub-folders")
    paths = [p for p in (root / "image").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    if not paths:
        raise DataError(f"{root}: no usable image/label pairs")
    return sorted(paths, key=lambda p: (len(p.stem), p.stem))


def _read_pairs(root: Path, paths: list[Path], cfg: DataConfig, bad: BadRecords) -> tuple[np.ndarray, np.ndarray]:
    """Images with their masks. With two classes a mask pixel of 255 is class 1 (binary PNG masks)."""
    height, width, channels = cfg.image_shape
    images, masks = [], []
    for path in paths:
        label_path = root / "label" / path.name
        try:
            image = tf.io.decode_image(tf.io.read_file(str(path)), channels=channels, expand_animations=False).numpy()
            mask = tf.io.decode_image(tf.io.read_file(str(label_path)), channels=1, expand_animations=False).numpy()
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError):
            bad.add(f"{path} or {label_path}: missing or not a readable image")
            continue
        if image.shape[:2] != (height, width) or mask.shape[:2] != (height, width):
            bad.add(
                f"{path}: image {image.shape[0]}x{image.shape[1]}, mask {mask.shape[0]}x{mask.shape[1]}, "
                f"but data.image_shape is {list(cfg.image_shape)}"
            )
            continue
        mask = mask[..., 0].astype(np.int32)
        if cfg.num_classes == 2:
            mask[mask == 255] = 1
        if mask.max() >= cfg.num_classes:
            bad.add(f"{label_path}: mask value {mask.max()} is outside [0, {cfg.num_classes}) (data.num_classes)")
            continue
        images.append(image)
        masks.append(mask)
    if not images:
        raise DataError(f"{root}: no usable image/label pairs")
    return np.stack(images), np.stack(masks)


def _tfds_splits(cfg: DataConfig, shard: Shard | None) -> Splits:
    """Images resized to data.image_shape (bilinear), masks likewise (nearest, so labels stay labels)."""
    if cfg.name not in TFDS_MASKS:
        raise DataError(f"data.name: no known mask feature in tfds {cfg.name!r} (known: {', '.join(TFDS_MASKS)})")
    feature, first_class = TFDS_MASKS[cfg.name]
    datasets, info, train_size = tfds_splits_of(cfg, shard)
    height, width, channels = cfg.image_shape
    if info.features["image"].shape[-1] != channels:
        raise DataError(
            f"tfds {cfg.name!r}: images have {info.features['image'].shape[-1]} channels "
            f"but data.image_shape is {list(cfg.image_shape)}"
        )

    def pair(example: dict) -> tuple[tf.Tensor, tf.Tensor]:
        image = tf.image.resize(example["image"], (height, width))
        mask = tf.image.resize(example[feature], (height, width), method="nearest")
        image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
        return image, tf.cast(mask[..., 0], tf.int32) - first_class

    return Splits(*(ds.map(pair, num_parallel_calls=tf.data.AUTOTUNE) for ds in datasets), train_size=train_size)


def make_joint_augment(data: DataConfig):
    """Returns `augment(images, masks, seed)` for a batch: uint8 [B, H, W, C] and int32 [B, H, W] → float32 in
    [0, 255] and int32, cropped to data.crop. One geometric transform, then one elastic deformation, moves image
    and mask alike (the mask resampled nearest, so labels stay labels); contrast, brightness and noise touch the
    image only."""
    cfg = data.augment
    geometric = cfg.rotation or cfg.translation or cfg.zoom or cfg.flip != "none"

    def augment(images: tf.Tensor, masks: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        crop_seed, geometry_seed, contrast_seed, brightness_seed, noise_seed = tf.unstack(
            tf.random.experimental.stateless_split(seed, num=5)
        )
        images = tf.cast(images, tf.float32)
        if data.crop is not None:
            images, masks = random_crops(images, masks, data.crop, crop_seed)
        if geometric:
            transforms = affine_params(cfg, images, geometry_seed)
            images = affine(images, transforms, cfg.fill_mode)
            masks = affine(tf.cast(masks[..., None], tf.float32), transforms, cfg.fill_mode, "NEAREST")
            masks = tf.cast(tf.round(masks[..., 0]), tf.int32)
        if cfg.elastic_alpha:
            rows, cols = elastic_coordinates(images, cfg, seed)
            images, masks = bilinear(images, rows, cols), nearest(masks, rows, cols)
        images = photometric(cfg, images, (contrast_seed, brightness_seed, noise_seed))
        if cfg.cutmix:  # last: a box of another example's augmented image and mask
            images, masks = cutmix_masks(images, masks, seed, cfg.cutmix)
        return images, masks

    return augment


def random_crops(images: tf.Tensor, masks: tf.Tensor, side: int, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The same random side × side window of each image and its mask, a different window per example."""
    batch, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    top_seed, left_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    top = tf.random.stateless_uniform([batch], top_seed, minval=0, maxval=height - side + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([batch], left_seed, minval=0, maxval=width - side + 1, dtype=tf.int32)
    rows, cols = top[:, None] + tf.range(side), left[:, None] + tf.range(side)  # [B, side] each

    def window(x: tf.Tensor) -> tf.Tensor:
        return tf.gather(tf.gather(x, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)

    return window(images), window(masks)
