"""The U-Net paper's recipes: elastic deformation in the training pipeline; test-time augmentation over the 8
dihedral transforms and overlap-tile prediction in evaluation and the export, whose signature stays as it was."""

import numpy as np
import pytest
import tensorflow as tf

from kerasline.config import ConfigError, validate
from kerasline.models import build_model
from kerasline.models.inference import at_test_time, dihedral_average, overlap_tiles
from kerasline.pipelines.augment import make_augment
from kerasline.pipelines.elastic import displacements
from kerasline.pipelines.segmentation import make_joint_augment
from kerasline.training.tasks import task_for
from kerasline.training.tasks.segmentation import crossentropy

SEED = tf.constant([5, 9], tf.int64)


def _segmentation(data: dict | None = None, model: dict | None = None, **sections):
    data = {"task": "segmentation", "image_shape": [32, 48, 1], "num_classes": 2, **(data or {})}
    return validate(
        {"name": "r", "data": data, "model": {"name": "unet", "depth": 2, "filters": 2, **(model or {})}, **sections}
    )


def _elastic_batch(seed: tf.Tensor, alpha: float = 2.0):
    """Blocky 3-class masks, each image its mask one-hot (255 in its class's channel), through the joint augment
    with elastic deformation (and a 24 × 24 crop) only."""
    data = _segmentation({"image_shape": [32, 32, 3], "num_classes": 3, "crop": 24}).data
    data = data.model_copy(
        update={"augment": data.augment.model_copy(update={"elastic_alpha": alpha, "elastic_sigma": 3.0})}
    )
    cells = np.random.default_rng(0).integers(0, 3, (4, 4, 4))
    masks = np.kron(cells, np.ones((8, 8), np.int64)).astype(np.int32)
    images = (255 * np.eye(3)[masks]).astype(np.uint8)
    return [t.numpy() for t in make_joint_augment(data)(images, masks, seed)]


def test_elastic_deformation_moves_the_mask_with_the_image_and_keeps_labels():
    images, masks = _elastic_batch(SEED)
    assert images.shape == (4, 24, 24, 3) and masks.shape == (4, 24, 24) and masks.dtype == np.int32
    assert set(np.unique(masks)) <= {0, 1, 2}
    # Where a pixel read only one class (all 4 bilinear neighbours), the mask read that class too.
    pure = images.max(-1) > 255 - 1e-3
    assert pure.mean() > 0.6
    np.testing.assert_array_equal(masks[pure], images.argmax(-1)[pure])
    # The same seed without elastic: the same crop, undeformed; with it the blocks' edges moved.
    _, still = _elastic_batch(SEED, alpha=0.0)
    assert 0.03 < (masks != still).mean() < 0.4
    # Seeded: the same seed, the same batch; another seed, another field.
    again_images, again_masks = _elastic_batch(SEED)
    np.testing.assert_array_equal(again_images, images)
    np.testing.assert_array_equal(again_masks, masks)
    assert (_elastic_batch(tf.constant([5, 10], tf.int64))[1] != masks).mean() > 0.03


def test_elastic_displacements_have_std_alpha_pixels_and_are_smooth():
    augment = _segmentation().data.augment.model_copy(update={"elastic_alpha": 3.0, "elastic_sigma": 4.0})
    field = displacements(8, 64, 64, augment, SEED).numpy()
    assert field.shape == (8, 64, 64, 2)
    assert abs(field.std() - 3.0) < 0.3
    assert np.abs(np.diff(field, axis=1)).mean() < 0.3 * 3.0 and np.abs(np.diff(field, axis=2)).mean() < 0.3 * 3.0


def test_elastic_deformation_for_classification_images():
    data = validate({"name": "c", "data": {"augment": {"elastic_alpha": 2.0, "elastic_sigma": 3.0}}}).data
    images = np.kron(np.random.default_rng(1).integers(0, 2, (2, 7, 7, 1)), np.ones((4, 4, 1)) * 255).astype(np.uint8)
    out = make_augment(data)(images, SEED).numpy()
    assert out.shape == (2, 28, 28, 1) and out.dtype == np.float32
    assert np.abs(out - images).mean() > 5
    np.testing.assert_array_equal(make_augment(data)(images, SEED).numpy(), out)


def _model(cfg):
    import keras

    keras.utils.set_random_seed(1)
    return build_model(cfg)


def _plain(model):
    return lambda images: model(images, training=False)


def test_tta_averages_the_8_dihedral_transforms_of_a_non_square_image():
    model = _model(_segmentation(model={"depth": 1, "batch_norm": False}))
    images = np.random.default_rng(0).uniform(0, 255, (2, 16, 24, 1)).astype(np.float32)
    expected = 0.0
    for turns in range(4):  # by hand: rotate, maybe mirror, predict, undo both
        for mirrored in (False, True):
            view = np.rot90(images, turns, axes=(1, 2))
            view = view[:, :, ::-1] if mirrored else view
            out = np.asarray(model(np.ascontiguousarray(view), training=False))
            expected = expected + np.rot90(out[:, :, ::-1] if mirrored else out, -turns, axes=(1, 2))
    got = np.asarray(dihedral_average(_plain(model), images))
    assert got.shape == (2, 16, 24, 2)
    np.testing.assert_allclose(got, expected / 8, atol=1e-5)
    assert np.abs(got - np.asarray(model(images))).max() > 1e-3  # the model is not symmetric by itself


def test_overlap_tiles_equal_the_whole_image_prediction_away_from_the_border():
    """A depth-1 U-Net sees about 10 pixels each way: within the 16-pixel margin. 54 × 70 is no multiple of the
    16-pixel centres."""
    model = _model(_segmentation(model={"depth": 1}))
    images = np.random.default_rng(0).uniform(0, 255, (2, 54, 70, 1)).astype(np.float32)
    tiled = np.asarray(overlap_tiles(_plain(model), images, tile=48, margin=16))
    whole = np.asarray(model(images, training=False))
    assert tiled.shape == whole.shape == (2, 54, 70, 2)
    np.testing.assert_allclose(tiled[:, 16:-16, 16:-16], whole[:, 16:-16, 16:-16], atol=1e-5)
    # At the border the windows see the image mirrored, as the whole mirrored image does.
    mirrored = np.pad(images, [(0, 0), (16, 16), (16, 16), (0, 0)], mode="reflect")
    np.testing.assert_allclose(tiled, np.asarray(model(mirrored, training=False))[:, 16:-16, 16:-16], atol=1e-5)


def test_the_test_metrics_run_through_tta_and_tiles():
    cfg = _segmentation(model={"tta": True, "tile": 32, "tile_margin": 8})
    task, model = task_for(cfg), _model(cfg)
    task.compile(model, steps_per_epoch=1)
    assert task_for(_segmentation()).inference_model(model) is model
    tested = task.inference_model(model)
    rng = np.random.default_rng(2)
    images = rng.uniform(0, 255, (3, 32, 48, 1)).astype(np.float32)
    masks = rng.integers(0, 2, (3, 32, 48)).astype(np.int32)
    metrics = tested.evaluate(tf.data.Dataset.from_tensor_slices((images, masks)).batch(2), return_dict=True, verbose=0)
    predicted = np.asarray(at_test_time(model, tta=True, tile=32, margin=8)(images))
    np.testing.assert_allclose(metrics["loss"], crossentropy(masks, predicted, 2).numpy().mean(), rtol=1e-4)
    assert {"mean_iou", "dice", "iou_0", "iou_1"} <= set(metrics)
    # What training records: the same figures from the one pass that also gives the report.
    scored, report = task.test(tested, tf.data.Dataset.from_tensor_slices((images, masks)).batch(2))
    assert list(scored) == list(metrics)
    for name, value in metrics.items():
        assert scored[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    for c in (0, 1):
        assert report["per_class"][str(c)]["iou"] == pytest.approx(metrics[f"iou_{c}"], rel=1e-5)


def _folder(root, count: int = 4):
    for sub in ("image", "label"):
        (root / sub).mkdir()
    rng = np.random.default_rng(3)
    for i in range(count):
        image, mask = rng.integers(0, 256, (32, 48, 1)), rng.integers(0, 2, (32, 48, 1)) * 255
        tf.io.write_file(str(root / "image" / f"{i}.png"), tf.io.encode_png(image.astype(np.uint8)))
        tf.io.write_file(str(root / "label" / f"{i}.png"), tf.io.encode_png(mask.astype(np.uint8)))


def _specs(function) -> tuple:
    concrete = function.get_concrete_function()
    inputs = {s.name: (s.dtype, s.shape.as_list()) for s in concrete.structured_input_signature[0]}
    return inputs, {name: (s.dtype, s.shape.as_list()) for name, s in concrete.structured_outputs.items()}


def test_the_export_with_tta_and_tiles_keeps_its_signature_and_passes_parity(tmp_path):
    import onnxruntime as ort

    from kerasline.export.signature import write_onnx, write_saved_model
    from kerasline.export.verify import parity_report

    _folder(tmp_path)
    data = {"source": "folder", "name": str(tmp_path), "validation_fraction": 0.25, "test_fraction": 0.25}
    cfg = _segmentation(data, {"tta": True, "tile": 32, "tile_margin": 8}, export={"parity_samples": 2})
    task, model = task_for(cfg), _model(cfg)
    signatures = task.signatures(model, model, tmp_path)
    plain = task_for(_segmentation(data, export={"parity_samples": 2})).signatures(model, model, tmp_path)
    serve, plain_serve = signatures["serving_default"], plain["serving_default"]
    expected = (
        {"image": (tf.uint8, [None, 32, 48, 1])},
        {"probabilities": (tf.float32, [None, 32, 48, 2]), "mask": (tf.int64, [None, 32, 48])},
    )
    assert _specs(serve.function) == _specs(plain_serve.function) == expected
    image = serve.inputs["image"]
    tested, once = (s.function(image=image)["probabilities"].numpy() for s in (serve, plain_serve))
    assert np.abs(tested - once).max() > 1e-3  # the export predicts through TTA and the tiles

    version = tmp_path / "export"
    write_saved_model(model, signatures, str(version))
    write_onnx(serve.converted, str(version / serve.onnx_file))
    report = parity_report(signatures, version, cfg.export.tolerance, task.output_difference)
    assert report["passed"], report["max_abs_diff"]
    # The reloaded SavedModel answered by the same names (a fresh process, inside parity_report).
    assert set(report["max_abs_diff"]["saved_model"]) == {"probabilities", "mask"}
    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type, i.shape[1:]) for i in session.get_inputs()] == [("image", "tensor(uint8)", [32, 48, 1])]
    assert {o.name: o.type for o in session.get_outputs()} == {
        "probabilities": "tensor(float)",
        "mask": "tensor(int64)",
    }


@pytest.mark.parametrize(
    "data, model, message",
    [
        ({}, {"tile": 30}, "model.tile: 30 does not divide by 2**model.depth = 4"),
        ({}, {"tile": 32, "tile_margin": 6}, "model.tile_margin: 6 does not divide by 2**model.depth = 4"),
        ({}, {"tile": 32, "tile_margin": 16}, "model.tile_margin: 16 on each side leaves nothing of a 32 window"),
        ({}, {"tile": 64, "tile_margin": 8}, "model.tile: 64 is larger than data.image_shape [32, 48, 1]"),
        ({}, {"tta": "sometimes"}, "model.tta: input should be a valid boolean"),
        ({"augment": {"elastic_sigma": 0}}, {}, "data.augment.elastic_sigma: input should be greater than 0"),
    ],
)
def test_knob_refusals_name_the_key_in_one_line(data, model, message):
    with pytest.raises(ConfigError) as error:
        _segmentation(data, model)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_recipes_stay_with_their_inputs_and_family():
    with pytest.raises(ConfigError, match=r"^config: model.tta: unknown key$"):
        validate({"name": "e", "model": {"name": "cnn", "tta": True}})
    with pytest.raises(
        ConfigError, match="data.augment.elastic_alpha: an image augmentation, but data.input is 'tokens'"
    ):
        validate(
            {
                "name": "e",
                "data": {"name": "imdb_vocab500", "input": "tokens", "augment": {"elastic_alpha": 2.0}},
                "model": {"name": "rnn"},
            }
        )
