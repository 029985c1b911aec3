"""The task seam: what an experiment's task decides. `train`, `tune`, `evaluate`, `export`, `predict` and the
benchmarks ask the task; none of them branches on a task or family name.

As in Model Garden's vision tasks (official/vision/tasks/), one module per task holds its inputs, model, losses,
metrics, visuals and exports side by side; this base class holds what most tasks share.
"""

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kerasline.config import MAXIMISED_MONITORS, DataConfig, ExperimentConfig
from kerasline.models import build_model
from kerasline.models.blocks import TransformerEncoder
from kerasline.pipelines import Datasets, build_datasets
from kerasline.pipelines.augment import make_augment
from kerasline.pipelines.datasets import PairAugment
from kerasline.pipelines.sources import Shard, Splits, load_splits
from kerasline.training.callbacks import AttentionMaps, AugmentedImages, EpochTensorBoard, WeightHistograms
from kerasline.training.checkpoint import ResumePoint, RunCheckpoint
from kerasline.training.ema import AveragedValidation
from kerasline.training.optim import make_optimizer

Function = tf.types.experimental.GenericFunction


@dataclass(frozen=True)
class Signature:
    """One exported signature: the SavedModel endpoint `function` and its ONNX file, with the raw inputs the
    parity check feeds both. Where ONNX cannot take the SavedModel's inputs (text: ONNX has no standard string
    ops), `onnx_reference` is the Keras function the ONNX file is held to, on `onnx_inputs`; `onnx_function` is
    what tf2onnx converts (a copy of the model whose recurrent layers become native ONNX ops)."""

    function: Function
    inputs: dict[str, np.ndarray]
    onnx_file: str = "model.onnx"
    onnx_function: Function | None = None  # default: onnx_reference
    onnx_reference: Function | None = None  # default: function
    onnx_inputs: dict[str, np.ndarray] | None = None  # default: inputs
    resources: tuple = ()  # layers whose resources the graph uses (a text lookup table)

    @property
    def onnx_pair(self) -> tuple[Function, dict[str, np.ndarray]]:
        return self.onnx_reference or self.function, self.onnx_inputs if self.onnx_inputs is not None else self.inputs

    @property
    def converted(self) -> Function:
        return self.onnx_function or self.onnx_pair[0]


class Task:
    """One experiment's task. A subclass overrides what differs from a supervised image or token task."""

    def __init__(self, cfg: ExperimentConfig):
        self.cfg = cfg

    # Inputs
    @property
    def split_seed(self) -> int:
        """The seed that draws the splits: data.split_seed, else the experiment's seed."""
        return self.cfg.seed if self.cfg.data.split_seed is None else self.cfg.data.split_seed

    def load_splits(self, shard: Shard | None = None) -> Splits:
        """Unbatched (raw input, target) splits."""
        return load_splits(self.cfg.data, self.split_seed, shard)

    def augment(self) -> PairAugment:
        """`augment(x, y, seed)` for a training batch: the input changes, the target passes through."""
        augment = make_augment(self.cfg.data)
        return lambda x, y, seed: (augment(x, seed), y)

    def build_inputs(self, shard: Shard | None = None) -> Datasets:
        return build_datasets(self.cfg, self.load_splits, self.augment(), shard)

    # Model
    def build_model(self) -> keras.Model:
        return build_model(self.cfg)

    def build_losses(self) -> keras.losses.Loss:
        raise NotImplementedError

    def build_metrics(self) -> list[keras.metrics.Metric]:
        return []

    def compile(self, model: keras.Model, steps_per_epoch: int) -> keras.Model:
        training = self.cfg.training
        model.compile(
            optimizer=make_optimizer(training, steps_per_epoch),
            loss=self.build_losses(),
            metrics=self.build_metrics(),
            jit_compile=training.jit_compile,
            steps_per_execution=training.steps_per_execution,
        )
        # Keras 3.15 builds the optimizer inside the first traced train step when fit runs outside a tf.distribute
        # scope (TensorFlowTrainer._maybe_symbolic_build), and a tf.function that creates variables is traced
        # twice: about 4 s of the transformer's first epoch. Building it here gives fit one trace.
        model.optimizer.build(model.trainable_variables)
        return model

    # Training
    @property
    def monitor(self) -> str | None:
        """What early stopping and the best checkpoint watch; None: keep the last epoch, never stop early."""
        return self.cfg.training.monitor

    @property
    def monitor_mode(self) -> str:
        return "max" if self.monitor in MAXIMISED_MONITORS else "min"  # Keras's "auto" guesses from the name

    def callbacks(
        self, run_dir: Path, data: Datasets, resume: ResumePoint, model: keras.Model
    ) -> list[keras.callbacks.Callback]:
        """The run's callbacks: the task's visuals, attention maps where the model has attention, TensorBoard,
        early stopping and plateau schedules on the task's monitor; RunCheckpoint comes last (see its docstring)."""
        training, monitor, mode = self.cfg.training, self.monitor, self.monitor_mode
        logs = run_dir / "logs"
        stateful = []
        if training.early_stopping_patience and monitor:
            patience = training.early_stopping_patience
            # With a fine-tuning phase, only its epochs count: the first phase trains a new head, and runs whole.
            first = training.epochs if training.fine_tune.epochs else 0
            stopping = dict(monitor=monitor, mode=mode, patience=patience, start_from_epoch=first)
            stateful.append(keras.callbacks.EarlyStopping(**stopping))
        if training.schedule.name == "plateau":
            plateau = dict(factor=training.schedule.decay_rate, patience=training.schedule.patience)
            stateful.append(keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode=mode, **plateau))
        visuals = self.visuals(logs, data)
        if any(isinstance(layer, TransformerEncoder) for layer in model.layers):
            visuals.append(AttentionMaps(logs / "validation", data.validation))
        return [
            *([AveragedValidation()] if training.ema else []),
            *visuals,
            EpochTensorBoard(str(logs)),
            WeightHistograms(logs / "train"),
            *stateful,
            RunCheckpoint(run_dir, monitor, resume, stateful, training.total_epochs),
        ]

    def visuals(self, log_dir: Path, data: Datasets) -> list[keras.callbacks.Callback]:
        """TensorBoard images written while training; every image task shows its augmented inputs."""
        if self.cfg.data.input != "image":
            return []
        return [AugmentedImages(log_dir / "train", data.train(0, 1))]

    # Report
    def inference_model(self, model: keras.Model) -> keras.Model:
        """The compiled model that the test metrics and the report run, from the trained compiled `model`: the model
        itself, unless the task predicts otherwise at test time (segmentation's model.tta and model.tile)."""
        return model

    def test(self, model: keras.Model, test: tf.data.Dataset) -> tuple[dict[str, float], dict]:
        """The test metrics, as `model.evaluate(test, return_dict=True)` gives them, and the report (`report`).
        Every worker runs it: model.evaluate is a collective under MultiWorkerMirroredStrategy. A task whose report
        predicts the test split scores it in that same pass instead (training/report.py's ScoredBatches)."""
        metrics = model.evaluate(test, return_dict=True, verbose=0)
        return {name: float(value) for name, value in metrics.items()}, self.report(model, test)

    def report(self, model: keras.Model, test: tf.data.Dataset) -> dict:
        """What a practitioner reads first beyond the test metrics, from the batched test split, in the shapes
        training/report.py names; {} where the metrics say it all (a GAN's losses)."""
        return {}

    # Export
    def card_section(self, run_dir: Path) -> list[str]:
        """The model card's lines on what the export does that the other sections do not show (a table's
        preprocessing), as Markdown with a `##` heading; [] for nothing."""
        return []

    def export_model(self, weights: Path) -> keras.Model:
        """The trained model rebuilt in float32, whatever precision it was trained in, with portable recurrent
        kernels: tf2onnx cannot convert cuDNN's, which Keras picks whenever a GPU is visible."""
        model = built_in_float32(self.build_model)
        model.load_weights(weights)
        for layer in _layers(model):
            if hasattr(layer, "use_cudnn"):
                layer.use_cudnn = False
        return model

    def signatures(self, model: keras.Model, onnx_model: keras.Model, run_dir: Path) -> dict[str, Signature]:
        """Every signature the export serves, by name. `onnx_model`: the copy the ONNX files are converted from (the
        model itself where no layer needs rewriting for ONNX); `run_dir`: the run, for what it saved beside the
        weights (a text model's vocabulary)."""
        raise NotImplementedError

    def sample_inputs(self) -> dict[str, np.ndarray]:
        """Real raw inputs of serving_default, named as it names them: held-out examples, test split first, then
        validation. The parity check's, the warmup records' and `kerasline predict`'s default inputs."""
        splits = self.load_splits()
        held_out = splits.test.concatenate(splits.validation).take(self.cfg.export.parity_samples)
        return {self.cfg.data.input: np.stack([x for x, _ in held_out.as_numpy_iterator()])}

    def calibration_inputs(self, count: int) -> dict[str, np.ndarray]:
        """serving_default's raw inputs for `count` training examples, as served (not augmented): what
        export.onnx_int8 measures its activation ranges on."""
        train = self.load_splits().train.take(count)
        return {self.cfg.data.input: np.stack([x for x, _ in train.as_numpy_iterator()])}

    def output_difference(self, name: str, got: np.ndarray, reference: dict[str, np.ndarray]) -> float:
        """The parity check's difference between an export's output `name` and the Keras model's."""
        return float(np.max(np.abs(got.astype(np.float64) - reference[name].astype(np.float64)), initial=0.0))

    # Prediction
    def readable(self, outputs: dict[str, np.ndarray], top_k: int = 1) -> list[dict]:
        """serving_default's outputs for a batch ({name: [B, ...]}) as `kerasline predict` writes them, one row per
        input: {column: a number}, or an image (uint8 [H, W] or [H, W, C]) that is written as a PNG file and
        replaced by its path. `top_k`: how many of the most probable classes, where the outputs have classes."""
        raise NotImplementedError

    def onnx_feed(self, run_dir: Path) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
        """serving_default's raw inputs → what the export's model.onnx takes (see Signature): the same, unless
        ONNX cannot take them. `run_dir`: the run the export came from."""
        return lambda inputs: inputs


def built_in_float32(build: Callable[[], keras.Model]) -> keras.Model:
    """`build()` under the float32 dtype policy, whatever policy training set."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        return build()
    finally:
        keras.config.set_dtype_policy(previous)


def _layers(layer: keras.layers.Layer):
    yield layer
    for child in getattr(layer, "layers", []):
        yield from _layers(child)
    for wrapped in ("forward_layer", "backward_layer", "layer"):
        if hasattr(layer, wrapped):
            yield from _layers(getattr(layer, wrapped))


def named_function(body: Callable[[dict[str, tf.Tensor]], dict[str, tf.Tensor]], specs: dict[str, tf.TensorSpec]):
    """A tf.function of one argument per spec, named as the dict names it (a SavedModel signature's input names,
    which are Python identifiers), calling `body({name: tensor})`."""
    names = list(specs)

    def call(*tensors: tf.Tensor) -> dict[str, tf.Tensor]:
        return body(dict(zip(names, tensors, strict=True)))

    # tf.function names a signature's inputs after the Python function's parameters.
    named = inspect.Parameter.POSITIONAL_OR_KEYWORD
    call.__signature__ = inspect.Signature([inspect.Parameter(name, named) for name in names])
    return tf.function(call, input_signature=[tf.TensorSpec(s.shape, s.dtype, name=n) for n, s in specs.items()])


def raw_input_function(
    model: keras.Model,
    data: DataConfig,
    outputs: Callable[[tf.Tensor], dict[str, tf.Tensor]],
    vectorize: keras.layers.TextVectorization | None = None,
    image_shape: tuple[int, ...] | None = None,
) -> Function:
    """A serving function over data.input's raw input, `image` uint8 [B, H, W, C] (at `image_shape`, default the
    model's), `tokens` int32 [B, L] or `text` string [B] (looked up in the graph, so clients send plain strings),
    giving `outputs(model(x, training=False))`."""

    def serve_model(x: tf.Tensor) -> dict[str, tf.Tensor]:
        return outputs(model(x, training=False))

    if data.input == "image":
        shape = image_shape or model.input_shape[1:]

        @tf.function(input_signature=[tf.TensorSpec((None, *shape), tf.uint8, name="image")])
        def serve(image):
            return serve_model(tf.cast(image, tf.float32))

    elif data.input == "tokens":

        @tf.function(input_signature=[tf.TensorSpec((None, data.sequence_length), tf.int32, name="tokens")])
        def serve(tokens):
            return serve_model(tokens)

    else:

        @tf.function(input_signature=[tf.TensorSpec((None,), tf.string, name="text")])
        def serve(text):
            return serve_model(tf.cast(vectorize(text), tf.int32))

    return serve
