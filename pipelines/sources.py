"""Data sources → unbatched `(x, label int32)` datasets for train/validation/test, where x is, as
data.input says, an image uint8 [H, W, C], token ids int32 [L] (0 pads) or a raw text string.

Every source is checked against the experiment before training starts: shapes, token ids, label
range and class count. A problem raises `DataError` naming the file or the config key.

File sharding (data.shard = "file" on several workers): a worker reads only its share of the training files,
as its `tf.distribute.InputContext` says; validation and test are read whole by every worker.
"""

import math
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from kerasline.config import DataConfig
from kerasline.errors import DataError
from kerasline.shipped import find

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}


@dataclass(frozen=True)
class Splits:
    train: tf.data.Dataset
    validation: tf.data.Dataset
    test: tf.data.Dataset
    skipped: tuple[str, ...] = ()  # bad records dropped under data.on_error = "skip", one line each
    train_size: int | None = None  # file sharding: the whole training split's size, of which train is a share


class BadRecords:
    """Collects bad records: the first one raises under on_error = "raise", all are kept under "skip"."""

    def __init__(self, on_error: str):
        self.on_error, self.lines = on_error, []

    def add(self, line: str) -> None:
        if self.on_error == "raise":
            raise DataError(line)
        self.lines.append(line)


Shard = tf.distribute.InputContext


def load_splits(cfg: DataConfig, seed: int, shard: Shard | None = None) -> Splits:
    """Images or tokens with their labels. `shard`: this worker's share of the training files (tfds and folder
    sources only, as the config checks). Segmentation's masks: pipelines/segmentation.py."""
    if cfg.source == "tfds":
        return _tfds_splits(cfg, shard)
    bad = BadRecords(cfg.on_error)
    if cfg.input == "tokens":
        return _token_splits(_sample_path(cfg.name), cfg, seed, bad)
    if cfg.source == "folder":
        root = Path(cfg.name)
        files = _list_folder(root, cfg)
        return split_files(files, lambda part: _read_folder(root, part, cfg, bad), bad, cfg, seed, shard)
    images, labels = _load_npz(_sample_path(cfg.name), cfg, bad)
    return _split_arrays(images, labels, cfg, seed, tuple(bad.lines))


def _sample_path(name: str) -> Path:
    return Path(name) if name.endswith(".npz") else find("data", f"{name}.npz")


def _load_npz(path: Path, cfg: DataConfig, bad: BadRecords) -> tuple[np.ndarray, np.ndarray]:
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
    _check_arrays(images, labels, cfg, where=str(path))
    if cfg.target == "value":
        finite = np.isfinite(labels)
        for i in np.flatnonzero(~finite):
            bad.add(f"{path}: value {labels[i]} at record {i} is not a finite number")
        return images[finite], labels[finite].astype(np.float32)
    out_of_range = (labels < 0) | (labels >= cfg.num_classes)
    for i in np.flatnonzero(out_of_range):
        bad.add(f"{path}: label {labels[i]} at record {i} is outside [0, {cfg.num_classes}) (data.num_classes)")
    return images[~out_of_range], labels[~out_of_range].astype(np.int32)


def _list_folder(root: Path, cfg: DataConfig) -> list[tuple[Path, int]]:
    """(image file, label) in a fixed order: class folders sorted, files sorted within each."""
    if not root.is_dir():
        raise DataError(f"{root}: no such image folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if len(classes) != cfg.num_classes:
        raise DataError(f"{root}: {len(classes)} class folders but data.num_classes is {cfg.num_classes}")
    files = [
        (path, label)
        for label, name in enumerate(classes)
        for path in sorted((root / name).iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise DataError(f"{root}: no images found")
    return files


def _read_folder(
    root: Path, files: list[tuple[Path, int]], cfg: DataConfig, bad: BadRecords
) -> tuple[np.ndarray, np.ndarray]:
    height, width, channels = cfg.image_shape
    images, labels = [], []
    for path, label in files:
        try:
            image = tf.io.decode_image(tf.io.read_file(str(path)), channels=channels, expand_animations=False)
        except tf.errors.InvalidArgumentError:
            bad.add(f"{path}: not a readable image")
            continue
        if tuple(image.shape[:2]) != (height, width):
            size = f"{image.shape[0]}x{image.shape[1]}"
            bad.add(f"{path}: image is {size} but data.image_shape is {list(cfg.image_shape)}")
            continue
        images.append(image.numpy())
        labels.append(label)
    if not images:
        raise DataError(f"{root}: no readable images among {len(files)} files of a split")
    return np.stack(images), np.asarray(labels, np.int32)


def split_files(
    files: list, read: Callable[[list], tuple], bad: BadRecords, cfg: DataConfig, seed: int, shard: Shard | None
) -> Splits:
    """The seeded split of `_split_arrays`, made over file names, then each part read with `read(files)` →
    arrays (it adds what it cannot read to `bad`). Under file sharding this worker reads only its share of the
    training files."""
    test, val, train = split_order(len(files), cfg, seed)
    train_size = len(train)
    if shard:
        workers = shard.num_input_pipelines
        if train_size < workers:
            raise DataError(f"data.shard: {train_size} training files cannot be shared among {workers} workers")
        train = train[shard.input_pipeline_id :: workers]
    parts = [read([files[i] for i in part]) for part in (train, val, test)]
    datasets = (tf.data.Dataset.from_tensor_slices(part) for part in parts)
    return Splits(*datasets, tuple(bad.lines), train_size if shard else None)


def _check_arrays(images: np.ndarray, labels: np.ndarray, cfg: DataConfig, where: str) -> None:
    """Whole-file problems, which no skipping can mend."""
    if images.dtype != np.uint8:
        raise DataError(f"{where}: images are {images.dtype}, expected uint8 pixels")
    if tuple(images.shape[1:]) != tuple(cfg.image_shape):
        raise DataError(f"{where}: images are {list(images.shape[1:])} but data.image_shape is {list(cfg.image_shape)}")
    kind = np.number if cfg.target == "value" else np.integer
    if len(images) != len(labels) or labels.ndim != 1 or not np.issubdtype(labels.dtype, kind):
        raise DataError(f"{where}: {len(images)} images but labels are {labels.dtype} {list(labels.shape)}")


def _split_arrays(images: np.ndarray, labels: np.ndarray, cfg: DataConfig, seed: int, skipped: tuple) -> Splits:
    test, val, train = split_order(len(images), cfg, seed)
    train = labelled_subset(train, labels, cfg.labels_per_class, seed)
    return Splits(*(tf.data.Dataset.from_tensor_slices((images[i], labels[i])) for i in (train, val, test)), skipped)


def labelled_subset(indices: np.ndarray, labels: np.ndarray, per_class: int | None, seed: int) -> np.ndarray:
    """data.labels_per_class: of the training `indices`, the first `per_class` of each class in a seeded order
    (so a smaller budget's examples are among a larger one's); all of them where per_class is None."""
    if per_class is None:
        return indices
    order = np.random.default_rng([seed, 1]).permutation(indices)  # a stream of its own, not the split's
    kept = [order[labels[order] == c][:per_class] for c in np.unique(labels[order])]
    return np.sort(np.concatenate(kept))


def split_order(count: int, cfg: DataConfig, seed: int) -> list[np.ndarray]:
    """Indices of test | validation | train: a seeded permutation cut in that order, so test never moves with
    validation."""
    order = np.random.default_rng(seed).permutation(count)[: cfg.limit]
    n_test = max(1, round(len(order) * cfg.test_fraction))
    n_val = max(1, round(len(order) * cfg.validation_fraction))
    if len(order) - n_test - n_val < 1:
        raise DataError(f"data.name {cfg.name!r}: {len(order)} usable examples are too few to split")
    return np.split(order, [n_test, n_test + n_val])


def _token_splits(path: Path, cfg: DataConfig, seed: int, bad: BadRecords) -> Splits:
    """A tokenised sample with its own test split: ragged `<split>_tokens` cut at `<split>_offsets`, and
    `<split>_y`. Validation is a seeded slice of train; limit caps each split."""
    if not path.is_file():
        raise DataError(f"{path}: no such data file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            need = {f"{split}_{part}" for split in ("train", "test") for part in ("tokens", "offsets", "y")}
            missing = need - set(npz.files)
            if missing:
                raise DataError(f"{path}: missing array(s) {sorted(missing)} of a tokenised sample")
            arrays = {key: npz[key] for key in need}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    train = _padded_sequences(arrays, "train", path, cfg, bad)
    test = _padded_sequences(arrays, "test", path, cfg, bad)
    order = np.random.default_rng(seed).permutation(len(train[0]))[: cfg.limit]
    n_val = max(1, round(len(order) * cfg.validation_fraction))
    if len(order) - n_val < 1 or not len(test[0]):
        raise DataError(f"data.name {cfg.name!r}: too few usable examples to split")
    val, fit = np.split(order, [n_val])
    fit = labelled_subset(fit, train[1], cfg.labels_per_class, seed)
    test = (test[0][: cfg.limit], test[1][: cfg.limit])
    slices = [(train[0][fit], train[1][fit]), (train[0][val], train[1][val]), test]
    return Splits(*(tf.data.Dataset.from_tensor_slices(part) for part in slices), tuple(bad.lines))


def _padded_sequences(arrays: dict, split: str, path: Path, cfg: DataConfig, bad: BadRecords):
    """Token ids [N, sequence_length] int32, each review cut to its first sequence_length ids and padded
    with 0; labels [N] int32. Reviews with an id outside the vocabulary or a bad label are bad records."""
    tokens, offsets, labels = arrays[f"{split}_tokens"], arrays[f"{split}_offsets"], arrays[f"{split}_y"]
    well_cut = offsets.ndim == 1 and len(offsets) == len(labels) + 1 and offsets[-1] <= len(tokens)
    if not well_cut or np.any(np.diff(offsets) < 0):
        raise DataError(f"{path}: {split}_offsets do not cut {split}_tokens into {len(labels)} sequences")
    x = np.zeros((len(labels), cfg.sequence_length), np.int32)
    keep = np.ones(len(labels), bool)
    for i, (start, end) in enumerate(zip(offsets[:-1], offsets[1:], strict=True)):
        ids = tokens[start:end]
        if ids.size and (ids.min() < 0 or ids.max() >= cfg.vocab_size):
            bad.add(f"{path}: {split} sequence {i} has token ids outside [0, {cfg.vocab_size}) (data.vocab_size)")
            keep[i] = False
        elif not 0 <= labels[i] < cfg.num_classes:
            bad.add(f"{path}: label {labels[i]} of {split} sequence {i} is outside [0, {cfg.num_classes})")
            keep[i] = False
        ids = ids[: cfg.sequence_length]
        x[i, : len(ids)] = ids
    return x[keep], labels[keep].astype(np.int32)


def tfds_splits_of(cfg: DataConfig, shard: Shard | None = None, **kwargs) -> tuple:
    """`tfds.load` of train | validation (carved from train) | test, each cut to data.limit, the dataset info,
    and under file sharding the whole training split's size (train is then this worker's share of its files).
    Every way it can fail becomes one DataError line."""
    import tensorflow_datasets as tfds

    keep = round(100 * (1 - cfg.validation_fraction))
    split = [f"train[:{keep}%]", f"train[{keep}%:]", "test"]
    (train, val, test), info = _tfds_load(cfg, split=split, with_info=True, **kwargs)
    train_size = None
    if shard:
        try:  # tfds hands each input pipeline whole files of the split
            train = tfds.load(cfg.name, split=split[0], read_config=tfds.ReadConfig(input_context=shard), **kwargs)
        except ValueError:  # "Cannot shard the pipeline": fewer files than workers
            raise DataError(
                f"data.shard: tfds {cfg.name!r} {split[0]} has fewer files than the {shard.num_input_pipelines} "
                "workers; use data.shard = 'data'"
            ) from None
        train_size = info.splits[split[0]].num_examples
    if cfg.limit:
        share = math.ceil(cfg.limit / shard.num_input_pipelines) if shard else cfg.limit
        train, val, test = train.take(share), val.take(cfg.limit), test.take(cfg.limit)
        train_size = train_size and min(train_size, cfg.limit)
    return [train, val, test], info, train_size


def _tfds_load(cfg: DataConfig, **kwargs) -> tuple:
    import tensorflow_datasets as tfds

    try:
        return tfds.load(cfg.name, **kwargs)
    except tfds.core.registered.DatasetNotFoundError:
        raise DataError(f"data.name: no TFDS dataset named {cfg.name!r}") from None
    except Exception as e:  # downloading and preparing fail in many ways (network, disk, format): say which
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise DataError(
            f"tfds {cfg.name!r}: could not download or prepare it ({type(e).__name__}: {reason}); "
            "it needs network access once, or a prepared copy in ~/tensorflow_datasets"
        ) from None


def _tfds_splits(cfg: DataConfig, shard: Shard | None) -> Splits:
    datasets, info, train_size = tfds_splits_of(cfg, shard, as_supervised=True)
    label = info.features["label"]
    if label.num_classes != cfg.num_classes:
        raise DataError(f"tfds {cfg.name!r}: {label.num_classes} classes but data.num_classes is {cfg.num_classes}")
    splits = Splits(*(ds.map(lambda x, y: (x, tf.cast(y, tf.int32))) for ds in datasets), train_size=train_size)
    if cfg.input == "text":
        if splits.train.element_spec[0].dtype != tf.string:
            raise DataError(f"tfds {cfg.name!r}: its inputs are not text, but data.input is 'text'")
        return splits
    image = info.features["image"]
    if tuple(image.shape) != tuple(cfg.image_shape):
        raise DataError(
            f"tfds {cfg.name!r}: images are {list(image.shape)} but data.image_shape is {list(cfg.image_shape)}"
        )
    return splits
