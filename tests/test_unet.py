"""U-Net: ISBI slices → crops → joint augmentation → train → export `image` → `probabilities`, `mask`; losses,
metrics and config errors on hand-made cases."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from kerasline.config import ConfigError, load_experiment, validate
from kerasline.errors import DataError
from kerasline.pipelines.segmentation import make_joint_augment, segmentation_splits
from kerasline.training.tasks import build_inputs
from kerasline.training.tasks.segmentation import (
    MeanDice,
    boundary_map,
    boundary_weighted_crossentropy,
    crossentropy,
    dice_loss,
    segmentation_loss,
)

TINY = """
name = "unet_tiny"
seed = 3
runs_dir = "{root}/runs"
[data]
name = "isbi2012_membrane"
task = "segmentation"
image_shape = [512, 512, 1]
num_classes = 2
limit = 8                     # 5 train, 1 validation, 2 test slices
test_fraction = 0.2
crop = 64
batch_size = 4
[data.augment]
rotation = 0.5
flip = "both"
fill_mode = "reflect"
contrast = 0.1
[model]
name = "unet"
depth = 2
filters = 4
loss = "boundary_ce"
[training]
epochs = 1
monitor = "val_mean_iou"
[export]
dir = "{root}/exports"
parity_samples = 3
"""
SEGMENTATION = {"task": "segmentation", "image_shape": [64, 64, 1], "num_classes": 2}


@pytest.fixture(scope="session")
def unet_run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("unet")
    experiment = root / "unet_tiny.toml"
    experiment.write_text(TINY.format(root=root))
    proc = subprocess.run(
        [sys.executable, "-m", "kerasline.cli", "train", str(experiment)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"root": root, "cfg": load_experiment(str(experiment)), "stdout": proc.stdout}


def test_unet_trains_on_crops_and_exports_probabilities_and_mask(unet_run):
    import onnxruntime as ort

    root, cfg = unet_run["root"], unet_run["cfg"]
    metrics = json.loads((root / "runs" / "unet_tiny" / "run-001" / "metrics.json").read_text())["test"]
    assert {"loss", "accuracy", "mean_iou", "dice", "iou_0", "iou_1"} <= set(metrics)
    assert all(0 <= metrics[k] <= 1 for k in ("accuracy", "mean_iou", "dice", "iou_0", "iou_1"))

    version = root / "exports" / "unet_tiny" / "1"
    report = json.loads((version / "verification.json").read_text())
    assert report["passed"] and report["samples"] == 3
    assert set(report["max_abs_diff"]["onnx"]) == {"probabilities", "mask"}
    serve = tf.saved_model.load(str(version)).signatures["serving_default"]
    ((name, spec),) = serve.structured_input_signature[1].items()
    assert (name, spec.dtype, spec.shape.as_list()) == ("image", tf.uint8, [None, 512, 512, 1])
    outputs = serve.structured_outputs
    assert outputs["probabilities"].dtype == tf.float32 and outputs["probabilities"].shape.as_list() == [
        None,
        512,
        512,
        2,
    ]
    assert outputs["mask"].dtype == tf.int64 and outputs["mask"].shape.as_list() == [None, 512, 512]

    image, true_mask = next(segmentation_splits(cfg.data, cfg.seed).test.as_numpy_iterator())
    assert image.dtype == np.uint8 and true_mask.dtype == np.int32 and true_mask.shape == (512, 512)
    out = serve(image=tf.constant(image[None]))
    np.testing.assert_allclose(out["probabilities"].numpy().sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out["mask"].numpy(), out["probabilities"].numpy().argmax(-1))
    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    assert {o.name: o.type for o in session.get_outputs()} == {
        "probabilities": "tensor(float)",
        "mask": "tensor(int64)",
    }

    events = tf.compat.v1.train.summary_iterator
    logs = (root / "runs" / "unet_tiny" / "run-001" / "logs" / "validation").glob("events*")
    tags = {v.tag for path in logs for e in events(str(path)) for v in e.summary.value}
    assert "segmentation/example0" in tags  # image | true mask | predicted mask, over the one validation slice
    assert "confusion_matrix" not in tags


def test_crops_for_training_whole_slices_for_validation_and_a_seeded_stream():
    overrides = ["data.limit=10", "data.crop=128", "data.batch_size=3", "data.repeat=1", "deterministic=true"]
    data = build_inputs(load_experiment("isbi_unet", overrides))
    assert data.steps_per_epoch == 3  # 10 slices: 2 test, 1 validation, 7 train in batches of 3
    # (seed, epoch, step) alone fixes a batch: epoch 1's first batch, reached two ways.
    direct = next(iter(data.train(1, 2)))
    skipped = next(iter(data.train(0, 2, skip_steps=data.steps_per_epoch)))
    for a, b in zip(direct, skipped, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    images, masks = direct
    assert images.shape == (3, 128, 128, 1) and images.dtype == tf.float32
    assert masks.shape == (3, 128, 128) and masks.dtype == tf.int32
    assert set(np.unique(masks)) <= {0, 1}
    val_images, val_masks = next(iter(data.validation))
    assert val_images.shape == (1, 512, 512, 1) and val_masks.shape == (1, 512, 512)


def test_repeat_gives_each_slice_several_crops_an_epoch():
    overrides = ["data.limit=10", "data.crop=64", "data.batch_size=3", "deterministic=true"]
    once = build_inputs(load_experiment("isbi_unet", [*overrides, "data.repeat=1"]))
    data = build_inputs(load_experiment("isbi_unet", [*overrides, "data.repeat=3"]))
    assert (once.steps_per_epoch, data.steps_per_epoch) == (3, 7)  # 7 training slices: 21 crops in batches of 3
    epoch = [(x.numpy(), y.numpy()) for x, y in data.train(0, 1)]
    assert [len(x) for x, _ in epoch] == [3] * 7
    crops = np.concatenate([x for x, _ in epoch])
    assert len({c.tobytes() for c in crops}) == 21  # every crop its own window and augmentation
    # The stream is still a pure function of (seed, epoch, step): epoch 1's fifth batch, reached two ways.
    direct = list(data.train(1, 2))[4]
    skipped = next(iter(data.train(0, 2, skip_steps=data.steps_per_epoch + 4)))
    for a, b in zip(direct, skipped, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def _blocky_masks(seed: int) -> np.ndarray:
    """Masks of 8×8-pixel blocks of class 0 or 1: no symmetry a flip or rotation could hide."""
    cells = np.random.default_rng(seed).integers(0, 2, (4, 8, 8))
    return np.kron(cells, np.ones((8, 8), np.int64)).astype(np.int32)


def test_joint_augmentation_moves_mask_with_image_and_recolours_image_only():
    masks = _blocky_masks(0)
    images = (40 + 170 * masks[..., None]).astype(np.uint8)  # the image is its mask, drawn
    knobs = {"rotation": 0.25, "translation": 0.1, "zoom": 0.2, "flip": "both", "fill_mode": "reflect"}
    geometric = validate(
        {"name": "a", "data": {**SEGMENTATION, "crop": 48, "augment": knobs}, "model": {"name": "unet"}}
    )
    recoloured = geometric.data.model_copy(
        update={"augment": geometric.data.augment.model_copy(update={"contrast": 0.3, "brightness": 0.2})}
    )
    seed = tf.constant([5, 9], tf.int64)
    out_images, out_masks = (t.numpy() for t in make_joint_augment(recoloured)(images, masks, seed))
    assert out_images.shape == (4, 48, 48, 1) and out_masks.shape == (4, 48, 48) and out_masks.dtype == np.int32
    assert set(np.unique(out_masks)) == {0, 1}  # nearest resampling: labels stay labels
    # Drawn again from the augmented image, the mask matches the augmented mask except along block edges.
    levels = out_images[..., 0]
    drawn = levels > (levels.min(axis=(1, 2), keepdims=True) + levels.max(axis=(1, 2), keepdims=True)) / 2
    assert (drawn == out_masks).mean() > 0.97
    assert (drawn == masks[:, :48, :48]).mean() < 0.8  # it did move
    # Photometric changes touch the image only: the same seed without them gives the same mask.
    plain_images, plain_masks = (t.numpy() for t in make_joint_augment(geometric.data)(images, masks, seed))
    np.testing.assert_array_equal(plain_masks, out_masks)
    assert np.abs(plain_images - out_images).mean() > 5


def _one_hot(masks: np.ndarray, k: int = 2) -> np.ndarray:
    return np.eye(k, dtype=np.float32)[masks]


HALVES = np.tile(np.repeat([0, 1], 4), (2, 8, 1)).astype(np.int32)  # [2, 8, 8]: left half 0, right half 1


def test_losses_on_hand_made_masks():
    perfect, wrong, unsure = _one_hot(HALVES), _one_hot(1 - HALVES), np.full((2, 8, 8, 2), 0.5, np.float32)
    assert np.all(np.abs(dice_loss(HALVES, perfect, 2).numpy()) < 1e-6)
    assert np.all(dice_loss(HALVES, wrong, 2).numpy() > 0.98)
    np.testing.assert_allclose(dice_loss(HALVES, unsure, 2).numpy(), 1 - 33 / 65, rtol=1e-6)  # (2·16+1)/(64+1)
    assert np.all(crossentropy(HALVES, perfect, 2).numpy() < 1e-5)
    np.testing.assert_allclose(crossentropy(HALVES, unsure, 2).numpy(), np.log(2), rtol=1e-5)

    # The boundary of the halves: the two columns beside the change, for a 3-pixel window.
    expected = np.zeros((2, 8, 8), np.float32)
    expected[:, :, 3:5] = 1
    np.testing.assert_array_equal(boundary_map(HALVES, 2, 3).numpy(), expected)
    # Eight wrong pixels on the boundary cost more than eight wrong pixels far from it; plain CE cannot tell.
    on_edge, off_edge = perfect.copy(), perfect.copy()
    on_edge[:, :, 3] = [0.1, 0.9]
    off_edge[:, :, 0] = [0.1, 0.9]
    np.testing.assert_allclose(crossentropy(HALVES, on_edge, 2), crossentropy(HALVES, off_edge, 2), rtol=1e-6)
    edge = boundary_weighted_crossentropy(HALVES, on_edge, 2, weight=5.0, width=3).numpy()
    far = boundary_weighted_crossentropy(HALVES, off_edge, 2, weight=5.0, width=3).numpy()
    np.testing.assert_allclose(far, crossentropy(HALVES, off_edge, 2) * 64 / (16 * 6 + 48), rtol=1e-5)
    assert np.all(edge > 3 * far)

    # Each configured loss, reduced over the batch as Keras trains it.
    for loss, at_perfect in [("crossentropy", 0.0), ("dice", 0.0), ("ce_dice", 0.0), ("boundary_ce", 0.0)]:
        model = validate({"name": "l", "data": SEGMENTATION, "model": {"name": "unet", "loss": loss}}).model
        fn = segmentation_loss(model, 2)
        assert abs(float(fn(HALVES, perfect)) - at_perfect) < 1e-5, loss
        assert float(fn(HALVES, unsure)) > 0.4, loss
    ce_dice = validate({"name": "l", "data": SEGMENTATION, "model": {"name": "unet", "loss": "ce_dice"}}).model
    np.testing.assert_allclose(float(segmentation_loss(ce_dice, 2)(HALVES, unsure)), np.log(2) + 1 - 33 / 65, rtol=1e-5)


def test_iou_and_dice_metrics_on_a_hand_made_prediction():
    import keras

    guess = HALVES.copy()
    guess[:, :, 3] = 1  # one column of class 0 called class 1: class 1 TP 64, FP 16; class 0 TP 48, FN 16
    probabilities = _one_hot(guess)
    mean_iou = keras.metrics.MeanIoU(2, sparse_y_pred=False)
    dice = MeanDice(2, sparse_y_pred=False)
    for metric in (mean_iou, dice):
        metric.update_state(HALVES, probabilities)
    np.testing.assert_allclose(float(mean_iou.result()), (64 / 80 + 48 / 64) / 2, rtol=1e-6)
    np.testing.assert_allclose(float(dice.result()), (128 / 144 + 96 / 112) / 2, rtol=1e-6)


@pytest.mark.parametrize(
    "data, model, message",
    [
        ({"image_shape": [128, 128, 1], "crop": 100}, {"depth": 4}, "data.crop: 100 does not divide by 2**model"),
        ({"image_shape": [60, 60, 1], "crop": None}, {"depth": 3}, "data.image_shape: [60, 60, 1] does not divide"),
        ({"crop": 128}, {}, "data.crop: 128 is larger than data.image_shape [64, 64, 1]"),
        ({"task": "classification"}, {}, "data.task: unet does segmentation, but data.task is 'classification'"),
        ({}, {"loss": "dise"}, "model.loss: 'dise' is not one of crossentropy, dice, ce_dice, boundary_ce"),
        ({}, {"name": "cnn"}, "data.task: cnn does classification, but data.task is 'segmentation'"),
    ],
)
def test_config_errors_name_the_key_in_one_line(data, model, message):
    with pytest.raises(ConfigError) as error:
        validate({"name": "e", "data": {**SEGMENTATION, "crop": 32, **data}, "model": {"name": "unet", **model}})
    assert message in str(error.value) and "\n" not in str(error.value)


def test_segmentation_keys_stay_with_segmentation(kerasline):
    with pytest.raises(ConfigError, match="training.monitor: val_mean_iou is a segmentation metric"):
        validate({"name": "e", "training": {"monitor": "val_mean_iou"}})
    with pytest.raises(ConfigError, match="data.crop: segmentation trains on crops"):
        validate({"name": "e", "data": {"crop": 16}})
    proc = kerasline("train", "isbi_unet", "data.crop=200", "--dry-run")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert proc.stderr.endswith("isbi_unet.toml: data.crop: 200 does not divide by 2**model.depth = 16\n")


def test_a_mask_folder_names_its_bad_files(tmp_path):
    for sub in ("image", "label"):
        (tmp_path / sub).mkdir()
    for i in range(3):  # the split comes first: train, validation and test each get one
        tf.io.write_file(str(tmp_path / "image" / f"{i}.png"), tf.io.encode_png(np.zeros((64, 64, 1), np.uint8)))
        tf.io.write_file(str(tmp_path / "label" / f"{i}.png"), tf.io.encode_png(np.full((64, 64, 1), 7, np.uint8)))
    cfg = validate(
        {
            "name": "f",
            "data": {**SEGMENTATION, "source": "folder", "name": str(tmp_path)},
            "model": {"name": "unet", "depth": 2},
        }
    )
    with pytest.raises(DataError, match=r"label/\d.png: mask value 7 is outside \[0, 2\)"):
        segmentation_splits(cfg.data, cfg.seed)


def test_oxford_pets_through_tfds_load_resizes_and_renumbers_the_trimaps():
    """tfds.load runs for real; only the examples are made up (mock_data's random masks are not trimaps)."""
    import tensorflow_datasets as tfds

    def as_dataset(self, *args, **kwargs):
        rng = np.random.default_rng(0)

        def examples():
            for i in range(12):
                height, width = 40 + 4 * i, 70 - 2 * i  # pets come in every size
                yield {
                    "image": rng.integers(0, 256, (height, width, 3), np.uint8),
                    "label": i % 37,
                    "species": i % 2,
                    "file_name": f"pet{i}.jpg",
                    "segmentation_mask": rng.integers(1, 4, (height, width, 1), np.uint8),
                    "head_bbox": np.zeros(4, np.float32),
                }

        return tf.data.Dataset.from_generator(
            examples, output_types=self.info.features.dtype, output_shapes=self.info.features.shape
        )

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        cfg = load_experiment("pets_unet", ["data.image_shape=[32, 32, 3]", "data.batch_size=4"])
        splits = segmentation_splits(cfg.data, cfg.seed)
        images, masks = next(iter(splits.train.batch(12)))
        crops, crop_masks = next(iter(build_inputs(cfg).train(0, 1)))  # all one size now: they batch
    assert images.dtype == tf.uint8 and images.shape[1:] == (32, 32, 3)
    assert masks.dtype == tf.int32 and masks.shape[1:] == (32, 32)
    assert set(np.unique(masks)) == {0, 1, 2}
    assert crops.shape == (4, 32, 32, 3) and crop_masks.shape == (4, 32, 32)
