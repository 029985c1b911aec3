"""Runs `kerasline` with a fault injected: the process SIGKILLs itself at a chosen moment.

    python tests/reliability/faulty.py FAULT kerasline-args...

FAULT is one of
    mid-epoch:E:S        after step S of epoch E (0-based epochs, 1-based steps)
    sigterm:E:S          not a kill: the process sends itself SIGTERM as step S of epoch E ends, so the
                         preemption checkpoint lands at a chosen step whatever the machine's speed
    between-epochs:E     when epoch E begins, after epoch E-1's checkpoint is committed
    checkpoint-write:N   inside the N-th checkpoint write, after its weights file, before its commit
    checkpoint-middle:N  half-way through the N-th checkpoint's weights file: after its first MIDDLE arrays are
                         written and flushed, the rest not (the out-of-memory killer during a large write)
    hold-checkpoint:N    not a kill: inside the N-th checkpoint write, after its weights file, creates the file
                         named by $FAULTY_MARKER and waits there until something ends the process
    export-write         inside the export, after the SavedModel is staged, before ONNX and publishing
    nan-weights:E        not a kill: one weight becomes NaN at the end of epoch E (0-based), after its last step,
                         so the loss stays finite and only the weights check can see it, whatever kernels run
    disk-full:checkpoint:N
                         not a kill: right after the N-th checkpoint's free-space check passed, a file `ballast` at
                         the root of the tmpfs holding the run takes all its free space but BALLAST_LEAVES bytes, as
                         another process filling the disk would: the write that follows runs out of space for real
    disk-full:export     the same right after the export's free-space check, leaving nothing free

Counts (N) are per process: a resumed run's first checkpoint write is its number 1. disk-full refuses to fill
anything but a tmpfs.
"""

import os
import shutil
import signal
import sys
import time
from pathlib import Path

from kerasline.cli import _import_tensorflow_quietly

_import_tensorflow_quietly()  # before Keras imports it: stderr holds what the CLI prints, not TF's start-up lines
import keras  # noqa: E402

MIDDLE = 4  # arrays of a checkpoint written before checkpoint-middle kills (the tests' models have over 20)
BALLAST_LEAVES = 64 * 2**10  # free bytes left by disk-full:checkpoint: room for run.json and run.log, not a checkpoint


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def staged(path) -> bool:
    """A checkpoint's staging (backup/.tmp-<pid>-*), on the chief or in another worker's scratch directory."""
    return "/backup/.tmp-" in str(path)


def fill_disk(directory: Path, leave: int) -> Path:
    """Takes the free space of the tmpfs holding `directory`, but `leave` bytes, with a file `ballast` at its root."""
    root = Path(directory).resolve()
    while not os.path.ismount(root):
        root = root.parent
    kinds = {fields[1]: fields[2] for fields in map(str.split, Path("/proc/mounts").read_text().splitlines())}
    if kinds.get(str(root)) != "tmpfs":
        raise SystemExit(f"faulty: disk-full fills a tmpfs only; {root} is {kinds.get(str(root))}")
    ballast = root / "ballast"
    with open(ballast, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, max(1, shutil.disk_usage(root).free - leave))
    return ballast


def install(fault: str) -> None:
    kind, *args = fault.split(":")
    numbers = [int(a) for a in args if a.isdigit()]
    if kind in ("mid-epoch", "sigterm", "between-epochs"):
        from kerasline.training.checkpoint import RunCheckpoint

        if kind in ("mid-epoch", "sigterm"):
            original = RunCheckpoint.on_train_batch_end

            def on_train_batch_end(self, batch, logs=None):
                at = (self.epoch, self.step_offset + batch + 1) == tuple(numbers)
                if at and kind == "sigterm":
                    os.kill(os.getpid(), signal.SIGTERM)  # Python runs the handler before the next line
                original(self, batch, logs)
                if at and kind == "mid-epoch":
                    die()

            RunCheckpoint.on_train_batch_end = on_train_batch_end
        else:
            original = RunCheckpoint.on_epoch_begin

            def on_epoch_begin(self, epoch, logs=None):
                if epoch == numbers[0]:
                    die()
                original(self, epoch, logs)

            RunCheckpoint.on_epoch_begin = on_epoch_begin
    elif kind == "checkpoint-write":
        original_save = keras.Model.save_weights
        writes = []

        def save_weights(self, filepath, *a, **kw):
            original_save(self, filepath, *a, **kw)
            if staged(filepath):
                writes.append(filepath)
                if len(writes) == numbers[0]:
                    die()

        keras.Model.save_weights = save_weights
    elif kind == "hold-checkpoint":
        original_save = keras.Model.save_weights
        saves = []

        def save_weights(self, filepath, *a, **kw):
            original_save(self, filepath, *a, **kw)
            if staged(filepath):
                saves.append(filepath)
                if len(saves) == numbers[0]:
                    Path(os.environ["FAULTY_MARKER"]).touch()
                    while True:  # until a signal ends the process
                        time.sleep(1)

        keras.Model.save_weights = save_weights
    elif kind == "checkpoint-middle":
        import h5py

        original_setitem = h5py.Group.__setitem__
        files, arrays = [], []

        def __setitem__(self, name, value):
            original_setitem(self, name, value)
            filename = self.file.filename
            if staged(filename):
                if filename not in files:
                    files.append(filename)
                if len(files) == numbers[0]:
                    arrays.append(name)
                    if len(arrays) == MIDDLE:
                        self.file.flush()  # what is written is on disk; the rest never will be
                        die()

        h5py.Group.__setitem__ = __setitem__
    elif kind == "disk-full":
        where, *count = args
        if where == "checkpoint":
            import kerasline.training.checkpoint as module
        elif where == "export":
            import kerasline.export.publish as module
        else:
            raise SystemExit(f"unknown fault {fault!r}")
        original_check = module.ensure_free_space
        checks = []

        def ensure_free_space(directory, needed, what):
            original_check(directory, needed, what)
            if where == "export" or what == "a checkpoint":
                checks.append(directory)
                if where == "export" or len(checks) == int(count[0]):
                    fill_disk(directory, BALLAST_LEAVES if where == "checkpoint" else 0)

        module.ensure_free_space = ensure_free_space
    elif kind == "nan-weights":
        import numpy as np

        from kerasline.training.checkpoint import RunCheckpoint

        original = RunCheckpoint.on_epoch_end

        def on_epoch_end(self, epoch, logs=None):
            if epoch == numbers[0]:
                weight = self.model.weights[0]
                weight.assign(np.full(weight.shape, np.nan, weight.dtype))
            original(self, epoch, logs)

        RunCheckpoint.on_epoch_end = on_epoch_end
    elif kind == "export-write":
        import kerasline.export.publish

        kerasline.export.publish.write_onnx = lambda *a, **kw: die()
    else:
        raise SystemExit(f"unknown fault {fault!r}")


if __name__ == "__main__":
    install(sys.argv[1])
    from kerasline.cli import main

    sys.exit(main(sys.argv[2:]))
