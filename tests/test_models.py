"""Model builders from config."""

import keras
import numpy as np
import pytest

from kerasline.config import MODEL_CONFIGS, validate
from kerasline.models import build_model
from kerasline.models.blocks import TransformerEncoder
from kerasline.models.registry import BUILDERS


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


def test_registry_has_a_builder_for_every_family():
    assert set(BUILDERS) == set(MODEL_CONFIGS.values())


@pytest.mark.parametrize("family", ["transformer", "vit"])
def test_the_last_encoder_block_gives_its_attention_when_asked(family):
    """How a TensorBoard callback can probe attention: call the last block again, on its own inputs."""
    knobs = {"name": family, "d_model": 8, "heads": 2, "layers": 2, "ff_dim": 8}
    if family == "transformer":
        data = {"input": "tokens", "name": "imdb_vocab500", "num_classes": 2, "sequence_length": 6, "vocab_size": 20}
        x = np.array([[3, 7, 5, 0, 0, 0], [9, 2, 4, 8, 1, 6]], "int32")  # the first pads its last three steps
    else:
        data, knobs = {"image_shape": [8, 8, 1]}, knobs | {"patch_size": 4}
        x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 1)).astype("float32")
    model = build_model(validate({"name": "a", "data": data, "model": knobs}))
    assert model.output_shape == (None, 2 if family == "transformer" else 10)  # the blocks return x alone

    last = [layer for layer in model.layers if isinstance(layer, TransformerEncoder)][-1]
    length = 6 if family == "transformer" else 4  # tokens, or (8 / 4)² patches

    def scores(inputs):  # x, or [x, padding mask] where one was passed
        x, mask = inputs if isinstance(inputs, list) else (inputs, None)
        return last(x, padding_mask=mask, return_attention_scores=True)[1]

    assert isinstance(last.input, list) is (family == "transformer")
    assert scores(last.input).shape == (None, 2, length, length)  # symbolic: Keras's own attention shape
    # Not keras.Model(model.input, scores(last.input)): Keras 3.15's graph check counts a layer's outputs from its
    # first call (x alone), so it drops the scores and says they are not connected. The values of the block's
    # inputs, then the block, instead.
    attention = np.asarray(scores(keras.Model(model.input, last.input)(x, training=False)))
    assert attention.shape == (2, 2, length, length)
    np.testing.assert_allclose(attention.sum(-1), 1.0, atol=1e-5)
    if family == "transformer":
        np.testing.assert_allclose(attention[0, :, :, 3:], 0.0, atol=1e-6)  # no attention on padding keys
        assert (attention[1] > 0).all()
