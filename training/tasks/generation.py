"""Generation: a GAN learns to draw images like the training split's from Gaussian noise; labels are not used.
Its own training step alternates discriminator and generator updates on each batch of real images.

bce (Goodfellow et al., 2014; non-saturating generator loss, as the course gives it):
    D: BCE(1, D(x)) + BCE(0, D(G(z)))         G: BCE(1, D(G(z)))
wgan_gp (Gulrajani et al., 2017), D is a critic:
    D: mean D(G(z)) − mean D(x) + λ·mean (‖∇D(x̂)‖₂ − 1)²,  x̂ = εx + (1 − ε)G(z), ε ~ U[0, 1] per example
    G: −mean D(G(z))
The discriminator takes `critic_steps` updates (fresh noise each) per generator update. Images are scaled
from [0, 255] to the generator's [-1, 1].

model.generator_ema = β keeps a moving average of the generator's weights (Karras et al., 2018; Yazıcı et al.,
2019), updated after each generator step, BatchNorm statistics included: θ̄ ← β·θ̄ + (1 − β)·θ, the first step
copying θ and β warmed up as training.ema's is. The average draws the samples: the TensorBoard grid, evaluation and
the export.
"""

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kerasline.config import GANConfig
from kerasline.models.gan import build_discriminator, build_generator, fixed_noise
from kerasline.pipelines import Datasets
from kerasline.training.callbacks import EpochImage, image_grid
from kerasline.training.ema import warmed_up_decay
from kerasline.training.optim import learning_rate
from kerasline.training.tasks.base import Signature, Task, built_in_float32


def to_unit_range(images: tf.Tensor) -> tf.Tensor:
    return tf.cast(images, tf.float32) / 127.5 - 1.0


def gradient_penalty(critic: keras.Model, real: tf.Tensor, fake: tf.Tensor, eps: tf.Tensor) -> tf.Tensor:
    """mean over the batch of (‖∇ critic(x̂)‖₂ − 1)², x̂ = eps·real + (1 − eps)·fake; eps: (B,) in [0, 1]."""
    eps = tf.reshape(eps, [-1] + [1] * (len(real.shape) - 1))
    mixed = eps * real + (1.0 - eps) * fake
    with tf.GradientTape() as tape:
        tape.watch(mixed)
        scores = critic(mixed, training=True)
    grads = tape.gradient(scores, mixed)
    norms = tf.sqrt(tf.reduce_sum(tf.square(grads), axis=tf.range(1, tf.rank(grads))) + 1e-12)
    return tf.reduce_mean(tf.square(norms - 1.0))


class GAN(keras.Model):
    """Generator and discriminator with an Adam optimizer each; `fit` runs `train_step` below. The
    checkpoint's `model.optimizer` is the generator's; both optimizers are saved with the weights, and so is
    `generator_ema`, the generator's moving average (None unless cfg.generator_ema)."""

    def __init__(self, cfg: GANConfig, generator: keras.Model, discriminator: keras.Model, seed: int, **kwargs):
        super().__init__(**kwargs)
        self.cfg, self.generator, self.discriminator = cfg, generator, discriminator
        self.generator_ema = None
        if cfg.generator_ema is not None:
            self.generator_ema = keras.models.clone_model(generator)
            self.generator_ema.trainable = False
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.built = True

    @property
    def sampler(self) -> keras.Model:
        """The generator that draws samples: its moving average where there is one."""
        return self.generator if self.generator_ema is None else self.generator_ema

    def call(self, noise, training=False):
        return self.sampler(noise, training=training)

    def compile(
        self, d_optimizer: keras.optimizers.Optimizer, g_optimizer: keras.optimizers.Optimizer, **kwargs
    ) -> None:
        """keras-io's GAN signature: an optimizer per net; `kwargs` go to Keras's own compile."""
        super().compile(optimizer=g_optimizer, **kwargs)
        self.d_optimizer = d_optimizer
        self.optimizer.build(self.generator.trainable_variables)
        self.d_optimizer.build(self.discriminator.trainable_variables)

    @property
    def metrics(self):
        return [self.d_loss_tracker, self.g_loss_tracker, self.loss_tracker]

    def _noise(self, batch):
        return keras.random.normal((batch, self.cfg.latent_dim), seed=self.seed_generator)

    def _gan_losses(self, real, fake, training):
        """(discriminator loss, generator loss) on one batch of real and generated images."""
        real_scores = self.discriminator(real, training=training)
        fake_scores = self.discriminator(fake, training=training)
        if self.cfg.loss == "wgan_gp":
            d_loss = tf.reduce_mean(fake_scores) - tf.reduce_mean(real_scores)
            if training:
                eps = keras.random.uniform((tf.shape(real)[0],), seed=self.seed_generator)
                d_loss += self.cfg.gp_weight * gradient_penalty(self.discriminator, real, fake, eps)
            return d_loss, -tf.reduce_mean(fake_scores)
        bce = keras.losses.BinaryCrossentropy(from_logits=True)
        d_loss = bce(tf.ones_like(real_scores), real_scores) + bce(tf.zeros_like(fake_scores), fake_scores)
        return d_loss, bce(tf.ones_like(fake_scores), fake_scores)

    def train_step(self, data):
        real = to_unit_range(data[0])
        batch = tf.shape(real)[0]
        for _ in range(self.cfg.critic_steps):
            fake = self.generator(self._noise(batch), training=True)
            with tf.GradientTape() as tape:
                d_loss, _ = self._gan_losses(real, fake, training=True)
            variables = self.discriminator.trainable_variables
            self.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, variables), variables, strict=True))
        with tf.GradientTape() as tape:
            fake = self.generator(self._noise(batch), training=True)
            _, g_loss = self._gan_losses(real, fake, training=True)
        variables = self.generator.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(g_loss, variables), variables, strict=True))
        if self.generator_ema is not None:
            self._average_generator()
        return self._track(d_loss, g_loss)

    def _average_generator(self):
        """θ̄ ← β·θ̄ + (1 − β)·θ over all the generator's weights, β warmed up (training/ema.py). β = 0 on the first
        step: the average starts from the generator as training found it (init_from's weights, where it loaded some).
        The generator's optimizer has already counted this step."""
        decay = warmed_up_decay(self.cfg.generator_ema, self.optimizer.iterations - 1)
        for average, weight in zip(self.generator_ema.weights, self.generator.weights, strict=True):
            average.assign(decay * average + (1.0 - decay) * weight)

    def test_step(self, data):
        real = to_unit_range(data[0])
        fake = self.sampler(self._noise(tf.shape(real)[0]), training=False)
        return self._track(*self._gan_losses(real, fake, training=False))

    def _track(self, d_loss, g_loss):
        """`loss` is the sum: finite while training is healthy (the checkpoint watches it), not a quality measure."""
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        self.loss_tracker.update_state(d_loss + g_loss)
        return {m.name: m.result() for m in self.metrics}


class Generation(Task):
    """The DCGAN family. The export serves the generator alone: `noise` float32 [B, latent] → `image` uint8."""

    def build_model(self) -> GAN:
        model, data = self.cfg.model, self.cfg.data
        return GAN(model, build_generator(model, data), build_discriminator(model, data), self.cfg.seed)

    def compile(self, model: GAN, steps_per_epoch: int) -> GAN:
        """Both nets use Adam at training.optimizer.learning_rate and its schedule; the discriminator at
        model.discriminator_learning_rate where set (two time-scale updates, Heusel et al., 2017)."""
        training, gan = self.cfg.training, self.cfg.model

        def adam(peak: float) -> keras.optimizers.Adam:
            optimizer = training.optimizer.model_copy(update={"learning_rate": peak})
            rate = learning_rate(training.model_copy(update={"optimizer": optimizer}), steps_per_epoch)
            return keras.optimizers.Adam(learning_rate=rate, beta_1=gan.beta_1, beta_2=gan.beta_2)

        g_rate = training.optimizer.learning_rate
        d_rate = g_rate if gan.discriminator_learning_rate is None else gan.discriminator_learning_rate
        model.compile(d_optimizer=adam(d_rate), g_optimizer=adam(g_rate))
        return model

    @property
    def monitor(self) -> None:
        return None  # a GAN's losses do not measure its samples: keep the last epoch, do not stop early

    def visuals(self, log_dir: Path, data: Datasets) -> list[keras.callbacks.Callback]:
        noise = fixed_noise(64, self.cfg.model.latent_dim, self.cfg.seed)
        return [SampleGrid(log_dir / "train", noise), *super().visuals(log_dir, data)]

    def export_model(self, weights: Path) -> keras.Model:
        gan = built_in_float32(self.build_model)
        gan.load_weights(weights)
        return gan.sampler

    def sample_inputs(self) -> dict[str, np.ndarray]:
        return {"noise": fixed_noise(self.cfg.export.parity_samples, self.cfg.model.latent_dim, self.cfg.seed)}

    def calibration_inputs(self, count: int) -> dict[str, np.ndarray]:
        return {"noise": fixed_noise(count, self.cfg.model.latent_dim, self.cfg.seed + 1)}

    def signatures(self, model: keras.Model, onnx_model: keras.Model, run_dir: Path) -> dict[str, Signature]:
        spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="noise")

        @tf.function(input_signature=[spec])
        def generate(noise):
            unit_range = model(noise, training=False)
            return {"image": tf.cast(tf.round(tf.clip_by_value((unit_range + 1.0) * 127.5, 0.0, 255.0)), tf.uint8)}

        return {"serving_default": Signature(generate, self.sample_inputs())}

    def readable(self, outputs: dict[str, np.ndarray], top_k: int = 1) -> list[dict]:
        """`image`: the generated image, as a PNG (from an .npy of noise)."""
        return [{"image": image} for image in outputs["image"]]


class SampleGrid(EpochImage):
    """The sampler's images for one fixed batch of noise, so epochs compare like for like."""

    tag = "generated_fixed_noise"

    def __init__(self, log_dir: Path, noise: np.ndarray):
        super().__init__(log_dir)
        self.noise = noise

    def image(self) -> np.ndarray:
        return image_grid((self.model.sampler(self.noise, training=False).numpy() + 1) / 2)
