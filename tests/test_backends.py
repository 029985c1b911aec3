"""models/ is backend-agnostic: every family builds, trains a step and predicts on JAX, without TensorFlow."""

import json
import os
import subprocess
import sys
import textwrap

FAMILIES = {
    "cnn": ({"filters": [8, 16]}, [28, 28, 1]),
    "mlp": ({"hidden_units": [16], "activation": "leaky_relu", "dropout": 0.1}, [28, 28, 1]),
    "lenet": ({}, [32, 32, 3]),
    "wide_cnn": ({}, [32, 32, 3]),
    "resnet": ({"stages": [1, 1], "width": 8}, [28, 28, 1]),
}

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import keras
    import numpy as np
    from kerasline.config import validate
    from models import build_model

    families = json.loads(sys.argv[1])
    out = {"backend": keras.backend.backend()}
    for name, (knobs, shape) in families.items():
        cfg = validate({"name": name, "data": {"image_shape": shape}, "model": {"name": name, **knobs}})
        model = build_model(cfg)
        model.compile("adam", "sparse_categorical_crossentropy")
        x = np.random.default_rng(0).uniform(0, 255, (8, *shape)).astype("float32")
        loss = model.fit(x, np.arange(8) % 10, epochs=1, verbose=0).history["loss"][0]
        out[name] = {"loss": float(loss), "sums": np.sum(model.predict(x, verbose=0), -1).tolist()}
    out["tensorflow_imported"] = any(m == "tensorflow" or m.startswith("tensorflow.") for m in sys.modules)
    print(json.dumps(out))
    """
)


def test_every_family_builds_and_trains_on_jax():
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(FAMILIES)], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["backend"] == "jax"
    assert not out["tensorflow_imported"]
    for name in FAMILIES:
        assert out[name]["loss"] > 0
        assert all(abs(s - 1) < 1e-4 for s in out[name]["sums"]), name
