"""Data sources → unbatched `(image uint8 [H, W, C], label int32)` datasets for train/validation/test.

Every source is checked against the experiment before training starts: image shape, label range
and class count. A problem raises `DataError` naming the file or the config key.
"""

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from kerasline.config import PROJECT_ROOT, DataConfig
from kerasline.errors import DataError

SAMPLES_DIR = PROJECT_ROOT / "data"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}


@dataclass(frozen=True)
class Splits:
    train: tf.data.Dataset
    validation: tf.data.Dataset
    test: tf.data.Dataset


def load_splits(cfg: DataConfig, seed: int) -> Splits:
    if cfg.source == "tfds":
        return _tfds_splits(cfg)
    if cfg.source == "samples":
        images, labels = _load_npz(_sample_path(cfg.name), cfg)
    else:
        images, labels = _load_folder(Path(cfg.name), cfg)
    return _split_arrays(images, labels, cfg, seed)


def _sample_path(name: str) -> Path:
    return Path(name) if name.endswith(".npz") else SAMPLES_DIR / f"{name}.npz"


def _load_npz(path: Path, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DataError(f"{path}: no such data file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = {"x", "y"} - set(npz.files)
            if missing:
                raise DataError(f"{path}: missing array(s) {sorted(missing)}; expected 'x' (images) and 'y' (labels)")
            images, labels = npz["x"], npz["y"]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    if images.ndim == 3:
        images = images[..., None]
    _check_images(images, labels, cfg, where=str(path))
    return images, labels.astype(np.int32)


def _load_folder(root: Path, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    if not root.is_dir():
        raise DataError(f"{root}: no such image folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if len(classes) != cfg.num_classes:
        raise DataError(f"{root}: {len(classes)} class folders but data.num_classes is {cfg.num_classes}")
    height, width, channels = cfg.image_shape
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((root / name).iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                image = tf.io.decode_image(tf.io.read_file(str(path)), channels=channels, expand_animations=False)
            except tf.errors.InvalidArgumentError:
                raise DataError(f"{path}: not a readable image") from None
            if tuple(image.shape[:2]) != (height, width):
                raise DataError(
                    f"{path}: image is {image.shape[0]}x{image.shape[1]} "
                    f"but data.image_shape is {list(cfg.image_shape)}"
                )
            images.append(image.numpy())
            labels.append(label)
    if not images:
        raise DataError(f"{root}: no images found")
    return np.stack(images), np.asarray(labels, np.int32)


def _check_images(images: np.ndarray, labels: np.ndarray, cfg: DataConfig, where: str) -> None:
    if images.dtype != np.uint8:
        raise DataError(f"{where}: images are {images.dtype}, expected uint8 pixels")
    if tuple(images.shape[1:]) != tuple(cfg.image_shape):
        raise DataError(f"{where}: images are {list(images.shape[1:])} but data.image_shape is {list(cfg.image_shape)}")
    if len(images) != len(labels) or labels.ndim != 1:
        raise DataError(f"{where}: {len(images)} images but labels have shape {list(labels.shape)}")
    bad = np.flatnonzero((labels < 0) | (labels >= cfg.num_classes))
    if bad.size:
        raise DataError(
            f"{where}: label {labels[bad[0]]} at record {bad[0]} is outside [0, {cfg.num_classes}) "
            f"(data.num_classes = {cfg.num_classes}); {bad.size} such record(s)"
        )


def _split_arrays(images: np.ndarray, labels: np.ndarray, cfg: DataConfig, seed: int) -> Splits:
    """A seeded permutation, then test | validation | train slices, so test never moves with validation."""
    order = np.random.default_rng(seed).permutation(len(images))[: cfg.limit]
    n_test = max(1, round(len(order) * cfg.test_fraction))
    n_val = max(1, round(len(order) * cfg.validation_fraction))
    if len(order) - n_test - n_val < 1:
        raise DataError(f"data.name {cfg.name!r}: {len(order)} examples are too few to split")
    test, val, train = np.split(order, [n_test, n_test + n_val])
    return Splits(*(tf.data.Dataset.from_tensor_slices((images[i], labels[i])) for i in (train, val, test)))


def _tfds_splits(cfg: DataConfig) -> Splits:
    import tensorflow_datasets as tfds

    keep = round(100 * (1 - cfg.validation_fraction))
    (train, val, test), info = tfds.load(
        cfg.name,
        split=[f"train[:{keep}%]", f"train[{keep}%:]", "test"],
        as_supervised=True,
        with_info=True,
    )
    image, label = info.features["image"], info.features["label"]
    if tuple(image.shape) != tuple(cfg.image_shape):
        raise DataError(
            f"tfds {cfg.name!r}: images are {list(image.shape)} but data.image_shape is {list(cfg.image_shape)}"
        )
    if label.num_classes != cfg.num_classes:
        raise DataError(f"tfds {cfg.name!r}: {label.num_classes} classes but data.num_classes is {cfg.num_classes}")
    splits = (ds.map(lambda x, y: (x, tf.cast(y, tf.int32))) for ds in (train, val, test))
    return Splits(*(ds.take(cfg.limit) if cfg.limit else ds for ds in splits))
