"""Generative families: the GAN and the autoencoders/VAE train through the CLI, export verified signatures, and
their losses, penalty, KL term and anomaly scores do what the papers say."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasline.config import ConfigError, validate
from kerasline.models.autoencoder import build_autoencoder, kl_divergence
from kerasline.training.tasks import task_for
from kerasline.training.tasks.generation import gradient_penalty

TINY = """
name = "{name}"
seed = 3
runs_dir = "{root}/runs"
[data]
limit = {limit}
batch_size = 32
[model]
{model}
[training]
epochs = {epochs}
[export]
dir = "{root}/exports"
parity_samples = 16
"""


def train_cli(kerasline, root, name, model, limit=200, epochs=1):
    experiment = root / f"{name}.toml"
    experiment.write_text(TINY.format(name=name, root=root, model=model, limit=limit, epochs=epochs))
    proc = kerasline("train", str(experiment))
    assert proc.returncode == 0, proc.stderr[-3000:]
    version = root / "exports" / name / "1"
    report = json.loads((version / "verification.json").read_text())
    assert report["passed"] and report["samples"] == 16
    return experiment, version, report


def signature(version, name="serving_default"):
    function = tf.saved_model.load(str(version)).signatures[name]
    inputs = {k: (v.dtype, v.shape.as_list()) for k, v in function.structured_input_signature[1].items()}
    outputs = {k: (v.dtype, v.shape.as_list()) for k, v in function.structured_outputs.items()}
    return inputs, outputs


def logged_tags(root, name, split):
    events = tf.compat.v1.train.summary_iterator
    paths = [str(p) for p in (root / "runs" / name / "run-001" / "logs" / split).glob("events*")]
    return {v.tag for path in paths for e in events(path) for v in e.summary.value}


def test_gan_trains_and_exports_its_generator(tmp_path, kerasline):
    model = 'name = "dcgan"\nlatent_dim = 8\nfilters = 8'
    _, version, report = train_cli(kerasline, tmp_path, "gan", model)
    assert signature(version) == (
        {"noise": (tf.float32, [None, 8])},
        {"image": (tf.uint8, [None, 28, 28, 1])},
    )
    assert set(report["max_abs_diff"]) == {"saved_model", "onnx"}
    assert (version / "model.onnx").is_file()
    assert "generated_fixed_noise" in logged_tags(tmp_path, "gan", "train")
    assert {"epoch_d_loss", "epoch_g_loss"} <= logged_tags(tmp_path, "gan", "train")
    metrics = json.loads((tmp_path / "runs" / "gan" / "run-001" / "metrics.json").read_text())["test"]
    assert set(metrics) == {"d_loss", "g_loss", "loss"}


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory, kerasline):
    """A dense denoising autoencoder, trained long enough (a few seconds) to know digits from noise."""
    root = tmp_path_factory.mktemp("autoencoder")
    model = 'name = "autoencoder"\nhidden_units = [64]\nlatent_dim = 16\ndenoise_stddev = 0.1'
    experiment, version, report = train_cli(kerasline, root, "ae", model, limit=1000, epochs=4)
    return {"root": root, "experiment": experiment, "version": version, "report": report}


def test_autoencoder_exports_encode_decode_and_reconstruct(autoencoder):
    version, report = autoencoder["version"], autoencoder["report"]
    image = (tf.uint8, [None, 28, 28, 1])
    assert signature(version) == (
        {"image": image},
        {"reconstruction": image, "error": (tf.float32, [None])},
    )
    assert signature(version, "encode") == ({"image": image}, {"latent": (tf.float32, [None, 16])})
    assert signature(version, "decode") == ({"latent": (tf.float32, [None, 16])}, {"image": image})
    assert report["onnx_files"] == {"serving_default": "model.onnx", "encode": "encoder.onnx", "decode": "decoder.onnx"}
    for path in ("saved_model", "onnx", "saved_model:encode", "onnx:encode", "saved_model:decode", "onnx:decode"):
        assert path in report["max_abs_diff"]
    assert report["max_abs_diff"]["onnx:encode"]["latent"] <= 1e-5
    assert "reconstructions" in logged_tags(autoencoder["root"], "ae", "validation")


def test_anomaly_scores_rank_noise_above_digits(autoencoder, kerasline, tmp_path):
    with np.load("data/mnist_8k.npz") as npz:
        digits = npz["x"][-20:]
    noise = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    path = tmp_path / "inputs.npy"
    np.save(path, np.concatenate([digits.reshape(-1, 28, 28), noise]))
    proc = kerasline("anomaly", str(autoencoder["experiment"]), "--input", str(path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines() if line.strip()[:1].isdigit()]
    errors = np.array([float(row[1]) for row in rows])
    assert len(errors) == 25
    assert errors[20:].min() > errors[:20].max()
    assert all(row[-1] == "yes" for row in rows[20:])
    assert "threshold:" in proc.stdout


def test_anomaly_input_of_the_wrong_shape_or_range_is_a_user_error(tmp_path):
    from kerasline.errors import UserError
    from kerasline.training.tasks import anomaly_task

    with pytest.raises(UserError, match="anomaly scores need an autoencoder"):
        anomaly_task(validate({"name": "g", "model": {"name": "dcgan"}}))

    task = anomaly_task(validate({"name": "a", "model": {"name": "autoencoder"}}))
    for array, message in [
        (np.zeros((2, 5, 5)), r"expected \(N, 28, 28, 1\)"),
        (np.full((1, 28, 28), 300.0), r"in \[0, 255\]"),
    ]:
        np.save(tmp_path / "bad.npy", array)
        with pytest.raises(UserError, match=message):
            task.load_images(tmp_path / "bad.npy")
    np.save(tmp_path / "ok.npy", np.zeros((3, 28, 28), np.uint8))
    assert task.load_images(tmp_path / "ok.npy").shape == (3, 28, 28, 1)


def test_vae_trains_and_writes_reconstructions_and_samples(tmp_path, kerasline):
    model = 'name = "vae"\nkind = "conv"\nfilters = [4, 8]\nlatent_dim = 2'
    _, version, _ = train_cli(kerasline, tmp_path, "vae", model)
    assert signature(version, "encode")[1] == {"latent": (tf.float32, [None, 2])}
    assert (version / "decoder.onnx").is_file() and (version / "encoder.onnx").is_file()
    assert {"reconstructions", "vae_samples"} <= logged_tags(tmp_path, "vae", "validation")


def test_gan_step_updates_both_networks():
    cfg = validate({"name": "g", "model": {"name": "dcgan", "latent_dim": 4, "filters": 4}})
    gan = task_for(cfg).build_model()
    gan.compile(d_optimizer=keras.optimizers.Adam(1e-3), g_optimizer=keras.optimizers.Adam(1e-3))
    before = [[w.numpy().copy() for w in net.trainable_weights] for net in (gan.generator, gan.discriminator)]
    images = np.random.default_rng(0).uniform(0, 255, (8, 28, 28, 1)).astype(np.float32)
    logs = gan.train_step((tf.constant(images), tf.zeros(8, tf.int32)))
    assert np.isfinite(float(logs["d_loss"])) and np.isfinite(float(logs["g_loss"]))
    for net, old in zip((gan.generator, gan.discriminator), before, strict=True):
        changed = [not np.array_equal(w.numpy(), o) for w, o in zip(net.trainable_weights, old, strict=True)]
        assert all(changed), net.name


def test_gradient_penalty_is_zero_for_a_1_lipschitz_critic_and_matches_a_hand_computation():
    rng = np.random.default_rng(1)
    real, fake = (tf.constant(rng.normal(size=(6, 4, 4, 1)), tf.float32) for _ in range(2))
    eps = tf.constant(rng.uniform(size=6), tf.float32)

    direction = rng.normal(size=(16, 1))
    linear = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(1, use_bias=False)])
    linear.layers[-1].kernel.assign(direction / np.linalg.norm(direction))  # gradient norm 1 everywhere
    assert float(gradient_penalty(linear, real, fake, eps)) == pytest.approx(0.0, abs=1e-6)

    class HalfSquare(keras.Model):  # critic(x) = ½‖x‖², so its gradient at x̂ is x̂ itself
        def call(self, x, training=False):
            return 0.5 * tf.reduce_sum(tf.square(x), axis=[1, 2, 3])

    e = eps.numpy()[:, None, None, None]
    mixed = e * real.numpy() + (1 - e) * fake.numpy()  # interpolates, one uniform weight per example
    expected = np.mean((np.linalg.norm(mixed.reshape(6, -1), axis=1) - 1) ** 2)
    assert float(gradient_penalty(HalfSquare(), real, fake, eps)) == pytest.approx(expected, rel=1e-5)


def test_vae_kl_term_matches_the_closed_form():
    mean = np.array([[1.0, 0.0], [0.0, 0.0]], np.float32)
    log_var = np.array([[0.0, np.log(2.0)], [0.0, 0.0]], np.float32)
    # ½ Σ (σ² + μ² − 1 − log σ²): example 0 is ½ (1 + (1 − log 2)), example 1 is the prior itself.
    np.testing.assert_allclose(np.asarray(kl_divergence(mean, log_var)), [0.5 * (2 - np.log(2)), 0.0], rtol=1e-6)

    cfg = validate({"name": "v", "model": {"name": "vae", "latent_dim": 2, "hidden_units": [8], "kl_weight": 0.5}})
    vae = build_autoencoder(cfg.model, cfg.data)
    images = np.random.default_rng(2).uniform(0, 255, (4, 28, 28, 1)).astype(np.float32)
    vae(images, training=True)
    encoded_mean, encoded_log_var = vae.get_layer("encoder")(images)
    expected = 0.5 * np.mean(np.asarray(kl_divergence(encoded_mean, encoded_log_var)))
    assert float(vae.losses[0]) == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(vae(images, training=False), vae(images, training=False))  # the mean, not a draw


def test_generative_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="training.optimizer.name: dcgan trains both nets with Adam"):
        validate({"name": "g", "model": {"name": "dcgan"}, "training": {"optimizer": {"name": "sgd"}}})
    with pytest.raises(ConfigError, match="training.mixed_precision: dcgan's optimizers do not scale the loss"):
        validate({"name": "g", "model": {"name": "dcgan"}, "training": {"mixed_precision": "mixed_float16"}})
    with pytest.raises(ConfigError, match="training.monitor: vae has no accuracy"):
        validate({"name": "v", "model": {"name": "vae"}, "training": {"monitor": "val_accuracy"}})
    with pytest.raises(ConfigError, match="model.loss: 'wgan' is not one of bce, wgan_gp"):
        validate({"name": "g", "model": {"name": "dcgan", "loss": "wgan"}})
    with pytest.raises(ConfigError, match="model.filters: 3 stride-2 convs need sides divisible by 8"):
        validate({"name": "a", "model": {"name": "autoencoder", "kind": "conv", "filters": [4, 4, 4]}})


def test_frechet_distance_matches_the_closed_form():
    from benchmarks.generative import frechet_distance

    a = np.random.default_rng(4).normal(size=(500, 6))
    b = 2 * a + 1  # Σb = 4Σa, so (Σa Σb)^½ = 2Σa and the trace terms leave Tr Σa
    mean_a = a.mean(0)
    expected = np.sum((mean_a - (2 * mean_a + 1)) ** 2) + np.trace(np.cov(a, rowvar=False))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
