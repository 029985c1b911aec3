"""Classification: a label per input (softmax over K classes, or a sigmoid for two), or a real value per input
(the linear head, `data.target = "value"`). The validation confusion matrix is drawn every epoch."""

import io
import json
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kerasline.config import DataConfig
from kerasline.models.heads import PROBABILITIES, PROBABILITY, VALUE
from kerasline.pipelines import Datasets
from kerasline.pipelines.datasets import text_vectorizer
from kerasline.training.tasks.base import Function, Signature, Task, raw_input_function

# A head's loss, its metric and the metric's name.
HEADS = {
    "softmax": (keras.losses.SparseCategoricalCrossentropy, keras.metrics.SparseCategoricalAccuracy, "accuracy"),
    "sigmoid": (keras.losses.BinaryCrossentropy, keras.metrics.BinaryAccuracy, "accuracy"),
    "linear": (keras.losses.MeanSquaredError, keras.metrics.MeanAbsoluteError, "mae"),
}


class Classification(Task):
    @property
    def head(self) -> str:
        return getattr(self.cfg.model, "head", "softmax")  # only the MLP offers the others

    def build_losses(self) -> keras.losses.Loss:
        return HEADS[self.head][0]()

    def build_metrics(self) -> list[keras.metrics.Metric]:
        _, metric, name = HEADS[self.head]
        return [metric(name=name)]

    def visuals(self, log_dir: Path, data: Datasets) -> list[keras.callbacks.Callback]:
        if self.cfg.data.target != "class":
            return super().visuals(log_dir, data)
        matrix = ConfusionMatrix(log_dir / "validation", data.validation, self.cfg.data.num_classes)
        return [matrix, *super().visuals(log_dir, data)]

    def serving_function(
        self, model: keras.Model, data: DataConfig, vectorize: keras.layers.TextVectorization | None = None
    ) -> Function:
        """data.input's raw input → `probabilities` float32 [B, K] and `class_id` int64 [B]; for a sigmoid head
        `probability` float32 [B] (of class 1) and `class_id`; for a linear head `value` float32 [B]."""
        head = self.head

        def outputs(y: tf.Tensor) -> dict[str, tf.Tensor]:
            if head == "sigmoid":
                return {PROBABILITY: y[:, 0], "class_id": tf.cast(y[:, 0] > 0.5, tf.int64)}
            if head == "linear":
                return {VALUE: y[:, 0]}
            return {PROBABILITIES: y, "class_id": tf.argmax(y, axis=-1)}

        return raw_input_function(model, data, outputs, vectorize)

    def signatures(self, model: keras.Model, onnx_model: keras.Model, run_dir: Path) -> dict[str, Signature]:
        data, vectorize = self.cfg.data, self._run_vectorizer(run_dir)
        inputs = self.sample_inputs()
        onnx_data, onnx_reference, onnx_inputs = data, None, None
        if vectorize is not None:  # ONNX has no standard string ops: the ONNX file takes the token ids
            onnx_data = data.model_copy(update={"input": "tokens"})
            onnx_reference = self.serving_function(model, onnx_data)
            onnx_inputs = {"tokens": vectorize(inputs["text"]).numpy().astype(np.int32)}
        serve = self.serving_function(model, data, vectorize)
        signature = Signature(
            serve,
            inputs,
            onnx_function=None if onnx_model is model else self.serving_function(onnx_model, onnx_data),
            onnx_reference=onnx_reference,
            onnx_inputs=onnx_inputs,
            resources=() if vectorize is None else (vectorize,),
        )
        return {"serving_default": signature}

    def _run_vectorizer(self, run_dir: Path) -> keras.layers.TextVectorization | None:
        """Text input: the run's vocabulary (adapted on its training split) as an in-graph lookup."""
        if self.cfg.data.input != "text":
            return None
        vocabulary = json.loads((run_dir / "vocabulary.json").read_text(encoding="utf-8"))
        return text_vectorizer(self.cfg.data, vocabulary=vocabulary[2:])  # without the padding and OOV entries


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
