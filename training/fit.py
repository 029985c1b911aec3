"""Train an experiment: strategy → data → model → fit (resumable) → best weights → test metrics."""

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from kerasline.config import ExperimentConfig
from kerasline.errors import UserError
from models import build_model
from pipelines import build_datasets
from training.callbacks import make_callbacks
from training.optim import make_optimizer
from training.runs import open_run
from training.strategy import make_strategy


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    resumed: bool
    replicas: int
    metrics: dict


def setup(cfg: ExperimentConfig) -> tf.distribute.Strategy:
    """Seeds, determinism and precision, then the strategy: everything that must precede model building."""
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.config.set_dtype_policy(cfg.training.mixed_precision)
    return make_strategy(cfg.training.strategy)


def compile_model(cfg: ExperimentConfig, steps_per_epoch: int) -> keras.Model:
    model = build_model(cfg)
    model.compile(
        optimizer=make_optimizer(cfg.training, steps_per_epoch),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model


def train(cfg: ExperimentConfig) -> TrainResult:
    strategy = setup(cfg)
    data = build_datasets(cfg)
    run_dir, resumed = open_run(cfg)
    steps_per_epoch = int(data.train.cardinality())
    with strategy.scope():
        model = compile_model(cfg, steps_per_epoch)
    history = model.fit(
        data.train,
        validation_data=data.validation,
        epochs=cfg.training.epochs,
        callbacks=make_callbacks(cfg, run_dir, data.train, data.validation),
        verbose=2,
    )
    if not all(math.isfinite(loss) for loss in history.history.get("loss", [])):
        raise UserError(
            f"training diverged (loss is NaN/Inf); the last good weights are in {run_dir / 'best.weights.h5'}"
        )
    model.load_weights(run_dir / "best.weights.h5")
    metrics = _test_metrics(model, data.test)
    (run_dir / "metrics.json").write_text(json.dumps({"test": metrics}, indent=2) + "\n")
    shutil.rmtree(run_dir / "backup", ignore_errors=True)
    return TrainResult(run_dir, resumed, strategy.num_replicas_in_sync, metrics)


def evaluate(cfg: ExperimentConfig, run_dir: Path) -> dict:
    """Test-split metrics of a finished run's best weights."""
    strategy = setup(cfg)
    data = build_datasets(cfg)
    with strategy.scope():
        model = compile_model(cfg, steps_per_epoch=1)
    model.load_weights(run_dir / "best.weights.h5")
    return _test_metrics(model, data.test)


def _test_metrics(model: keras.Model, test: tf.data.Dataset) -> dict:
    return {name: float(value) for name, value in model.evaluate(test, return_dict=True, verbose=0).items()}
