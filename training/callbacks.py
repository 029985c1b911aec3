"""Callbacks: TensorBoard (with image grids and a confusion matrix), checkpoints, resume, stopping."""

import io
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kerasline.config import ExperimentConfig
from pipelines import Datasets
from training.checkpoint import ResumePoint, RunCheckpoint


def make_callbacks(cfg: ExperimentConfig, run_dir: Path, data: Datasets, resume: ResumePoint) -> list:
    """The run's callbacks; RunCheckpoint comes last (see its docstring)."""
    monitor, schedule = cfg.training.monitor, cfg.training.schedule
    logs = run_dir / "logs"
    stateful = []
    if cfg.training.early_stopping_patience:
        stateful.append(keras.callbacks.EarlyStopping(monitor=monitor, patience=cfg.training.early_stopping_patience))
    if schedule.name == "plateau":
        stateful.append(
            keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=schedule.decay_rate, patience=schedule.patience)
        )
    return [
        AugmentedImages(logs / "train", data.train(0, 1)),
        ConfusionMatrix(logs / "validation", data.validation, cfg.data.num_classes),
        keras.callbacks.TensorBoard(str(logs), histogram_freq=1),
        *stateful,
        RunCheckpoint(run_dir, monitor, resume, stateful, cfg.training.epochs),
    ]


class AugmentedImages(keras.callbacks.Callback):
    """Writes a grid of the first augmented training batch at the start of training."""

    def __init__(self, log_dir: Path, train: tf.data.Dataset, count: int = 16):
        super().__init__()
        self.log_dir, self.train, self.count = str(log_dir), train, count

    def on_train_begin(self, logs=None):
        images, _ = next(iter(self.train))
        grid = image_grid(images[: self.count].numpy() / 255.0)
        writer = tf.summary.create_file_writer(self.log_dir)
        with writer.as_default():
            tf.summary.image("augmented_training_images", grid[None], step=0)
        writer.close()


class ConfusionMatrix(keras.callbacks.Callback):
    """Writes the validation confusion matrix as an image after every epoch."""

    def __init__(self, log_dir: Path, validation: tf.data.Dataset, num_classes: int):
        super().__init__()
        self.log_dir, self.validation, self.num_classes = str(log_dir), validation, num_classes

    def on_train_begin(self, logs=None):
        self.labels = np.concatenate([y.numpy() for _, y in self.validation])  # once, not every epoch
        self.writer = tf.summary.create_file_writer(self.log_dir)  # one event file per fit, not per epoch

    def on_train_end(self, logs=None):
        self.writer.close()

    def on_epoch_end(self, epoch, logs=None):
        predicted = self.model.predict(self.validation, verbose=0).argmax(-1)
        matrix = np.zeros((self.num_classes, self.num_classes), np.int64)
        np.add.at(matrix, (self.labels, predicted), 1)
        with self.writer.as_default():
            tf.summary.image("confusion_matrix", render_confusion_matrix(matrix)[None], step=epoch)


def image_grid(images: np.ndarray) -> np.ndarray:
    """(N, H, W, C) in [0, 1] → one (rows·H, cols·W, C) image, padded with blank tiles."""
    n, h, w, c = images.shape
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    tiles = np.zeros((rows * cols, h, w, c), images.dtype)
    tiles[:n] = images
    return tiles.reshape(rows, cols, h, w, c).transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, c)


def render_confusion_matrix(matrix: np.ndarray) -> np.ndarray:
    """A confusion matrix as an annotated heat map: (H, W, 4) uint8 RGBA."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(matrix)
    fig, ax = plt.subplots(figsize=(1 + 0.5 * n, 1 + 0.5 * n), dpi=80)
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(
            j,
            i,
            str(count),
            ha="center",
            va="center",
            fontsize=7,
            color="white" if count > matrix.max() / 2 else "black",
        )
    ax.set(xlabel="predicted", ylabel="true", xticks=range(n), yticks=range(n))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return tf.io.decode_png(buf.getvalue()).numpy()
