"""The GAN's own training step: alternating discriminator and generator updates on each batch of real digits.

bce (Goodfellow et al., 2014; non-saturating generator loss, as the course gives it):
    D: BCE(1, D(x)) + BCE(0, D(G(z)))         G: BCE(1, D(G(z)))
wgan_gp (Gulrajani et al., 2017), D is a critic:
    D: mean D(G(z)) − mean D(x) + λ·mean (‖∇D(x̂)‖₂ − 1)²,  x̂ = εx + (1 − ε)G(z), ε ~ U[0, 1] per example
    G: −mean D(G(z))
The discriminator takes `critic_steps` updates (fresh noise each) per generator update. Images are scaled
from [0, 255] to the generator's [-1, 1].
"""

import keras
import tensorflow as tf

from kerasline.config import ExperimentConfig, GANConfig
from models.gan import build_discriminator, build_generator


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
    checkpoint's `model.optimizer` is the generator's; both optimizers are saved with the weights."""

    def __init__(self, cfg: GANConfig, generator: keras.Model, discriminator: keras.Model, seed: int, **kwargs):
        super().__init__(**kwargs)
        self.cfg, self.generator, self.discriminator = cfg, generator, discriminator
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.built = True

    def call(self, noise, training=False):
        return self.generator(noise, training=training)

    def compile(self, learning_rate: float | keras.optimizers.schedules.LearningRateSchedule) -> None:
        adam = dict(learning_rate=learning_rate, beta_1=self.cfg.beta_1, beta_2=self.cfg.beta_2)
        super().compile(optimizer=keras.optimizers.Adam(**adam))
        self.d_optimizer = keras.optimizers.Adam(**adam)
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
        return self._track(d_loss, g_loss)

    def test_step(self, data):
        real = to_unit_range(data[0])
        fake = self.generator(self._noise(tf.shape(real)[0]), training=False)
        return self._track(*self._gan_losses(real, fake, training=False))

    def _track(self, d_loss, g_loss):
        """`loss` is the sum: finite while training is healthy (the checkpoint watches it), not a quality measure."""
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        self.loss_tracker.update_state(d_loss + g_loss)
        return {m.name: m.result() for m in self.metrics}


def build_gan(cfg: ExperimentConfig) -> GAN:
    return GAN(cfg.model, build_generator(cfg.model, cfg.data), build_discriminator(cfg.model, cfg.data), cfg.seed)
