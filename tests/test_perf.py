"""The performance suite's cheap guarantees: the keras-io convnet config, the speed knobs, the PyTorch twins."""

import keras
import numpy as np
import pytest

from kerasline.config import load_experiment
from kerasline.errors import ConfigError
from kerasline.models import build_model
from kerasline.training.fit import compile_model, setup, train


def test_mnist_convnet_is_the_keras_io_convnet():
    cfg = load_experiment("mnist_convnet")
    model = build_model(cfg)
    assert model.count_params() == 34_826  # the count keras.io prints for its "Simple MNIST convnet"
    assert [type(layer).__name__ for layer in model.layers[1:]] == [
        "Rescaling",
        "Conv2D",
        "ReLU",
        "MaxPooling2D",
        "Conv2D",
        "ReLU",
        "MaxPooling2D",
        "Flatten",
        "Dropout",
        "Dense",
        "Activation",
    ]
    assert model.get_layer("block1_pool").output.shape == (None, 5, 5, 64)  # valid convs: 28→26→13→11→5


def test_valid_padding_needs_bigger_images():
    with pytest.raises(ConfigError, match=r"model\.filters: cnn as configured needs images of at least 10x10"):
        load_experiment("mnist_convnet", ["data.image_shape=[8, 8, 1]"])
    load_experiment("mnist_convnet", ["data.image_shape=[10, 10, 1]"])  # 10→8→4→2→1


@pytest.mark.parametrize(
    "override, message",
    [
        ("training.steps_per_execution=0", "training.steps_per_execution: input should be greater than or equal to 1"),
        ("training.jit_compile=sometimes", "training.jit_compile"),
        ("model.padding=full", "model.padding: 'full' is not one of same, valid"),
    ],
)
def test_speed_knobs_are_validated(override, message):
    with pytest.raises(ConfigError, match=message):
        load_experiment("mnist_convnet", [override])


def test_speed_knobs_reach_the_compiled_model(tiny_cfg):
    cfg = tiny_cfg.model_copy(
        update={"training": tiny_cfg.training.model_copy(update={"jit_compile": False, "steps_per_execution": 4})}
    )
    with setup(cfg).scope():
        model = compile_model(cfg, steps_per_epoch=10)
    assert model.jit_compile is False
    assert model.steps_per_execution == 4


def test_fit_traces_the_train_step_once(tiny_cfg):
    """The optimizer is built at compile: a first step that created its variables would be traced twice."""
    with setup(tiny_cfg).scope():
        model = compile_model(tiny_cfg, steps_per_epoch=2)
    assert model.optimizer.built
    traces = []
    step = model.train_step
    model.train_step = lambda data: traces.append(1) or step(data)
    x = np.zeros((8, *tiny_cfg.data.image_shape), np.float32)
    model.fit(x, np.zeros(8, np.int32), batch_size=4, epochs=2, verbose=0)
    assert len(traces) == 1
    keras.backend.clear_session()


def test_training_with_steps_per_execution(tiny_experiment):
    cfg = load_experiment(str(tiny_experiment), ["training.steps_per_execution=5", "training.epochs=1"])
    result = train(cfg)
    assert 0.0 <= result.metrics["accuracy"] <= 1.0
    history = (result.run_dir / "history.csv").read_text().splitlines()
    assert len(history) == 2  # a header and the one epoch
    keras.backend.clear_session()


@pytest.mark.parametrize("experiment", ["mnist_convnet", "imdb_lstm", "imdb_transformer"])
def test_pytorch_twins_train_as_many_parameters(experiment):
    pytest.importorskip("torch")  # the `bench` extra; CI does not install it
    from benchmarks.torch_models import build_torch_model, trainable_parameters

    cfg = load_experiment(experiment)
    model = build_model(cfg)
    ours = sum(int(keras.ops.size(w)) for w in model.trainable_weights)
    assert trainable_parameters(build_torch_model(cfg)) == ours


def test_a_checkpoints_weights_save_builds_no_reference_objects(tmp_path, monkeypatch):
    """Keras 3.15 rebuilds a reference Optimizer (and Layers) on every save_weights to list the attributes it skips;
    the checkpoint's save_weights makes Keras's cache hit, and writes what save_weights writes."""
    import h5py
    from keras.src.optimizers.optimizer import Optimizer

    from kerasline.training.checkpoint import save_weights

    cfg = load_experiment("mnist_convnet")
    setup(cfg)
    model = compile_model(cfg, steps_per_epoch=1)
    keras.backend.clear_session()  # also empties Keras's cache: the first save below fills it
    save_weights(model, tmp_path / "first.weights.h5")
    built, build = [], Optimizer.__init__
    monkeypatch.setattr(Optimizer, "__init__", lambda self, *a, **k: built.append(a) or build(self, *a, **k))
    save_weights(model, tmp_path / "ours.weights.h5")
    assert built == []
    model.save_weights(tmp_path / "keras.weights.h5")

    def datasets(path):
        found = {}
        with h5py.File(path) as f:
            f.visititems(lambda name, item: found.update({name: item[()]}) if isinstance(item, h5py.Dataset) else None)
        return found

    ours, plain = datasets(tmp_path / "ours.weights.h5"), datasets(tmp_path / "keras.weights.h5")
    assert len(ours) == 20 and ours.keys() == plain.keys()
    assert all(np.array_equal(ours[name], plain[name]) for name in ours)
