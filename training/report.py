"""The task report: what a practitioner reads first about a trained model, beyond its test loss and metric.

Each task's `report(model, test)` (training/tasks/) returns a JSON-ready dict of a few shapes that every reader
renders alike: a number, a dict of numbers (one line), a dict of dicts (a table, one row per key: per-class
figures), or a list of lists (a matrix: the confusion matrix). metrics.json keeps it under `report`, beside `test`.
"""

import functools
import weakref
from collections.abc import Iterator

import keras
import numpy as np
import tensorflow as tf


def batches(model: keras.Model, dataset: tf.data.Dataset) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(targets, outputs) per batch, the model in inference mode. Called directly, not through `model.predict`:
    a plain call is no collective, so under MultiWorkerMirroredStrategy the chief computes the report alone."""
    infer = inference(model, dataset.element_spec[0])
    for x, y in dataset:
        yield np.asarray(y), np.asarray(infer(x), np.float32)


_TRACED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model → {its input spec's repr: traced call}


def inference(model: keras.Model, spec: tf.TypeSpec | dict[str, tf.TypeSpec]) -> tf.types.experimental.GenericFunction:
    """`model(x, training=False)` traced for inputs of `spec` (any batch size), once per model and spec. Traced, not
    eager: eagerly a recurrent layer runs its time loop in Python, step by step (an LSTM's 256 steps made the report
    of 300 reviews take 20 s, as long as three epochs of training). Once: the validation confusion matrix at a fit's
    end and the test pass after it share one trace (the transformer race's time outside its epochs 1.17 → 1.07 s of
    a 5.8 s run, on 2 Xeon cores, TF 2.21). The trace reads the model's variables, so it follows their values as
    weights are loaded."""
    traced, key = _TRACED.setdefault(model, {}), repr(spec)  # a table's spec is a dict of columns: not hashable
    if key not in traced:
        # A partial, not a lambda: TF 2.21 counts retracing by the Python function's code object, which one lambda
        # shares across models, so a process that scores many models (a tuner, the bench's zoo) warned of
        # "excessive retracing" though each model traces once. A partial has no code object: each is its own.
        # The weakref, not the model itself: the cache would keep it alive.
        traced[key] = tf.function(functools.partial(_call, weakref.ref(model)), input_signature=[spec])
    return traced[key]


def _call(owner: weakref.ref, x: tf.Tensor | dict[str, tf.Tensor]) -> tf.Tensor:
    return owner()(x, training=False)


class ScoredBatches:
    """`batches(model, dataset)`, scored on the way as Keras 3.15's `model.evaluate` scores them (its test_step):
    `loss` of each batch plus the model's weight regularisation, averaged over the examples, and `metrics` updated
    batch by batch. So one pass gives the test metrics and the report: evaluate, then a pass of the report's own,
    ran the model over the test split twice (0.8 s more of the transformer race's 13 s run on 2 AVX2 cores).
    `metrics` are fresh ones, not the compiled ones: those hold the fit's state in the strategy's variables.
    Read `results()` once the batches are spent."""

    def __init__(
        self, model: keras.Model, dataset: tf.data.Dataset, loss: keras.losses.Loss, metrics: list[keras.metrics.Metric]
    ):
        self.model, self.dataset, self.loss, self.metrics = model, dataset, loss, metrics
        self.mean_loss = keras.metrics.Mean(name="loss")

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        # Weight regularisation only: a loss added in call (the VAE's KL, whose task evaluates) would be the trace's.
        penalty = sum(float(keras.ops.sum(loss)) for loss in self.model.losses)
        for targets, outputs in batches(self.model, self.dataset):
            self.mean_loss.update_state(float(self.loss(targets, outputs)) + penalty, sample_weight=len(targets))
            for metric in self.metrics:
                metric.update_state(targets, outputs)
            yield targets, outputs

    def results(self) -> dict[str, float]:
        """{"loss": …, each metric's name: …}, named and ordered as `model.evaluate(return_dict=True)` gives them
        (Keras 3.15 sorts its logs by name)."""
        return dict(sorted((metric.name, float(metric.result())) for metric in [self.mean_loss, *self.metrics]))


def predictions(model: keras.Model, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """All of a dataset's (targets, outputs), in order."""
    pairs = list(batches(model, dataset))
    return np.concatenate([y for y, _ in pairs]), np.concatenate([p for _, p in pairs])


def distribution(values: np.ndarray, percentiles: tuple[int, ...]) -> dict[str, float | None]:
    """Mean, std and the given percentiles (keys p50, p90, ...); None each where there are no values."""
    values = np.asarray(values, np.float64)
    values = values[~np.isnan(values)]  # a per-image figure is undefined where a class is absent from both masks
    if values.size == 0:
        return {"mean": None, "std": None, **{f"p{q}": None for q in percentiles}}
    summary = {"mean": float(values.mean()), "std": float(values.std())}
    return summary | {f"p{q}": float(np.percentile(values, q)) for q in percentiles}


def result(metric: keras.metrics.Metric, *update: np.ndarray) -> np.ndarray:
    """One Keras metric over the whole split at once."""
    metric.update_state(*update)
    return np.asarray(metric.result(), np.float64)


def report_lines(report: dict) -> list[str]:
    """The report as plain text: numbers and one-line dicts as `name: value`, tables with a header row, matrices
    row by row."""
    lines = []
    for name, value in report.items():
        if is_table(value):
            header = ["class", *next(iter(value.values()))]
            rows = [[key, *map(number, cells.values())] for key, cells in value.items()]
            lines += [f"{name}:", *("  " + "".join(f"{cell:>12}" for cell in row) for row in [header, *rows])]
        elif isinstance(value, list):
            lines += [f"{name}:", *("  " + " ".join(f"{v:>6}" for v in row) for row in value)]
        elif isinstance(value, dict):
            lines.append(f"{name}: " + "  ".join(f"{k} {number(v)}" for k, v in value.items()))
        else:
            lines.append(f"{name}: {number(value)}")
    return lines


def number(value: float | int | None) -> str:
    """A report figure as text: counts as they are, fractions to 6 significant digits, `-` where undefined."""
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.6g}"


def is_table(value) -> bool:
    """A dict of dicts: one row per key (a class), one column per inner key."""
    return isinstance(value, dict) and bool(value) and all(isinstance(v, dict) for v in value.values())
