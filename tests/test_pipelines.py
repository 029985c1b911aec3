"""Sources, splits, shapes, seeded determinism, and augmentation on the training split only."""

import numpy as np
import pytest
import tensorflow as tf

from kerasline.config import AugmentConfig, DataConfig, load_experiment
from kerasline.errors import DataError
from kerasline.pipelines.augment import make_augment
from kerasline.pipelines.sources import load_splits
from kerasline.pipelines.warp import affine
from kerasline.training.tasks import build_inputs, task_for


def first_batch(ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    x, y = next(iter(ds))
    return x.numpy(), y.numpy()


def test_batches_have_the_model_input_contract(tiny_cfg):
    data = build_inputs(tiny_cfg)
    for ds in (data.train(), data.validation, data.test):
        x, y = first_batch(ds)
        assert x.dtype == np.float32 and x.shape[1:] == (28, 28, 1) and x.shape[0] <= 32
        assert y.dtype == np.int32 and 0 <= y.min() and y.max() < 10
        assert 0.0 <= x.min() and x.max() <= 255.0


def test_splits_are_disjoint_and_sized_from_fractions(tiny_cfg):
    splits = load_splits(tiny_cfg.data, tiny_cfg.seed)
    images = {
        name: [x.tobytes() for x, _ in getattr(splits, name).as_numpy_iterator()]
        for name in ("train", "validation", "test")
    }
    assert [len(images[n]) for n in ("test", "validation", "train")] == [60, 48, 372]  # 480 × 0.125, × 0.1, rest
    assert not set(images["test"]) & set(images["train"])
    assert not set(images["validation"]) & set(images["train"])


@pytest.mark.parametrize("experiment", ["mnist_cnn", "isbi_unet", "penguins_species", "imdb_bow_logreg"])
def test_split_seed_keeps_the_split_while_the_seed_changes(experiment):
    """data.split_seed draws the split (samples, files, CSV rows, tokens), so another seed trains on the same split."""

    def split_bytes(overrides: list[str]) -> dict[str, list[bytes]]:
        splits = task_for(load_experiment(experiment, ["data.limit=400", *overrides])).load_splits()
        return {
            name: [b"".join(np.asarray(a).tobytes() for a in tf.nest.flatten(e)) for e in split.as_numpy_iterator()]
            for name, split in (("train", splits.train), ("validation", splits.validation), ("test", splits.test))
        }

    shipped = split_bytes([])
    assert split_bytes(["seed=7", "data.split_seed=42"]) == shipped
    assert split_bytes(["seed=7"])["validation"] != shipped["validation"]


def test_same_seed_same_stream_and_epochs_differ(tiny_cfg):
    cfg = tiny_cfg.model_copy(update={"deterministic": True})
    first, again = build_inputs(cfg).train(0, 1), build_inputs(cfg).train(0, 1)
    epoch1 = [x.numpy() for x, _ in first]
    np.testing.assert_array_equal(np.concatenate(epoch1), np.concatenate([x.numpy() for x, _ in again]))
    epoch2 = [x.numpy() for x, _ in build_inputs(cfg).train(1, 2)]  # reshuffled and re-augmented
    assert not np.array_equal(epoch1[0], epoch2[0])


def test_an_epoch_takes_every_example_repeat_times_in_an_order_of_its_own(tiny_cfg):
    """Without augmentation each epoch holds exactly the training split's examples, data.repeat times over, in
    batches of data.batch_size and a short last one; two epochs differ in order, not in content."""
    data_cfg = tiny_cfg.data.model_copy(update={"repeat": 3, "augment": AugmentConfig()})
    cfg = tiny_cfg.model_copy(update={"deterministic": True, "data": data_cfg})
    data = build_inputs(cfg)

    def rows(images) -> list[bytes]:  # each example's pixels and label, as one sortable key
        x, y = (np.asarray(part) for part in images)
        return sorted(a.astype(np.float32).tobytes() + np.int64(b).tobytes() for a, b in zip(x, y, strict=True))

    split = rows(data.train_examples.batch(4096).get_single_element())
    epochs = [[(x.numpy(), y.numpy()) for x, y in data.train(e, e + 1)] for e in (0, 1)]
    for batches in epochs:
        assert len(batches) == data.steps_per_epoch
        sizes = [len(y) for _, y in batches]
        assert set(sizes[:-1]) == {cfg.data.batch_size} and 0 < sizes[-1] <= cfg.data.batch_size
        whole = [np.concatenate(part) for part in zip(*batches, strict=True)]
        assert rows(whole) == sorted(split * 3)
    assert not np.array_equal(np.concatenate([y for _, y in epochs[0]]), np.concatenate([y for _, y in epochs[1]]))


def test_stream_resumes_at_any_epoch_and_step(tiny_cfg):
    """Epochs 1-2 started fresh equal the same batches cut out of the full stream: what resume relies on."""
    three_epochs = tiny_cfg.training.model_copy(update={"epochs": 3})
    cfg = tiny_cfg.model_copy(update={"deterministic": True, "training": three_epochs})
    data = build_inputs(cfg)
    steps = data.steps_per_epoch
    full = [x.numpy() for x, _ in data.train()]
    assert len(full) == 3 * steps
    resumed = [x.numpy() for x, _ in build_inputs(cfg).train(1, skip_steps=4)]
    np.testing.assert_array_equal(np.concatenate(resumed), np.concatenate(full[steps + 4 :]))


def test_without_determinism_only_the_order_may_change(tiny_cfg):
    """Each batch's augmentation is keyed by its own seed, so parallelism can only reorder batches."""

    def batches():
        return sorted(x.numpy().tobytes() for x, _ in build_inputs(tiny_cfg).train())

    assert not tiny_cfg.deterministic
    assert batches() == batches()


def test_other_seed_other_stream(tiny_cfg):
    other = tiny_cfg.model_copy(update={"seed": tiny_cfg.seed + 1})
    a, b = first_batch(build_inputs(tiny_cfg).train()), first_batch(build_inputs(other).train())
    assert not np.array_equal(a[0], b[0])


def test_augmentation_touches_training_only(tiny_cfg):
    tiny_cfg = tiny_cfg.model_copy(update={"deterministic": True})
    raw = load_splits(tiny_cfg.data, tiny_cfg.seed)
    data = build_inputs(tiny_cfg)
    for batched, unbatched in ((data.validation, raw.validation), (data.test, raw.test)):
        x, _ = first_batch(batched)
        expected = np.stack([img for img, _ in unbatched.take(len(x)).as_numpy_iterator()]).astype(np.float32)
        np.testing.assert_array_equal(x, expected)
    # The same training images, with and without augmentation, differ.
    plain = tiny_cfg.model_copy(update={"data": tiny_cfg.data.model_copy(update={"augment": AugmentConfig()})})
    x_aug, y_aug = first_batch(build_inputs(tiny_cfg).train())
    x_plain, y_plain = first_batch(build_inputs(plain).train())
    np.testing.assert_array_equal(y_aug, y_plain)
    assert np.abs(x_aug - x_plain).mean() > 1.0


def test_flip_is_an_exact_mirror():
    images = tf.random.stateless_uniform([64, 8, 8, 1], [1, 2], maxval=255.0)
    augment = make_augment(DataConfig(augment=AugmentConfig(flip="horizontal")))
    out = augment(images, tf.constant([3, 4], tf.int64)).numpy()
    mirrored = [np.array_equal(o, i.numpy()[:, ::-1]) for o, i in zip(out, images, strict=True)]
    same = [np.array_equal(o, i.numpy()) for o, i in zip(out, images, strict=True)]
    assert all(m or s for m, s in zip(mirrored, same, strict=True))
    assert 10 < sum(mirrored) < 54  # about half are flipped


def test_translation_moves_content_without_losing_it():
    image = np.zeros([1, 9, 9, 1], np.float32)
    image[0, 4, 4, 0] = 255.0
    augment = make_augment(DataConfig(augment=AugmentConfig(translation=0.3)))
    out = augment(tf.constant(image), tf.constant([5, 6], tf.int64)).numpy()
    assert out.sum() == pytest.approx(255.0, rel=0.05)  # the dot moved, it did not vanish or smear
    assert out[0, 4, 4, 0] < 255.0


@pytest.mark.parametrize("fill_mode", ["constant", "nearest", "reflect", "wrap"])
@pytest.mark.parametrize("interpolation", ["BILINEAR", "NEAREST"])
def test_affine_samples_as_the_tensorflow_kernel_it_replaces(fill_mode, interpolation):
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (32, 7, 10, 3)), tf.float32)
    # Rotations, shears, scales and shifts of more than a side: every fill mode's folding is reached.
    transforms = tf.constant(rng.normal(0, 1, (32, 8)) * [1, 1, 12, 1, 1, 12, 0, 0], tf.float32)
    expected = tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=[7, 10],
        fill_value=0.0,
        interpolation=interpolation,
        fill_mode=fill_mode.upper(),
    ).numpy()
    out = affine(images, transforms, fill_mode, interpolation).numpy()
    if interpolation == "BILINEAR":
        np.testing.assert_allclose(out, expected, atol=0.01)
    else:  # a coordinate within rounding of a pixel's edge may pick the neighbour on another CPU's kernels
        assert np.mean(out != expected) < 0.002


def test_photometric_knobs_stay_in_pixel_range():
    images = tf.random.stateless_uniform([16, 8, 8, 3], [1, 2], maxval=255.0)
    cfg = AugmentConfig(contrast=0.5, brightness=0.5, noise_stddev=0.2)
    out = make_augment(DataConfig(augment=cfg))(images, tf.constant([7, 8], tf.int64)).numpy()
    assert out.min() >= 0.0 and out.max() <= 255.0
    assert not np.allclose(out, images.numpy())


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def with_data(cfg, **update):
    return cfg.data.model_copy(update=update)


@pytest.mark.parametrize(
    "arrays, needle",
    [
        ({"x": np.zeros((20, 28, 28), np.uint8)}, "missing array(s) ['y']"),
        ({"x": np.zeros((20, 28, 28), np.uint8), "y": np.full(20, 10)}, "label 10 at record 0 is outside [0, 10)"),
        (
            {"x": np.zeros((20, 32, 32), np.uint8), "y": np.zeros(20)},
            "images are [32, 32, 1] but data.image_shape is [28, 28, 1]",
        ),
        ({"x": np.zeros((20, 28, 28), np.float32), "y": np.zeros(20)}, "images are float32, expected uint8"),
    ],
)
def test_bad_npz_names_the_file(tiny_cfg, tmp_path, arrays, needle):
    path = write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError) as err:
        load_splits(with_data(tiny_cfg, name=path), 0)
    assert path in str(err.value) and needle in str(err.value)


def test_missing_and_corrupt_files_name_the_file(tiny_cfg, tmp_path):
    with pytest.raises(DataError, match="nope.npz: no such data file"):
        load_splits(with_data(tiny_cfg, name=str(tmp_path / "nope.npz")), 0)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 this is not a zip archive")
    with pytest.raises(DataError, match="corrupt.npz: not a readable .npz file"):
        load_splits(with_data(tiny_cfg, name=str(corrupt)), 0)


def make_folder(root, sizes=((28, 28),) * 3, classes=("cat", "dog")):
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i, (h, w) in enumerate(sizes):
            png = tf.io.encode_png(rng.integers(0, 255, (h, w, 1), dtype=np.uint8)).numpy()
            (root / name / f"{i}.png").write_bytes(png)
    return root


def test_image_folder_source(tiny_cfg, tmp_path):
    root = make_folder(tmp_path / "imgs", sizes=((28, 28),) * 10)
    cfg = with_data(tiny_cfg, source="folder", name=str(root), num_classes=2, limit=None)
    splits = load_splits(cfg, 0)
    labels = [int(y) for ds in (splits.train, splits.validation, splits.test) for _, y in ds.as_numpy_iterator()]
    assert sorted(labels) == [0] * 10 + [1] * 10


def test_image_folder_errors_name_the_file(tiny_cfg, tmp_path):
    root = make_folder(tmp_path / "imgs")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG truncated")
    cfg = with_data(tiny_cfg, source="folder", name=str(root), num_classes=2)
    with pytest.raises(DataError, match="broken.png: not a readable image"):
        load_splits(cfg, 0)
    odd = make_folder(tmp_path / "odd", sizes=((28, 28), (30, 28)))
    with pytest.raises(DataError, match=r"1.png: image is 30x28"):
        load_splits(cfg.model_copy(update={"name": str(odd)}), 0)
    with pytest.raises(DataError, match="2 class folders but data.num_classes is 3"):
        load_splits(cfg.model_copy(update={"name": str(odd), "num_classes": 3}), 0)


def test_tfds_source_goes_through_tfds_load(tiny_cfg, monkeypatch):
    import tensorflow_datasets as tfds

    calls = []
    real_load = tfds.load
    monkeypatch.setattr(tfds, "load", lambda name, **kw: calls.append((name, kw["split"])) or real_load(name, **kw))
    cfg = with_data(tiny_cfg, source="tfds", name="mnist", limit=5)
    with tfds.testing.mock_data(num_examples=40):
        splits = load_splits(cfg, 0)
        counts = [sum(1 for _ in ds) for ds in (splits.train, splits.validation, splits.test)]
        image, label = next(iter(splits.train))
    assert calls == [("mnist", ["train[:90%]", "train[90%:]", "test"])]  # validation carved from train
    assert counts == [5, 5, 5]  # data.limit applies to every split
    assert image.dtype == tf.uint8 and image.shape == (28, 28, 1) and label.dtype == tf.int32


def test_tfds_shape_mismatch_names_the_key(tiny_cfg):
    import tensorflow_datasets as tfds

    cfg = with_data(tiny_cfg, source="tfds", name="mnist", image_shape=(32, 32, 3))
    with tfds.testing.mock_data(num_examples=8), pytest.raises(DataError, match="data.image_shape"):
        load_splits(cfg, 0)
