"""SIGKILL at any point, rerun the same command: a deterministic run ends exactly as if never interrupted.

The runs here train and test only (`--no-export`): what they compare is written before the export, and
test_real_exhaustion.py resumes a killed run through to its export."""

import json
import re
import signal
import subprocess
import sys
import time

import pytest
from helpers import assert_same_weights, run


def finished(experiment):
    run_dir = experiment.parent / "runs" / "rel" / "run-001"
    return {
        "metrics": json.loads((run_dir / "metrics.json").read_text()),
        "history": (run_dir / "history.csv").read_text(),
        "best": run_dir / "best.weights.h5",
    }


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    from conftest import RELIABLE

    path = tmp_path_factory.mktemp("reference") / "rel.toml"
    path.write_text(RELIABLE.format(deterministic="true", epochs=3))
    proc = run(path, "--no-export")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return finished(path)


@pytest.mark.parametrize(
    "fault, resumed_epoch",
    [
        ("mid-epoch:1:5", 1),  # epoch 2 of 3, step 5 of 10: redone from the start of epoch 2
        ("between-epochs:2", 2),  # epoch 2's checkpoint is committed; epoch 3 not begun
        ("checkpoint-write:2", 1),  # epoch 2's checkpoint is half-written: the newest complete is epoch 1's
    ],
)
def test_killed_deterministic_run_finishes_exactly_like_an_uninterrupted_one(
    experiment, uninterrupted, fault, resumed_epoch
):
    path = experiment(deterministic=True)
    killed = run(path, fault=fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    run_dir = path.parent / "runs" / "rel" / "run-001"
    assert not (run_dir / "metrics.json").exists()

    resumed = run(path, "--no-export")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"run:         runs/rel/run-001 (resumed at epoch {resumed_epoch + 1})" in resumed.stdout
    first_epoch = next(line for line in resumed.stdout.splitlines() if line.startswith("Epoch "))
    assert first_epoch == f"Epoch {resumed_epoch + 1}/3"

    after = finished(path)
    assert after["metrics"] == uninterrupted["metrics"]
    assert after["history"] == uninterrupted["history"]
    assert_same_weights(after["best"], uninterrupted["best"])
    assert not list(run_dir.rglob(".tmp-*"))  # the killed run's staging is gone


def test_sigterm_checkpoints_mid_epoch_and_resumes_exactly(experiment, uninterrupted):
    path = experiment(deterministic=True)
    backup = path.parent / "runs" / "rel" / "run-001" / "backup"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kerasline.cli", "train", path.name],
        cwd=path.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while not (backup / "epoch-0001").is_dir():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith("preempted: stopped by SIGTERM; checkpoint ")
    (checkpoint,) = [p.name for p in backup.iterdir()]
    # After the current batch of epoch 2 or 3; at the epoch's end if that batch was its last, or validation ran.
    assert re.fullmatch(r"epoch-000[12]-step-\d{4}|epoch-000[23]", checkpoint)

    resumed = run(path, "--no-export")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = finished(path)
    assert_same_weights(after["best"], uninterrupted["best"])
    assert after["metrics"] == uninterrupted["metrics"]
    # The split epoch's training metrics cover only its second part; validation is over the same weights.
    rows = [line.split(",") for line in after["history"].splitlines()]
    reference = [line.split(",") for line in uninterrupted["history"].splitlines()]
    assert [r[0] for r in rows] == [r[0] for r in reference]
    val = [i for i, name in enumerate(rows[0]) if name.startswith("val_")]
    assert [[r[i] for i in val] for r in rows] == [[r[i] for i in val] for r in reference]


def test_killed_run_without_determinism_resumes_its_optimizer_and_schedule(experiment):
    import keras

    from kerasline.config import load_experiment
    from kerasline.training.checkpoint import restore
    from kerasline.training.fit import compile_model
    from kerasline.training.optim import learning_rate
    from kerasline.training.tasks import build_inputs

    path = experiment(deterministic=False, epochs=4)
    killed = run(path, fault="between-epochs:2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]

    cfg = load_experiment(str(path))
    steps = build_inputs(cfg).steps_per_epoch
    model = compile_model(cfg, steps)
    point = restore(path.parent / "runs" / "rel" / "run-001", model)
    assert (point.epoch, point.step, len(point.history)) == (2, 0, 2)
    assert int(model.optimizer.iterations) == 2 * steps
    schedule = learning_rate(cfg.training, steps)
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(float(schedule(2 * steps)))

    resumed = run(path, "--no-export")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert next(line for line in resumed.stdout.splitlines() if line.startswith("Epoch ")) == "Epoch 3/4"
    history = (path.parent / "runs" / "rel" / "run-001" / "history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in history[1:]] == ["0", "1", "2", "3"]


def test_sigterm_during_an_epochs_last_batch_stops_at_its_end_and_resumes_exactly(experiment, uninterrupted):
    path = experiment(deterministic=True)
    stopped = run(path, fault="sigterm:1:10")  # epoch 2's last step of 10
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    backup = path.parent / "runs" / "rel" / "run-001" / "backup"
    assert [p.name for p in backup.iterdir()] == ["epoch-0002"]  # the whole epoch, validated

    resumed = run(path, "--no-export")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert next(line for line in resumed.stdout.splitlines() if line.startswith("Epoch ")) == "Epoch 3/3"
    after = finished(path)
    assert after["history"] == uninterrupted["history"]
    assert after["metrics"] == uninterrupted["metrics"]
    assert_same_weights(after["best"], uninterrupted["best"])
