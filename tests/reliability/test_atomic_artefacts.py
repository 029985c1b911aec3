"""Killed exports publish nothing TF Serving could load; diverged runs keep their last good state."""

import json
import signal

import numpy as np
from helpers import assert_same_weights, run


def test_killed_export_publishes_no_version(experiment):
    path = experiment(epochs=1)
    killed = run(path, fault="export-write")
    assert killed.returncode == -signal.SIGKILL
    exports = path.parent / "exports" / "rel"
    leftovers = list(exports.iterdir())
    assert leftovers and all(p.name.startswith(".tmp-") for p in leftovers)  # staged SavedModel, no version
    assert (leftovers[0] / "saved_model.pb").exists()

    # The run itself finished; exporting it again publishes version 1 and sweeps the dead export's staging.
    again = run(path, command="export")
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(p.name for p in exports.iterdir()) == ["1"]


def test_divergence_keeps_the_last_good_checkpoint_and_exports_nothing(experiment):
    """Weights turned NaN in epoch 2 while its loss stayed finite: only the weights check sees it. Injected into
    the weights themselves, not through the data: whether an inf pixel reaches the loss depends on the CPU's kernels
    (max-pooling hid it on AVX-512 and not on AVX2)."""
    path = experiment(epochs=3)
    diverged = run(path, fault="nan-weights:1")  # the end of epoch 2
    run_dir = path.parent / "runs" / "rel" / "run-001"
    history = (run_dir / "history.csv").read_text().splitlines()
    assert diverged.returncode == 2
    line = diverged.stderr.strip().splitlines()[-1]
    assert line == (
        "error: training diverged in epoch 2: weights became NaN or Inf while the loss stayed finite; "
        "last good checkpoint: runs/rel/run-001/backup/epoch-0001; nothing was exported"
    )
    assert [p.name for p in (run_dir / "backup").iterdir()] == ["epoch-0001"]
    assert len(history) == 2  # header + epoch 1: the diverged epoch is not recorded
    assert not (run_dir / "metrics.json").exists()
    assert not (path.parent / "exports").exists()
    assert_same_weights(run_dir / "best.weights.h5", run_dir / "backup" / "epoch-0001" / "model.weights.h5")
    state = json.loads((run_dir / "backup" / "epoch-0001" / "state.json").read_text())
    assert state["epoch"] == 1 and np.isfinite(state["best"])


def test_a_non_finite_loss_stops_at_its_step_and_is_not_checkpointed(tmp_path):
    import keras

    from kerasline.training.checkpoint import ResumePoint, RunCheckpoint

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    checkpoint = RunCheckpoint(tmp_path, "val_loss", ResumePoint(epoch=4, step=7), [], total_epochs=9)
    checkpoint.set_model(model)
    checkpoint.on_epoch_begin(4)
    checkpoint.on_train_batch_end(0, {"loss": 0.5})
    assert checkpoint.diverged is None and not model.stop_training
    checkpoint.on_train_batch_end(1, {"loss": float("nan")})
    assert checkpoint.diverged == "at epoch 5, step 9: loss is nan"  # resumed at step 7, two batches later
    assert model.stop_training
    checkpoint.on_epoch_end(4, {"loss": float("nan"), "val_loss": float("nan")})
    assert not (tmp_path / "backup").exists() and not (tmp_path / "history.csv").exists()
