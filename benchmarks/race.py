"""One lane of the race (bench item 10): one whole training run, in this fresh process.

    python -m benchmarks.race ours|keras|torch EXPERIMENT EPOCHS [key=value ...]

prints one JSON line: the run's wall time (data, model, every epoch with its validation, the test pass; imports
excluded), per-epoch wall times and the test accuracy. `ours` is `training.fit.train` itself, the path
`make train` takes (pipeline, callbacks, strategy, checkpoints); `keras` is plain Keras, `model.fit` on numpy
arrays of the same splits (the same model and optimiser from `compile_model`; no augmentation, no callbacks),
validation every epoch, `model.evaluate` on test; `torch` is a plain eager PyTorch loop over the same splits with
the same architecture, batch size, optimiser and schedule (benchmarks/torch_models.py).
Each run gets its own process so no framework's thread pools or caches leak into another's timing.
Levers that must act before TensorFlow starts (TF_ENABLE_ONEDNN_OPTS) come from the caller's environment: kerasline
turns oneDNN on for every x86 CPU unless it is set, and perf.race_run gives the plain Keras lane TensorFlow's own
choice for this CPU, as a plain script gets it. The JSON line says which kernels each TensorFlow lane ran.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# PyTorch's OpenMP workers spin while they wait by default; with other processes on the cores that made its
# convnet step ~15x slower here (1.3 s against 79 ms). Passive waiting is PyTorch at its best on a shared machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import EpochTimer, fresh_model, train_default
from kerasline.config import ExperimentConfig, load_experiment
from kerasline.training.tasks import task_for


def ours(cfg: ExperimentConfig) -> dict:
    trained = train_default(cfg)  # the real train() path, with an epoch timer in its callbacks
    return {"wall_s": trained["wall_s"], "epoch_s": trained["epoch_s"], "accuracy": trained["test_metrics"]["accuracy"]}


def arrays(cfg: ExperimentConfig) -> dict:
    splits = task_for(cfg).load_splits()
    out = {}
    for name in ("train", "validation", "test"):
        ds = getattr(splits, name)
        x, y = (t.numpy() for t in ds.batch(1 << 20).get_single_element())
        out[name] = (x, y)
    return out


def keras_side(cfg: ExperimentConfig) -> dict:
    start = time.perf_counter()
    splits = arrays(cfg)
    if cfg.data.input == "image":  # what a plain Keras script feeds: float32 pixels (the model rescales them)
        splits = {name: (x.astype(np.float32), y) for name, (x, y) in splits.items()}
    (x, y), batch = splits["train"], cfg.data.batch_size
    model = fresh_model(cfg, steps_per_epoch=-(-len(y) // batch))
    timer = EpochTimer()
    epochs, validation = cfg.training.epochs, splits["validation"]
    model.fit(x, y, batch_size=batch, epochs=epochs, validation_data=validation, callbacks=[timer], verbose=0)
    test = model.evaluate(*splits["test"], batch_size=batch, return_dict=True, verbose=0)
    return {"wall_s": time.perf_counter() - start, "epoch_s": timer.epoch_s, "accuracy": test["accuracy"]}


def torch_side(cfg: ExperimentConfig) -> dict:
    import torch

    from benchmarks.torch_models import build_torch_model, make_torch_optimizer

    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    splits = {}
    for name, (x, y) in arrays(cfg).items():
        inputs = torch.from_numpy(x)
        # our pipeline casts images to float32 per batch; PyTorch convolutions want channels first
        inputs = inputs.permute(0, 3, 1, 2).float().contiguous() if cfg.data.input == "image" else inputs.long()
        splits[name] = (inputs, torch.from_numpy(y.astype(np.int64)))
    batch, word_dropout = cfg.data.batch_size, cfg.data.augment.word_dropout
    steps = -(-len(splits["train"][1]) // batch)
    model = build_torch_model(cfg)
    optimizer, schedule = make_torch_optimizer(cfg, model, steps)
    clipnorm = cfg.training.optimizer.clipnorm
    loss_fn = torch.nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(cfg.seed)

    def accuracy(name: str) -> float:
        model.eval()
        x, y = splits[name]
        with torch.no_grad():
            correct = sum(
                int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum()) for i in range(0, len(y), batch)
            )
        return correct / len(y)

    epoch_s = []
    for _ in range(cfg.training.epochs):
        began = time.perf_counter()
        model.train()
        x, y = splits["train"]
        order = torch.randperm(len(y), generator=generator)
        for i in range(0, len(y), batch):
            index = order[i : i + batch]
            inputs = x[index]
            if word_dropout:
                inputs = torch.where(torch.rand(inputs.shape, generator=generator) < word_dropout, 0, inputs)
            loss = loss_fn(model(inputs), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clipnorm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clipnorm)
            optimizer.step()
            if schedule:
                schedule.step()
        accuracy("validation")
        epoch_s.append(time.perf_counter() - began)
    test_accuracy = accuracy("test")
    return {"wall_s": time.perf_counter() - start, "epoch_s": epoch_s, "accuracy": test_accuracy}


def set_threads(side: str) -> None:
    """KERASLINE_BENCH_THREADS="intra,inter" (the thread lever): both frameworks' pools, before any op runs."""
    setting = os.environ.get("KERASLINE_BENCH_THREADS")
    if not setting:
        return
    intra, inter = (int(n) for n in setting.split(","))
    if side == "torch":
        import torch

        torch.set_num_threads(intra)
        torch.set_num_interop_threads(inter)
    else:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)


def onednn_enabled() -> bool:
    """Whether this process's TensorFlow runs its oneDNN kernels (what TensorFlow's own tests ask, TF 2.21)."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def main(argv: list[str]) -> int:
    side, experiment, epochs, *overrides = argv
    set_threads(side)
    with tempfile.TemporaryDirectory(prefix="kerasline-race-") as tmp:
        redirect = [f"runs_dir={Path(tmp) / 'runs'}", f"export.dir={Path(tmp) / 'exports'}"]
        cfg = load_experiment(experiment, [*redirect, f"training.epochs={epochs}", *overrides])
        result = {"ours": ours, "keras": keras_side, "torch": torch_side}[side](cfg)
    if side != "torch":
        result["onednn"] = onednn_enabled()
    print(json.dumps({"side": side, "experiment": experiment, "overrides": overrides, **result}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
