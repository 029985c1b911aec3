"""Anomaly scores of an autoencoder run: each input's reconstruction error (mean squared error over pixels in
[0, 1]), against a threshold taken from the validation split's errors."""

from pathlib import Path

import numpy as np

from kerasline.config import ExperimentConfig, task_of
from kerasline.errors import UserError
from models import build_model
from pipelines.sources import load_splits
from training.fit import setup

THRESHOLD_PERCENTILE = 99.0


def reconstruction_errors(model, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """Per-example mean squared error between uint8-range `images` and their reconstructions."""
    errors = []
    for start in range(0, len(images), batch):
        x = images[start : start + batch].astype(np.float32)
        pixels = np.asarray(model(x, training=False))
        errors.append(np.mean(np.square(pixels - x / 255.0), axis=(1, 2, 3)))
    return np.concatenate(errors) if errors else np.zeros(0, np.float32)


def load_images(path: Path, cfg: ExperimentConfig) -> np.ndarray:
    """A .npy of images (N, H, W) or (N, H, W, C), pixel values in [0, 255]."""
    try:
        images = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"--input {path}: not a readable .npy file ({e})") from None
    shape = tuple(cfg.data.image_shape)
    if images.ndim == 3 and shape[-1] == 1:
        images = images[..., None]
    if images.ndim != 4 or images.shape[1:] != shape:
        raise UserError(f"--input {path}: images of shape {images.shape}, expected (N, {', '.join(map(str, shape))})")
    if not np.issubdtype(images.dtype, np.number) or images.min(initial=0) < 0 or images.max(initial=0) > 255:
        raise UserError(f"--input {path}: pixel values must be numbers in [0, 255]")
    return images


def require_autoencoder(cfg: ExperimentConfig) -> None:
    if task_of(cfg) != "reconstruct":
        raise UserError(f"{cfg.name}: anomaly scores need an autoencoder (model.name autoencoder or vae)")


def anomaly_scores(cfg: ExperimentConfig, run_dir: Path, images: np.ndarray | None = None) -> dict:
    """{"errors": per input, "threshold": the validation errors' 99th percentile, "validation_count"}; without
    `images`, the test split is scored."""
    require_autoencoder(cfg)
    setup(cfg)
    model = build_model(cfg)
    model.load_weights(run_dir / "best.weights.h5")
    splits = load_splits(cfg.data, cfg.seed)
    validation = np.stack([x for x, _ in splits.validation.as_numpy_iterator()])
    if images is None:
        images = np.stack([x for x, _ in splits.test.as_numpy_iterator()])
    validation_errors = reconstruction_errors(model, validation)
    return {
        "errors": reconstruction_errors(model, images),
        "threshold": float(np.percentile(validation_errors, THRESHOLD_PERCENTILE)),
        "validation_count": len(validation_errors),
    }
