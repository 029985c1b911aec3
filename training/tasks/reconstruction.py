"""Reconstruction: autoencoders (plain, convolutional, denoising) and the VAE learn to give back their input;
labels are not used. A denoising autoencoder sees its input with seeded Gaussian noise and the clean image as its
target. The export serves the reconstruction and its error (the anomaly score), and `encode` and `decode`."""

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from kerasline.config import VAEConfig
from kerasline.errors import UserError
from kerasline.models.gan import fixed_noise
from kerasline.pipelines import Datasets
from kerasline.pipelines.datasets import ReconstructionDatasets
from kerasline.pipelines.sources import Shard
from kerasline.training.callbacks import EpochImage, image_grid
from kerasline.training.report import distribution
from kerasline.training.tasks.base import Signature, Task

THRESHOLD_PERCENTILE = 99.0  # an input is an anomaly above this percentile of the validation errors


class Reconstruction(Task):
    def build_inputs(self, shard: Shard | None = None) -> Datasets:
        return ReconstructionDatasets.of(super().build_inputs(shard), self.cfg.model.denoise_stddev)

    @property
    def is_vae(self) -> bool:
        return isinstance(self.cfg.model, VAEConfig)

    def build_losses(self) -> keras.losses.Loss:
        return summed_crossentropy if self.is_vae else keras.losses.MeanSquaredError()

    def visuals(self, log_dir: Path, data: Datasets) -> list[keras.callbacks.Callback]:
        visuals = [Reconstructions(log_dir / "validation", data.validation)]
        if self.is_vae:
            visuals.append(VAESamples(log_dir / "validation", self.cfg.model.latent_dim, self.cfg.seed))
        return [*visuals, *super().visuals(log_dir, data)]

    def signatures(self, model: keras.Model, onnx_model: keras.Model, run_dir: Path) -> dict[str, Signature]:
        """serving_default: `image` uint8 → `reconstruction` uint8 and `error` float32 [B] (the mean squared error
        over pixels in [0, 1], the anomaly score); `encode`: `image` → `latent` float32 (the VAE's mean);
        `decode`: `latent` → `image` uint8. Each has its own ONNX file."""
        encoder, decoder = model.get_layer("encoder"), model.get_layer("decoder")
        image_spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.uint8, name="image")

        def latent_of(image):
            latent = encoder(tf.cast(image, tf.float32), training=False)
            return latent[0] if isinstance(latent, list | tuple) else latent  # the VAE's mean

        @tf.function(input_signature=[image_spec])
        def reconstruct(image):
            pixels = decoder(latent_of(image), training=False)
            error = tf.reduce_mean(tf.square(pixels - tf.cast(image, tf.float32) / 255.0), axis=[1, 2, 3])
            return {"reconstruction": _to_uint8(pixels), "error": error}

        @tf.function(input_signature=[image_spec])
        def encode(image):
            return {"latent": latent_of(image)}

        @tf.function(input_signature=[tf.TensorSpec((None, *decoder.input_shape[1:]), tf.float32, name="latent")])
        def decode(latent):
            return {"image": _to_uint8(decoder(latent, training=False))}

        images = self.sample_inputs()
        latent = {"latent": fixed_noise(self.cfg.export.parity_samples, self.cfg.model.latent_dim, self.cfg.seed)}
        return {
            "serving_default": Signature(reconstruct, images),
            "encode": Signature(encode, images, onnx_file="encoder.onnx"),
            "decode": Signature(decode, latent, onnx_file="decoder.onnx"),
        }

    def readable(self, outputs: dict[str, np.ndarray], top_k: int = 1) -> list[dict]:
        """`error`: the reconstruction's mean squared error, the anomaly score."""
        return [{"error": float(error)} for error in outputs["error"]]

    def anomaly_scores(self, run_dir: Path, images: np.ndarray | None = None) -> dict:
        """{"errors": per input, "threshold": the validation errors' 99th percentile, "validation_count"}; without
        `images`, the test split is scored. The float32 model the export serves computes them."""
        return self.scores(self.export_model(run_dir / "best.weights.h5"), images)

    def scores(self, model: keras.Model, images: np.ndarray | None = None) -> dict:
        """anomaly_scores by `model`."""
        splits = self.load_splits()
        validation = np.stack([x for x, _ in splits.validation.as_numpy_iterator()])
        if images is None:
            images = np.stack([x for x, _ in splits.test.as_numpy_iterator()])
        validation_errors = reconstruction_errors(model, validation)
        return {
            "errors": reconstruction_errors(model, images),
            "threshold": float(np.percentile(validation_errors, THRESHOLD_PERCENTILE)),
            "validation_count": len(validation_errors),
        }

    def report(self, model: keras.Model, test: tf.data.Dataset) -> dict:
        """The test images' reconstruction errors (mean, std, percentiles 50/90/99) and the anomaly threshold, as
        `kerasline anomaly` scores them: the clean images (the batched split holds a denoiser's noisy inputs)."""
        scores = self.scores(model)
        return {
            "reconstruction_error": distribution(scores["errors"], (50, 90, 99)),
            "anomaly_threshold": scores["threshold"],
            "test_count": len(scores["errors"]),
            "validation_count": scores["validation_count"],
        }

    def load_images(self, path: Path) -> np.ndarray:
        """A .npy of images (N, H, W) or (N, H, W, C), pixel values in [0, 255]."""
        try:
            images = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UserError(f"--input {path}: not a readable .npy file ({e})") from None
        shape = tuple(self.cfg.data.image_shape)
        if images.ndim == 3 and shape[-1] == 1:
            images = images[..., None]
        if images.ndim != 4 or images.shape[1:] != shape:
            expected = ", ".join(map(str, shape))
            raise UserError(f"--input {path}: images of shape {images.shape}, expected (N, {expected})")
        if not np.issubdtype(images.dtype, np.number) or images.min(initial=0) < 0 or images.max(initial=0) > 255:
            raise UserError(f"--input {path}: pixel values must be numbers in [0, 255]")
        return images


def summed_crossentropy(target, pixels):
    """The VAE's reconstruction term: pixel cross-entropy summed over the image (the KL term is a sum too)."""
    return ops.sum(keras.losses.binary_crossentropy(target[..., None], pixels[..., None]), axis=(1, 2, 3))


def reconstruction_errors(model: keras.Model, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """Per-example mean squared error between uint8-range `images` and their reconstructions."""
    errors = []
    for start in range(0, len(images), batch):
        x = images[start : start + batch].astype(np.float32)
        pixels = np.asarray(model(x, training=False))
        errors.append(np.mean(np.square(pixels - x / 255.0), axis=(1, 2, 3)))
    return np.concatenate(errors) if errors else np.zeros(0, np.float32)


def _to_uint8(pixels: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.round(tf.clip_by_value(pixels * 255.0, 0.0, 255.0)), tf.uint8)


class Reconstructions(EpochImage):
    """Validation inputs (noisy when denoising) beside their reconstructions, side by side in each tile."""

    tag = "reconstructions"

    def __init__(self, log_dir: Path, validation: tf.data.Dataset, count: int = 16):
        super().__init__(log_dir)
        inputs, _ = next(iter(validation))
        self.inputs = inputs[:count]

    def image(self) -> np.ndarray:
        pixels = self.model(self.inputs, training=False).numpy()
        return image_grid(np.concatenate([self.inputs.numpy() / 255.0, pixels], axis=2))


class VAESamples(EpochImage):
    """The decoder's images for fixed draws from the prior N(0, I)."""

    tag = "vae_samples"

    def __init__(self, log_dir: Path, latent_dim: int, seed: int, count: int = 64):
        super().__init__(log_dir)
        self.latent = np.random.default_rng(seed).standard_normal((count, latent_dim)).astype(np.float32)

    def image(self) -> np.ndarray:
        return image_grid(self.model.get_layer("decoder")(self.latent, training=False).numpy())
