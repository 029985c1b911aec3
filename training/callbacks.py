"""TensorBoard callbacks every task may use: augmented inputs, attention maps, per-epoch images. A task's own
visuals live in its module (training/tasks/); the run's callback list is composed by `Task.callbacks`."""

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.histogram.summary_v2 import histogram_pb
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.util.tensor_util import make_tensor_proto

from kerasline.models.blocks import TransformerEncoder


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """Keras's TensorBoard at its default `update_freq="epoch"`, without the per-batch work that frequency throws
    away: Keras 3.15's on_train_batch_end still makes a `batch_<metric>` scalar of every log at every batch, with no
    writer set as the default, so nothing is written, at 0.3 ms a batch (15 ms of each 1.1 s epoch of the convnet
    race on 2 EPYC Zen 4 cores, as much as its checkpoint). The graph written at the first batch, and profiling, are
    kept."""

    def __init__(self, log_dir: str):
        super().__init__(log_dir)  # update_freq="epoch" and every other default: what makes the batch logs moot

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs=None)  # no logs: no batch_ scalars, which would go nowhere


class AugmentedImages(keras.callbacks.Callback):
    """Writes a grid of the first augmented training batch at the start of training."""

    def __init__(self, log_dir: Path, train: tf.data.Dataset, count: int = 16):
        super().__init__()
        self.log_dir, self.train, self.count = str(log_dir), train, count

    def on_train_begin(self, logs=None):
        images = next(iter(self.train))[0]  # (x, y) or, with training.class_weight, (x, y, weights)
        grid = image_grid(images[: self.count].numpy() / 255.0)
        writer = tf.summary.create_file_writer(self.log_dir)
        with writer.as_default():
            tf.summary.image("augmented_training_images", grid[None], step=0)
        writer.close()


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


def image_pb(tag: str, image: np.ndarray) -> Summary:
    """The summary `tf.summary.image(tag, image[None])` writes for one (H, W, C) image in [0, 1] (TensorBoard's image
    plugin: the strings width, height and the PNG; pixels floor(255.5·x), as convert_image_dtype saturates). zlib at
    level 1, not the default 6: at the end of an epoch, while the input pipeline fills the next one, a 256 × 256
    attention map took 0.9 ms and 18.8 KB instead of 7.7 ms and 15.2 KB (uncompressed: 0.5 ms, 66 KB; TF 2.21)."""
    pixels = np.clip(image * 255.5, 0, 255).astype(np.uint8)
    png = tf.io.encode_png(pixels, compression=1).numpy()
    content = np.array([str(image.shape[1]).encode(), str(image.shape[0]).encode(), png], dtype=object)
    summary = Summary()
    metadata = image_metadata.create_summary_metadata(display_name=None, description=None)
    summary.value.add(tag=tag, metadata=metadata, tensor=make_tensor_proto(content))
    return summary


def write_summaries(summaries: list[Summary], step: int) -> None:
    """`summaries` as one event at `step`, through one summary op, not one op each."""
    merged = Summary()
    for summary in summaries:
        merged.value.extend(summary.value)
    tf.summary.experimental.write_raw_pb(merged.SerializeToString(), step=step)


def image_grid(images: np.ndarray) -> np.ndarray:
    """(N, H, W, C) in [0, 1] → one (rows·H, cols·W, C) image, padded with blank tiles."""
    n, h, w, c = images.shape
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    tiles = np.zeros((rows * cols, h, w, c), images.dtype)
    tiles[:n] = images
    return tiles.reshape(rows, cols, h, w, c).transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, c)


class EpochSummaries(keras.callbacks.Callback):
    """Writes `self.summarise(epoch)`'s TensorBoard summaries into `log_dir` after every epoch, through one event
    file per fit. A `sparse` one writes after epochs 1, 2, 4, 8, … and after a fit's last epoch: for pictures that
    cost a model call on whole validation images (a U-Net's mask overlays took 3 s of its 15 s epoch), whose
    progress shows as well on a doubling scale."""

    sparse = False

    def __init__(self, log_dir: Path):
        super().__init__()
        self.log_dir = str(log_dir)

    def on_train_begin(self, logs=None):
        self.writer = tf.summary.create_file_writer(self.log_dir)
        self.unwritten: int | None = None  # a sparse one's last epoch, not yet written

    def on_train_end(self, logs=None):
        if self.unwritten is not None:
            self._write(self.unwritten)
        self.writer.close()

    def on_epoch_end(self, epoch, logs=None):
        skipped = self.sparse and (epoch + 1) & epoch  # epoch + 1 is not a power of two
        self.unwritten = epoch if skipped else None
        if not skipped:
            self._write(epoch)

    def _write(self, epoch: int) -> None:
        with self.writer.as_default():
            self.summarise(epoch)

    def summarise(self, epoch: int) -> None:
        raise NotImplementedError


class WeightHistograms(EpochSummaries):
    """Every weight's histogram under the tags Keras's `TensorBoard(histogram_freq=1)` gives them, but `sparse`:
    written every epoch they took 1.6 s of a U-Net's 15 s epoch (Keras 3.15)."""

    sparse = True

    def summarise(self, epoch: int) -> None:
        # Bucketed in numpy by TensorBoard's own histogram_pb, not by tf.summary.histogram's eager ops: the same
        # summaries (30 buckets), in 6 ms instead of 29 for the transformer's 20 weights (TensorFlow 2.21).
        weights = [weight for layer in self.model.layers for weight in layer.weights]
        histograms = [
            histogram_pb(f"{w.path.replace(':', '_')}/histogram", keras.ops.convert_to_numpy(w)) for w in weights
        ]
        write_summaries(histograms, epoch)


class AttentionMaps(EpochSummaries):
    """The last encoder block's attention (mean over heads) on a few validation examples, after epochs 1, 2, 4, 8, …
    and a fit's last (`sparse`): for tokens, the query × key matrix over the non-padding steps; for images, the mean
    attention each patch receives, beside the image."""

    sparse = True

    def __init__(self, log_dir: Path, validation: tf.data.Dataset, count: int = 4):
        super().__init__(log_dir)
        self.validation, self.count = validation, count

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        inputs, _ = next(iter(self.validation))
        self.inputs = inputs[: self.count]
        self.block = [layer for layer in self.model.layers if isinstance(layer, TransformerEncoder)][-1]
        # The block's own inputs ([x, padding mask] or x), then the block asked for its scores. Keras 3.15 will not
        # build one Model ending in the scores: it counts a layer's outputs from its first call, which gave x alone.
        block_inputs = keras.Model(self.model.input, self.block.input)

        # Traced once: called eagerly, the two took 30 of the 38 ms a write cost `imdb_transformer` (TF 2.21).
        @tf.function
        def scores(inputs: tf.Tensor) -> tf.Tensor:
            given = block_inputs(inputs, training=False)
            x, mask = given if isinstance(given, list) else (given, None)
            return self.block(x, padding_mask=mask, return_attention_scores=True, training=False)[1]

        self.scores = scores

    def summarise(self, epoch: int) -> None:
        attention = self.scores(self.inputs).numpy().mean(axis=1)  # (n, L, L)
        examples = enumerate(zip(self.inputs.numpy(), attention, strict=True))
        write_summaries([image_pb(f"attention/example{i}", _attention_image(x, a)) for i, (x, a) in examples], epoch)


class EpochImage(EpochSummaries):
    """Writes `self.image()` (H, W, C) in [0, 1] under `tag` after every epoch."""

    tag = ""

    def summarise(self, epoch: int) -> None:
        tf.summary.image(self.tag, self.image()[None], step=epoch)

    def image(self) -> np.ndarray:
        raise NotImplementedError
