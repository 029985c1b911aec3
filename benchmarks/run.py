"""The benchmark suite: every figure measured, printed as a table and saved in benchmarks/results.json.

One process measures the items (the race's runs and the scaling settings each get a fresh one); results.json holds
one entry per figure (benchmarks/figures.py), with each section's details.

1. Input-pipeline overhead: step time fed by the task's `build_inputs` (augmentation on) ÷ the same batches from memory.
2. Training throughput against plain Keras `model.fit`: the race's second lane (item 10).
3. Inference latency at batch 1 and 64: Keras, the reloaded SavedModel and ONNX Runtime.
4. The first run: `kerasline train` of the default experiment, start to exported, against the keras-io convnet
   script (8 epochs of plain `model.fit`), both whole fresh processes, interleaved (benchmarks/first_run.py).
5. Tuning: a fixed search budget, then the default and the tuned config trained for the same epochs.
6. Serving: REST and gRPC latency (p50, p99) and throughput with 1, 8 and 32 clients, beside in-process calls.
7. Scaling: steps/s of 1 device against 2 replicas (MirroredStrategy, two logical CPUs), and of 1 worker against
   2 workers on loopback (MultiWorkerMirroredStrategy), at the same global batch.
8. The model zoo: per experiment (briefly trained), export parity and ONNX Runtime ÷ SavedModel latency at batch 1.
9. Generative: GAN digits scored by item 4's classifier, autoencoder reconstruction error (benchmarks/generative.py).
10-12. The performance suite (benchmarks/perf.py): ours, plain Keras and PyTorch raced in fresh processes, 3 rounds
   interleaved; the input pipelines; ONNX Runtime (float32 and int8) against the SavedModel.
13. Segmentation: the U-Net experiment trained by `train`: IoU on held-out slices, throughput, parity, latency.
14. Tabular: the penguins experiments' test accuracy / MAE beside baselines fitted on the same split.
15. Transfer: test accuracy from scratch and from an earlier run (`model.init_from`) with few labels per class.
16. Issue #17's targets, only with `--targets`: each experiment as shipped, its test figure beside its baseline.

Before each section, and before each run of the race, the load gate waits (up to 2 minutes) for the 1-minute load
average, or the CPU time others use, to allow timing, and refuses (exit status 3) if it does not; `--allow-load`
times anyway and marks the figures invalid. The whole run is sized for 45 minutes on 2 idle cores, `--quick` for 8
(benchmarks/README.md).

`python -m benchmarks.run [--quick] [--allow-load] [--out PATH]`
`python -m benchmarks.run --perf [--quick]` runs items 10-12 and the levers (PyTorch: the `bench` extra).
`python -m benchmarks.run --tabular [--quick]` runs item 14 alone; `--transfer [--quick]` item 15, all of it;
`--targets [--quick]` item 16, issue #17's targets (23 minutes on a Zen 5: not part of the whole run).
`python -m benchmarks.run --soak [--quick]` runs the soak item alone (benchmarks/soak.py; never part of the full run).
`python -m benchmarks.run --server URL --grpc HOST:PORT --repo DIR` runs item 6 alone against a running server
(real TF Serving) that serves the repository DIR.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np
import onnxruntime as ort
import tensorflow as tf

from benchmarks import first_run, generative, perf, serving, soak, tabular, targets, transfer, zoo
from benchmarks.common import overhead_figure, pipeline_overhead, steady, train_default, with_marked_section
from benchmarks.figures import (
    LOAD_LIMIT,
    LOAD_WAIT_S,
    SAMPLE_S,
    Figure,
    LoadGate,
    LoadTooHigh,
    block_medians,
    figure_table,
    ort_figure,
    spread,
    this_cpu,
    timed_in_turn,
    write_results,
)
from benchmarks.latency import in_fresh_process
from kerasline.cluster import free_ports, tf_configs
from kerasline.config import ExperimentConfig, experiment_path, load_experiment
from kerasline.export import export_run
from kerasline.export.onnx_int8 import INT8_FILE, int8_session
from kerasline.export.repository import model_dirs
from kerasline.files import write_text_atomic
from kerasline.training.fit import train
from kerasline.training.runs import versions
from kerasline.training.tasks import task_for
from kerasline.training.tasks.segmentation import image_confusion, overlap
from kerasline.tuning import tune

RECIPES_MARKERS = ("<!-- recipes: begin -->", "<!-- recipes: end -->")

EXPERIMENT = "mnist_cnn"
QUICK_OVERRIDES = ["data.limit=1200", "training.epochs=2"]
DEFAULT_OUT = Path(__file__).resolve().parent / "results.json"
BUDGET_S = {"full": 45 * 60, "quick": 8 * 60}  # what a whole run may take on 2 idle cores
REFUSED = 3  # the exit status when the load gate refuses to time
SCALING_NOTE = (
    "scaling: both replicas (or workers) share the same 2 cores, so the ideal here is 1.0, not 2.0; "
    "the gap below 1.0 is what replication, all-reduce and (for workers) gRPC cost. Synchronized BatchNorm "
    "adds 3 all-reduces per BatchNorm layer a step, one after another, each about a millisecond over loopback gRPC"
)
# The sections' sizes: `full` fits the 45-minute run, `quick` the 8-minute check that everything runs (its figures
# are not meaningful). The sections in benchmarks/zoo.py and benchmarks/perf.py keep their own (PLANS there).
# Item 4: rounds of the first run against the keras-io convnet (each round about 2 minutes on 2 idle cores).
FIRST_RUN_ROUNDS = {"full": 2, "quick": 1}
# Item 5: the search budget (random search over the CNN family's default space), then the epochs that the default
# and the tuned experiment both train.
TUNING = {
    "full": (["tune.algorithm=random", "tune.max_trials=2", "tune.epochs=2"], 5),
    "quick": (["tune.algorithm=random", "tune.max_trials=1", "tune.epochs=1"], 1),
}
# Item 7: steps a measured epoch, epochs; --quick measures 1 device against 2 replicas with synchronized BatchNorm only.
SCALING = {"full": (20, 3), "quick": (6, 2)}
# Item 9: the five experiments on 1,200 digits, 2 epochs (as shipped they take 10 to 100 epochs: longer than the
# whole bench); --quick one GAN and one autoencoder.
GENERATIVE = {
    "full": (generative.EXPERIMENTS, ["data.limit=1200", "training.epochs=2"]),
    "quick": (("digits_dcgan", "digits_autoencoder"), generative.QUICK_OVERRIDES),
}
# Item 13: isbi_unet for 3 of its 60 epochs (51 steps; as shipped it takes about 8 minutes on a 2-core Xeon with
# AVX-512); --quick a tiny U-Net.
SEGMENTATION_EXPERIMENT = "isbi_unet"
SEGMENTATION = {
    "full": ["training.epochs=3"],
    "quick": ["data.limit=8", "data.crop=64", "model.depth=2", "model.filters=4", "training.epochs=2"],
}
# Item 15 in the whole run: the UCI comparison at 10 labels per class; `--transfer` runs the item in full.
TRANSFER_BUDGETS = (10,)
# The items a flag runs alone, in full: (title, item(tmp, quick) → details, figures(details)).
ALONE = {
    "tabular": ("the penguins experiments beside baselines (item 14)", tabular.tabular_item, tabular.figures),
    "transfer": (
        "init_from against scratch with few labels per class (item 15)",
        transfer.transfer_item,
        transfer.figures,
    ),
    "targets": (
        "issue #17's experiments as shipped, beside their baselines (item 16)",
        targets.targets_item,
        targets.figures,
    ),
}


@dataclass
class Bench:
    """The sections run so far: each one's details, time and gate reading, and every figure. results.json is
    rewritten after each section, so a run stopped or refused part-way keeps what it measured."""

    run: str  # which sections: "all", "perf", "tabular", "transfer", "targets", "soak" or "serving"
    quick: bool
    gate: LoadGate
    out: Path
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    start: float = field(default_factory=time.perf_counter)
    machine: dict = field(default_factory=lambda: {"cpu": this_cpu()})
    packages: dict = field(default_factory=versions)
    figures: list[Figure] = field(default_factory=list)
    sections: dict = field(default_factory=dict)
    refused: str | None = None

    @property
    def mode(self) -> str:
        return "quick" if self.quick else "full"

    def section(
        self,
        name: str,
        title: str,
        measure: Callable[[], dict],
        figures: Callable[[dict], list[Figure]],
        gated_runs: bool = False,
    ) -> dict:
        """Runs `measure` after the gate (unless it gates its own runs), keeps its details and its figures, each
        with the gate's reading unless it carries its own."""
        print(f"[{name}] {title}", flush=True)
        reading = None if gated_runs else self.gate(name)
        start = time.perf_counter()
        details = measure()
        elapsed = time.perf_counter() - start
        self.figures += [f if f.load else replace(f, load=reading) for f in figures(details)]
        self.sections[name] = {"elapsed_s": elapsed, "gate": reading, "details": details}
        self.save(complete=False)
        return details

    def header(self, complete: bool) -> dict:
        elapsed, budget = time.perf_counter() - self.start, BUDGET_S[self.mode] if self.run == "all" else None
        return {
            "mode": self.mode,
            "run": self.run,
            "started": self.started,
            "elapsed_s": elapsed,
            "budget_s": budget,
            "within_budget": None if budget is None or not complete else elapsed <= budget,
            "complete": complete,
            "refused": self.refused,
            "machine": self.machine,
            "load_gate": {
                "limit": self.gate.limit,
                "wait_s": self.gate.wait_s,
                "busy_limit": self.gate.busy_limit,
                "sample_s": self.gate.sample_s,
                "allow_load": self.gate.allow,
            },
            "versions": self.packages,
            "sections": self.sections,
        }

    def save(self, complete: bool) -> None:
        write_results(self.out, self.header(complete), self.figures)


def experiment(tmp: Path, quick: bool, *overrides: str) -> ExperimentConfig:
    """The default experiment, with its runs and exports kept in `tmp`."""
    redirect = [f"runs_dir={tmp / 'runs'}", f"export.dir={tmp / 'exports'}"]
    return load_experiment(EXPERIMENT, [*redirect, *(QUICK_OVERRIDES if quick else []), *overrides])


def tuning(tmp: Path, quick: bool) -> dict:
    """Item 5: search with a fixed budget, then train the default and the tuned experiment for the same epochs and
    compare their test accuracy."""
    budget, epochs = TUNING["quick" if quick else "full"]
    experiment_file = tmp / f"{EXPERIMENT}.toml"  # tune writes tuned/ beside the file: keep it out of the repo
    experiment_file.write_text(experiment_path(EXPERIMENT).read_text())
    redirect = [f"runs_dir={tmp / 'runs'}", f"export.dir={tmp / 'exports'}", *(QUICK_OVERRIDES if quick else [])]
    start = time.perf_counter()
    searched = tune(
        load_experiment(str(experiment_file), [*redirect, *budget]), experiment_file, [*redirect, *budget], restart=True
    )
    search_s = time.perf_counter() - start
    same = [*redirect, f"training.epochs={epochs}"]
    default = train(load_experiment(str(experiment_file), same)).metrics["accuracy"]
    tuned = train(load_experiment(str(searched.tuned_experiment), same)).metrics["accuracy"]
    return {
        "budget": budget,
        "epochs": epochs,
        "search_s": search_s,
        "best_validation": searched.best,
        "default_test_accuracy": default,
        "tuned_test_accuracy": tuned,
        "gain_points": 100 * (tuned - default),
    }


def tuning_figures(tun: dict) -> list[Figure]:
    return [
        Figure(
            f"tuning {EXPERIMENT}: test accuracy after {tun['epochs']} epochs, tuned vs default",
            tun["tuned_test_accuracy"],
            "accuracy",
            baseline=tun["default_test_accuracy"],
            target="> 1.0",
        ),
        Figure(f"tuning {EXPERIMENT}: search wall time ({' '.join(tun['budget'])})", tun["search_s"], "s"),
    ]


# Item 7, in a fresh process per strategy: logical devices and MultiWorkerMirroredStrategy must come before TF starts.
# argv: strategy (auto | mirrored | multi_worker), steps per epoch, epochs, config overrides. Prints steady steps/s
# as JSON.
SCALING_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    name, steps, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if name == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from benchmarks.common import EpochTimer, steady
    from kerasline.config import load_experiment
    from kerasline.training.fit import compile_model, setup

    cfg = load_experiment("mnist_cnn", [f"training.strategy={name}", *sys.argv[4:]])
    strategy = setup(cfg)
    with strategy.scope():
        model = compile_model(cfg, steps)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (cfg.data.batch_size * steps, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, len(x)).astype("int32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(cfg.data.batch_size).cache().repeat()
    timer = EpochTimer()
    model.fit(data, steps_per_epoch=steps, epochs=epochs, callbacks=[timer], verbose=0)
    print(json.dumps({"steps_per_s": steps / steady(timer.steps_s), "replicas": strategy.num_replicas_in_sync}))
    """
)


# The mnist_cnn's BatchNorm layers as configured (statistics over the global batch: 3 all-reduces per layer a step)
# and per replica: the knob that decides most of what a second replica costs.
SCALING_BATCH_NORM = {"synchronized": [], "per_replica": ["model.sync_batch_norm=false"]}


def scaling(quick: bool) -> dict:
    """Item 7: each setting in turn (never two settings at once), the mnist_cnn model at its global batch."""
    steps, epochs = SCALING["quick" if quick else "full"]

    def measure(name: str, overrides: list[str], workers: int = 0) -> dict:
        configs = tf_configs([f"127.0.0.1:{port}" for port in free_ports(workers)]) if workers else [None]
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", SCALING_SCRIPT, name, str(steps), str(epochs), *overrides],
                cwd=Path(__file__).resolve().parents[1],
                env={**os.environ, **({"TF_CONFIG": json.dumps(config)} if config else {})},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for config in configs
        ]
        try:
            outputs = [proc.communicate(timeout=600) for proc in procs]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        for proc, (_, stderr) in zip(procs, outputs, strict=True):
            if proc.returncode != 0:
                raise RuntimeError(f"scaling {name}: exit {proc.returncode}: {stderr[-2000:]}")
        return json.loads(outputs[0][0].strip().splitlines()[-1])  # the chief's (worker 0's) view

    def settings(overrides: list[str]) -> dict:
        one, mirrored = measure("auto", overrides), measure("mirrored", overrides)
        out = {
            "overrides": overrides,
            "one_device_steps_per_s": one["steps_per_s"],
            "mirrored_2_replicas_steps_per_s": mirrored["steps_per_s"],
            "mirrored_efficiency": mirrored["steps_per_s"] / one["steps_per_s"],
        }
        if quick:  # --quick: no worker processes
            return out
        worker, pair = measure("multi_worker", overrides, workers=1), measure("multi_worker", overrides, workers=2)
        return out | {
            "one_worker_steps_per_s": worker["steps_per_s"],
            "two_workers_steps_per_s": pair["steps_per_s"],
            "multi_worker_efficiency": pair["steps_per_s"] / worker["steps_per_s"],
            "one_worker_vs_one_device": worker["steps_per_s"] / one["steps_per_s"],
        }

    modes = {"synchronized": SCALING_BATCH_NORM["synchronized"]} if quick else SCALING_BATCH_NORM
    return {"steps_per_epoch": steps, "epochs": epochs, "batch_norm": {m: settings(o) for m, o in modes.items()}}


def scaling_figures(scale: dict) -> list[Figure]:
    out = []
    for mode, s in scale["batch_norm"].items():
        out.append(
            Figure(
                f"scaling ({mode} BatchNorm): steps/s, 2 replicas vs 1 device",
                s["mirrored_2_replicas_steps_per_s"],
                "steps/s",
                baseline=s["one_device_steps_per_s"],
            )
        )
        if "two_workers_steps_per_s" in s:
            out.append(
                Figure(
                    f"scaling ({mode} BatchNorm): steps/s, 2 workers vs 1 worker (loopback)",
                    s["two_workers_steps_per_s"],
                    "steps/s",
                    baseline=s["one_worker_steps_per_s"],
                )
            )
    return out


def runners(model: keras.Model, serve: Callable, session: ort.InferenceSession, images: np.ndarray) -> dict:
    """One inference call per runtime on `images` (uint8), inputs converted beforehand as a caller would hold them."""
    floats, tensor = images.astype(np.float32), tf.constant(images)
    return {
        "keras_predict_on_batch": lambda: model.predict_on_batch(floats),
        "keras_call": lambda: model(floats, training=False).numpy(),
        "saved_model": lambda: serve(image=tensor)["probabilities"].numpy(),
        "onnxruntime": lambda: session.run(["probabilities"], {"image": images})[0],
    }


def latency(cfg: ExperimentConfig, run_dir: Path, calls: dict[int, int]) -> dict:
    """Item 3: the run exported as the project publishes it, then each runtime timed in this process."""
    version = export_run(cfg, run_dir)
    model = task_for(cfg).export_model(run_dir / "best.weights.h5")
    serve = tf.saved_model.load(str(version)).signatures["serving_default"]
    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    test = task_for(cfg).load_splits().test
    images = test.batch(max(calls)).take(1).get_single_element()[0].numpy()
    blocks = {batch: timed_in_turn(runners(model, serve, session, images[:batch]), n) for batch, n in calls.items()}
    ms = {batch: block_medians(rounds) for batch, rounds in blocks.items()}
    return {
        "calls": calls,
        "median_ms": ms,
        "median_ms_rounds": blocks,
        "ort_vs_saved_model_batch1": ms[1]["onnxruntime"] / ms[1]["saved_model"],
        "verification": json.loads((version / "verification.json").read_text()),
        "version_dir": version,
    }


def latency_figures(lat: dict) -> list[Figure]:
    """ONNX Runtime against the SavedModel (target ≤ 0.5 at batch 1), and Keras' traced predict_on_batch beside it."""
    out = []
    for batch, ms in lat["median_ms"].items():
        out += [
            ort_figure(f"latency {EXPERIMENT}", lat["median_ms_rounds"][batch], batch),
            Figure(
                f"latency {EXPERIMENT}: batch-{batch} latency, Keras predict_on_batch vs SavedModel",
                ms["keras_predict_on_batch"],
                "ms",
                baseline=ms["saved_model"],
            ),
        ]
    return out


def segmentation(tmp: Path, quick: bool) -> dict:
    """Item 13: the U-Net experiment trained by `train` (timed as item 4), exported, then one whole held-out slice
    timed through the reloaded SavedModel and both ONNX files, in a fresh process (benchmarks/latency.py)."""
    redirect = [f"runs_dir={tmp / 'runs'}", f"export.dir={tmp / 'exports'}"]
    overrides = SEGMENTATION["quick" if quick else "full"]
    cfg = load_experiment(SEGMENTATION_EXPERIMENT, [*redirect, *overrides])
    trained = train_default(cfg)
    splits = task_for(cfg).load_splits()
    crops = int(splits.train.cardinality())
    version = export_run(cfg, trained["run_dir"])
    image = next(splits.test.batch(1).as_numpy_iterator())[0]
    files = {"onnxruntime_int8": version / INT8_FILE}  # isbi_unet.toml sets export.onnx_int8
    ms_rounds = in_fresh_process(version, {"image": image}, {1: 5 if quick else 60}, files)[1]
    ms = block_medians(ms_rounds)
    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    int8 = int8_session(version / INT8_FILE)
    test = list(splits.test.as_numpy_iterator())
    verification = json.loads((version / "verification.json").read_text())
    return {
        "experiment": SEGMENTATION_EXPERIMENT,
        "overrides": overrides,
        "test_metrics": trained["test_metrics"],
        "epochs_run": len(trained["epoch_s"]),
        "wall_s": trained["wall_s"],
        "crops_per_epoch": crops,
        "crops_per_s": crops / steady(trained["epoch_s"]),
        "steps_only_crops_per_s": crops / steady(trained["steps_s"]),
        "parity_max_abs_diff": max(d for diffs in verification["max_abs_diff"].values() for d in diffs.values()),
        "parity_samples": verification["samples"],
        "batch1_median_ms": ms,
        "batch1_median_ms_rounds": ms_rounds,
        "ort_vs_saved_model_batch1": ms["onnxruntime"] / ms["saved_model"],
        "conv_gmac_per_call": perf.conv_macs(version / "model.onnx") / 1e9,
        "matmul_gmac_per_s": perf.matmul_gmac_per_s(),
        "onnx_mean_iou": {
            "float32": mean_iou(session, test, cfg.data.num_classes),
            "int8": mean_iou(int8, test, cfg.data.num_classes),
        },
    }


def mean_iou(session: ort.InferenceSession, test: list[tuple[np.ndarray, np.ndarray]], num_classes: int) -> float:
    """Mean IoU over the (image, mask) pairs of `test`, from `session`'s per-pixel probabilities."""
    predicted = np.stack([session.run(["probabilities"], {"image": x[None]})[0][0].argmax(-1) for x, _ in test])
    iou, _ = overlap(image_confusion(np.stack([m for _, m in test]), predicted, num_classes).sum(0))
    return float(np.nanmean(iou))


def segmentation_figures(seg: dict) -> list[Figure]:
    name, metrics = f"segmentation {seg['experiment']} ({' '.join(seg['overrides'])})", seg["test_metrics"]
    rounds = seg["batch1_median_ms_rounds"]
    return [
        Figure(f"{name}: test mean IoU, held-out slices", metrics["mean_iou"], "IoU"),
        Figure(f"{name}: test Dice", metrics["dice"], "Dice"),
        Figure(f"{name}: training crops/s, whole epochs", seg["crops_per_s"], "crops/s"),
        Figure(f"{name}: export parity, max abs diff", seg["parity_max_abs_diff"], "abs", target="<= 1e-05"),
        ort_figure(name, rounds, 1),
        *(
            Figure(
                f"{name}: {runtime} batch-1 conv rate (conv MACs ÷ call time) vs a TensorFlow matmul's",
                seg["conv_gmac_per_call"] / (seg["batch1_median_ms"][key] / 1000),
                "GMAC/s",
                baseline=seg["matmul_gmac_per_s"],
            )
            for runtime, key in (("SavedModel", "saved_model"), ("ONNX Runtime", "onnxruntime"))
        ),
        Figure(
            f"{name}: batch-1 latency, ONNX Runtime int8 (export.onnx_int8) vs SavedModel",
            seg["batch1_median_ms"]["onnxruntime_int8"],
            "ms",
            baseline=seg["batch1_median_ms"]["saved_model"],
            target="<= 0.5",
            value_range=spread(rounds["onnxruntime_int8"])[1],
            baseline_range=spread(rounds["saved_model"])[1],
            runs=len(rounds["saved_model"]),
        ),
        Figure(
            f"{name}: batch-1 latency, ONNX static int8 (QDQ) vs float32",
            seg["batch1_median_ms"]["onnxruntime_int8"],
            "ms",
            baseline=seg["batch1_median_ms"]["onnxruntime"],
        ),
        Figure(
            f"{name}: test mean IoU, ONNX static int8 (QDQ) vs float32",
            seg["onnx_mean_iou"]["int8"],
            "IoU",
            baseline=seg["onnx_mean_iou"]["float32"],
        ),
    ]


def serving_models(cfg: ExperimentConfig) -> list[str]:
    """Item 6's models, each exported into cfg's repository before item 6 runs: the CNN (by item 3), and (by item 8)
    the text classifier."""
    return [cfg.model_name, "imdb_lstm"]


def whole_run(bench: Bench, tmp: Path) -> None:
    """Every item but the levers and the soak, in the order the README gives: item 4 first (its run also feeds items
    3, 6 and 9), the race and the long accuracy items after the quick in-process ones."""
    quick, size = bench.quick, bench.mode
    cfg = experiment(tmp, quick)
    rounds, quick_overrides = FIRST_RUN_ROUNDS[size], QUICK_OVERRIDES if quick else []
    trained = bench.section(
        "first_run",
        f"`kerasline train {EXPERIMENT}` as shipped against the keras-io convnet, {rounds} round(s) (item 4)",
        lambda: first_run.first_run(tmp, EXPERIMENT, quick_overrides, rounds, bench.gate),
        first_run.figures,
        gated_runs=True,
    )
    epochs = 2 if quick else 3
    short = experiment(tmp, quick, f"training.epochs={epochs}")
    bench.section(
        "pipeline",
        "input pipeline vs the same batches in memory (item 1)",
        lambda: pipeline_overhead(short, epochs),
        lambda d: [overhead_figure(f"input pipeline {EXPERIMENT}", d)],
    )
    calls = {1: 50, 64: 10} if quick else {1: 200, 64: 50}
    bench.section(
        "latency",
        "export and inference latency (item 3)",
        lambda: latency(cfg, trained["run_dir"], calls),
        latency_figures,
    )
    bench.section(
        "tuning",
        "a fixed search budget, then default and tuned trained alike (item 5)",
        lambda: tuning(tmp, quick),
        tuning_figures,
    )
    bench.section(
        "zoo",
        "each experiment trained briefly, exported and checked (item 8)",
        lambda: zoo.zoo_item(tmp, zoo.PLANS[size]),
        zoo.figures,
    )
    bench.section(
        "serving",
        "REST and gRPC on the development server beside in-process calls (item 6)",
        lambda: serving.serving_item(serving_models(cfg), Path(cfg.export.dir), quick),
        serving.figures,
    )
    bench.section(
        "scaling", "1 device vs 2 replicas, 1 worker vs 2 workers (item 7)", lambda: scaling(quick), scaling_figures
    )
    experiments, overrides = GENERATIVE[size]
    bench.section(
        "generative",
        "generative experiments, scored with the classifier of item 4 (item 9)",
        lambda: generative.generative_item(tmp, quick, cfg, trained["run_dir"], experiments, overrides),
        generative.figures,
    )
    performance(bench, tmp, perf.PLANS[size])
    bench.section(
        "segmentation",
        f"{SEGMENTATION_EXPERIMENT} trained, exported, timed (item 13)",
        lambda: segmentation(tmp, quick),
        segmentation_figures,
    )
    bench.section(
        "tabular",
        "the penguins experiments beside baselines on the same split (item 14)",
        lambda: tabular.tabular_item(tmp, quick),
        tabular.figures,
    )
    bench.section(
        "transfer",
        f"init_from against scratch, {TRANSFER_BUDGETS} labels per class (item 15)",
        lambda: transfer.transfer_item(tmp, quick, TRANSFER_BUDGETS, autoencoder=False),
        transfer.figures,
    )


def performance(bench: Bench, tmp: Path, plan: dict) -> None:
    """Items 10-12 (and the levers, where the plan has them): the race first, item 12 exports its kept runs."""
    bench.section(
        "race",
        "ours, plain Keras model.fit and PyTorch, interleaved (items 10 and 2)",
        lambda: perf.race_section(tmp, plan, bench.gate),
        perf.race_figures,
        gated_runs=True,
    )
    if plan["levers"]:
        bench.section(
            "levers",
            "each lever against its base run, interleaved",
            lambda: perf.levers(plan, bench.gate),
            perf.lever_figures,
            gated_runs=True,
        )
    bench.section(
        "pipelines",
        "the input pipelines of the experiments with augmentation on (item 11)",
        lambda: perf.pipelines(plan),
        perf.pipeline_figures,
    )
    bench.section(
        "inference",
        "SavedModel vs ONNX Runtime, float32 and int8 (item 12)",
        lambda: perf.inference_section(tmp, plan),
        perf.inference_figures,
    )


def write_results_md(bench: Bench) -> None:
    """benchmarks/RESULTS.md from a run that is not --quick: the performance part when the race ran, and the tabular,
    transfer and targets sections when their items ran in full; every other part as the file holds it."""
    sections = {name: s["details"] for name, s in bench.sections.items()}
    ran = {
        "performance": "race" in sections,
        "tabular": "tabular" in sections,
        "transfer": bench.run == "transfer",  # the whole run's item 15 is a part of it
        "targets": "targets" in sections,
    }
    if bench.quick or not any(ran.values()):
        return
    current = perf.RESULTS_MD.read_text() if perf.RESULTS_MD.exists() else ""
    markdown = current
    if ran["performance"]:
        machine = {**bench.machine, "load_gate": bench.header(complete=True)["load_gate"]}
        markdown = perf.results_markdown(sections, bench.figures, machine, bench.started, bench.mode)
    tabular_section = (
        tabular.results_section(sections["tabular"], bench.started, bench.mode) if ran["tabular"] else None
    )
    markdown = with_marked_section(markdown, current, (tabular.SECTION_BEGIN, tabular.SECTION_END), tabular_section)
    transfer_section = (
        transfer.results_section(sections["transfer"], bench.started, bench.mode) if ran["transfer"] else None
    )
    markdown = with_marked_section(markdown, current, (transfer.SECTION_BEGIN, transfer.SECTION_END), transfer_section)
    targets_section = (
        targets.results_section(sections["targets"], bench.started, bench.machine["cpu"]["summary"])
        if ran["targets"]
        else None
    )
    markdown = with_marked_section(markdown, current, (targets.SECTION_BEGIN, targets.SECTION_END), targets_section)
    # Written by hand: what was tried for each experiment's figure, on validation (no bench item reruns those runs).
    write_text_atomic(perf.RESULTS_MD, with_marked_section(markdown, current, RECIPES_MARKERS))


def serving_only(bench: Bench, args: argparse.Namespace) -> None:
    """Item 6 against a running server, for every model in the repository it serves."""
    if not (args.grpc and args.repo):
        raise SystemExit("--server needs --grpc HOST:PORT and --repo DIR (the repository that server serves)")
    models = [p.name for p in model_dirs(args.repo)]
    bench.section(
        "serving",
        f"REST and gRPC on {args.server} beside in-process calls (item 6)",
        lambda: serving.serving_item(models, args.repo, args.quick, server=args.server, grpc_target=args.grpc),
        serving.figures,
    )


def soak_only(bench: Bench) -> None:
    seconds, window, pool = (20, 5, 150) if bench.quick else (600, 60, 600)
    result = bench.section(
        "soak",
        f"16 clients, valid and malformed requests, for {seconds} s",
        lambda: soak.soak_item(seconds, 16, window, pool),
        soak.figures,
    )
    print(soak.table(result))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the 8-minute check that every item runs (figures not meaningful; the load is recorded, never waited for)",
    )
    parser.add_argument("--allow-load", action="store_true", help="time on a busy machine: figures marked invalid")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results (default: %(default)s)")
    parser.add_argument("--perf", action="store_true", help="items 10-12 and the levers: PyTorch race, pipelines, ONNX")
    parser.add_argument("--tabular", action="store_true", help="item 14 only: the penguins experiments, baselines")
    parser.add_argument("--transfer", action="store_true", help="item 15 only, all of it: init_from against scratch")
    parser.add_argument("--targets", action="store_true", help="item 16 only: issue #17's targets, 23 min on a Zen 5")
    parser.add_argument("--soak", action="store_true", help="the soak run alone: 16 clients, 10 min")
    parser.add_argument("--server", help="item 6 only, against this REST URL (e.g. real TF Serving)")
    parser.add_argument("--grpc", metavar="HOST:PORT", help="with --server: its gRPC address")
    parser.add_argument("--repo", type=Path, help="with --server: the repository it serves (in-process reference)")
    args = parser.parse_args(argv)
    run = next((name for name in ("soak", "server", "perf", *ALONE) if getattr(args, name)), "all")
    # --quick never waits: its figures are for checking that the bench runs, not for reading.
    wait_s = 0 if args.quick else SAMPLE_S if args.allow_load else LOAD_WAIT_S
    gate = LoadGate(wait_s=wait_s, allow=args.quick or args.allow_load, limit=LOAD_LIMIT)
    bench = Bench(run, args.quick, gate, args.out)
    try:
        with tempfile.TemporaryDirectory(prefix="kerasline-bench-") as tmp:
            if run == "soak":
                soak_only(bench)
            elif run == "server":
                serving_only(bench, args)
            elif run == "perf":
                performance(bench, Path(tmp), perf.PLANS["perf-quick" if args.quick else "perf"])
            elif run in ALONE:
                title, item, figures = ALONE[run]
                bench.section(run, title, lambda: item(Path(tmp), args.quick), figures)
            else:
                whole_run(bench, Path(tmp))
    except LoadTooHigh as refusal:
        bench.refused = str(refusal)
        bench.save(complete=False)
        print(figure_table(bench.figures))
        print(f"\nrefused: {refusal}\nwhat was measured before: {args.out}", file=sys.stderr)
        return REFUSED
    bench.save(complete=True)
    write_results_md(bench)
    header = bench.header(complete=True)
    print(
        f"\nkerasline benchmarks ({bench.run}, {bench.mode}, {header['elapsed_s'] / 60:.1f} min, "
        f"{header['machine']['cpu']['summary']})"
    )
    print(figure_table(bench.figures))
    invalid = sum(not f.valid for f in bench.figures)
    if invalid:
        print(f"{invalid} figure(s) measured while others' load was above {LOAD_LIMIT}: marked INVALID")
    if header["within_budget"] is False:
        print(f"the run took {header['elapsed_s'] / 60:.1f} min, over its {header['budget_s'] / 60:.0f}-minute budget")
    if run == "all":
        print(SCALING_NOTE)
    print(f"\nresults: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
