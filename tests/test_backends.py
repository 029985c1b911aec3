"""models/ is backend-agnostic: every family builds, trains a step and predicts on JAX, with TensorFlow blocked."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

IMAGE = {"image_shape": [28, 28, 1]}
TOKENS = {"input": "tokens", "name": "imdb_vocab500", "num_classes": 2, "sequence_length": 12, "vocab_size": 50}
FAMILIES = {
    "cnn": ({"filters": [8, 16]}, IMAGE),
    "mlp": ({"hidden_units": [16], "activation": "leaky_relu", "dropout": 0.1}, IMAGE),
    "lenet": ({}, {"image_shape": [32, 32, 3]}),
    "wide_cnn": ({}, {"image_shape": [32, 32, 3]}),
    "resnet": ({"stages": [1, 1], "width": 8}, IMAGE),
    "vit": ({"d_model": 8, "heads": 2, "layers": 1, "ff_dim": 8}, IMAGE),
    "rnn": ({"units": 4, "embedding_dim": 4, "summary": "max", "bag_of_words": True, "bigram_buckets": 16}, TOKENS),
    "transformer": ({"d_model": 8, "heads": 2, "layers": 1, "ff_dim": 8, "position": "sinusoidal"}, TOKENS),
    "unet": ({"depth": 2, "filters": 4, "decoder": "upsampling"}, {**IMAGE, "task": "segmentation", "num_classes": 2}),
    "cnn_members": ({"name": "cnn", "filters": [4], "members": 2}, IMAGE),  # models/ensemble.py's loss and metrics
}
# Generative families: no class probabilities. Autoencoders train image → image; dcgan's model is its generator
# (noise → image), which the script trains against the discriminator, as the generation task does.
GENERATIVE = {
    "dcgan": ({"latent_dim": 4, "filters": 4}, IMAGE),
    "autoencoder": ({"kind": "conv", "filters": [4, 8], "latent_dim": 4}, IMAGE),
    "vae": ({"hidden_units": [8], "latent_dim": 2}, IMAGE),
}

JAX_FOLDER = Path(sys.prefix) / "jax"  # where `make setup` installs jax, off TensorFlow's path (see the Makefile)

SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class NoTensorFlow(importlib.abc.MetaPathFinder):  # TensorFlow is installed, but models/ must not need it
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] == "tensorflow":
                raise ModuleNotFoundError(f"blocked: {name}")

    sys.meta_path.insert(0, NoTensorFlow())
    import keras
    import numpy as np
    from kerasline.config import GENERATIVE_TASKS, task_of, validate
    from kerasline.models import build_model
    from kerasline.models.gan import build_discriminator

    families = json.loads(sys.argv[1])
    out = {"backend": keras.backend.backend()}
    rng = np.random.default_rng(0)
    for name, (knobs, data) in families.items():
        cfg = validate({"name": name, "data": data, "model": {"name": name, **knobs}})
        model = build_model(cfg)
        if cfg.model.name == "dcgan":  # one GAN step: the discriminator on real (1) and generated (0) images,
            # then the generator through the frozen discriminator towards "real" (the non-saturating loss)
            bce = keras.losses.BinaryCrossentropy(from_logits=True)
            noise = rng.normal(size=(8, cfg.model.latent_dim)).astype("float32")
            real = rng.uniform(-1, 1, (8, *cfg.data.image_shape)).astype("float32")
            fake = model.predict(noise, verbose=0)
            discriminator = build_discriminator(cfg.model, cfg.data)
            discriminator.compile("adam", bce)
            images, labels = np.concatenate([real, fake]), np.repeat([[1.0], [0.0]], 8, axis=0).astype("float32")
            d_loss = discriminator.fit(images, labels, epochs=1, verbose=0).history["loss"][0]
            discriminator.trainable = False
            z = keras.Input(shape=(cfg.model.latent_dim,))
            stacked = keras.Model(z, discriminator(model(z)))
            stacked.compile("adam", bce)
            loss = stacked.fit(noise, np.ones((8, 1), "float32"), epochs=1, verbose=0).history["loss"][0]
            out[name] = {"loss": float(loss), "shape": list(fake.shape[1:])}
            logits = discriminator.predict(fake, verbose=0)
            out["discriminator"] = {"loss": float(d_loss), "shape": list(logits.shape[1:])}
            continue
        if task_of(cfg) in GENERATIVE_TASKS:
            model.compile("adam", "mse")
            x = rng.uniform(0, 255, (8, *cfg.data.image_shape)).astype("float32")
            loss = model.fit(x, x / 255, epochs=1, verbose=0).history["loss"][0]
            out[name] = {"loss": float(loss), "shape": list(model.predict(x, verbose=0).shape[1:])}
            continue
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy())  # a Loss, as the tasks compile with
        if cfg.data.input == "image":
            x = rng.uniform(0, 255, (8, *cfg.data.image_shape)).astype("float32")
        else:
            x = rng.integers(1, cfg.data.vocab_size, (8, cfg.data.sequence_length)).astype("int32")
            x[:, 8:] = 0  # padding
        y = np.arange(8) % cfg.data.num_classes
        if task_of(cfg) == "segmentation":  # a class per pixel
            y = rng.integers(0, cfg.data.num_classes, (8, *cfg.data.image_shape[:2]))
        loss = model.fit(x, y, epochs=1, verbose=0).history["loss"][0]
        out[name] = {"loss": float(loss), "sums": np.sum(model.predict(x, verbose=0), -1).ravel().tolist()}
    out["tensorflow_imported"] = any(m == "tensorflow" or m.startswith("tensorflow.") for m in sys.modules)
    print(json.dumps(out))
    """
)


def test_every_family_builds_and_trains_on_jax():
    # XLA compiles each model's train and predict functions; its CPU optimisation passes took 60% of this test's
    # 155 s (jax 0.10 on 2 idle cores; 62 s without them). They change speed, not results, which is all the test reads.
    fast_compile = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "XLA_FLAGS": fast_compile}
    env["PYTHONPATH"] = os.pathsep.join([str(JAX_FOLDER), *filter(None, [os.environ.get("PYTHONPATH")])])
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(FAMILIES | GENERATIVE)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["backend"] == "jax"
    assert not out["tensorflow_imported"]
    for name in FAMILIES:
        assert out[name]["loss"] > 0
        assert all(abs(s - 1) < 1e-4 for s in out[name]["sums"]), name
    for name in GENERATIVE:
        assert out[name]["loss"] > 0
        assert out[name]["shape"] == [28, 28, 1], name
    assert out["discriminator"]["loss"] > 0 and out["discriminator"]["shape"] == [1]  # dcgan's other net
