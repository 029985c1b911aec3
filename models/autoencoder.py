"""Autoencoders: a dense or convolutional encoder to a latent vector and a mirrored decoder back to pixels in
[0, 1]; the VAE's encoder gives a Gaussian (mean, log-variance) and samples it with the reparameterisation trick."""

import keras
from keras import layers, ops

from kerasline.config import AutoencoderConfig, DataConfig, VAEConfig
from kerasline.models.heads import PIXELS, float32_output


def build_encoder(cfg: AutoencoderConfig, data: DataConfig) -> keras.Model:
    """(B, H, W, C) float pixels in [0, 255] → (B, latent_dim); the VAE's → [mean, log_var]."""
    images = keras.Input(shape=tuple(data.image_shape), name="image")
    x = layers.Rescaling(1 / 255)(images)
    if cfg.kind == "dense":
        x = layers.Flatten()(x)
        for units in cfg.hidden_units:
            x = layers.Dense(units, activation="relu")(x)
    else:
        for block, filters in enumerate(cfg.filters):
            # Named as a CNN's first conv of each block (models/cnn.py): a CNN with one conv per block and no
            # BatchNorm can start from a trained encoder (model.init_from).
            x = layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu", name=f"block{block}_conv0")(x)
        x = layers.Flatten()(x)
    if isinstance(cfg, VAEConfig):
        outputs = [layers.Dense(cfg.latent_dim, name="mean")(x), layers.Dense(cfg.latent_dim, name="log_var")(x)]
    else:
        outputs = layers.Dense(cfg.latent_dim, name="latent")(x)
    return keras.Model(images, outputs, name="encoder")


def build_decoder(cfg: AutoencoderConfig, data: DataConfig) -> keras.Model:
    """(B, latent_dim) → (B, H, W, C) pixels in [0, 1]."""
    height, width, channels = data.image_shape
    latent = keras.Input(shape=(cfg.latent_dim,), name="latent")
    if cfg.kind == "dense":
        x = latent
        for units in reversed(cfg.hidden_units):
            x = layers.Dense(units, activation="relu")(x)
        x = layers.Dense(height * width * channels)(x)
        x = layers.Reshape((height, width, channels))(x)
    else:
        shrink = 2 ** len(cfg.filters)
        x = layers.Dense((height // shrink) * (width // shrink) * cfg.filters[-1], activation="relu")(latent)
        x = layers.Reshape((height // shrink, width // shrink, cfg.filters[-1]))(x)
        for filters in reversed(cfg.filters):
            x = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", activation="relu")(x)
        x = layers.Conv2D(channels, 3, padding="same")(x)
    return keras.Model(latent, float32_output(x, "sigmoid", PIXELS), name="decoder")


def kl_divergence(mean, log_var):
    """KL(N(mean, exp(log_var)) ‖ N(0, I)) per example, in closed form: ½ Σ (σ² + μ² − 1 − log σ²)."""
    return 0.5 * ops.sum(ops.exp(log_var) + ops.square(mean) - 1.0 - log_var, axis=-1)


class Sampling(layers.Layer):
    """z = mean + σ·ε, ε ~ N(0, I), while training (the mean otherwise); adds kl_weight × the batch-mean KL
    as a loss."""

    def __init__(self, kl_weight: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.kl_weight = kl_weight
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        mean, log_var = inputs
        self.add_loss(self.kl_weight * ops.mean(kl_divergence(mean, log_var)))
        if not training:
            return mean
        eps = keras.random.normal(ops.shape(mean), seed=self.seed_generator)
        return mean + ops.exp(0.5 * log_var) * eps

    def get_config(self):
        return {**super().get_config(), "kl_weight": self.kl_weight}


def build_autoencoder(cfg: AutoencoderConfig, data: DataConfig) -> keras.Model:
    """(B, H, W, C) float pixels in [0, 255] → (B, H, W, C) reconstruction in [0, 1]."""
    encoder, decoder = build_encoder(cfg, data), build_decoder(cfg, data)
    images = keras.Input(shape=tuple(data.image_shape), name="image")
    latent = encoder(images)
    if isinstance(cfg, VAEConfig):
        latent = Sampling(cfg.kl_weight, name="sampling")(latent)
    return keras.Model(images, decoder(latent), name=cfg.name)
