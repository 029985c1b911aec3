"""Crash-safe run state: checkpoints that are complete or absent, and a resume that picks the newest.

A checkpoint is a directory `backup/epoch-NNNN` (or `epoch-NNNN-step-SSSS` when a SIGTERM stopped the run
mid-epoch) holding the weights with the optimizer state, the random-generator states (dropout), and
state.json (history, best score, early-stopping and plateau counters). It is written into a staging
directory and renamed into place, so a kill at any moment leaves either the whole checkpoint or none.
With the seeded input stream, a resumed deterministic run repeats an uninterrupted one exactly.

A disk that fills up during a write (the free-space check passed, then something else took the space) ends the
run with a one-line UserError, whichever library reported it; the half-written files are removed.
"""

import csv
import io
import json
import math
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
from keras.src.backend.common import global_state  # Keras 3.15's private modules: see save_weights
from keras.src.saving import saving_lib

from kerasline.config import MAXIMISED_MONITORS
from kerasline.files import (
    STAGING_PREFIX,
    ensure_free_space,
    remove_stale_staging,
    staging_dir,
    write_text_atomic,
    written_or_disk_full,
)
from kerasline.training.curves import plot_learning_curves
from kerasline.training.ema import averaged, averages

CHECKPOINT_NAME = re.compile(r"^epoch-(\d{4,})(?:-step-(\d{4,}))?$")
CALLBACK_STATE = {  # what a callback counts between epochs, so a resumed run stops when the uninterrupted would
    "EarlyStopping": ("wait", "best", "best_epoch"),
    "ReduceLROnPlateau": ("wait", "best", "cooldown_counter"),
}


@dataclass
class ResumePoint:
    epoch: int = 0  # epochs completed
    step: int = 0  # batches completed in the epoch after them (a mid-epoch checkpoint)
    finished: bool = False  # training itself ended (all epochs, or early stopping) before the run was closed
    history: list = field(default_factory=list)
    best: float | None = None
    callbacks: dict = field(default_factory=dict)
    path: Path | None = None


def restore(run_dir: Path, model: keras.Model, sweep: bool = True) -> ResumePoint:
    """Loads the newest complete checkpoint into `model` (compiled, in its strategy's scope).

    sweep: remove staging left by killed writers; only the run's writer may (another host cannot see its pids).
    """
    backup = run_dir / "backup"
    if sweep:
        remove_stale_staging(backup)
        remove_stale_staging(run_dir)
    path = newest_checkpoint(backup)
    if path is None:
        return ResumePoint()
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(path / "model.weights.h5")
    with np.load(path / "rng.npz", allow_pickle=False) as rng:
        for variable, name in zip(rng_variables(model), sorted(rng.files, key=lambda n: int(n[4:])), strict=True):
            variable.assign(rng[name])
    state = json.loads((path / "state.json").read_text())
    return ResumePoint(path=path, **state)


def newest_checkpoint(backup: Path) -> Path | None:
    names = [CHECKPOINT_NAME.match(p.name) for p in backup.iterdir()] if backup.is_dir() else []
    positions = {(int(m[1]), int(m[2] or 0)): backup / m[0] for m in names if m}
    return positions[max(positions)] if positions else None


def rng_variables(model: keras.Model) -> list:
    """Random-generator states: in `model.variables` but not in the weights `save_weights` writes."""
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


class RunCheckpoint(keras.callbacks.Callback):
    """Writes a checkpoint after every epoch, best.weights.h5 and history.csv; on SIGTERM, one after the current
    batch (or at the epoch's end, if that batch is its last); and, asked once training stops, learning_curves.png.

    Must come last among the callbacks: it saves the counters the others updated for the epoch, and it
    restores them after their own on_train_begin reset them. A non-finite loss stops training and is
    never saved, so the newest checkpoint is always the last good one.
    """

    def __init__(self, run_dir: Path, monitor: str | None, resume: ResumePoint, stateful: list, total_epochs: int):
        super().__init__()
        self.run_dir, self.backup, self.monitor = run_dir, run_dir / "backup", monitor
        self.history, self.best, self.states = list(resume.history), resume.best, dict(resume.callbacks)
        self.stateful, self.total_epochs = stateful, total_epochs
        self.step_offset = resume.step  # batches of the current epoch done before this fit() began
        self.epoch = resume.epoch
        self.diverged: str | None = None  # where and how, for the error message
        self.preempted = False  # set by the SIGTERM handler
        self.preempted_at: Path | None = None

    def on_train_begin(self, logs=None):
        for callback in self.stateful:
            for attr, value in self.states.get(type(callback).__name__, {}).items():
                setattr(callback, attr, value)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        step = self.step_offset + batch + 1
        loss = float(logs["loss"])
        if not math.isfinite(loss):
            self.diverged = f"at epoch {self.epoch + 1}, step {step}: loss is {loss}"
            self.model.stop_training = True
        elif self.preempted and self.preempted_at is None and batch + 1 < self.params["steps"]:
            # The epoch's last batch is left to on_epoch_end: a checkpoint at its final step would resume into a
            # fit of 0 steps, and Keras 3.15 takes steps_per_epoch=0 as "until the data ends" and trains a step.
            self.preempted_at = self._save(self.epoch, step, finished=False)
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self.step_offset = 0
        if not self.diverged and not all(np.isfinite(w).all() for w in self.model.get_weights()):
            # NaN can hide from the loss (max-pooling drops it) while it poisons weights or BatchNorm statistics.
            self.diverged = f"in epoch {epoch + 1}: weights became NaN or Inf while the loss stayed finite"
            self.model.stop_training = True
        if self.diverged or self.preempted_at:
            return  # a partial or poisoned epoch: nothing to record
        logs = {name: float(value) for name, value in (logs or {}).items()}
        self.history.append({"epoch": epoch, **logs})
        self.states = {
            type(c).__name__: {a: _plain(getattr(c, a)) for a in CALLBACK_STATE[type(c).__name__]}
            for c in self.stateful
        }
        score = float(epoch) if self.monitor is None else logs.get(self.monitor)
        improved = score is not None and math.isfinite(score) and self._improves(score)
        if improved:
            self.best = score
        # Without training.ema the best weights are the checkpoint's own, so the checkpoint's weights file is copied,
        # not saved twice: Keras 3.15's save_weights walks the whole model (50 ms of a 0.6 s transformer epoch).
        copy_best = improved and not averages(self.model)
        if improved and not copy_best:
            self._save_best()  # before the checkpoint: a kill in between repeats this epoch, which saves it again
        finished = self.model.stop_training or epoch + 1 == self.total_epochs
        saved = self._save(epoch + 1, 0, finished=finished, best=copy_best)
        if self.preempted:  # SIGTERM came during the last batch or validation: stop at this epoch's checkpoint
            self.preempted_at, self.model.stop_training = saved, True

        def write() -> None:
            write_text_atomic(self.run_dir / "history.csv", _csv(self.history))

        written_or_disk_full(write, "history.csv", self.run_dir, f"the checkpoint {saved} is kept")

    def draw_learning_curves(self) -> None:
        """learning_curves.png from the history so far; train() calls it once training stops, however it stops
        (but SIGKILL), rather than every epoch: matplotlib took 0.23 s of the default's ~3 s epochs (cProfile,
        2026-11-27). TensorBoard shows the curves while a run trains."""
        if not self.history:
            return
        try:
            plot_learning_curves(self.run_dir / "learning_curves.png", self.history, self.monitor)
        except OSError as e:  # a picture never fails a run, nor hides why it stopped: history.csv has the numbers
            print(f"warning: {self.run_dir / 'learning_curves.png'} not drawn: {e.strerror or e}", file=sys.stderr)

    def _improves(self, score: float) -> bool:
        if self.best is None or self.monitor is None:  # no monitor: the last epoch is the best
            return True
        return score > self.best if self.monitor in MAXIMISED_MONITORS else score < self.best

    def _save_best(self, copy_of: Path | None = None) -> None:
        """best.weights.h5: the model's weights (under training.ema, their averages), or a copy of `copy_of`, a
        weights file saved from the model as it is now."""
        staging = self.run_dir / f"{STAGING_PREFIX}{os.getpid()}-best.weights.h5"
        ensure_free_space(self.run_dir, _weights_bytes(self.model), "the best weights")

        def write() -> None:
            if copy_of:
                shutil.copyfile(copy_of, staging)
            else:
                with averaged(self.model):  # training.ema: the best weights are the averages (training/ema.py)
                    save_weights(self.model, staging)
            os.replace(staging, self.run_dir / "best.weights.h5")

        try:
            written_or_disk_full(write, "the best weights", self.run_dir, "the previous best.weights.h5 is kept")
        finally:
            staging.unlink(missing_ok=True)

    def _save(self, epoch: int, step: int, finished: bool, best: bool = False) -> Path:
        """The checkpoint; with `best`, best.weights.h5 too, copied from it before it is committed (a kill in between
        repeats this epoch, which saves both again)."""
        ensure_free_space(self.backup, _weights_bytes(self.model), "a checkpoint")
        staging = staging_dir(self.backup)
        target = self.backup / (f"epoch-{epoch:04d}" + (f"-step-{step:04d}" if step else ""))

        def write() -> None:
            save_weights(self.model, staging / "model.weights.h5")
            if best:
                self._save_best(copy_of=staging / "model.weights.h5")
            rng = {f"rng_{i}": np.asarray(v) for i, v in enumerate(rng_variables(self.model))}
            np.savez(staging / "rng.npz", **rng)
            state = {"epoch": epoch, "step": step, "finished": finished, "history": self.history}
            state |= {"best": self.best, "callbacks": self.states}
            (staging / "state.json").write_text(json.dumps(state))
            os.rename(staging, target)  # the commit point

        try:
            kept = newest_checkpoint(self.backup)
            resume = f"the newest complete checkpoint is {kept.name}" if kept else "there is no complete checkpoint"
            written_or_disk_full(write, f"the checkpoint {target.name}", self.backup, f"it was not kept; {resume}")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        for path in self.backup.iterdir():
            if CHECKPOINT_NAME.match(path.name) and path != target:
                shutil.rmtree(path, ignore_errors=True)
        return target


# What Keras 3.15's saving walks past on each object of these kinds (saving_lib.get_attr_skipset).
SAVED_KINDS = ("Operation", "Layer", "Functional", "Sequential", "Metric", "Optimizer", "Loss")


def save_weights(model: keras.Model, path: Path) -> None:
    """model.save_weights, with Keras's own cache of the attribute names its walk skips made to hit. Keras 3.15's
    saving_lib.get_attr_skipset stores each set as `saving_attr_skipset_<kind>` but looks it up as
    `saving_attr_skiplist_<kind>`, so every save builds reference Layers and an Optimizer anew to list their
    attributes: 13 of the BiLSTM's 33 ms a save (every epoch), 16 of the transformer's 55. The sets depend on the
    kind alone; stored under the name it reads, the files are the same, byte for byte in every dataset."""
    for kind in SAVED_KINDS:
        if global_state.get_global_attribute(f"saving_attr_skiplist_{kind}") is None:  # clear_session empties it
            global_state.set_global_attribute(f"saving_attr_skiplist_{kind}", saving_lib.get_attr_skipset(kind))
    model.save_weights(path)


def _weights_bytes(model: keras.Model) -> int:
    """Weights plus optimizer slots, as written by save_weights."""
    variables = list(model.weights) + list(model.optimizer.variables)
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)


def _plain(value):
    """Callback counters as JSON values (numpy scalars and infinities included)."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _csv(rows: list[dict]) -> str:
    names = list(dict.fromkeys(name for row in rows for name in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=names)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
