"""model.members (models/ensemble.py): a deep ensemble in one model. Each member trains on its own loss as if alone,
the metrics and the export take the members' mean, and an ensemble starts from scratch."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasline.config import ConfigError, load_experiment, validate
from kerasline.models import build_model
from kerasline.training.init_from import initialise, read_source
from kerasline.training.tasks import task_for

CNN = {"name": "cnn", "filters": [4], "convs_per_block": 1, "dense_units": 8, "dropout": 0.0, "l2": 1e-2}
UNET = {"name": "unet", "depth": 1, "filters": 2, "loss": "ce_dice"}
TRANSFORMER = {"name": "transformer", "d_model": 8, "heads": 2, "layers": 1, "ff_dim": 8, "dropout": 0.0}
TOKENS = {"input": "tokens", "name": "imdb_vocab500", "num_classes": 2, "sequence_length": 12, "vocab_size": 50}


def _ensemble_and_batch(model: dict, data: dict, members: int = 3):
    cfg = validate({"name": "e", "data": data, "model": {**model, "members": members}})
    keras.utils.set_random_seed(3)
    ensemble, task = build_model(cfg), task_for(cfg)
    rng = np.random.default_rng(0)
    if cfg.data.input == "tokens":
        x = rng.integers(0, cfg.data.vocab_size, (8, cfg.data.sequence_length)).astype(np.int32)  # 0: padding
    else:
        x = rng.uniform(0, 255, (8, *cfg.data.image_shape)).astype(np.float32)
    label_shape = (8, *cfg.data.image_shape[:2]) if cfg.data.task == "segmentation" else (8,)
    y = rng.integers(0, cfg.data.num_classes, label_shape)
    return ensemble, task, x, y


@pytest.mark.parametrize(
    "model, data",
    [
        (CNN, {"image_shape": [12, 12, 1], "num_classes": 4}),
        (UNET, {"task": "segmentation", "image_shape": [8, 8, 1], "num_classes": 3}),
        (TRANSFORMER, TOKENS),
    ],
    ids=["cnn with l2", "unet's crossentropy and dice", "transformer on tokens"],
)
def test_each_member_steps_as_it_would_alone(model, data):
    """One SGD step of the ensemble moves each member as one step of that member alone, on the same batch with the
    task's loss and its own regularisers, at 1/N the learning rate: the ensemble's loss is the members' mean."""
    ensemble, task, x, y = _ensemble_and_batch(model, data)
    alone = []
    for member in ensemble.members:
        copy = keras.models.clone_model(member)
        copy.set_weights(member.get_weights())
        copy.compile(optimizer=keras.optimizers.SGD(0.1 / 3), loss=task.build_losses())
        alone.append(copy)
    ensemble.compile(optimizer=keras.optimizers.SGD(0.1), loss=task.build_losses(), metrics=task.build_metrics())
    before = [member.get_weights() for member in ensemble.members]

    ensemble.train_on_batch(x, y)
    for copy in alone:
        copy.train_on_batch(x, y)
    for member, copy, start in zip(ensemble.members, alone, before, strict=True):
        moved = [np.abs(w - w0).max() for w, w0 in zip(member.get_weights(), start, strict=True)]
        assert max(moved) > 1e-4  # the step did move it
        for got, want in zip(member.get_weights(), copy.get_weights(), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_predictions_and_validation_are_the_members_mean():
    ensemble, task, x, y = _ensemble_and_batch(CNN, {"image_shape": [12, 12, 1], "num_classes": 4})
    ensemble.compile(optimizer="adam", loss=task.build_losses(), metrics=task.build_metrics())
    mean = np.mean([member(x, training=False) for member in ensemble.members], axis=0)
    np.testing.assert_allclose(ensemble.predict(x, verbose=0), mean, rtol=1e-5, atol=1e-7)
    loss, accuracy = ensemble.evaluate(x, y, verbose=0)
    regularisers = sum(float(tf.reduce_sum(r)) for r in ensemble.losses)
    assert loss == pytest.approx(-np.log(mean[np.arange(8), y]).mean() + regularisers, rel=1e-4)
    assert accuracy == pytest.approx(np.mean(mean.argmax(-1) == y))
    # Training: the loss is the mean of the members' own (their regularisers counted once), the accuracy the mean
    # output's. BatchNorm normalises by the batch in training mode, so these outputs are the step's.
    trained = [keras.ops.convert_to_numpy(member(x, training=True)) for member in ensemble.members]
    losses = [-np.log(p[np.arange(8), y]).mean() for p in trained]
    logs = ensemble.train_on_batch(x, y, return_dict=True)
    assert set(logs) == {"loss", "accuracy"}
    assert logs["loss"] == pytest.approx((sum(losses) + regularisers) / 3, rel=1e-4)
    assert logs["accuracy"] == pytest.approx(np.mean(np.mean(trained, axis=0).argmax(-1) == y))
    ensemble.compile(optimizer="adam", loss="sparse_categorical_crossentropy")  # no Loss to give each member
    with pytest.raises(TypeError, match="compile an Ensemble with a keras.losses.Loss"):
        ensemble.train_on_batch(x, y)


@pytest.mark.parametrize(
    "experiment, overrides, message",
    [
        ("mnist_cnn", ["model.members=2", "model.init_from=runs/x"], "model.members: an ensemble starts from scratch"),
        ("isbi_unet_mobilenet", ["model.members=2"], "model.members: an ensemble starts from scratch"),
        ("mnist_cnn", ["model.members=0"], "model.members"),
        ("digits_dcgan", ["model.members=2"], "model.members"),
    ],
)
def test_an_ensemble_is_refused_where_it_cannot_start(experiment, overrides, message):
    with pytest.raises(ConfigError, match=message) as refused:
        load_experiment(experiment, overrides)
    assert "\n" not in str(refused.value)


def test_an_ensemble_trains_tests_and_exports_its_mean(tiny_experiment, kerasline):
    proc = kerasline("train", str(tiny_experiment), "model.members=2", "training.epochs=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    root = tiny_experiment.parent
    metrics = json.loads((root / "runs" / "tiny" / "run-001" / "metrics.json").read_text())["test"]
    assert 0.0 <= metrics["accuracy"] <= 1.0 and np.isfinite(metrics["loss"])
    export = root / "exports" / "tiny" / "1"
    assert json.loads((export / "verification.json").read_text())["passed"] is True  # SavedModel and ONNX parity

    cfg = load_experiment(str(tiny_experiment), ["model.members=2"])
    ensemble = build_model(cfg)
    ensemble.load_weights(root / "runs" / "tiny" / "run-001" / "best.weights.h5")
    images = np.random.default_rng(1).integers(0, 256, (3, 28, 28, 1)).astype(np.uint8)
    mean = np.mean([m(images.astype(np.float32), training=False) for m in ensemble.members], axis=0)
    served = tf.saved_model.load(str(export)).signatures["serving_default"](image=tf.constant(images))
    np.testing.assert_allclose(served["probabilities"].numpy(), mean, rtol=1e-5, atol=1e-6)

    # A single model started from the ensemble's run (model.init_from) takes its first member, whole.
    single = build_model(load_experiment(str(tiny_experiment)))
    report = initialise(single, read_source(str(root / "runs" / "tiny" / "run-001")), None)
    assert report["loaded"] and not report["new"] and not report["skipped"]
    for got, want in zip(single.get_weights(), ensemble.members[0].get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
