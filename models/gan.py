"""DCGAN nets (Radford et al., 2016): a generator from Gaussian noise to 28×28 images in [-1, 1], and a
discriminator from such images to one logit (a WGAN critic's score when trained with the gradient penalty)."""

import keras
import numpy as np
from keras import layers

from kerasline.config import DataConfig, GANConfig
from kerasline.models.heads import IMAGE, float32_output


def build_generator(cfg: GANConfig, data: DataConfig) -> keras.Model:
    """(B, latent_dim) noise → (B, 28, 28, C) images in [-1, 1]: dense to 7×7, two stride-2 transposed convs."""
    width = 2 * cfg.filters
    noise = keras.Input(shape=(cfg.latent_dim,), name="noise")
    x = layers.Dense(7 * 7 * width, use_bias=False)(noise)
    x = layers.BatchNormalization()(x)
    x = layers.LeakyReLU(0.2)(x)
    x = layers.Reshape((7, 7, width))(x)
    x = layers.Conv2DTranspose(cfg.filters, 4, strides=2, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.LeakyReLU(0.2)(x)
    x = layers.Conv2DTranspose(data.image_shape[-1], 4, strides=2, padding="same")(x)
    return keras.Model(noise, float32_output(x, "tanh", IMAGE), name="generator")


def build_discriminator(cfg: GANConfig, data: DataConfig) -> keras.Model:
    """(B, 28, 28, C) images in [-1, 1] → (B, 1) logits. No BatchNorm: the gradient penalty is per example.

    spectral_norm (Miyato et al., 2018): each conv and the dense are wrapped in SpectralNormalization, whose
    training calls divide the kernel by its largest singular value, estimated by one power iteration on a
    vector `vector_u` (a non-trainable weight, so checkpoints keep it)."""

    def weighted(layer: layers.Layer) -> layers.Layer:
        if not cfg.spectral_norm:
            return layer
        # The wrapper casts its output to its input's dtype: give it the layer's policy (float32 for the logit).
        return layers.SpectralNormalization(layer, dtype=layer.dtype_policy)

    images = keras.Input(shape=tuple(data.image_shape), name="image")
    x = images
    for filters in (cfg.filters, 2 * cfg.filters):
        # No bias: TF's graph optimizer mis-fuses conv + bias + LeakyReLU under a gradient tape and logs an error.
        x = weighted(layers.Conv2D(filters, 4, strides=2, padding="same", use_bias=False))(x)
        x = layers.LeakyReLU(0.2)(x)
        if cfg.discriminator_dropout:
            x = layers.Dropout(cfg.discriminator_dropout)(x)
    x = layers.Flatten()(x)
    logits = weighted(layers.Dense(1, dtype="float32", name="logit"))(x)
    return keras.Model(images, logits, name="discriminator")


def fixed_noise(count: int, latent_dim: int, seed: int) -> np.ndarray:
    """Seeded generator input: the TensorBoard grid's and the export parity check's."""
    return np.random.default_rng(seed).standard_normal((count, latent_dim)).astype(np.float32)
