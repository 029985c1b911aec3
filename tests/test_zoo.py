"""The image-classifier families: the course's exact parameter counts, and each one trains and exports."""

import json

import numpy as np
import pytest

from kerasline.config import GENERATIVE_TASKS, load_experiment, task_of, validate
from kerasline.models import build_model
from kerasline.shipped import shipped_dir
from kerasline.training.tasks import task_for


def trainable(model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize(
    "model, image_shape, expected",
    [
        ({"name": "mlp", "hidden_units": [64, 32]}, [28, 28, 1], 52_650),  # the course's MNIST MLP
        ({"name": "lenet"}, [32, 32, 3], 62_006),  # CIFAR-10 LeNet-style
        ({"name": "mlp", "hidden_units": [1024, 256, 64]}, [32, 32, 3], 3_426_250),  # CIFAR-10 FC baseline
        ({"name": "wide_cnn"}, [32, 32, 3], 5_852_170),  # CIFAR-10 wider CNN
    ],
)
def test_course_parameter_counts(model, image_shape, expected):
    cfg = validate({"name": "count", "data": {"image_shape": image_shape}, "model": model})
    assert trainable(build_model(cfg)) == expected


def test_the_course_mlp_experiment_is_the_course_mlp():
    cfg = load_experiment("mnist_mlp")
    assert cfg.model.hidden_units == (64, 32) and cfg.model.activation == "relu"
    assert (cfg.training.optimizer.name, cfg.training.optimizer.learning_rate) == ("sgd", 0.01)
    assert (cfg.data.batch_size, cfg.training.epochs) == (64, 12)
    assert trainable(build_model(cfg)) == 52_650


def test_resnet_blocks_add_a_shortcut():
    cfg = validate({"name": "r", "model": {"name": "resnet", "stages": [1, 1], "width": 8}})
    model = build_model(cfg)
    adds = [layer for layer in model.layers if type(layer).__name__ == "Add"]
    assert len(adds) == 2
    assert model.get_layer("stage1_block0_shortcut_conv").strides == (2, 2)  # a projection where the shape changes
    assert model.output_shape == (None, 10)


@pytest.mark.parametrize("path", sorted(shipped_dir("experiments").glob("*.toml")), ids=lambda p: p.stem)
def test_every_experiment_builds(path):
    cfg = load_experiment(str(path))
    # A table's model is built on its columns, which the task reads from the CSV; the GAN's task builds both nets.
    model = task_for(cfg).build_model() if task_of(cfg) == "tabular" else build_model(cfg)
    one_output = getattr(cfg.model, "head", "softmax") in ("sigmoid", "linear")  # a probability, or a value
    per_pixel = (None, None) if task_of(cfg) == "segmentation" else ()  # a U-Net takes any side dividing 2**depth
    expected = (None, *per_pixel, 1 if one_output else cfg.data.num_classes)
    if task_of(cfg) in GENERATIVE_TASKS:  # images: the GAN's generator, an autoencoder's reconstruction
        expected = (None, *cfg.data.image_shape)
    assert model.output_shape == expected


@pytest.mark.parametrize(
    "model",
    [
        'name = "mlp"\nhidden_units = [16]',
        'name = "lenet"',
        'name = "wide_cnn"',
        'name = "resnet"\nstages = [1, 1]\nwidth = 4',
    ],
)
def test_family_trains_and_exports_with_parity(tmp_path, kerasline, model):
    experiment = tmp_path / "fam.toml"
    experiment.write_text(
        f'runs_dir = "{tmp_path}/runs"\n[data]\nlimit = 300\nbatch_size = 32\n[model]\n{model}\n'
        f'[training]\nepochs = 1\n[export]\ndir = "{tmp_path}/exports"\n'
    )
    proc = kerasline("train", str(experiment))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "exports" / "fam" / "1" / "verification.json").read_text())
    assert report["passed"] and report["samples"] == 64


@pytest.mark.parametrize(
    "name, expected",
    [("cifar10_lenet", 62_006), ("cifar10_fc_baseline", 3_426_250), ("cifar10_wide_cnn", 5_852_170)],
)
def test_cifar10_experiments_are_the_course_models_on_tfds(name, expected):
    """Online they read CIFAR-10 through tfds.load; here a tfds mock stands in for the download."""
    import tensorflow_datasets as tfds

    from kerasline.training.tasks import build_inputs

    with tfds.testing.mock_data(num_examples=16):
        cfg = load_experiment(name, ["data.batch_size=8"])
        images, labels = next(iter(build_inputs(cfg).train()))
    assert images.shape == (8, 32, 32, 3) and labels.shape == (8,)
    assert trainable(build_model(cfg)) == expected
