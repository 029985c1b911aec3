"""Runs `kerasline` with a fault injected: the process SIGKILLs itself at a chosen moment.

    python tests/reliability/faulty.py FAULT kerasline-args...

FAULT is one of
    mid-epoch:E:S        after step S of epoch E (0-based epochs, 1-based steps)
    between-epochs:E     when epoch E begins, after epoch E-1's checkpoint is committed
    checkpoint-write:N   inside the N-th checkpoint write, after its weights file, before its commit
    export-write         inside the export, after the SavedModel is staged, before ONNX and publishing
    nan-weights:E        not a kill: one weight becomes NaN at the end of epoch E (0-based), after its last step,
                         so the loss stays finite and only the weights check can see it, whatever kernels run
"""

import os
import signal
import sys

import keras


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install(fault: str) -> None:
    kind, *args = fault.split(":")
    numbers = [int(a) for a in args]
    if kind in ("mid-epoch", "between-epochs"):
        from kerasline.training.checkpoint import RunCheckpoint

        if kind == "mid-epoch":
            original = RunCheckpoint.on_train_batch_end

            def on_train_batch_end(self, batch, logs=None):
                original(self, batch, logs)
                if (self.epoch, self.step_offset + batch + 1) == tuple(numbers):
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
            if "/backup/.tmp-" in str(filepath):
                writes.append(filepath)
                if len(writes) == numbers[0]:
                    die()

        keras.Model.save_weights = save_weights
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
