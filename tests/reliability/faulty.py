"""Runs `kerasline` with a fault injected: the process SIGKILLs itself at a chosen moment.

    python tests/reliability/faulty.py FAULT kerasline-args...

FAULT is one of
    mid-epoch:E:S        after step S of epoch E (0-based epochs, 1-based steps)
    between-epochs:E     when epoch E begins, after epoch E-1's checkpoint is committed
    checkpoint-write:N   inside the N-th checkpoint write, after its weights file, before its commit
    export-write         inside the export, after the SavedModel is staged, before ONNX and publishing
    inf-batch:G          not a kill: the pixels of global training batch G (0-based) become +inf
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
        from training.checkpoint import RunCheckpoint

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
    elif kind == "inf-batch":
        import tensorflow as tf

        import pipelines.datasets

        make_augment = pipelines.datasets.make_augment

        def poisoned(cfg):
            augment = make_augment(cfg)
            return lambda images, seed: tf.where(seed[1] == numbers[0], float("inf"), augment(images, seed))

        pipelines.datasets.make_augment = poisoned
    elif kind == "export-write":
        import export.publish

        export.publish.write_onnx = lambda *a, **kw: die()
    else:
        raise SystemExit(f"unknown fault {fault!r}")


if __name__ == "__main__":
    install(sys.argv[1])
    from kerasline.cli import main

    sys.exit(main(sys.argv[2:]))
