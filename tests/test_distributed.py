"""A 2-replica MirroredStrategy on two logical CPUs trains with the global batch, like one device."""

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras
    from kerasline.config import load_experiment
    from kerasline.training.fit import compile_model, train
    from kerasline.training.strategy import make_strategy

    no_augment = ["data.augment.translation=0", "data.augment.rotation=0"]
    cfg = load_experiment(sys.argv[1], ["training.strategy=mirrored", *no_augment, *sys.argv[2:]])

    # One SGD step on the same global batch: 2 replicas of 16 must match 1 device of 32.
    x = np.random.default_rng(0).uniform(0, 255, (32, 28, 28, 1)).astype("float32")
    y = np.arange(32) % 10
    weights = {}
    for name in ("default", "mirrored"):
        keras.utils.set_random_seed(0)
        strategy = make_strategy("auto" if name == "default" else "mirrored")
        with strategy.scope():
            model = compile_model(cfg.model_copy(update={"model": cfg.model.model_copy(update={"dropout": 0.0})}), 1)
        model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(32), epochs=1, verbose=0)
        weights[name] = model.get_weights()
        replicas = strategy.num_replicas_in_sync
    diff = max(float(np.abs(a - b).max()) for a, b in zip(weights["default"], weights["mirrored"]))

    result = train(cfg)
    print(json.dumps({"replicas": replicas, "diff": diff, "result_replicas": result.replicas,
                      "accuracy": result.metrics["accuracy"]}))
    """
)


@pytest.mark.parametrize("overrides", [[], ["model.members=2", "model.l2=0.01"]], ids=["one model", "an ensemble"])
def test_two_replica_mirrored_strategy_on_logical_cpus(tiny_experiment, overrides):
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tiny_experiment), *overrides], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2 and out["result_replicas"] == 2
    assert out["diff"] < 1e-5  # gradients and BatchNorm statistics both over the global batch
    assert 0.0 <= out["accuracy"] <= 1.0
