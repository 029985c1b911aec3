"""Training recipes: label smoothing, mixup and CutMix (pipelines/mixing.py), RandAugment (pipelines/augment.py)."""

import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from kerasline.config import AugmentConfig, ConfigError, DataConfig, UNetConfig, load_experiment, validate
from kerasline.pipelines.augment import GEOMETRIC_OPS, PIXEL_OPS, RANDAUGMENT_OPS, make_augment, randaugment
from kerasline.pipelines.mixing import make_mixing
from kerasline.pipelines.segmentation import make_joint_augment
from kerasline.pipelines.warp import affine
from kerasline.training.tasks import build_inputs, task_for
from kerasline.training.tasks.segmentation import segmentation_loss

SEED = tf.constant([7, 3], tf.int64)


def test_label_smoothing_follows_keras_formula(tiny_experiment):
    """softmax: the target (1 − ε)·y + ε/K, of labels and of soft targets alike; sigmoid: (1 − ε)·y + ε/2."""
    task = task_for(load_experiment(str(tiny_experiment), ["training.label_smoothing=0.3"]))
    loss, accuracy = task.build_losses(), task.build_metrics()[0]
    p = np.full((2, 10), 0.05, np.float32)
    p[0, 0] = p[1, 2] = 0.55
    target = 0.7 * np.eye(10)[[0, 2]] + 0.03  # labels 0 and 2; ε/K = 0.03
    assert float(loss(np.array([0, 2]), p)) == pytest.approx(-np.sum(target * np.log(p), 1).mean(), rel=1e-5)
    soft = np.zeros((2, 10), np.float32)
    soft[:, :2] = [[0.75, 0.25], [0.4, 0.6]]  # mixed targets, smoothed as labels are
    by_hand = -np.sum((0.7 * soft + 0.03) * np.log(p), 1).mean()
    assert float(loss(soft, p)) == pytest.approx(by_hand, rel=1e-5)
    accuracy.update_state(soft, p)  # a mix counts as its larger share: class 0 (right), class 1 (wrong)
    accuracy.update_state(np.array([2]), p[1:])  # validation's labels: right
    assert float(accuracy.result()) == pytest.approx(2 / 3)
    unsmoothed = task_for(load_experiment(str(tiny_experiment))).build_losses()
    assert float(unsmoothed(np.array([0, 2]), p)) == pytest.approx(-np.log(0.55), rel=1e-5)

    bow = {"input": "tokens", "name": "imdb_vocab500", "num_classes": 2, "sequence_length": 16}
    binary = validate(
        {"name": "b", "data": bow, "model": {"name": "mlp", "head": "sigmoid"}, "training": {"label_smoothing": 0.2}}
    )
    bce = task_for(binary).build_losses()
    p1 = np.array([[0.8], [0.4]], np.float32)
    by_hand = -np.mean([0.9 * np.log(0.8) + 0.1 * np.log(0.2), 0.1 * np.log(0.4) + 0.9 * np.log(0.6)])
    assert float(bce(np.array([1, 0]), p1)) == pytest.approx(by_hand, rel=1e-5)
    # Soft targets [B, 2]: class 1's share, 0.75, smoothed to 0.75 · 0.8 + 0.1.
    by_hand = -(0.7 * np.log(0.8) + 0.3 * np.log(0.2))
    assert float(bce(np.array([[0.25, 0.75]], np.float32), p1[:1])) == pytest.approx(by_hand, rel=1e-5)


def test_segmentation_smooths_each_pixels_crossentropy():
    masks = np.array([[[0, 1]]])  # one image of 1 × 2 pixels
    p = np.array([[[[0.9, 0.1], [0.4, 0.6]]]], np.float32)
    loss = segmentation_loss(UNetConfig(name="unet", loss="crossentropy"), 2, label_smoothing=0.2)
    by_hand = -np.mean([0.9 * np.log(0.9) + 0.1 * np.log(0.1), 0.1 * np.log(0.4) + 0.9 * np.log(0.6)])
    assert float(loss(masks, p)) == pytest.approx(by_hand, rel=1e-5)


def _mixer(tiny_cfg, **augment):
    data = tiny_cfg.data.model_copy(update={"augment": AugmentConfig(**augment)})
    return make_mixing(data)


def _constant_images(values):
    return tf.constant(np.broadcast_to(np.float32(values)[:, None, None, None], (len(values), 12, 10, 1)))


def test_mixup_mixes_labels_by_the_images_weights(tiny_cfg):
    """Image k is the constant 30·k with label k: a mix's pixels are Σ_k y_k · 30k for its soft label y."""
    values = 30.0 * np.arange(8)
    images, labels = _mixer(tiny_cfg, mixup=0.4)(_constant_images(values), tf.range(8), SEED)
    soft = labels.numpy()
    assert soft.shape == (8, 10) and soft.dtype == np.float32 and np.allclose(soft.sum(1), 1.0)
    expected = soft[:, :8] @ values  # each image's mixed value
    np.testing.assert_allclose(images.numpy()[..., 0], np.broadcast_to(expected[:, None, None], (8, 12, 10)), atol=1e-3)
    assert 0 < np.sum((soft > 1e-3) & (soft < 1 - 1e-3))  # some examples really mixed


def test_cutmix_label_weight_is_the_pasted_area(tiny_cfg):
    values = 30.0 * np.arange(8)
    images, labels = _mixer(tiny_cfg, cutmix=1.0)(_constant_images(values), tf.range(8), SEED)
    images, soft = images.numpy()[..., 0], labels.numpy()
    pasted = 0
    for i in range(8):
        others = images[i] != values[i]
        assert soft[i, i] == pytest.approx(1.0 - others.mean(), abs=1e-6)
        if others.any():  # one partner's pixels, in one box
            (partner,) = np.unique(images[i][others]) / 30
            rows, cols = np.nonzero(others)
            assert others.sum() == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)
            assert soft[i, int(partner)] == pytest.approx(others.mean(), abs=1e-6)
            pasted += 1
    assert pasted >= 4


def test_with_both_each_batch_takes_one(tiny_cfg):
    mix = _mixer(tiny_cfg, mixup=0.4, cutmix=1.0)
    values = 30.0 * np.arange(8)
    kinds, batches = set(), []
    for g in range(12):
        images, labels = mix(_constant_images(values), tf.range(8), tf.constant([7, g], tf.int64))
        kinds.add("cutmix" if np.isin(images.numpy(), values).all() else "mixup")
        batches.append(labels.numpy())
    assert kinds == {"mixup", "cutmix"}
    np.testing.assert_array_equal(
        mix(_constant_images(values), tf.range(8), tf.constant([7, 0], tf.int64))[1], batches[0]
    )
    assert all(not np.array_equal(batches[0], other) for other in batches[1:])  # each batch seed its own mix


def test_segmentation_cutmix_moves_masks_with_their_pixels():
    """Pixel value 40·image + 10·class: after CutMix every pixel's class is still its mask's, and boxes moved."""
    data = DataConfig(task="segmentation", num_classes=3, image_shape=(16, 16, 1), augment=AugmentConfig(cutmix=1.0))
    masks = np.random.default_rng(0).integers(0, 3, (6, 16, 16)).astype(np.int32)
    images = (40 * np.arange(6)[:, None, None] + 10 * masks)[..., None].astype(np.uint8)
    out_images, out_masks = make_joint_augment(data)(tf.constant(images), tf.constant(masks), SEED)
    out_images, out_masks = out_images.numpy()[..., 0], out_masks.numpy()
    assert out_masks.dtype == np.int32 and set(np.unique(out_masks)) <= {0, 1, 2}
    np.testing.assert_array_equal((out_images % 40) / 10, out_masks)
    assert (out_images // 40 != np.arange(6)[:, None, None]).any()
    again = make_joint_augment(data)(tf.constant(images), tf.constant(masks), SEED)[1].numpy()
    np.testing.assert_array_equal(again, out_masks)


def test_the_mixed_stream_is_seeded_resumable_and_weighted(tiny_experiment):
    """Soft targets on the training stream only, the same batches when resumed mid-epoch; the class weight of a
    mix is the mix of its classes' weights."""
    recipes = ["data.augment.mixup=0.4", "data.augment.cutmix=1.0", "training.class_weight=balanced"]
    # deterministic: batches in order (a non-deterministic parallel map may hand them over as they finish)
    data = build_inputs(load_experiment(str(tiny_experiment), [*recipes, "deterministic=true"]))
    x, y, w = list(data.train(0, 1).take(3).as_numpy_iterator())[2]
    assert x.shape == (32, 28, 28, 1) and y.shape == (32, 10) and y.dtype == np.float32
    assert np.allclose(y.sum(1), 1.0) and (y.max(1) < 1).any()
    np.testing.assert_allclose(w, y @ np.asarray(data.class_weights, np.float32), rtol=1e-5)
    resumed = next(data.train(0, 1, skip_steps=2).as_numpy_iterator())  # a run resumed at step 2 of epoch 0
    for part, part_resumed in zip((x, y, w), resumed, strict=True):
        np.testing.assert_array_equal(part, part_resumed)
    assert next(iter(data.validation))[1].dtype == tf.int32  # held-out labels stay labels


def test_randaugment_changes_images_seeded_in_range():
    images = tf.constant(np.random.default_rng(1).integers(20, 200, (16, 20, 20, 3)).astype(np.float32))
    out = randaugment(images, 3, 10.0, "constant", SEED).numpy()
    assert out.shape == images.shape and out.min() >= 0.0 and out.max() <= 255.0
    changed = np.abs(out - images.numpy()).max(axis=(1, 2, 3)) > 0
    assert changed.sum() >= 12  # an image keeps itself only by drawing identity twice (1 in 196)
    np.testing.assert_array_equal(out, randaugment(images, 3, 10.0, "constant", SEED).numpy())
    assert not np.array_equal(out, randaugment(images, 3, 10.0, "constant", SEED + 1).numpy())
    level = tf.constant([1.0, -1.0] * 8)
    for name in RANDAUGMENT_OPS[1:]:  # every op but identity changes every image, at the strongest magnitude
        if name in PIXEL_OPS:
            result = PIXEL_OPS[name](images, level).numpy()
        else:
            result = affine(images, GEOMETRIC_OPS[name](level, 20.0, 20.0), "constant").numpy()
        assert result.shape == images.shape and (np.abs(result - images.numpy()).max(axis=(1, 2, 3)) > 1).all(), name
    augment = make_augment(DataConfig(augment=AugmentConfig(randaugment_ops=1)))  # the hook: uint8 in
    hooked = augment(tf.cast(images[..., :1], tf.uint8), SEED).numpy()
    assert hooked.dtype == np.float32 and not np.array_equal(hooked, images.numpy()[..., :1])


def test_equalize_and_autocontrast_match_pil():
    image = np.random.default_rng(2).integers(20, 180, (1, 9, 11, 3)).astype(np.uint8)
    equalized = PIXEL_OPS["equalize"](tf.constant(image, tf.float32), None).numpy()[0]
    np.testing.assert_array_equal(equalized, np.asarray(ImageOps.equalize(Image.fromarray(image[0]))))
    stretched = PIXEL_OPS["auto_contrast"](tf.constant(image, tf.float32), None).numpy()[0]
    np.testing.assert_allclose(stretched, np.asarray(ImageOps.autocontrast(Image.fromarray(image[0]))), atol=1.0)


@pytest.mark.parametrize(
    "experiment, overrides, message",
    [
        ("digits_autoencoder", ["training.label_smoothing=0.1"], "smooths class labels, but autoencoder does"),
        ("digits_dcgan", ["training.label_smoothing=0.1"], "smooths class labels, but dcgan does generate"),
        ("digits_mlp_regression", ["training.label_smoothing=0.1"], "'value' is regression"),
        ("isbi_unet", ["training.label_smoothing=0.1", "model.loss=dice"], "model.loss = 'dice' has none"),
        ("digits_mlp_regression", ["data.augment.cutmix=1"], "data.augment.cutmix: mixes class labels, but"),
        ("digits_vae", ["data.augment.mixup=0.2"], "data.augment.mixup: mixes class labels, but vae does"),
        ("isbi_unet", ["data.augment.mixup=0.2"], "data.augment.mixup: would blend the masks' class ids"),
        ("isbi_unet", ["data.augment.randaugment_ops=2"], "randaugment_ops: its geometric ops would move"),
        ("imdb_lstm", ["data.augment.mixup=0.2"], "data.augment.mixup: an image augmentation, but data.input"),
        ("penguins_species", ["data.augment.randaugment_ops=1"], "an image augmentation, but data.input"),
    ],
)
def test_recipes_are_refused_where_they_do_not_apply(experiment, overrides, message):
    with pytest.raises(ConfigError, match=message) as refused:
        load_experiment(experiment, overrides)
    assert "\n" not in str(refused.value)


def test_a_refusal_is_one_line_exit_2(kerasline):
    proc = kerasline("config", "digits_autoencoder", "training.label_smoothing=0.1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "training.label_smoothing" in proc.stderr
    cfg = load_experiment("isbi_unet", ["data.augment.cutmix=1", "training.label_smoothing=0.1"])  # ce_dice
    assert cfg.data.augment.cutmix == 1.0


def test_train_with_mixup_and_label_smoothing_tests_and_exports(tiny_experiment, kerasline):
    recipes = ["data.augment.mixup=0.4", "data.augment.cutmix=1.0", "training.label_smoothing=0.1"]
    proc = kerasline("train", str(tiny_experiment), *recipes, "data.augment.randaugment_ops=1", "training.epochs=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    root = tiny_experiment.parent
    metrics = json.loads((root / "runs" / "tiny" / "run-001" / "metrics.json").read_text())["test"]
    assert 0.0 <= metrics["accuracy"] <= 1.0 and np.isfinite(metrics["loss"])
    export = root / "exports" / "tiny" / "1"
    assert json.loads((export / "verification.json").read_text())["passed"] is True
    serve = tf.saved_model.load(str(export)).signatures["serving_default"]
    probabilities = serve(image=tf.zeros([2, 28, 28, 1], tf.uint8))["probabilities"].numpy()
    assert probabilities.shape == (2, 10)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
