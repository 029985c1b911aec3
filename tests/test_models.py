"""Model builders from config."""

import keras
import numpy as np
import pytest

from kerasline.config import validate
from models import build_model


def test_cnn_maps_pixels_to_probabilities(tiny_cfg):
    model = build_model(tiny_cfg)
    assert model.input_shape == (None, 28, 28, 1) and model.output_shape == (None, 10)
    probs = model(np.random.default_rng(0).uniform(0, 255, (3, 28, 28, 1)).astype("float32"), training=False)
    np.testing.assert_allclose(np.sum(probs, -1), 1.0, rtol=1e-5)


def test_cnn_trainable_parameter_count(tiny_cfg):
    """filters=[8], one conv per block, BatchNorm, dense 16: counted by hand."""
    conv = 3 * 3 * 1 * 8  # no bias: BatchNorm follows
    bn = 2 * 8  # gamma, beta (the moving statistics are not trainable)
    dense = 14 * 14 * 8 * 16 + 16
    logits = 16 * 10 + 10
    model = build_model(tiny_cfg)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == conv + bn + dense + logits


def test_regularisers_and_initialiser_come_from_config(tiny_cfg):
    cfg = tiny_cfg.model_copy(
        update={"model": tiny_cfg.model.model_copy(update={"l2": 1e-3, "initializer": "glorot_uniform"})}
    )
    model = build_model(cfg)
    conv = model.get_layer("block0_conv0")
    assert isinstance(conv.kernel_initializer, keras.initializers.GlorotUniform)
    assert len(model.losses) == 3  # conv, dense and logits kernels


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_keeps_a_float32_output(tiny_cfg, policy):
    keras.config.set_dtype_policy(policy)
    try:
        model = build_model(tiny_cfg)
    finally:
        keras.config.set_dtype_policy("float32")
    assert model.get_layer("block0_conv0").compute_dtype == policy.split("_")[1]
    assert model.output.dtype == "float32"


@pytest.mark.parametrize(
    "model",
    [
        {"name": "cnn", "filters": [8]},
        {"name": "wide_cnn"},
        {"name": "resnet", "stages": [1], "width": 4},
        {"name": "unet", "depth": 1, "filters": 4},
    ],
)
def test_batch_norm_layers_are_synchronized_unless_the_config_says_per_replica(model):
    data = {"image_shape": (32, 32, 1)}
    if model["name"] == "unet":
        data |= {"task": "segmentation", "num_classes": 2}
    for sync in (True, False):
        cfg = validate({"name": "m", "data": data, "model": model | {"sync_batch_norm": sync}})
        norms = [layer for layer in build_model(cfg).layers if isinstance(layer, keras.layers.BatchNormalization)]
        assert norms and all(layer.synchronized is sync for layer in norms)
