"""Classification: a label per input (softmax over K classes, or a sigmoid for two), or a real value per input
(the linear head, `data.target = "value"`). The validation confusion matrix is drawn when a fit ends."""

import io
import json
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kerasline.config import DataConfig
from kerasline.models.heads import PROBABILITIES, PROBABILITY, VALUE
from kerasline.pipelines import Datasets
from kerasline.pipelines.datasets import PairAugment, text_vectorizer
from kerasline.pipelines.mixing import make_mixing
from kerasline.training.report import ScoredBatches, predictions, result
from kerasline.training.tasks.base import Function, Signature, Task, raw_input_function


def soft_targets(y_true, y_pred) -> bool:
    """Whether targets are class probabilities [B, K] (mixup's and CutMix's training batches), not labels [B]; a
    sigmoid head's probabilities [B, 1] are of K = 2 classes."""
    return len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == max(y_pred.shape[-1], 2)


class ClassCrossentropy(keras.losses.CategoricalCrossentropy):
    """Keras's categorical cross-entropy and its label smoothing, (1 − ε)·y + ε/K, of labels [B] (made one-hot) or
    soft targets [B, K]: Keras 3.15's SparseCategoricalCrossentropy has no label_smoothing, and training batches
    under mixup or CutMix carry soft targets while validation keeps labels. Unsmoothed labels take the sparse loss."""

    def call(self, y_true, y_pred):
        if soft_targets(y_true, y_pred):
            return super().call(y_true, y_pred)
        if not self.label_smoothing:
            return keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
        if len(y_true.shape) == len(y_pred.shape):  # labels [B, 1]
            y_true = keras.ops.squeeze(y_true, -1)
        return super().call(keras.ops.one_hot(keras.ops.cast(y_true, "int32"), y_pred.shape[-1]), y_pred)


class BinaryClassCrossentropy(keras.losses.BinaryCrossentropy):
    """Keras's binary cross-entropy and its label smoothing, (1 − ε)·y + ε/2, of labels [B] or of soft targets
    [B, 2] (mixup's, CutMix's), whose class-1 share is the target of the sigmoid's probability [B, 1]."""

    def call(self, y_true, y_pred):
        return super().call(y_true[:, 1:] if soft_targets(y_true, y_pred) else y_true, y_pred)


def class_accuracy(y_true, y_pred):
    """The argmax decision against labels [B], or against soft targets' larger share (mixup, CutMix)."""
    if soft_targets(y_true, y_pred):
        y_true = keras.ops.argmax(y_true, axis=-1)
    if y_pred.shape[-1] == 1:  # a sigmoid: class 1 above 0.5
        return keras.metrics.binary_accuracy(y_true, y_pred)
    return keras.metrics.sparse_categorical_accuracy(y_true, y_pred)


class ClassAccuracy(keras.metrics.MeanMetricWrapper):
    def __init__(self, name: str = "accuracy", dtype=None):
        super().__init__(class_accuracy, name=name, dtype=dtype)
        self._direction = "up"  # what Keras 3.15's monitoring callbacks (EarlyStopping in a search) maximise


# A head's loss, its metric and the metric's name.
HEADS = {
    "softmax": (ClassCrossentropy, ClassAccuracy, "accuracy"),
    "sigmoid": (BinaryClassCrossentropy, ClassAccuracy, "accuracy"),
    "linear": (keras.losses.MeanSquaredError, keras.metrics.MeanAbsoluteError, "mae"),
}
TOP_K = 5  # the report's top-k accuracy, given where there are at least this many classes
CALIBRATION_BINS = 10  # equal-width confidence bins of the expected calibration error
AUC_THRESHOLDS = 1001  # Keras's ROC curve points: confident models put most scores within 1% of 0 or 1


class Classification(Task):
    @property
    def head(self) -> str:
        return getattr(self.cfg.model, "head", "softmax")  # only the MLP offers the others

    def augment(self) -> PairAugment:
        """The input's augmentation, then mixup or CutMix where data.augment asks: labels [B] become soft targets
        float32 [B, K], mixed as the images are (pipelines/mixing.py)."""
        augment, mix = super().augment(), make_mixing(self.cfg.data)
        if mix is None:
            return augment
        return lambda x, y, seed: mix(*augment(x, y, seed), seed)

    def build_losses(self) -> keras.losses.Loss:
        loss = HEADS[self.head][0]
        return loss() if self.head == "linear" else loss(label_smoothing=self.cfg.training.label_smoothing)

    def build_metrics(self) -> list[keras.metrics.Metric]:
        _, metric, name = HEADS[self.head]
        return [metric(name=name)]

    def test(self, model: keras.Model, test: tf.data.Dataset) -> tuple[dict[str, float], dict]:
        """The test metrics and the report from one pass over the test split."""
        scored = ScoredBatches(model, test, self.build_losses(), self.build_metrics())
        targets, outputs = (np.concatenate(parts) for parts in zip(*scored, strict=True))
        return scored.results(), self.report_of(targets, outputs)

    def report_of(self, targets: np.ndarray, outputs: np.ndarray) -> dict:
        """The test split's targets and the model's outputs → class_report's figures; a linear head's:
        regression_report's."""
        if self.head == "linear":
            return regression_report(targets, outputs[:, 0])
        if self.head == "sigmoid":  # the probability of class 1: as both classes' probabilities
            outputs = np.concatenate([1.0 - outputs, outputs], axis=-1)
        return class_report(targets, outputs)

    def visuals(self, log_dir: Path, data: Datasets) -> list[keras.callbacks.Callback]:
        if self.cfg.data.target != "class":
            return super().visuals(log_dir, data)
        matrix = ConfusionMatrix(log_dir / "validation", data.validation, self.cfg.data.num_classes)
        return [matrix, *super().visuals(log_dir, data)]

    def head_outputs(self, y: tf.Tensor) -> dict[str, tf.Tensor]:
        """The model's output → `probabilities` float32 [B, K] and `class_id` int64 [B]; for a sigmoid head
        `probability` float32 [B] (of class 1) and `class_id`; for a linear head `value` float32 [B]."""
        if self.head == "sigmoid":
            return {PROBABILITY: y[:, 0], "class_id": tf.cast(y[:, 0] > 0.5, tf.int64)}
        if self.head == "linear":
            return {VALUE: y[:, 0]}
        return {PROBABILITIES: y, "class_id": tf.argmax(y, axis=-1)}

    def serving_function(
        self, model: keras.Model, data: DataConfig, vectorize: keras.layers.TextVectorization | None = None
    ) -> Function:
        """data.input's raw input → the head's outputs (`head_outputs`)."""
        return raw_input_function(model, data, self.head_outputs, vectorize)

    def signatures(self, model: keras.Model, onnx_model: keras.Model, run_dir: Path) -> dict[str, Signature]:
        data, vectorize = self.cfg.data, self._run_vectorizer(run_dir)
        inputs = self.sample_inputs()
        onnx_data, onnx_reference, onnx_inputs = data, None, None
        if vectorize is not None:  # ONNX has no standard string ops: the ONNX file takes the token ids
            onnx_data = data.model_copy(update={"input": "tokens"})
            onnx_reference = self.serving_function(model, onnx_data)
            onnx_inputs = token_ids_of(vectorize)(inputs)
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

    def readable(self, outputs: dict[str, np.ndarray], top_k: int = 1) -> list[dict]:
        """softmax: `class_id` and `probability` of the most probable class, then `class_id_2`, `probability_2`
        and on to the `top_k`-th; sigmoid: `class_id` and `probability` (of class 1); linear: `value`."""
        if self.head == "linear":
            return [{VALUE: float(value)} for value in outputs[VALUE]]
        if self.head == "sigmoid":
            return [
                {"class_id": int(c), PROBABILITY: float(p)}
                for c, p in zip(outputs["class_id"], outputs[PROBABILITY], strict=True)
            ]
        probabilities = outputs[PROBABILITIES]
        ranked = np.argsort(-probabilities, axis=-1, kind="stable")[:, :top_k]
        return [_ranked(row, classes) for row, classes in zip(probabilities, ranked, strict=True)]

    def onnx_feed(self, run_dir: Path) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
        """Text: the ONNX file takes token ids, looked up with the run's vocabulary as the export's was."""
        vectorize = self._run_vectorizer(run_dir)
        return super().onnx_feed(run_dir) if vectorize is None else token_ids_of(vectorize)


def _ranked(probabilities: np.ndarray, classes: np.ndarray) -> dict:
    """`classes` [k] in rank order with their `probabilities` [K]: class_id, probability, class_id_2, ..."""
    row = {}
    for rank, c in enumerate(classes, 1):
        suffix = "" if rank == 1 else f"_{rank}"
        row |= {f"class_id{suffix}": int(c), f"{PROBABILITY}{suffix}": float(probabilities[c])}
    return row


def token_ids_of(vectorize: keras.layers.TextVectorization) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """{"text": strings [B]} → {"tokens": int32 [B, L]}: the lookup the SavedModel does in its graph, done before
    ONNX (which has no standard string ops)."""
    return lambda inputs: {"tokens": vectorize(inputs["text"]).numpy().astype(np.int32)}


def class_report(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """Labels int [N] against probabilities [N, K] (K ≥ 2), decided by argmax: each class's precision, recall, F1
    and support, macro-F1, top-5 accuracy (K ≥ 5), ROC-AUC (K = 2), expected calibration error and the confusion
    matrix (rows true, columns predicted)."""
    num_classes, labels = probabilities.shape[-1], labels.astype(np.int64).reshape(-1)
    probabilities = probabilities.astype(np.float32)
    matrix = confusion_matrix(labels, probabilities.argmax(-1), num_classes)
    hits = np.diag(matrix)
    # Keras's Precision and Recall threshold each class's score on its own: these are of the argmax decision.
    precision, recall = hits / np.maximum(matrix.sum(0), 1), hits / np.maximum(matrix.sum(1), 1)
    one_hot = np.eye(num_classes, dtype=np.float32)[labels]
    f1 = result(keras.metrics.F1Score(average=None, threshold=None), one_hot, probabilities)  # threshold None: argmax
    columns = zip(precision, recall, f1, matrix.sum(1), strict=True)
    report = {
        "per_class": {
            str(c): {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
            for c, (p, r, f, n) in enumerate(columns)
        },
        "macro_f1": float(f1.mean()),
    }
    if num_classes >= TOP_K:
        top_k = keras.metrics.SparseTopKCategoricalAccuracy(k=TOP_K)
        report[f"top_{TOP_K}_accuracy"] = float(result(top_k, labels, probabilities))
    if num_classes == 2:
        report["roc_auc"] = float(result(keras.metrics.AUC(num_thresholds=AUC_THRESHOLDS), labels, probabilities[:, 1]))
    report["expected_calibration_error"] = expected_calibration_error(labels, probabilities)
    return report | {"confusion_matrix": matrix.tolist()}


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts [K, K]: row the true class, column the predicted one."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """Σ over equal-width bins of the top probability (the confidence; bin b holds [b/bins, (b+1)/bins), the last
    also 1) of (the bin's share of inputs) × |its accuracy − its mean confidence|."""
    confidence = probabilities.max(-1).astype(np.float64)
    correct = (probabilities.argmax(-1) == labels).astype(np.float64)
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    # share × |accuracy − confidence| = |Σ correct − Σ confidence| / N, bin by bin
    gaps = np.abs(np.bincount(which, correct, bins) - np.bincount(which, confidence, bins))
    return float(gaps.sum() / len(labels))


def regression_report(values: np.ndarray, predicted: np.ndarray) -> dict:
    """MAE, RMSE and R² of predicted against true values (each [N])."""
    y, p = (np.asarray(a, np.float32).reshape(-1, 1) for a in (values, predicted))
    metrics = {
        "mae": keras.metrics.MeanAbsoluteError(),
        "rmse": keras.metrics.RootMeanSquaredError(),
        "r2": keras.metrics.R2Score(),
    }
    return {name: float(result(metric, y, p)) for name, metric in metrics.items()}


class ConfusionMatrix(keras.callbacks.Callback):
    """Writes the validation confusion matrix as an image when a fit ends, at its last epoch's step.

    Once per fit, not per epoch: predicting the validation split and drawing the matrix took about 1 s an epoch,
    a tenth of the default experiment's epoch (issue #14's measurement), for images nobody steps through."""

    def __init__(self, log_dir: Path, validation: tf.data.Dataset, num_classes: int):
        super().__init__()
        self.log_dir, self.validation, self.num_classes = str(log_dir), validation, num_classes
        self.last_epoch: int | None = None  # the epoch this fit ended at

    def on_train_begin(self, logs=None):
        self.last_epoch = None  # this fit's own: a run's phases and resumed epochs reuse the callback

    def on_epoch_end(self, epoch, logs=None):
        self.last_epoch = epoch

    def on_train_end(self, logs=None):
        if self.last_epoch is None:  # a fit that ran no epoch (resumed at its end, or stopped in its first)
            return
        labels, probabilities = predictions(self.model, self.validation)  # traced, not XLA: no compile to wait for
        if probabilities.shape[-1] > 1:
            predicted = probabilities.argmax(-1)
        else:  # a sigmoid head: the probability of class 1
            predicted = (probabilities[:, 0] > 0.5).astype(int)
        matrix = confusion_matrix(labels, predicted, self.num_classes)
        writer = tf.summary.create_file_writer(self.log_dir)
        with writer.as_default():
            tf.summary.image("confusion_matrix", render_confusion_matrix(matrix)[None], step=self.last_epoch)
        writer.close()


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
