"""training.ema (training/optim.py, training/ema.py): validation, best.weights.h5 and the export on the moving average
of the weights, training on the raw weights; a preempted run resumes both exactly.

The runs train in child processes, with op determinism on (it cannot be undone in this process): this file run as a
script (`python tests/test_ema.py EXPERIMENT OUT [sigterm=E:S]`) trains like `kerasline train` and writes OUT.npz:
after every epoch the weights with each trainable one's average in its place (`averaged{epoch}`) and the raw
weights (`raw{epoch}`), and when training ends the raw weights and the averages (`end`, `average_end`).
"""

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

# conftest.py's tiny experiment, deterministic, with training.ema = 0.9: over its 12 steps an epoch, the averages
# lag the weights visibly.
EMA_TINY = """
name = "tiny"
seed = 7
deterministic = true
runs_dir = "{root}/runs"

[data]
source = "samples"
name = "mnist_8k"
limit = 480
batch_size = 32

[data.augment]
rotation = 0.03
translation = 0.1

[model]
name = "cnn"
filters = [8]
convs_per_block = 1
dense_units = 16

[training]
epochs = 2
ema = 0.9

[export]
dir = "{root}/exports"
"""


def ema_experiment(folder: Path) -> Path:
    path = folder / "tiny.toml"
    path.write_text(EMA_TINY.format(root=folder))
    return path


# --- the child process ----------------------------------------------------------------------------------------------


class Record(keras.callbacks.Callback):
    def __init__(self, out: Path):
        super().__init__()
        self.out, self.arrays = out, {}

    def note(self, label: str, arrays) -> None:
        self.arrays |= {f"{label}/{i}": keras.ops.convert_to_numpy(a) for i, a in enumerate(arrays)}

    def on_epoch_end(self, epoch, logs=None):
        optimizer = self.model.optimizer
        average = dict(
            zip(map(id, optimizer._trainable_variables), optimizer._model_variables_moving_average, strict=True)
        )
        self.note(f"averaged{epoch}", [average.get(id(w), w) for w in self.model.weights])
        self.note(f"raw{epoch}", self.model.weights)

    def on_train_end(self, logs=None):
        self.note("end", self.model.weights)
        self.note("average_end", self.model.optimizer._model_variables_moving_average)
        np.savez(self.out, **self.arrays)


def child(experiment: str, out: str, *options: str) -> int:
    from test_pretrained import SigtermAt

    from kerasline.config import load_experiment
    from kerasline.errors import Preempted
    from kerasline.training.fit import train

    callbacks = [Record(Path(out))]
    for option in options:  # sigterm=E:S
        callbacks.append(SigtermAt(*map(int, option.removeprefix("sigterm=").split(":"))))
    try:
        train(load_experiment(experiment), callbacks)
    except Preempted:
        return 128 + signal.SIGTERM
    return 0


def run_child(experiment: Path, out: Path, *options: str) -> subprocess.CompletedProcess:
    command = [sys.executable, __file__, str(experiment), str(out), *options]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    )


def arrays(path: Path, label: str) -> list[np.ndarray]:
    with np.load(path) as saved:
        return [saved[f"{label}/{i}"] for i in range(sum(name.startswith(f"{label}/") for name in saved.files))]


# --- the tests ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("ema")
    experiment = ema_experiment(folder)
    proc = run_child(experiment, folder / "record.npz")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = folder / "runs" / "tiny" / "run-001"
    history = list(csv.DictReader((run_dir / "history.csv").open()))
    from kerasline.config import load_experiment

    cfg = load_experiment(str(experiment))
    return {"cfg": cfg, "run_dir": run_dir, "record": folder / "record.npz", "history": history}


def fresh_model(cfg) -> keras.Model:
    from kerasline.training.fit import compile_model

    return compile_model(cfg, steps_per_epoch=1)


def best_epoch(history: list[dict]) -> int:
    return int(min(history, key=lambda row: float(row["val_loss"]))["epoch"])


def test_validation_is_on_the_averages(uninterrupted):
    from kerasline.training.tasks import task_for

    cfg, record = uninterrupted["cfg"], uninterrupted["record"]
    validation = task_for(cfg).build_inputs().validation
    model = fresh_model(cfg)
    for row in uninterrupted["history"]:
        epoch = int(row["epoch"])
        model.set_weights(arrays(record, f"averaged{epoch}"))
        averaged = model.evaluate(validation, verbose=0, return_dict=True)["loss"]
        model.set_weights(arrays(record, f"raw{epoch}"))
        raw = model.evaluate(validation, verbose=0, return_dict=True)["loss"]
        assert float(row["val_loss"]) == pytest.approx(averaged, rel=1e-5)
        assert float(row["val_loss"]) != pytest.approx(raw, rel=1e-4)


def test_best_weights_are_the_averages_and_training_ends_on_the_raw_weights(uninterrupted):
    from kerasline.training.fit import load_best

    record, epochs = uninterrupted["record"], len(uninterrupted["history"])
    model = fresh_model(uninterrupted["cfg"])
    load_best(model, uninterrupted["run_dir"])  # what the test metrics, the report and the export load
    best = best_epoch(uninterrupted["history"])
    averaged, raw = arrays(record, f"averaged{best}"), arrays(record, f"raw{best}")
    for saved, expected in zip(model.get_weights(), averaged, strict=True):
        np.testing.assert_array_equal(saved, expected)
    assert any(not np.array_equal(a, r) for a, r in zip(averaged, raw, strict=True))
    # Keras 3.15 would end fit() with the averages in the model (finalize_variable_values): the run keeps the raw.
    for end, last in zip(arrays(record, "end"), arrays(record, f"raw{epochs - 1}"), strict=True):
        np.testing.assert_array_equal(end, last)


def test_the_export_is_built_from_the_averages(uninterrupted):
    """export_run builds every signature from task.export_model(best.weights.h5), and its parity check holds the
    SavedModel and ONNX outputs to that model's."""
    from kerasline.training.tasks import task_for

    cfg, record, best = uninterrupted["cfg"], uninterrupted["record"], best_epoch(uninterrupted["history"])
    exported = task_for(cfg).export_model(uninterrupted["run_dir"] / "best.weights.h5")
    images = task_for(cfg).sample_inputs()["image"].astype(np.float32)
    model = fresh_model(cfg)
    model.set_weights(arrays(record, f"averaged{best}"))
    np.testing.assert_allclose(exported.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)
    model.set_weights(arrays(record, f"raw{best}"))
    assert not np.allclose(exported.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)


def test_a_preempted_run_resumes_its_averages_exactly(uninterrupted, tmp_path):
    from kerasline.training.checkpoint import restore
    from kerasline.training.ema import averages

    experiment = ema_experiment(tmp_path)
    run_dir = tmp_path / "runs" / "tiny" / "run-001"
    preempted = run_child(experiment, tmp_path / "preempted.npz", "sigterm=0:5")  # epoch 1 of 2, after step 5
    assert preempted.returncode == 128 + signal.SIGTERM, preempted.stderr[-3000:]

    model = fresh_model(uninterrupted["cfg"])
    assert restore(run_dir, model, sweep=False).step == 5
    for weight, saved in zip(model.weights, arrays(tmp_path / "preempted.npz", "end"), strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(weight), saved)
    restored = [keras.ops.convert_to_numpy(average) for _, average in averages(model)]
    for average, saved in zip(restored, arrays(tmp_path / "preempted.npz", "average_end"), strict=True):
        np.testing.assert_array_equal(average, saved)

    resumed = run_child(experiment, tmp_path / "resumed.npz")  # the rest of epoch 1 in one fit(), epoch 2 in another
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for label in ("end", "average_end"):
        for got, expected in zip(
            arrays(tmp_path / "resumed.npz", label), arrays(uninterrupted["record"], label), strict=True
        ):
            np.testing.assert_array_equal(got, expected)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics == json.loads((uninterrupted["run_dir"] / "metrics.json").read_text())


@pytest.mark.parametrize(
    "experiment, override, expected",
    [
        ("mnist_cnn", "training.ema=1.5", "training.ema: input should be less than 1"),
        ("mnist_cnn", "training.ema=0", "training.ema: input should be greater than 0"),
        ("digits_dcgan", "training.ema=0.999", "training.ema: dcgan's optimizers are its own; use model.generator_ema"),
    ],
)
def test_a_bad_ema_is_refused_in_one_line(experiment, override, expected):
    from kerasline.config import load_experiment
    from kerasline.errors import ConfigError

    assert load_experiment("mnist_cnn", ["training.ema=0.999"]).training.ema == 0.999
    with pytest.raises(ConfigError) as err:
        load_experiment(experiment, [override])
    assert expected in str(err.value) and "\n" not in str(err.value)


if __name__ == "__main__":
    sys.exit(child(*sys.argv[1:]))
