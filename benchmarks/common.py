"""What the benchmark items share: timers, the timed `train` run, item 1's pipeline measurement and its figure.

benchmarks/run.py orchestrates the items; the items (generative, zoo, perf, race, serving) import from here and
from benchmarks/figures.py, never from run.py.
"""

import statistics
import time
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from benchmarks.figures import Figure, interleaved, spread
from kerasline.config import ExperimentConfig
from kerasline.training.fit import compile_model, setup, train
from kerasline.training.tasks import build_inputs

TABLE_HEADER = ("figure", "value", "target", "met?")
PIPELINE_ROUNDS = 4  # blocks of each feed in pipeline_overhead, taken A B B A A B B A


class EpochTimer(keras.callbacks.Callback):
    """Per-epoch wall times: the training steps alone, and the whole epoch cycle.

    An epoch's cycle runs from its on_epoch_begin to the next one (or to on_train_end), so it includes
    every callback's end-of-epoch work wherever this timer sits in the list. Steps end at validation
    (on_test_begin) or, without validation, at on_epoch_end.
    """

    def __init__(self) -> None:
        super().__init__()
        self.epoch_s: list[float] = []
        self.steps_s: list[float] = []
        self._begin: float | None = None
        self._steps_end: float | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        now = time.perf_counter()
        self._close(now)
        self._begin, self._steps_end = now, None

    def on_test_begin(self, logs: dict | None = None) -> None:
        if self._begin is not None and self._steps_end is None:
            self._steps_end = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.on_test_begin()

    def on_train_end(self, logs: dict | None = None) -> None:
        self._close(time.perf_counter())

    def _close(self, now: float) -> None:
        if self._begin is not None:
            self.epoch_s.append(now - self._begin)
            self.steps_s.append(self._steps_end - self._begin)
            self._begin = None


def steady(times: list[float]) -> float:
    """Median over the epochs after the first, which pays for tracing and cache filling."""
    return statistics.median(times[1:] if len(times) > 1 else times)


def fresh_model(cfg: ExperimentConfig, steps_per_epoch: int) -> keras.Model:
    """The same architecture, optimiser and seed as `train` builds."""
    with setup(cfg).scope():
        return compile_model(cfg, steps_per_epoch)


def train_default(cfg: ExperimentConfig) -> dict:
    """Item 4 (and the "ours" side of item 2): the full `train` run, with an epoch timer added to its callbacks."""
    timer = EpochTimer()
    # train() runs extra callbacks first: timing begin-to-begin cycles from the front of the list still counts
    # every other callback's end-of-epoch work.
    start = time.perf_counter()
    result = train(cfg, callbacks=[timer])
    wall_s = time.perf_counter() - start
    return {
        "run_dir": result.run_dir,
        "epochs_run": len(timer.epoch_s),  # this run is fresh (a new runs_dir), so every epoch ran here
        "wall_s": wall_s,
        "test_metrics": result.metrics,
        "epoch_s": timer.epoch_s,
        "steps_s": timer.steps_s,
    }


def pipeline_overhead(cfg: ExperimentConfig, epochs: int) -> dict:
    """Item 1: two identical fresh models, one fed by the pipeline, one by the same batches from memory.

    Each feed runs as train() runs it, one fit over a continuous multi-epoch stream. The feeds take turns
    in blocks of `epochs`, A B B A A B B A (figures.interleaved), so a trend in machine load falls on both; each
    block's first epoch (tracing, iterator and cache start-up) is dropped. Four blocks each, not two: on 2 vCPUs of
    an EPYC Zen 4 (2026-12-07) slow spells of a few seconds made one whole block 1.5x slower than the others, and
    with two blocks a lane that block was half of the lane's epochs (`digits_vit` read 1.28, then 0.91 with six).
    """
    data = build_inputs(cfg)
    steps = data.steps_per_epoch
    # One epoch of the pipeline's output, augmented once, then replayed from memory in the same batches.
    x, y = (np.concatenate(parts) for parts in zip(*data.train(0, 1).as_numpy_iterator(), strict=True))
    memory = tf.data.Dataset.from_tensor_slices((x, y)).batch(cfg.data.batch_size).cache()
    feeds = {
        "pipeline": lambda block: data.train(block * epochs, (block + 1) * epochs),
        "in_memory": lambda block: memory.repeat(epochs).prefetch(tf.data.AUTOTUNE),
    }
    models = {name: fresh_model(cfg, steps) for name in feeds}
    epoch_s: dict[str, list[float]] = {name: [] for name in feeds}
    for block, name in enumerate(interleaved(list(feeds), rounds=PIPELINE_ROUNDS)):
        timer = EpochTimer()
        feed = feeds[name](block)
        models[name].fit(feed, steps_per_epoch=steps, epochs=epochs, callbacks=[timer], shuffle=False, verbose=0)
        epoch_s[name] += timer.steps_s[1:]
    step_ms = {name: 1000 * statistics.median(times) / steps for name, times in epoch_s.items()}
    return {
        "steps_per_epoch": steps,
        "epochs_per_block": epochs,
        "pipeline_step_ms": step_ms["pipeline"],
        "in_memory_step_ms": step_ms["in_memory"],
        "ratio": step_ms["pipeline"] / step_ms["in_memory"],
        "pipeline_epoch_s": epoch_s["pipeline"],
        "in_memory_epoch_s": epoch_s["in_memory"],
    }


def overhead_figure(what: str, overhead: dict) -> Figure:
    """Item 1's figure (and item 11's): the median step time fed by the pipeline against the same batches from
    memory, target ≤ 1.05, with the range over the measured epochs."""
    per_step = {
        name: spread([1000 * t / overhead["steps_per_epoch"] for t in overhead[f"{name}_epoch_s"]])
        for name in ("pipeline", "in_memory")
    }
    return Figure(
        f"{what}: step time, pipeline vs the same batches in memory",
        per_step["pipeline"][0],
        "ms/step",
        baseline=per_step["in_memory"][0],
        target="<= 1.05",
        value_range=per_step["pipeline"][1],
        baseline_range=per_step["in_memory"][1],
        runs=len(overhead["pipeline_epoch_s"]),
    )


def format_table(rows: Sequence[tuple[str, str, str, str]]) -> str:
    """(figure, value, target, met?) rows under their header, in left-aligned columns."""
    lines = [TABLE_HEADER, *rows]
    widths = [max(len(row[i]) for row in lines) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in lines)


def with_marked_section(markdown: str, current: str, markers: tuple[str, str], section: str | None = None) -> str:
    """`markdown` (RESULTS.md as generated) with an item's section, between its `markers`, at the end: `section`
    when given, else the one `current` (the file as it stands) holds, so regenerating the other items keeps it."""
    begin, end = markers

    def split(text: str) -> tuple[str, str]:
        if begin not in text or end not in text:
            return text, ""
        head, rest = text.split(begin, 1)
        block, tail = rest.split(end, 1)
        return head.rstrip("\n") + "\n" + tail.lstrip("\n"), begin + block + end + "\n"

    body, _ = split(markdown)
    section = section if section is not None else split(current)[1]
    return body.rstrip("\n") + "\n\n" + section if section else body
