"""Callbacks: TensorBoard (image grids, a confusion matrix, attention maps), checkpoints, resume, stopping."""

import io
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kerasline.config import GENERATIVE_TASKS, MAXIMISED_MONITORS, ExperimentConfig, task_of
from models.blocks import TransformerEncoder
from pipelines import Datasets
from training.checkpoint import ResumePoint, RunCheckpoint
from training.segmentation import MaskOverlays


def make_callbacks(cfg: ExperimentConfig, run_dir: Path, data: Datasets, resume: ResumePoint) -> list:
    """The run's callbacks; RunCheckpoint comes last (see its docstring)."""
    monitor, schedule = cfg.training.monitor, cfg.training.schedule
    if task_of(cfg) == "generate":
        monitor = None  # a GAN's losses do not measure its samples: keep the last epoch, do not stop early
    mode = "max" if monitor in MAXIMISED_MONITORS else "min"  # Keras guesses "auto" from the name: not for iou/dice
    logs = run_dir / "logs"
    stateful = []
    if cfg.training.early_stopping_patience and monitor:
        stateful.append(
            keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=cfg.training.early_stopping_patience)
        )
    if schedule.name == "plateau":
        stateful.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor=monitor, mode=mode, factor=schedule.decay_rate, patience=schedule.patience
            )
        )
    visuals = []
    if task_of(cfg) in GENERATIVE_TASKS:
        from training.generative import generative_visuals

        visuals += generative_visuals(cfg, logs, data)
    elif cfg.data.task == "segmentation":
        visuals.append(MaskOverlays(logs / "validation", data.validation, cfg.data.num_classes))
    elif cfg.data.target == "class":
        visuals.append(ConfusionMatrix(logs / "validation", data.validation, cfg.data.num_classes))
    if cfg.data.input == "image":
        visuals.append(AugmentedImages(logs / "train", data.train(0, 1)))
    if cfg.model.name in ("transformer", "vit"):
        visuals.append(AttentionMaps(logs / "validation", data.validation))
    return [
        *visuals,
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
        probabilities = self.model.predict(self.validation, verbose=0)
        if probabilities.shape[-1] > 1:
            predicted = probabilities.argmax(-1)
        else:  # a sigmoid head: the probability of class 1
            predicted = (probabilities[:, 0] > 0.5).astype(int)
        matrix = np.zeros((self.num_classes, self.num_classes), np.int64)
        np.add.at(matrix, (self.labels, predicted), 1)
        with self.writer.as_default():
            tf.summary.image("confusion_matrix", render_confusion_matrix(matrix)[None], step=epoch)


class AttentionMaps(keras.callbacks.Callback):
    """After every epoch, the last encoder block's attention (mean over heads) on a few validation examples:
    for tokens, the query × key matrix over the non-padding steps; for images, the mean attention each patch
    receives, beside the image."""

    def __init__(self, log_dir: Path, validation: tf.data.Dataset, count: int = 4):
        super().__init__()
        self.log_dir, self.validation, self.count = str(log_dir), validation, count

    def on_train_begin(self, logs=None):
        inputs, _ = next(iter(self.validation))
        self.inputs = inputs[: self.count]
        last = [layer for layer in self.model.layers if isinstance(layer, TransformerEncoder)][-1]
        self.probe = keras.Model(self.model.inputs, last.output[1])
        self.writer = tf.summary.create_file_writer(self.log_dir)

    def on_train_end(self, logs=None):
        self.writer.close()

    def on_epoch_end(self, epoch, logs=None):
        attention = np.asarray(self.probe(self.inputs, training=False)).mean(axis=1)  # (n, L, L)
        with self.writer.as_default():
            for i, (x, a) in enumerate(zip(self.inputs.numpy(), attention, strict=True)):
                tf.summary.image(f"attention/example{i}", _attention_image(x, a)[None], step=epoch)


def _attention_image(x: np.ndarray, attention: np.ndarray) -> np.ndarray:
    """One example's attention as a [0, 1] grayscale image (H, W, 1)."""
    if x.ndim == 1:  # token ids: the matrix over the real (non-padding) steps
        n = max(1, int(np.count_nonzero(x)))
        matrix = attention[:n, :n]
        return (matrix / max(matrix.max(), 1e-9))[..., None]
    height, width = x.shape[:2]
    patch = int(round(np.sqrt(height * width / attention.shape[-1])))
    grid = attention.mean(axis=0).reshape(height // patch, width // patch)  # attention each patch receives
    heat = np.kron(grid / max(grid.max(), 1e-9), np.ones((patch, patch)))
    return np.concatenate([x.mean(axis=-1) / 255.0, heat], axis=1)[..., None].astype(np.float32)


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
