"""A pretrained backbone as the U-Net's encoder (models/unet.py, models/pretrained.py): its feature maps as the
skips, its weights loaded from a file, the phases of fine-tuning (training/phases.py) and the export.

Offline: the encoder starts from a weights file this module writes, never from ImageNet. One tiny run (64×64 tiles
of the ISBI slices, MobileNetV3Small, one step of the first phase) serves every test that needs training or an export;
fit's phase switch is the classifier's (tests/test_pretrained.py), the same code for any backbone.
"""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasline.config import ConfigError, PretrainedConfig, load_experiment, validate
from kerasline.models import build_model
from kerasline.models.pretrained import BACKBONE, build_backbone
from kerasline.shipped import find

# Each backbone without its top (tests/test_pretrained.py derives them from keras.io's table), and the channels of
# its feature maps at strides 2, 4, 8, 16 and 32.
WITHOUT_TOP = {"mobilenet_v3_small": 939_120, "efficientnet_v2_b0": 5_919_312, "resnet50_v2": 23_564_800}
CHANNELS = {
    "mobilenet_v3_small": (16, 72, 96, 288, 576),
    "efficientnet_v2_b0": (16, 32, 192, 672, 1280),
    "resnet50_v2": (64, 64, 128, 256, 2048),
}
SIDE = 64  # the tiles' side: the encoder's last map, at stride 32, is 2×2

EXPERIMENT = """
name = "unet_mobilenet"
runs_dir = "{root}/runs"

[data]
source = "folder"
name = "{root}/tiles"
task = "segmentation"
image_shape = [{side}, {side}, 1]
num_classes = 2
validation_fraction = 0.25
test_fraction = 0.25
batch_size = 4

[model]
name = "unet"
backbone = "mobilenet_v3_small"
weights = "{weights}"
filters = 2

[training]
epochs = 1

[export]
dir = "{root}/exports"
parity_samples = 2
"""


def segmentation_config(**model) -> dict:
    data = {"task": "segmentation", "image_shape": [SIDE, SIDE, 1], "num_classes": 2}
    return {"name": "u", "data": data, "model": {"name": "unet", **model}}


def batch_norms(layers) -> list[keras.layers.BatchNormalization]:
    return [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]


def parameters(weights) -> int:
    return int(sum(np.prod(w.shape) for w in weights))


class Probe(keras.callbacks.Callback):
    """The encoder's arrays (BatchNorm statistics included), by "layer|index", and the head's logits kernel, when
    training begins and after each epoch; how many of the encoder's weights trained in each epoch."""

    def __init__(self):
        super().__init__()
        self.snapshots, self.encoder_trainable = [], []

    def snapshot(self) -> dict[str, np.ndarray]:
        encoder = self.model.get_layer(BACKBONE).layers
        arrays = {f"{layer.name}|{i}": w.numpy() for layer in encoder for i, w in enumerate(layer.weights)}
        return {**arrays, "logits": self.model.get_layer("logits").kernel.numpy()}

    def on_train_begin(self, logs=None):
        if not self.snapshots:  # the first fit: the weights the run starts from
            self.snapshots.append(self.snapshot())

    def on_epoch_end(self, epoch, logs=None):
        self.snapshots.append(self.snapshot())
        self.encoder_trainable.append(len(self.model.get_layer(BACKBONE).trainable_weights))


@pytest.fixture(scope="module")
def known_weights(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """A MobileNetV3Small weights file of known values, written from the classifier's pooled backbone (at input_size
    32): seeded weights, BatchNorm statistics moved off their defaults."""
    keras.utils.set_random_seed(5)
    backbone = build_backbone(PretrainedConfig(name="pretrained", input_size=32, weights="none"))
    rng = np.random.default_rng(5)
    for layer in batch_norms(backbone.layers):
        layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape).astype("float32"))
        layer.moving_variance.assign(rng.uniform(0.5, 1.5, layer.moving_variance.shape).astype("float32"))
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v3_small.weights.h5"
    backbone.save_weights(path)
    return path, {f"{layer.name}|{i}": w.numpy() for layer in backbone.layers for i, w in enumerate(layer.weights)}


@pytest.fixture(scope="module")
def run(tmp_path_factory, known_weights) -> dict:
    """8 tiles of the ISBI slices (4 train, 2 validation, 2 test), one epoch of one step with the encoder frozen,
    probed; then exported."""
    from kerasline.export import export_run
    from kerasline.training.fit import train

    root = tmp_path_factory.mktemp("unet_mobilenet")
    isbi = find("data", "isbi2012_membrane")
    for sub in ("image", "label"):
        (root / "tiles" / sub).mkdir(parents=True)
        for i in range(8):
            slice_ = tf.io.decode_png(tf.io.read_file(str(isbi / sub / f"{i}.png")), channels=1)
            tile = tf.io.encode_png(slice_[200 : 200 + SIDE, 100 : 100 + SIDE])
            tf.io.write_file(str(root / "tiles" / sub / f"{i}.png"), tile)
    path = root / "unet_mobilenet.toml"
    path.write_text(EXPERIMENT.format(root=root, side=SIDE, weights=known_weights[0]))
    cfg, probe = load_experiment(str(path)), Probe()
    result = train(cfg, callbacks=[probe])
    version = export_run(cfg, result.run_dir)
    return {"cfg": cfg, "result": result, "probe": probe, "version": version}


@pytest.mark.parametrize("name", list(WITHOUT_TOP))
def test_each_backbone_is_an_encoder_whose_feature_maps_are_the_skips(name):
    keras.utils.set_random_seed(0)
    model = build_model(validate(segmentation_config(backbone=name, filters=2, weights="none")))
    backbone = model.get_layer(BACKBONE)
    assert backbone.count_params() == WITHOUT_TOP[name]
    assert model.input.shape == (None, None, None, 1) and model.output.shape == (None, None, None, 2)

    images = np.random.default_rng(0).integers(0, 256, (2, 64, 96, 1)).astype("float32")  # free sides
    probabilities = keras.ops.convert_to_numpy(model(images, training=False))
    assert probabilities.shape == (2, 64, 96, 2) and np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
    maps = backbone(np.repeat(images, 3, axis=-1), training=False)
    expected = [(2, 64 // 2**s, 96 // 2**s, c) for s, c in enumerate(CHANNELS[name], 1)]
    assert [tuple(m.shape) for m in maps] == expected  # each skip at its stride, the last map at 32


def test_the_encoder_starts_from_a_weights_file_of_the_classifiers_backbone(run, known_weights):
    start = run["probe"].snapshots[0]
    assert start.keys() - {"logits"} == known_weights[1].keys()
    for key, array in known_weights[1].items():
        np.testing.assert_array_equal(start[key], array, err_msg=key)
    log = (run["result"].run_dir / "run.log").read_text()
    assert f"backbone:    mobilenet_v3_small, weights from {known_weights[0]}" in log


def test_the_first_phase_trains_the_decoder_only_and_the_second_all_but_batchnorm(run):
    from kerasline.training.phases import set_phase, trainable_count

    model = build_model(run["cfg"])
    backbone = model.get_layer(BACKBONE)
    encoder = WITHOUT_TOP["mobilenet_v3_small"]
    encoder_batch_norm = parameters(w for bn in batch_norms(backbone.layers) for w in bn.weights)
    decoder_statistics = parameters(w for bn in batch_norms(model.layers) for w in bn.non_trainable_weights)
    decoder = model.count_params() - encoder - decoder_statistics
    set_phase(model, run["cfg"], 1)
    assert trainable_count(model) == decoder
    set_phase(model, run["cfg"], 2)  # training.fine_tune.unfreeze = "all": all but BatchNorm
    assert trainable_count(model) == decoder + encoder - encoder_batch_norm

    probe = run["probe"]
    start, after = probe.snapshots
    assert probe.encoder_trainable == [0]
    statistics = {f"{bn.name}|{i}" for bn in batch_norms(backbone.layers) for i in (2, 3)}  # moving mean, variance
    assert len(statistics) == 2 * 34 and statistics <= start.keys()  # MobileNetV3Small's 34 BatchNorm layers
    for key in start.keys() - {"logits"}:  # the encoder, its BatchNorm statistics included, as loaded
        np.testing.assert_array_equal(after[key], start[key], err_msg=key)
    assert not np.array_equal(after["logits"], start["logits"])  # while the decoder trained


def test_the_mobilenet_unet_exports_with_parity_and_takes_the_raw_uint8_image(run):
    version = run["version"]
    report = json.loads((version / "verification.json").read_text())
    assert report["passed"] is True and report["samples"] == 2
    assert {"saved_model", "onnx"} <= set(report["max_abs_diff"])  # hard-swish through tf2onnx included
    serve = tf.saved_model.load(str(version)).signatures["serving_default"]
    (spec,) = serve.structured_input_signature[1].values()
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, SIDE, SIDE, 1]
    outputs = serve(image=tf.zeros((1, SIDE, SIDE, 1), tf.uint8))
    assert outputs["probabilities"].shape == (1, SIDE, SIDE, 2) and outputs["mask"].shape == (1, SIDE, SIDE)


@pytest.mark.parametrize(
    "model, data, message",
    [
        (
            {"backbone": "mobilenet_v3"},
            {},
            "model.backbone: 'mobilenet_v3' is not one of none, mobilenet_v3_small, efficientnet_v2_b0, resnet50_v2 "
            "(did you mean 'mobilenet_v3_small'?)",
        ),
        (
            {"backbone": "resnet50_v2"},
            {"image_shape": [80, 80, 1]},
            "data.image_shape: [80, 80, 1] does not divide by model.backbone's stride = 32; use sides that do",
        ),
        ({"backbone": "resnet50_v2"}, {"crop": 48}, "data.crop: 48 does not divide by model.backbone's stride = 32"),
        (
            {"backbone": "efficientnet_v2_b0"},
            {"image_shape": [64, 64, 2]},
            "model.backbone: efficientnet_v2_b0 takes 1 or 3 channels, but data.image_shape is [64, 64, 2]",
        ),
    ],
)
def test_backbone_refusals_are_one_line(model, data, message):
    raw = segmentation_config(**model)
    raw["data"].update(data)
    with pytest.raises(ConfigError) as err:
        validate(raw)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_fine_tuning_a_unet_needs_a_backbone():
    raw = {**segmentation_config(), "training": {"fine_tune": {"epochs": 1}}}
    with pytest.raises(ConfigError, match="training.fine_tune: unfreezes a pretrained backbone, but model.backbone is"):
        validate(raw)
    raw["model"]["backbone"] = "mobilenet_v3_small"
    assert validate(raw).model.has_backbone
