"""Pretrained backbones (models/pretrained.py) and phased fine-tuning (training/phases.py, training/fit.py).

Offline throughout: no test downloads anything. The backbone starts from a weights file this module writes (known
values), never from ImageNet, and the imagenet refusal runs with an empty KERAS_HOME on a machine without network.

Runs that must be killed, or that must run with op determinism on (which cannot be undone in this process), train in
a child process: this file run as a script (`python tests/test_pretrained.py EXPERIMENT [fault=F] [sigterm=E:S]
[probe=DIR]`) trains like `kerasline train` without the export, optionally with a tests/reliability/faulty.py fault
installed, a SIGTERM raised after a chosen batch, or a probe recording what each epoch left behind.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
BACKBONE = "backbone"

# Each backbone without its top: Keras's total with the top (keras.applications, include_top=True, 1000 ImageNet
# classes; keras.io's table rounds them to 2.5M, 7.2M and 25.6M) minus that top, for (S, S, 3) inputs of any side S
# (the conv weights do not depend on it):
#   MobileNetV3Small  2,554,968 - 1,615,848 = 939,120: its top is more than a dense layer, a 1×1 conv 576 → 1024
#                     with bias (590,848) and the 1×1 conv logits 1024 → 1000 (1,025,000);
#   EfficientNetV2B0  7,200,312 - 1,281,000 = 5,919,312: the dense 1280 → 1000;
#   ResNet50V2       25,613,800 - 2,049,000 = 23,564,800: the dense 2048 → 1000.
DOCUMENTED = {
    "mobilenet_v3_small": (2_554_968, 576 * 1024 + 1024 + 1024 * 1000 + 1000, 576),
    "efficientnet_v2_b0": (7_200_312, 1280 * 1000 + 1000, 1280),
    "resnet50_v2": (25_613_800, 2048 * 1000 + 1000, 2048),
}
WITHOUT_TOP = {"mobilenet_v3_small": 939_120, "efficientnet_v2_b0": 5_919_312, "resnet50_v2": 23_564_800}

# MobileNetV3Small's top 8 layers: SE multiply, the 1×1 project conv, its BN, add, conv_1, its BN, activation, pool
UNFREEZE = 8
HEAD = 576 * 10 + 10  # the head's Dense ("logits") on MobileNetV3Small's 576 pooled features
TOP_CONVS = 2 * 96 * 576  # expanded_conv_10_project (576 → 96) and conv_1 (96 → 576), 1×1, no bias

EXPERIMENT = """
name = "pt"
seed = 11
deterministic = {deterministic}
runs_dir = "runs"

[data]
name = "mnist_8k"
limit = 256
batch_size = 32

[data.augment]
rotation = 0.03
translation = 0.1

[model]
name = "pretrained"
backbone = "mobilenet_v3_small"
weights = "{weights}"
input_size = 32

[training]
epochs = 1

[training.optimizer]
learning_rate = 2e-3

[training.fine_tune]
epochs = 1
learning_rate = 3e-4
unfreeze = {unfreeze}

[export]
dir = "exports"
parity_samples = 16
"""


def write_experiment(folder: Path, weights: Path, deterministic: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pt.toml"
    path.write_text(EXPERIMENT.format(deterministic=str(deterministic).lower(), weights=weights, unfreeze=UNFREEZE))
    return path


# --- the child process ----------------------------------------------------------------------------------------------


class SigtermAt(keras.callbacks.Callback):
    """Raises SIGTERM in this process after batch `step` (1-based) of epoch `epoch` (0-based): a preemption that
    lands at a known step. signal.raise_signal runs the Python handler before it returns, so the run's checkpoint
    callback (later in the list) sees the request at this very batch."""

    def __init__(self, epoch: int, step: int):
        super().__init__()
        self.at, self.epoch = (epoch, step), -1

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch + 1) == self.at:
            signal.raise_signal(signal.SIGTERM)


class Probe(keras.callbacks.Callback):
    """Records the backbone's weights (BatchNorm statistics included) when training begins and after every epoch,
    with the epoch's learning rate and what was trainable: probe.json and weights.npz in `out`."""

    def __init__(self, out: Path):
        super().__init__()
        self.out, self.arrays, self.epochs = out, {}, []

    def snapshot(self, label: str) -> None:
        for layer in self.model.get_layer(BACKBONE).layers:
            for i, weight in enumerate(layer.weights):
                self.arrays[f"{label}|{layer.name}|{i}"] = weight.numpy()

    def on_train_begin(self, logs=None):
        if not self.epochs and not self.arrays:  # the first fit: the weights the run starts from
            self.snapshot("start")

    def on_epoch_end(self, epoch, logs=None):
        backbone = self.model.get_layer(BACKBONE)
        self.snapshot(f"epoch{epoch}")
        self.epochs.append(
            {
                "learning_rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
                "trainable": [w.path for w in self.model.trainable_weights],
                "layers": [
                    [
                        layer.name,
                        type(layer).__name__,
                        layer.trainable,
                        len(layer.trainable_weights),
                        len(layer.weights),
                    ]
                    for layer in backbone.layers
                ],
            }
        )

    def on_train_end(self, logs=None):
        self.out.mkdir(parents=True, exist_ok=True)
        np.savez(self.out / "weights.npz", **self.arrays)
        (self.out / "probe.json").write_text(json.dumps(self.epochs))


def child(argv: list[str]) -> int:
    experiment, *options = argv
    options = dict(option.split("=", 1) for option in options)
    if "fault" in options:
        sys.path.insert(0, str(HERE / "reliability"))
        from faulty import install

        install(options["fault"])
    from kerasline.config import load_experiment
    from kerasline.errors import Preempted
    from kerasline.training.fit import train

    callbacks = []
    if "sigterm" in options:
        callbacks.append(SigtermAt(*map(int, options["sigterm"].split(":"))))
    if "probe" in options:
        callbacks.append(Probe(Path(options["probe"])))
    try:
        result = train(load_experiment(experiment), callbacks)
    except Preempted as e:
        print(f"preempted: {e}", file=sys.stderr)
        return 128 + signal.SIGTERM
    print(json.dumps({"run_dir": str(result.run_dir), "resumed_at": result.resumed_at, "test": result.metrics}))
    return 0


def start_child(experiment: Path, *options: str, cli: bool = False, env: dict | None = None) -> subprocess.Popen:
    """The child training `experiment` in its folder (cli: `kerasline train` itself), started; its stdout and
    stderr go to files beside it."""
    logs = experiment.parent / "child-logs"
    logs.mkdir(exist_ok=True)
    n = len(list(logs.iterdir())) // 2
    command = ["-m", "kerasline.cli", "train"] if cli else [__file__]
    with open(logs / f"{n}.out", "w") as out, open(logs / f"{n}.err", "w") as err:
        proc = subprocess.Popen(
            [sys.executable, *command, experiment.name, *options],
            cwd=experiment.parent,
            stdout=out,
            stderr=err,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
        )
    proc.logs = (logs / f"{n}.out", logs / f"{n}.err")
    CHILDREN.append(proc)
    return proc


CHILDREN: list[subprocess.Popen] = []  # every child this module started, ended at its teardown if still running


def finish(proc: subprocess.Popen, timeout: float = 900) -> subprocess.CompletedProcess:
    proc.wait(timeout)
    out, err = (path.read_text() for path in proc.logs)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def train_in_child(experiment: Path, *options: str) -> subprocess.CompletedProcess:
    return finish(start_child(experiment, *options))


def result_of(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def weight_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of a Keras weights file, by its path in the file."""
    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, node: arrays.__setitem__(name, node[()]) if isinstance(node, h5py.Dataset) else None)
    return arrays


def tree(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under `root`: its modification time and bytes."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()}


# --- fixtures -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def backbones(tmp_path_factory) -> dict[str, keras.Model]:
    """Each backbone's whole model at input_size 32 (weights=None, as the builder always makes it)."""
    from kerasline.config import load_experiment
    from kerasline.models import build_model

    path = write_experiment(tmp_path_factory.mktemp("backbones"), Path("unused.weights.h5"))
    keras.utils.set_random_seed(0)
    return {name: build_model(load_experiment(str(path), [f"model.backbone='{name}'"])) for name in WITHOUT_TOP}


@pytest.fixture(scope="module")
def known_weights(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    """A MobileNetV3Small backbone's weights file (input_size 32), of known values: seeded initial weights, with
    BatchNorm statistics moved off their defaults so that a run that reset or updated them would show it."""
    from kerasline.config import PretrainedConfig
    from kerasline.models.pretrained import build_backbone

    keras.utils.set_random_seed(3)
    backbone = build_backbone(PretrainedConfig(name="pretrained", input_size=32, weights="none"))
    rng = np.random.default_rng(3)
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, layer.moving_variance.shape).astype("float32"))
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v3_small.weights.h5"
    backbone.save_weights(path)
    return path, {f"{layer.name}|{i}": w.numpy() for layer in backbone.layers for i, w in enumerate(layer.weights)}


@pytest.fixture(scope="module")
def started(tmp_path_factory, known_weights) -> Iterator[dict]:
    """The module's child runs, all started at once so that they train side by side while this process builds
    backbones: the uninterrupted reference (probed); the killed run's three attempts, one after the other, on a
    thread (see kill_and_resume); and `kerasline train` with imagenet weights, offline."""
    reference = write_experiment(tmp_path_factory.mktemp("reference"), known_weights[0])
    killed = write_experiment(tmp_path_factory.mktemp("killed"), known_weights[0])
    imagenet = write_experiment(tmp_path_factory.mktemp("imagenet"), "imagenet", deterministic=False)
    home = imagenet.parent / "keras_home"  # empty: no cached weights file to fall back on
    home.mkdir()
    attempts: dict = {}
    chain = threading.Thread(target=kill_and_resume, args=(killed, attempts), daemon=True)
    started = {
        "reference": (reference, start_child(reference, f"probe={reference.parent / 'probe'}")),
        "imagenet": (imagenet, start_child(imagenet, cli=True, env={"KERAS_HOME": str(home)})),
        "killed": (killed, chain, attempts),
    }
    chain.start()
    yield started
    chain.join(timeout=900)
    for proc in CHILDREN:
        if proc.poll() is None:  # a test failed before waiting on it
            proc.kill()
            proc.wait()


def kill_and_resume(path: Path, attempts: dict) -> None:
    """SIGKILL right after the frozen phase's last checkpoint (phase 2 recompiled, its epoch begun); the rerun
    SIGTERMed after the third batch of phase 2's epoch; a last rerun. What each left in backup/ is noted as it ends."""
    run_dir = path.parent / "runs" / "pt" / "run-001"
    try:
        for name, options in [("killed", ["fault=between-epochs:1"]), ("preempted", ["sigterm=1:3"]), ("resumed", [])]:
            attempts[name] = train_in_child(path, *options)
            backup = run_dir / "backup"
            attempts[f"{name} left"] = sorted(p.name for p in backup.iterdir()) if backup.is_dir() else []
            attempts[f"{name} finished"] = (run_dir / "metrics.json").exists()
    except BaseException as e:  # noqa: BLE001  (the test reports it)
        attempts["error"] = e


@pytest.fixture(scope="module")
def reference(started) -> dict:
    """One uninterrupted deterministic run: 1 epoch with the backbone frozen, then 1 fine-tuning epoch."""
    path, proc = started["reference"]
    proc = finish(proc)
    result = result_of(proc)
    probe = path.parent / "probe"
    return {
        "experiment": path,
        "stdout": proc.stdout,
        "result": result,
        "run_dir": path.parent / result["run_dir"],
        "epochs": json.loads((probe / "probe.json").read_text()),
        "weights": dict(np.load(probe / "weights.npz")),
    }


@pytest.fixture(scope="module")
def exported(reference) -> Path:
    from kerasline.config import load_experiment
    from kerasline.export import export_run

    path = reference["experiment"]
    cwd = os.getcwd()
    os.chdir(path.parent)  # runs_dir and export.dir are relative to the experiment's folder
    try:
        return path.parent / export_run(load_experiment(str(path)), reference["run_dir"].relative_to(path.parent))
    finally:
        os.chdir(cwd)


# --- 1. the backbones -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(WITHOUT_TOP))
def test_each_backbone_builds_without_its_top_and_takes_the_raw_image(started, backbones, name):
    # `started`: the child runs train meanwhile
    documented, top, features = DOCUMENTED[name]
    assert documented - top == WITHOUT_TOP[name]
    model = backbones[name]
    backbone = model.get_layer(BACKBONE)
    assert backbone.count_params() == WITHOUT_TOP[name]
    assert backbone.output.shape == (None, features)  # pooled, no top
    assert model.count_params() == WITHOUT_TOP[name] + features * 10 + 10
    assert model.input.shape == (None, 28, 28, 1)
    assert backbone.input.shape == (None, 32, 32, 3)

    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1)).astype("uint8")
    probabilities = keras.ops.convert_to_numpy(model(images.astype("float32"), training=False))
    assert probabilities.shape == (3, 10) and np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)


# --- phases, the pure part ------------------------------------------------------------------------------------------


def test_phases_split_the_epochs_and_a_checkpoint_knows_its_phase(tmp_path):
    from kerasline.config import load_experiment
    from kerasline.training.phases import phase_at, phase_training, phases

    cfg = load_experiment(str(write_experiment(tmp_path, tmp_path / "w.weights.h5")))
    assert cfg.training.total_epochs == 2
    assert phases(cfg) == [(0, 1), (1, 2)]
    # (epochs completed, steps into the next): the phase of the last epoch completed, or of the one stopped in
    assert [phase_at(cfg, e, s) for e, s in [(0, 0), (0, 4), (1, 0), (1, 1), (1, 6), (2, 0)]] == [1, 1, 1, 2, 2, 2]
    second = phase_training(cfg.training, 2)
    assert second.optimizer.learning_rate == 3e-4 and second.epochs == 1 and second.optimizer.name == "adam"
    assert phase_training(cfg.training, 1) == cfg.training

    longer = load_experiment(str(tmp_path / "pt.toml"), ["training.epochs=3", "training.fine_tune.epochs=2"])
    assert phases(longer) == [(0, 3), (3, 5)] and longer.training.total_epochs == 5
    assert [phase_at(longer, e, s) for e, s in [(3, 0), (3, 2), (4, 0), (5, 0)]] == [1, 2, 2, 2]
    single = load_experiment(str(tmp_path / "pt.toml"), ["training.fine_tune.epochs=0"])
    assert phases(single) == [(0, 1)] and single.training.total_epochs == 1


def test_set_phase_freezes_the_backbone_unless_it_starts_from_scratch(backbones, tmp_path):
    from kerasline.config import load_experiment
    from kerasline.training.phases import set_phase

    model = backbones["mobilenet_v3_small"]
    backbone = model.get_layer(BACKBONE)
    path = write_experiment(tmp_path, tmp_path / "w.weights.h5")
    set_phase(model, load_experiment(str(path)), 1)
    assert not backbone.trainable and [w.path for w in model.trainable_weights] == ["logits/kernel", "logits/bias"]
    set_phase(model, load_experiment(str(path), ["model.weights='none'"]), 1)  # from scratch: it trains throughout
    assert backbone.trainable and len(model.trainable_weights) == len(backbone.trainable_weights) + 2
    set_phase(model, load_experiment(str(path), ["training.fine_tune.unfreeze='all'"]), 2)
    for layer in backbone.layers:
        assert layer.trainable is not isinstance(layer, keras.layers.BatchNormalization), layer.name
    batchnorm = {
        id(w) for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization) for w in layer.weights
    }
    assert not any(id(w) in batchnorm for w in model.trainable_weights)
    assert len(model.trainable_weights) == sum(len(layer.trainable_weights) for layer in backbone.layers) + 2


def test_early_stopping_counts_only_the_fine_tuning_epochs(backbones, tmp_path):
    from kerasline.config import load_experiment
    from kerasline.training.checkpoint import ResumePoint, RunCheckpoint
    from kerasline.training.fit import setup
    from kerasline.training.tasks import build_inputs, task_for

    path = write_experiment(tmp_path, tmp_path / "w.weights.h5", deterministic=False)
    for overrides, first, total in [([], 1, 2), (["training.fine_tune.epochs=0"], 0, 1)]:
        cfg = load_experiment(str(path), overrides)
        setup(cfg)  # as train() does before the data: seeds (no op determinism, which this process would keep)
        callbacks = task_for(cfg).callbacks(tmp_path, build_inputs(cfg), ResumePoint(), backbones["mobilenet_v3_small"])
        (stopping,) = [c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping)]
        assert stopping.start_from_epoch == first
        assert isinstance(callbacks[-1], RunCheckpoint) and callbacks[-1].total_epochs == total


# --- 2, 3, 5. one run, probed ---------------------------------------------------------------------------------------


def backbone_at(reference: dict, label: str) -> dict[str, np.ndarray]:
    prefix = f"{label}|"
    return {key[len(prefix) :]: array for key, array in reference["weights"].items() if key.startswith(prefix)}


def batchnorm_statistics(reference: dict) -> set[str]:
    """Keys (layer|index) of the backbone's BatchNorm moving means and variances (indices 2 and 3 of each)."""
    layers = reference["epochs"][0]["layers"]
    return {f"{name}|{i}" for name, kind, *_ in layers if kind == "BatchNormalization" for i in (2, 3)}


def test_the_run_starts_from_exactly_the_weights_file(reference, known_weights):
    start = backbone_at(reference, "start")
    assert start.keys() == known_weights[1].keys()
    for key, array in known_weights[1].items():
        np.testing.assert_array_equal(start[key], array, err_msg=key)
    assert f"backbone:    mobilenet_v3_small, weights from {known_weights[0]}" in reference["stdout"]


def test_the_frozen_phase_trains_only_the_head(reference):
    first = reference["epochs"][0]
    assert first["trainable"] == ["logits/kernel", "logits/bias"]
    assert not any(trainable for _, _, trainable, *_ in first["layers"])
    start, after = backbone_at(reference, "start"), backbone_at(reference, "epoch0")
    for key, array in start.items():  # the kernels and the BatchNorm moving statistics alike
        np.testing.assert_array_equal(after[key], array, err_msg=key)


def test_fine_tuning_unfreezes_the_top_layers_but_batchnorm(reference):
    for epoch in reference["epochs"][1:]:
        layers = epoch["layers"]
        top = {name for name, kind, *_ in layers[-UNFREEZE:] if kind != "BatchNormalization"}
        assert {name for name, _, _, trainables, _ in layers if trainables} == {
            name for name, _, _, _, weights in layers if name in top and weights
        }
        assert all(not trainable for _, kind, trainable, *_ in layers if kind == "BatchNormalization")
        assert epoch["trainable"][-2:] == ["logits/kernel", "logits/bias"]
        assert len(epoch["trainable"]) == 2 + 2  # the two top convs (no bias) and the head

    start, last = backbone_at(reference, "start"), backbone_at(reference, "epoch1")
    statistics = batchnorm_statistics(reference)
    assert len(statistics) == 2 * 34  # MobileNetV3Small has 34 BatchNorm layers
    unfrozen = {f"{name}|0" for name, kind, _, trainables, _ in reference["epochs"][1]["layers"] if trainables}
    for key, array in start.items():
        if key in unfrozen:
            assert not np.array_equal(last[key], array), f"{key} did not train"
        else:  # every layer below the top N, and every BatchNorm's statistics, kept as loaded
            np.testing.assert_array_equal(last[key], array, err_msg=key)


def test_the_phase_switch_recompiles_with_the_second_learning_rate(reference):
    rates = [epoch["learning_rate"] for epoch in reference["epochs"]]
    assert rates == pytest.approx([2e-3, 3e-4], rel=1e-6)
    lines = [line for line in reference["stdout"].splitlines() if line.startswith("phase ")]
    assert lines == [
        f"phase 1:     epochs 1–1, {HEAD:,} trainable weights",
        f"phase 2:     epochs 2–2, {HEAD + TOP_CONVS:,} trainable weights",
    ]
    log = (reference["run_dir"] / "run.log").read_text()
    assert all(line in log for line in lines)
    history = (reference["run_dir"] / "history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in history[1:]] == ["0", "1"]


def test_tensorboard_shows_the_phase_and_what_trained(reference):
    import tensorflow as tf

    scalars = {}
    for events in sorted((reference["run_dir"] / "logs" / "train").glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            for value in event.summary.value:
                if value.tag in ("phase", "trainable_weights"):
                    scalars.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
    assert scalars["phase"] == {0: 1, 1: 2}
    assert scalars["trainable_weights"] == {0: HEAD, 1: HEAD + TOP_CONVS}


# --- 5. export ------------------------------------------------------------------------------------------------------


def test_mobilenet_exports_with_parity_and_takes_the_raw_uint8_image(exported, reference):
    import tensorflow as tf

    report = json.loads((exported / "verification.json").read_text())
    assert report["passed"] is True and report["samples"] == 16
    assert set(report["max_abs_diff"]) == {"saved_model", "onnx"}  # hard-swish through tf2onnx included
    assert (exported / "model.onnx").is_file()

    serve = tf.saved_model.load(str(exported)).signatures["serving_default"]
    (spec,) = serve.structured_input_signature[1].values()
    assert spec.name == "image" and spec.dtype == tf.uint8 and spec.shape.as_list() == [None, 28, 28, 1]
    images = np.random.default_rng(1).integers(0, 256, (4, 28, 28, 1)).astype("uint8")
    probabilities = serve(image=tf.constant(images))["probabilities"].numpy()
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)

    from kerasline.config import load_experiment
    from kerasline.training.tasks import task_for

    model = task_for(load_experiment(str(reference["experiment"]))).export_model(
        reference["run_dir"] / "best.weights.h5"
    )
    expected = keras.ops.convert_to_numpy(model(images.astype("float32"), training=False))
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)


# --- 6. refusals ----------------------------------------------------------------------------------------------------


QUIET = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)  # Python hides these


def one_line_refusal(capsys, *argv: str) -> tuple[str, list[str]]:
    """`kerasline ARGV` in this process: exit 2 and one line on stderr. With it, the warnings raised meanwhile that
    the console would have shown above that line (pytest keeps them off stderr here)."""
    from kerasline.cli import main

    with warnings.catch_warnings(record=True) as raised:
        warnings.simplefilter("always")
        assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0], [str(w.message).splitlines()[0] for w in raised if not issubclass(w.category, QUIET)]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["model.backbone='mobilenet_v3'"],
            "model.backbone: 'mobilenet_v3' is not one of mobilenet_v3_small, efficientnet_v2_b0, resnet50_v2 "
            "(did you mean 'mobilenet_v3_small'?)",
        ),
        (["model.input_size=31"], "model.input_size: input should be greater than or equal to 32 (got 31)"),
        (
            ["model={name='cnn'}", "training.fine_tune.epochs=1"],
            "training.fine_tune: unfreezes a pretrained backbone, but model.name is 'cnn'",
        ),
    ],
)
def test_config_refusals_are_one_line(tmp_path, capsys, overrides, message):
    path = write_experiment(tmp_path, tmp_path / "w.weights.h5")
    line, shown = one_line_refusal(capsys, "train", str(path), *overrides)
    assert message in line and not shown
    assert not (tmp_path / "runs").exists()


def test_weights_that_cannot_be_loaded_are_refused_in_one_line_touching_nothing_saved(
    tmp_path, capsys, monkeypatch, exported, reference, backbones
):
    folder = reference["experiment"].parent
    saved = {"runs": tree(folder / "runs"), "exports": tree(folder / "exports")}
    efficientnet = tmp_path / "efficientnet_v2_b0.weights.h5"
    backbones["efficientnet_v2_b0"].get_layer(BACKBONE).save_weights(efficientnet)
    garbage = tmp_path / "garbage.weights.h5"
    garbage.write_text("not an HDF5 file")
    missing = tmp_path / "nope.weights.h5"
    monkeypatch.chdir(folder)

    def refuse(weights: Path) -> tuple[str, list[str]]:  # op determinism cannot be undone in this process: off
        return one_line_refusal(capsys, "train", "pt.toml", "deterministic=false", f"model.weights='{weights}'")

    noisy = {}
    line, noisy[missing] = refuse(missing)
    assert line == f"error: model.weights: {missing}: no such weights file (or use 'imagenet', or 'none')"
    line, noisy[efficientnet] = refuse(efficientnet)  # another backbone's file: every shape differs
    assert line.startswith(f"error: model.weights: {efficientnet} does not fit mobilenet_v3_small (")
    line, noisy[garbage] = refuse(garbage)
    assert line.startswith(f"error: model.weights: {garbage} does not fit mobilenet_v3_small (")

    # The finished run and its export, untouched.
    for name, files in saved.items():
        now = tree(folder / name)
        assert {path: now.get(path) for path in files} == files
    assert [p.name for p in (folder / "exports" / "pt").iterdir() if p.name.isdigit()] == ["1"]

    # Nothing was opened for the refused runs, and nothing but the one line was shown.
    assert sorted(p.name for p in (folder / "runs" / "pt").iterdir()) == ["run-001"]
    assert not any(noisy.values()), {k.name: v for k, v in noisy.items() if v}


def test_weights_of_another_input_size_fit(known_weights):
    """MobileNetV3Small is convolutional: its weights do not depend on the input side, so a file written at
    input_size 32 loads at 48 (nothing to refuse)."""
    from kerasline.config import PretrainedConfig
    from kerasline.models.pretrained import build_backbone

    backbone = build_backbone(PretrainedConfig(name="pretrained", input_size=48, weights="none"))
    backbone.load_weights(known_weights[0])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(backbone.weights[0]), known_weights[1]["conv|0"])


def test_imagenet_offline_is_one_line_naming_the_offline_alternative(started):
    path, proc = started["imagenet"]
    proc = finish(proc)
    if proc.returncode == 0 or list((path.parent / "keras_home").rglob("*.h5")):
        pytest.skip("the imagenet weights were downloaded: this machine is online")
    assert proc.returncode == 2, proc.stderr[-3000:]
    err = proc.stderr.strip().splitlines()
    assert err[-1].startswith(
        "error: model.weights: the imagenet weights of mobilenet_v3_small could not be downloaded ("
    )
    assert err[-1].endswith("); offline, set model.weights to a weights file of the backbone, or to 'none'")
    assert not (path.parent / "exports").exists()

    assert not (path.parent / "runs").exists()  # refused before a run was opened
    assert len(err) == 1, err


# --- 4. killed across the phase switch (last: its attempts run while the tests above do) ------------------------------


def test_a_run_killed_after_the_first_phase_and_preempted_in_the_second_resumes_exactly(started, reference):
    """SIGKILL right after the frozen phase's last checkpoint, then the rerun SIGTERMed mid-epoch in phase 2, then a
    last rerun: the same history rows, test metrics and best weights, bit for bit, as the uninterrupted run (the
    crash tests' convention for a deterministic run on one machine)."""
    path, chain, attempts = started["killed"]
    chain.join(timeout=900)
    assert "error" not in attempts, attempts.get("error")
    run_dir = path.parent / "runs" / "pt" / "run-001"

    killed = attempts["killed"]
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert attempts["killed left"] == ["epoch-0001"] and not attempts["killed finished"]  # written in phase 1
    preempted = attempts["preempted"]
    assert preempted.returncode == 128 + signal.SIGTERM, preempted.stderr[-3000:]
    assert preempted.stderr.strip().splitlines()[-1].startswith("preempted: stopped by SIGTERM; checkpoint ")
    assert attempts["preempted left"] == ["epoch-0001-step-0003"] and not attempts["preempted finished"]  # phase 2

    resumed = result_of(attempts["resumed"])
    assert resumed["resumed_at"] == "epoch 2, step 3"
    assert resumed["test"] == reference["result"]["test"]
    assert (run_dir / "metrics.json").read_text() == (reference["run_dir"] / "metrics.json").read_text()

    # run.log: three attempts, each going on in the phase its checkpoint was written in
    logged = (run_dir / "run.log").read_text().split("\n--- ")
    assert len(logged) == 3 and json.loads((run_dir / "run.json").read_text())["attempts"] == 3
    first, second, third = ([line for line in a.splitlines() if line.startswith(("phase ", "Epoch "))] for a in logged)
    phase_2 = f"phase 2:     epochs 2–2, {HEAD + TOP_CONVS:,} trainable weights"
    assert first[:2] == [f"phase 1:     epochs 1–1, {HEAD:,} trainable weights", phase_2]
    assert second == third == [phase_2, "Epoch 2/2"]
    assert "backbone:" in logged[0] and "backbone:" not in logged[1] + logged[2]  # loaded by the new run only

    rows = [line.split(",") for line in (run_dir / "history.csv").read_text().splitlines()]
    expected = [line.split(",") for line in (reference["run_dir"] / "history.csv").read_text().splitlines()]
    assert len(rows) == len(expected) == 3 and rows[:2] == expected[:2]
    # The split epoch's training metrics cover only its second part; validation is over the same weights.
    val = [i for i, name in enumerate(rows[0]) if name.startswith("val_")]
    assert [rows[2][i] for i in val] == [expected[2][i] for i in val]

    ours, theirs = weight_arrays(run_dir / "best.weights.h5"), weight_arrays(reference["run_dir"] / "best.weights.h5")
    assert ours.keys() == theirs.keys()
    for name, array in theirs.items():
        np.testing.assert_array_equal(ours[name], array, err_msg=name)


if __name__ == "__main__":
    sys.exit(child(sys.argv[1:]))
