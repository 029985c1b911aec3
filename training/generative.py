"""Compiling and watching the generative tasks: the GAN (generate) and the autoencoders (reconstruct)."""

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from kerasline.config import ExperimentConfig, VAEConfig, task_of
from models import build_model
from models.gan import fixed_noise
from pipelines import Datasets
from training.callbacks import image_grid
from training.gan import build_gan
from training.optim import learning_rate, make_optimizer


def summed_crossentropy(target, pixels):
    """The VAE's reconstruction term: pixel cross-entropy summed over the image (the KL term is a sum too)."""
    return ops.sum(keras.losses.binary_crossentropy(target[..., None], pixels[..., None]), axis=(1, 2, 3))


def compile_generative(cfg: ExperimentConfig, steps_per_epoch: int) -> keras.Model:
    if task_of(cfg) == "generate":
        model = build_gan(cfg)
        model.compile(learning_rate(cfg.training, steps_per_epoch))
        return model
    model = build_model(cfg)
    loss = summed_crossentropy if isinstance(cfg.model, VAEConfig) else keras.losses.MeanSquaredError()
    model.compile(optimizer=make_optimizer(cfg.training, steps_per_epoch), loss=loss)
    return model


def generative_visuals(cfg: ExperimentConfig, logs: Path, data: Datasets) -> list[keras.callbacks.Callback]:
    if task_of(cfg) == "generate":
        return [SampleGrid(logs / "train", fixed_noise(64, cfg.model.latent_dim, cfg.seed))]
    visuals = [Reconstructions(logs / "validation", data.validation)]
    if isinstance(cfg.model, VAEConfig):
        visuals.append(VAESamples(logs / "validation", cfg.model.latent_dim, cfg.seed))
    return visuals


class _EpochImage(keras.callbacks.Callback):
    """Writes `image(self.model)` (H, W, C) in [0, 1] under `tag` after every epoch."""

    tag = ""

    def __init__(self, log_dir: Path):
        super().__init__()
        self.log_dir = str(log_dir)

    def on_train_begin(self, logs=None):
        self.writer = tf.summary.create_file_writer(self.log_dir)

    def on_train_end(self, logs=None):
        self.writer.close()

    def on_epoch_end(self, epoch, logs=None):
        with self.writer.as_default():
            tf.summary.image(self.tag, self.image()[None], step=epoch)


class SampleGrid(_EpochImage):
    """The generator's images for one fixed batch of noise, so epochs compare like for like."""

    tag = "generated_fixed_noise"

    def __init__(self, log_dir: Path, noise: np.ndarray):
        super().__init__(log_dir)
        self.noise = noise

    def image(self) -> np.ndarray:
        return image_grid((self.model.generator(self.noise, training=False).numpy() + 1) / 2)


class Reconstructions(_EpochImage):
    """Validation inputs (noisy when denoising) beside their reconstructions, side by side in each tile."""

    tag = "reconstructions"

    def __init__(self, log_dir: Path, validation: tf.data.Dataset, count: int = 16):
        super().__init__(log_dir)
        inputs, _ = next(iter(validation))
        self.inputs = inputs[:count]

    def image(self) -> np.ndarray:
        pixels = self.model(self.inputs, training=False).numpy()
        return image_grid(np.concatenate([self.inputs.numpy() / 255.0, pixels], axis=2))


class VAESamples(_EpochImage):
    """The decoder's images for fixed draws from the prior N(0, I)."""

    tag = "vae_samples"

    def __init__(self, log_dir: Path, latent_dim: int, seed: int, count: int = 64):
        super().__init__(log_dir)
        self.latent = np.random.default_rng(seed).standard_normal((count, latent_dim)).astype(np.float32)

    def image(self) -> np.ndarray:
        return image_grid(self.model.get_layer("decoder")(self.latent, training=False).numpy())
