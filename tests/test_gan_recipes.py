"""The DCGAN's stabilisers: spectral normalisation in the discriminator, a moving average of the generator and
two time-scale learning rates. Each is checked on a tiny GAN, one train step at a time."""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasline.config import ConfigError, validate
from kerasline.training.checkpoint import ResumePoint, RunCheckpoint, restore
from kerasline.training.tasks import task_for

STABLE = {
    "latent_dim": 4,
    "filters": 4,
    "spectral_norm": True,
    "generator_ema": 0.9,
    "discriminator_learning_rate": 4e-4,
}
BATCH = (tf.constant(np.random.default_rng(0).uniform(0, 255, (8, 28, 28, 1)), tf.float32), tf.zeros(8, tf.int32))


def tiny_gan(**model):
    cfg = validate({"name": "g", "model": {"name": "dcgan", **STABLE, **model}})
    task = task_for(cfg)
    return task, task.compile(task.build_model(), steps_per_epoch=10)


def values(variables) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(v) for v in variables]


def assert_close(got: list[np.ndarray], expected: list[np.ndarray], **tolerance) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, **tolerance)


def test_spectral_norm_wraps_the_discriminator_and_a_resumed_gan_steps_exactly_as_the_uninterrupted(tmp_path):
    _, gan = tiny_gan()
    wrapped = [layer for layer in gan.discriminator.layers if isinstance(layer, keras.layers.SpectralNormalization)]
    assert [type(layer.layer).__name__ for layer in wrapped] == ["Conv2D", "Conv2D", "Dense"]
    assert gan.discriminator.output.dtype == "float32"
    u_before = values(layer.vector_u for layer in wrapped)
    gan.train_step(BATCH)
    u_after = values(layer.vector_u for layer in wrapped)
    assert all(not np.allclose(a, b) for a, b in zip(u_before, u_after, strict=True))  # a power iteration ran

    checkpoint = RunCheckpoint(tmp_path, None, ResumePoint(), [], total_epochs=2)
    checkpoint.set_model(gan)
    checkpoint.on_epoch_end(0, {"loss": 1.0})
    _, resumed = tiny_gan()
    assert restore(tmp_path, resumed).epoch == 1
    assert_close(values(resumed.discriminator.non_trainable_weights), values(gan.discriminator.non_trainable_weights))
    for model in (gan, resumed):  # u, kernels, the average, both optimizers and the random streams carry on
        model.train_step(BATCH)
    assert_close(values(resumed.variables), values(gan.variables), rtol=1e-5, atol=1e-6)


def test_generator_ema_copies_the_first_step_then_averages_with_its_warmed_up_decay():
    _, gan = tiny_gan()
    after = []
    for _ in range(2):
        gan.train_step(BATCH)
        after.append(values(gan.generator.weights))
        if len(after) == 1:  # the first step copies the generator, BatchNorm statistics included
            assert_close(values(gan.generator_ema.weights), after[0])
    decay = min(0.9, (1 + 1) / (10 + 1))  # step 1, warmed up: 2/11, not the configured 0.9
    expected = [decay * first + (1 - decay) * second for first, second in zip(*after, strict=True)]
    assert_close(values(gan.generator_ema.weights), expected, rtol=1e-6, atol=1e-7)
    assert not gan.generator_ema.trainable_weights  # no optimizer moves it
    noise = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_array_equal(*values([gan(noise), gan.generator_ema(noise, training=False)]))


def test_the_export_serves_the_average_not_the_generator(tmp_path):
    task, gan = tiny_gan()
    for _ in range(2):
        gan.train_step(BATCH)
    gan.save_weights(tmp_path / "best.weights.h5")
    exported = task.export_model(tmp_path / "best.weights.h5")
    noise = task.sample_inputs()["noise"]
    average, live = (values([net(noise, training=False)])[0] for net in (gan.generator_ema, gan.generator))
    assert np.abs(average - live).max() > 1e-4
    assert_close(values([exported(noise, training=False)]), [average], atol=1e-6)
    serve = task.signatures(exported, exported, tmp_path)["serving_default"].function
    images = serve(tf.constant(noise))["image"].numpy().astype(int)
    assert np.abs(images - np.round((average + 1) * 127.5)).max() <= 1  # a rounding step apart at most


def test_ttur_gives_the_discriminator_its_own_rate_and_the_generator_the_training_rate():
    _, gan = tiny_gan()
    assert float(gan.d_optimizer.learning_rate) == pytest.approx(4e-4)
    assert float(gan.optimizer.learning_rate) == pytest.approx(1e-3)  # training.optimizer.learning_rate
    _, same = tiny_gan(discriminator_learning_rate=None)
    assert float(same.d_optimizer.learning_rate) == pytest.approx(1e-3)


@pytest.mark.parametrize("rate", [0.0, 0.5])
def test_discriminator_dropout_drops_at_its_rate_in_training_only(rate):
    _, gan = tiny_gan(spectral_norm=False, discriminator_dropout=rate)
    dropouts = [layer.rate for layer in gan.discriminator.layers if isinstance(layer, keras.layers.Dropout)]
    assert dropouts == ([rate, rate] if rate else [])
    images = BATCH[0] / 127.5 - 1.0

    def scores(training: bool) -> np.ndarray:
        return keras.ops.convert_to_numpy(gan.discriminator(images, training=training))

    first, second, inference = scores(True), scores(True), scores(False)
    np.testing.assert_allclose(scores(False), inference)
    assert np.allclose(first, inference) == (rate == 0)  # training drops units only at a rate above 0,
    assert np.allclose(first, second) == (rate == 0)  # and draws them afresh each call


@pytest.mark.parametrize(
    "knob, value, message",
    [
        ("generator_ema", 1.0, "model.generator_ema: "),
        ("discriminator_learning_rate", 0.0, "model.discriminator_learning_rate: "),
        ("spectral_norm", "sometimes", "model.spectral_norm: "),
        ("discriminator_dropout", 1.0, "model.discriminator_dropout: "),
    ],
)
def test_a_wrong_stabiliser_value_is_refused_in_one_line(knob, value, message):
    with pytest.raises(ConfigError) as refused:
        validate({"name": "g", "model": {"name": "dcgan", knob: value}})
    assert message in str(refused.value) and "\n" not in str(refused.value)


MIRRORED = textwrap.dedent(
    """
    import json
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    from kerasline.config import validate
    from kerasline.training.strategy import make_strategy
    from kerasline.training.tasks import task_for

    model = {"name": "dcgan", "latent_dim": 4, "filters": 4, "spectral_norm": True, "generator_ema": 0.5}
    task = task_for(validate({"name": "g", "model": model}))
    strategy = make_strategy("mirrored")
    with strategy.scope():
        gan = task.compile(task.build_model(), steps_per_epoch=2)
    images = np.random.default_rng(0).uniform(0, 255, (16, 28, 28, 1)).astype("float32")
    u = [np.array(w.value) for w in gan.discriminator.non_trainable_weights]
    gan.fit(tf.data.Dataset.from_tensor_slices((images, np.zeros(16))).batch(8), epochs=1, verbose=0)
    weights = gan.discriminator.non_trainable_weights + gan.generator_ema.weights
    copies = [strategy.experimental_local_results(w.value) for w in weights]
    moved = [not np.allclose(a, w.value) for a, w in zip(u, gan.discriminator.non_trainable_weights)]
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "u_moved": all(moved),
                      "spread": max(float(np.abs(c[0] - c[1]).max()) for c in copies)}))
    """
)


def test_spectral_norm_and_the_average_train_under_a_two_replica_mirrored_strategy():
    proc = subprocess.run([sys.executable, "-c", MIRRORED], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2 and out["u_moved"]  # the power iterations ran
    assert out["spread"] < 1e-5  # u vectors and the average agree on both replicas
