"""The MLP's heads: softmax, sigmoid (binary) and linear (regression), from config to the serving outputs."""

import numpy as np
import pytest
import tensorflow as tf

from kerasline.config import ConfigError, validate
from kerasline.training.fit import compile_model
from kerasline.training.tasks import task_for

BOW = {"input": "tokens", "name": "imdb_vocab500", "num_classes": 2, "sequence_length": 16}


def experiment(data: dict, model: dict, **rest):
    return validate({"name": "h", "data": data, "model": {"name": "mlp", **model}, **rest})


def test_sigmoid_head_is_binary_cross_entropy_and_serves_one_probability():
    cfg = experiment(BOW, {"hidden_units": [], "head": "sigmoid"})
    model = compile_model(cfg, steps_per_epoch=1)
    assert isinstance(model.loss, tf.keras.losses.BinaryCrossentropy)
    tokens = np.random.default_rng(0).integers(0, 500, (5, 16)).astype(np.int32)
    out = task_for(cfg).serving_function(model, cfg.data)(tokens=tokens)
    p = model(tokens).numpy()[:, 0]
    assert set(out) == {"probability", "class_id"} and out["probability"].shape == (5,)
    np.testing.assert_allclose(out["probability"].numpy(), p, atol=1e-7)
    np.testing.assert_array_equal(out["class_id"].numpy(), (p > 0.5).astype(np.int64))
    # no hidden layer: logistic regression over the 499 non-padding words
    assert [w.shape for w in model.trainable_weights] == [(499, 1), (1,)]


def test_bag_of_words_ignores_order_and_padding():
    cfg = experiment(BOW, {"hidden_units": [4], "head": "sigmoid"})
    model = compile_model(cfg, steps_per_epoch=1)
    review = np.array([[5, 9, 9, 42, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]], np.int32)
    shuffled = np.array([[42, 0, 9, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]], np.int32)
    np.testing.assert_allclose(model(review).numpy(), model(shuffled).numpy(), atol=1e-7)


def test_linear_head_regresses_the_value_and_serves_it():
    cfg = experiment({"target": "value"}, {"hidden_units": [8], "head": "linear"}, training={"monitor": "val_mae"})
    assert cfg.tune.objective == "val_loss"  # regression has no accuracy to tune for
    model = compile_model(cfg, steps_per_epoch=1)
    assert isinstance(model.loss, tf.keras.losses.MeanSquaredError)
    images = np.random.default_rng(1).integers(0, 256, (3, 28, 28, 1)).astype(np.uint8)
    out = task_for(cfg).serving_function(model, cfg.data)(image=images)
    assert set(out) == {"value"} and out["value"].dtype == tf.float32 and out["value"].shape == (3,)
    np.testing.assert_allclose(out["value"].numpy(), model(images.astype(np.float32)).numpy()[:, 0], atol=1e-5)


@pytest.mark.parametrize(
    "data, model, message",
    [
        ({}, {"head": "linear"}, "model.head: linear predicts a value, so it needs data.target = 'value'"),
        ({"target": "value"}, {}, r"data.target: 'value' \(regression\) needs model.name = 'mlp'"),
        ({"num_classes": 3}, {"head": "sigmoid"}, "model.head: sigmoid is for 2 classes"),
        ({**BOW, "target": "value"}, {"head": "linear"}, "data.target: 'value' reads real-valued y"),
    ],
)
def test_head_and_target_must_agree(data, model, message):
    with pytest.raises(ConfigError, match=message):
        experiment(data, model)


def test_monitor_must_be_a_metric_the_target_reports():
    with pytest.raises(ConfigError, match="training.monitor: 'val_accuracy' is not reported for data.target = 'value'"):
        experiment({"target": "value"}, {"head": "linear"}, training={"monitor": "val_accuracy"})
