"""Bad data and bad paths: a one-line error naming the file or record, or, with on_error = skip, a count."""

import numpy as np
import pytest
import tensorflow as tf

from kerasline.errors import DataError
from kerasline.pipelines.sources import load_splits


def png(rng, h=28, w=28) -> bytes:
    return tf.io.encode_png(rng.integers(0, 255, (h, w, 1), dtype=np.uint8)).numpy()


@pytest.fixture
def folder(tmp_path):
    """Two classes of 12 good 28×28 PNGs, plus one truncated, one garbage and one 30×28 image."""
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(12):
            (tmp_path / name / f"{i}.png").write_bytes(png(rng))
    (tmp_path / "a" / "truncated.png").write_bytes(png(rng)[:60])
    (tmp_path / "b" / "garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "b" / "wide.png").write_bytes(png(rng, 30, 28))
    return tmp_path


def folder_cfg(tiny_cfg, root, **update):
    return tiny_cfg.data.model_copy(
        update={"source": "folder", "name": str(root), "num_classes": 2, "limit": None, **update}
    )


def test_a_bad_image_stops_the_run_naming_the_file(tiny_cfg, folder):
    bad = r"(a/truncated.png|b/garbage.jpg): not a readable image|b/wide.png: image is 30x28"
    with pytest.raises(DataError, match=bad):
        load_splits(folder_cfg(tiny_cfg, folder), 0)


def test_on_error_skip_drops_bad_images_and_counts_them(tiny_cfg, folder):
    splits = load_splits(folder_cfg(tiny_cfg, folder, on_error="skip"), 0)
    assert len(splits.skipped) == 3
    assert [line.split(": ", 1)[1] for line in splits.skipped] == [
        "not a readable image",
        "not a readable image",
        "image is 30x28 but data.image_shape is [28, 28, 1]",
    ]
    assert sum(1 for ds in (splits.train, splits.validation, splits.test) for _ in ds) == 24


def test_on_error_skip_drops_out_of_range_labels(tiny_cfg, tmp_path):
    labels = np.arange(40) % 12  # 10 and 11 are outside [0, 10)
    np.savez(tmp_path / "d.npz", x=np.zeros((40, 28, 28), np.uint8), y=labels)
    cfg = tiny_cfg.data.model_copy(update={"name": str(tmp_path / "d.npz"), "on_error": "skip", "limit": None})
    splits = load_splits(cfg, 0)
    assert len(splits.skipped) == 6 and "label 10 at record 10" in splits.skipped[0]
    assert sum(1 for ds in (splits.train, splits.validation, splits.test) for _ in ds) == 34


@pytest.mark.parametrize(
    "arrays, needle",
    [
        ({"x": np.zeros((2, 28, 28), np.uint8), "y": np.zeros(2, np.int64)}, "2 usable examples are too few to split"),
        ({"x": np.zeros((0, 28, 28), np.uint8), "y": np.zeros(0, np.int64)}, "0 usable examples are too few"),
        ({"images": np.zeros((9, 28, 28), np.uint8)}, "missing array(s) ['x', 'y']"),
        ({"x": np.zeros((9, 28, 28), np.uint8), "y": np.zeros(9, np.float32)}, "labels are float32"),
        ({"x": np.zeros((9, 28, 28), np.uint8), "y": np.zeros(8, np.int64)}, "9 images but labels are int64 [8]"),
    ],
)
def test_unusable_npz_names_the_file(tiny_cfg, tmp_path, arrays, needle):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError) as err:
        load_splits(tiny_cfg.data.model_copy(update={"name": str(tmp_path / "d.npz"), "limit": None}), 0)
    assert str(tmp_path / "d.npz") in str(err.value) and needle in str(err.value)


def test_truncated_npz_names_the_file(tiny_cfg, tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((50, 28, 28), np.uint8), y=np.zeros(50, np.int64))
    data = (tmp_path / "d.npz").read_bytes()
    (tmp_path / "d.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="d.npz: not a readable .npz file"):
        load_splits(tiny_cfg.data.model_copy(update={"name": str(tmp_path / "d.npz")}), 0)


def test_pickled_npz_is_refused(tiny_cfg, tmp_path):
    np.savez(tmp_path / "d.npz", x=np.array([{"a": 1}], dtype=object), y=np.zeros(1, np.int64))
    with pytest.raises(DataError, match="not a readable .npz file"):
        load_splits(tiny_cfg.data.model_copy(update={"name": str(tmp_path / "d.npz")}), 0)


def test_unknown_tfds_name_is_one_line(tiny_cfg):
    with pytest.raises(DataError, match="data.name: no TFDS dataset named 'no_such_dataset_xyz'"):
        load_splits(tiny_cfg.data.model_copy(update={"source": "tfds", "name": "no_such_dataset_xyz"}), 0)


def test_non_utf8_experiment_file_is_one_line(kerasline, tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    proc = kerasline("config", str(path))
    assert proc.returncode == 2 and "not valid TOML" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_run_dir_outside_the_experiment_is_refused(trained, kerasline, tmp_path):
    proc = kerasline("export", str(trained["experiment"]), "--run", str(tmp_path))
    assert proc.returncode == 2 and "must be a run of 'tiny'" in proc.stderr


def test_tfds_download_failure_is_one_line(tiny_cfg, monkeypatch):
    import tensorflow_datasets as tfds

    def offline(*args, **kwargs):
        raise ConnectionError("HTTPSConnectionPool(host='example.org'): Failed to resolve 'example.org'\nmore")

    monkeypatch.setattr(tfds, "load", offline)
    cfg = tiny_cfg.data.model_copy(update={"source": "tfds", "name": "cifar10", "image_shape": (32, 32, 3)})
    with pytest.raises(DataError) as err:
        load_splits(cfg, 0)
    assert str(err.value) == (
        "tfds 'cifar10': could not download or prepare it (ConnectionError: HTTPSConnectionPool(host='example.org'): "
        "Failed to resolve 'example.org'); it needs network access once, or a prepared copy in ~/tensorflow_datasets"
    )


def test_text_that_is_not_utf8_is_read_as_out_of_vocabulary_words():
    """Scraped reviews carry stray bytes: they become U+FFFD in training and in the export alike, instead of a
    vocabulary that cannot be written out (the default standardisation fails in get_vocabulary)."""
    from kerasline.config import DataConfig
    from kerasline.pipelines.datasets import text_vectorizer

    data = DataConfig(source="tfds", input="text", name="imdb_reviews", sequence_length=6, vocab_size=20)
    reviews = tf.constant([b"good movie \xff\xfe", b"bad movie caf\xe9", b"\xff\xfe good"])
    trained = text_vectorizer(data, adapt_to=tf.data.Dataset.from_tensor_slices(reviews))
    vocabulary = [str(word) for word in trained.get_vocabulary()]
    assert {"good", "movie", "bad"} <= set(vocabulary)
    exported = text_vectorizer(data, vocabulary=vocabulary[2:])  # as export/publish.py rebuilds it from the run
    np.testing.assert_array_equal(exported(reviews).numpy(), trained(reviews).numpy())
    assert exported(tf.constant([b"good \xc3"])).numpy()[0, 0] == vocabulary.index("good")
