"""A pretrained backbone in training: its weights loaded into a new run, and the phases of fine-tuning.

As keras-io's transfer-learning guide teaches: phase 1 (training.epochs, training.optimizer and .schedule) trains
what is new (a classifier's head, a U-Net's decoder) on the frozen backbone, whose BatchNorm layers run in
inference mode; phase 2 (training.fine_tune) unfreezes the backbone's top layers (BatchNorm stays frozen, so its
statistics keep the pretraining's) and goes on at a lower learning rate, with an optimizer of its own. A model
without a backbone (config: `has_backbone`) has one phase.
"""

import warnings
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kerasline.config import ExperimentConfig, PretrainedConfig, TrainingConfig, UNetConfig
from kerasline.errors import UserError
from kerasline.models.pretrained import BACKBONE, build_backbone
from kerasline.training.callbacks import EpochSummaries


def phases(cfg: ExperimentConfig) -> list[tuple[int, int]]:
    """Each phase's epochs, [first, last), numbered from 1 in the list's order."""
    first, second = cfg.training.epochs, cfg.training.fine_tune.epochs
    return [(0, first), (first, first + second)] if second else [(0, first)]


def phase_at(cfg: ExperimentConfig, epoch: int, step: int = 0) -> int:
    """The phase a checkpoint taken after `epoch` epochs (and `step` batches) was written in: the phase of the
    last epoch it completed, or of the one it stopped in."""
    trained = epoch if step else epoch - 1
    return 1 + sum(trained >= first for first, _ in phases(cfg)[1:])


def phase_training(training: TrainingConfig, phase: int) -> TrainingConfig:
    """The settings an optimizer is made from in `phase`: the second phase's learning rate and schedule."""
    if phase == 1:
        return training
    tune = training.fine_tune
    optimizer = training.optimizer.model_copy(update={"learning_rate": tune.learning_rate})
    return training.model_copy(update={"epochs": tune.epochs, "optimizer": optimizer, "schedule": tune.schedule})


def set_phase(model: keras.Model, cfg: ExperimentConfig, phase: int) -> None:
    """Which of the backbone's layers train in `phase` (call compile afterwards); nothing without a backbone."""
    if not cfg.model.has_backbone:
        return
    backbone = model.get_layer(BACKBONE)
    if phase == 1:  # a frozen layer also runs its BatchNorm in inference mode (Keras 3)
        backbone.trainable = cfg.model.weights == "none"  # from scratch, the backbone trains from the start
        return
    backbone.trainable = True
    unfreeze = cfg.training.fine_tune.unfreeze
    top = backbone.layers if unfreeze == "all" else backbone.layers[-unfreeze:]
    for layer in backbone.layers:
        layer.trainable = layer in top and not isinstance(layer, keras.layers.BatchNormalization)


def trainable_count(model: keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


class PhaseLog(EpochSummaries):
    """Writes the epoch's phase and how many weights trained in it, as TensorBoard scalars."""

    def __init__(self, log_dir: Path, cfg: ExperimentConfig):
        super().__init__(log_dir)
        self.cfg = cfg

    def summarise(self, epoch: int) -> None:
        tf.summary.scalar("phase", phase_at(self.cfg, epoch + 1), step=epoch)
        tf.summary.scalar("trainable_weights", trainable_count(self.model), step=epoch)


def phase_callbacks(cfg: ExperimentConfig, run_dir: Path) -> list[keras.callbacks.Callback]:
    """TensorBoard's `phase` and `trainable_weights` per epoch, where there are phases (a backbone)."""
    return [PhaseLog(run_dir / "logs" / "train", cfg)] if cfg.model.has_backbone else []


def pretrained_weights(cfg: ExperimentConfig) -> list[np.ndarray] | None:
    """The backbone's starting weights, as model.weights says (None: from scratch, or no backbone). Fetched before
    a run opens, so that a refusal (a missing or misfit file, imagenet offline) leaves nothing behind."""
    if not cfg.model.has_backbone or cfg.model.weights == "none":
        return None
    if cfg.model.weights == "imagenet":
        return _imagenet(cfg.model).get_weights()
    path, backbone = Path(cfg.model.weights), build_backbone(cfg.model)
    if not path.is_file():
        raise UserError(f"model.weights: {path}: no such weights file (or use 'imagenet', or 'none')")
    try:
        with warnings.catch_warnings():  # Keras warns once per layer it cannot fill before it raises
            warnings.simplefilter("ignore")
            backbone.load_weights(path)
    except Exception as e:  # h5py, Keras's layer-count and shape checks: each with its own exception type
        lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()] or [type(e).__name__]
        reason = next((line for line in lines if "shape" in line), lines[0])[:200]
        raise UserError(f"model.weights: {path} does not fit {cfg.model.backbone} ({reason})") from None
    return backbone.get_weights()


def start_from(model: keras.Model, cfg: ExperimentConfig, weights: list[np.ndarray]) -> str:
    """A new run's backbone set to `weights` (pretrained_weights'); what was loaded, for the console."""
    model.get_layer(BACKBONE).set_weights(weights)
    source = "imagenet weights" if cfg.model.weights == "imagenet" else f"weights from {cfg.model.weights}"
    return f"{cfg.model.backbone}, {source}"


def _imagenet(cfg: PretrainedConfig | UNetConfig) -> keras.Model:
    """The backbone with keras.applications' ImageNet weights (downloaded once into ~/.keras/models)."""
    try:
        return build_backbone(cfg, weights="imagenet")
    except Exception as e:  # keras.utils.get_file wraps URLError and HTTPError in a plain Exception (Keras 3.15)
        reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise UserError(
            f"model.weights: the imagenet weights of {cfg.backbone} could not be downloaded ({reason}); offline, "
            "set model.weights to a weights file of the backbone, or to 'none'"
        ) from None
