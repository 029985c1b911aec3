"""training.class_weight = "balanced": each training example carries n / (K · n_k), its class's weight."""

import numpy as np
import pytest
import tensorflow as tf

from kerasline.config import ConfigError, load_experiment
from kerasline.pipelines.datasets import balanced_weights
from kerasline.training.callbacks import AugmentedImages
from kerasline.training.tasks import build_inputs


def test_balanced_weights_follow_the_formula():
    labels = np.array([0] * 6 + [1] * 3 + [2] * 1, np.int32)
    examples = tf.data.Dataset.from_tensor_slices((np.zeros((10, 2), np.float32), labels))
    weights = balanced_weights(examples, num_classes=4)
    assert weights == pytest.approx([10 / (4 * 6), 10 / (4 * 3), 10 / (4 * 1), 0.0])
    # Every class present adds the same total weight: n / K.
    assert [weights[c] * np.sum(labels == c) for c in range(3)] == pytest.approx([2.5, 2.5, 2.5])


def test_the_training_stream_carries_each_examples_class_weight(tiny_experiment):
    cfg = load_experiment(str(tiny_experiment), ["training.class_weight=balanced", "data.augment.rotation=0"])
    data = build_inputs(cfg)
    labels = np.concatenate([y for _, y in data.train_examples.batch(512).as_numpy_iterator()])
    counts = np.bincount(labels, minlength=10)
    assert data.class_weights == pytest.approx(len(labels) / (10 * counts))
    for _, y, w in data.train(0, 1).take(3).as_numpy_iterator():
        assert w.shape == y.shape and np.allclose(w, np.asarray(data.class_weights)[y])
    unweighted = build_inputs(load_experiment(str(tiny_experiment)))
    assert unweighted.class_weights == () and len(next(iter(unweighted.train(0, 1)))) == 2


def test_the_augmented_images_visual_reads_weighted_batches(tiny_experiment, tmp_path):
    cfg = load_experiment(str(tiny_experiment), ["training.class_weight=balanced"])
    AugmentedImages(tmp_path / "logs", build_inputs(cfg).train(0, 1)).on_train_begin()  # (x, y, w) batches
    (event_file,) = (tmp_path / "logs").iterdir()
    assert event_file.name.startswith("events.out.tfevents") and event_file.stat().st_size > 0


@pytest.mark.parametrize("experiment", ["digits_autoencoder", "digits_mlp_regression", "isbi_unet"])
def test_class_weights_need_labels(experiment):
    with pytest.raises(ConfigError, match="training.class_weight: weighs labels"):
        load_experiment(experiment, ["training.class_weight=balanced"])
