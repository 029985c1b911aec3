"""The benchmark suite: every figure measured side by side in one process, printed as a table and saved as JSON.

1. Input-pipeline overhead: step time fed by the task's `build_inputs` (augmentation on) ÷ the same batches from memory.
2. Training throughput: `training.fit.train` (the real path) ÷ plain `model.fit` on numpy arrays.
3. Inference latency at batch 1 and 64: Keras, the reloaded SavedModel and ONNX Runtime.
4. Accuracy and wall time of the default experiment, trained in full.
5. Tuning: the default config's test accuracy beside the tuned config's, after a fixed search budget.
6. Serving: REST and gRPC latency (p50, p99) and throughput with 1, 8 and 32 clients, beside in-process calls.
7. Scaling: steps/s of 1 device against 2 replicas (MirroredStrategy, two logical CPUs), and of 1 worker against
   2 workers on loopback (MultiWorkerMirroredStrategy), at the same global batch.
8. The model zoo: per experiment, test quality on its real data, training throughput, export parity and ONNX
   Runtime ÷ SavedModel latency at batch 1; the sequence models beside the bag-of-words baseline.
9. Generative: GAN digits scored by item 4's classifier, autoencoder reconstruction error (benchmarks/generative.py).
10-12. The performance suite (benchmarks/perf.py): training against PyTorch and the levers, every experiment's input
   pipeline, ONNX Runtime (float32 and int8) against the SavedModel; it regenerates benchmarks/RESULTS.md.
13. Segmentation: the U-Net experiment trained by `train`: IoU on held-out slices, throughput, parity, latency.
14. Tabular: the penguins experiments' test accuracy / MAE beside baselines fitted on the same split
   (benchmarks/tabular.py).
15. Transfer: test accuracy from scratch and from an earlier run (`model.init_from`) with 10 and 50 labels per class
   (benchmarks/transfer.py).

`python -m benchmarks.run [--quick] [--out PATH]`; --quick shrinks the data and epochs to check that it runs.
`python -m benchmarks.run --perf [--quick]` runs items 10-12 alone (PyTorch: the `bench` extra).
`python -m benchmarks.run --tabular [--quick]` runs item 14 alone.
`python -m benchmarks.run --transfer [--quick]` runs item 15 alone.
`python -m benchmarks.run --soak [--quick]` runs the soak item alone (benchmarks/soak.py; never part of the full run).
`python -m benchmarks.run --server URL --grpc HOST:PORT --repo DIR` runs item 6 alone against a running server
(real TF Serving) that serves the repository DIR.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np
import onnxruntime as ort
import tensorflow as tf

import kerasline.training.fit
from benchmarks import perf, soak
from benchmarks.common import (
    EpochTimer,
    format_table,
    fresh_model,
    met,
    pipeline_overhead,
    steady,
    train_default,
)
from benchmarks.generative import generative_item
from benchmarks.generative import table_rows as generative_table_rows
from benchmarks.serving import serving_item
from benchmarks.serving import table_rows as serving_table_rows
from benchmarks.tabular import results_section as tabular_section
from benchmarks.tabular import table_rows as tabular_table_rows
from benchmarks.tabular import tabular_item
from benchmarks.tabular import with_section as with_tabular_section
from benchmarks.transfer import results_section as transfer_section
from benchmarks.transfer import table_rows as transfer_table_rows
from benchmarks.transfer import transfer_item
from benchmarks.transfer import with_section as with_transfer_section
from benchmarks.zoo import table_rows as zoo_table_rows
from benchmarks.zoo import zoo_item
from kerasline.cluster import free_ports, tf_configs
from kerasline.config import ExperimentConfig, experiment_path, load_experiment
from kerasline.export import export_run
from kerasline.export.repository import model_dirs
from kerasline.files import write_text_atomic
from kerasline.timing import median_ms
from kerasline.training.runs import versions
from kerasline.training.tasks import task_for
from kerasline.tuning import tune

EXPERIMENT = "mnist_cnn"
QUICK_OVERRIDES = ["data.limit=1200", "training.epochs=2"]
DEFAULT_OUT = Path(__file__).resolve().parent / "results.json"
# keras pob = predict_on_batch (a traced function); keras call = model(x, training=False), eager.
LATENCY_COLUMNS = ("keras_predict_on_batch", "keras_call", "saved_model", "onnxruntime")
SCALING_NOTE = (
    "scaling: both replicas (or workers) share the same 2 cores, so the ideal here is 1.0, not 2.0; "
    "the gap below 1.0 is what replication, all-reduce and (for workers) gRPC cost. Synchronized BatchNorm "
    "adds 3 all-reduces per BatchNorm layer a step, one after another, each about a millisecond over loopback gRPC"
)
SEGMENTATION_EXPERIMENT = "isbi_unet"
QUICK_SEGMENTATION = ["data.limit=8", "data.crop=64", "model.depth=2", "model.filters=4", "training.epochs=2"]
TARGETS = {"pipeline_overhead_max": 1.05, "ort_vs_saved_model_batch1_max": 0.5, "test_accuracy_min": 0.99}


def experiment(tmp: Path, quick: bool, *overrides: str) -> ExperimentConfig:
    """The default experiment, with its runs and exports kept in `tmp`."""
    redirect = [f"runs_dir={tmp / 'runs'}", f"export.dir={tmp / 'exports'}"]
    return load_experiment(EXPERIMENT, [*redirect, *(QUICK_OVERRIDES if quick else []), *overrides])


def plain_fit(cfg: ExperimentConfig, epochs: int) -> dict:
    """Item 2 baseline: `model.fit` on numpy arrays: no augmentation, no validation, none of train()'s callbacks."""
    train = task_for(cfg).load_splits().train
    n = int(train.cardinality())
    x, y = (t.numpy() for t in train.batch(n).get_single_element())
    model = fresh_model(cfg, steps_per_epoch=-(-n // cfg.data.batch_size))
    timer = EpochTimer()
    model.fit(x.astype(np.float32), y, batch_size=cfg.data.batch_size, epochs=epochs, callbacks=[timer], verbose=0)
    return {"samples": n, "epoch_s": timer.epoch_s}


def throughput(ours: dict, plain: dict) -> dict:
    n = plain["samples"]
    ours_sps, ours_steps_sps = n / steady(ours["epoch_s"]), n / steady(ours["steps_s"])
    plain_sps = n / steady(plain["epoch_s"])
    return {
        "samples_per_epoch": n,
        "ours_samples_per_s": ours_sps,
        "ours_steps_only_samples_per_s": ours_steps_sps,
        "plain_samples_per_s": plain_sps,
        "ratio": ours_sps / plain_sps,
        "steps_only_ratio": ours_steps_sps / plain_sps,
        "ours_epoch_s": ours["epoch_s"],
        "ours_steps_s": ours["steps_s"],
        "plain_epoch_s": plain["epoch_s"],
    }


# Item 5's fixed budget: random search over the CNN family's default space, each trial a short training run.
TUNING_BUDGET = ["tune.algorithm=random", "tune.max_trials=8", "tune.epochs=6"]
QUICK_TUNING_BUDGET = ["tune.algorithm=random", "tune.max_trials=2", "tune.epochs=1"]


def tuning(tmp: Path, quick: bool, default_accuracy: float) -> dict:
    """Item 5: search with a fixed budget, train the tuned experiment in full, compare test accuracy with item 4."""
    experiment_file = tmp / f"{EXPERIMENT}.toml"  # tune writes tuned/ beside the file: keep it out of the repo
    experiment_file.write_text(experiment_path(EXPERIMENT).read_text())
    redirect = [f"runs_dir={tmp / 'runs'}", f"export.dir={tmp / 'exports'}", *(QUICK_OVERRIDES if quick else [])]
    budget = QUICK_TUNING_BUDGET if quick else TUNING_BUDGET
    start = time.perf_counter()
    searched = tune(
        load_experiment(str(experiment_file), [*redirect, *budget]), experiment_file, [*redirect, *budget], restart=True
    )
    search_s = time.perf_counter() - start
    tuned = kerasline.training.fit.train(load_experiment(str(searched.tuned_experiment)))
    return {
        "budget": budget,
        "search_s": search_s,
        "best_validation": searched.best,
        "default_test_accuracy": default_accuracy,
        "tuned_test_accuracy": tuned.metrics["accuracy"],
        "gain_points": 100 * (tuned.metrics["accuracy"] - default_accuracy),
    }


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
    steps, epochs = (6, 2) if quick else (30, 4)

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
        worker, pair = measure("multi_worker", overrides, workers=1), measure("multi_worker", overrides, workers=2)
        return {
            "overrides": overrides,
            "one_device_steps_per_s": one["steps_per_s"],
            "mirrored_2_replicas_steps_per_s": mirrored["steps_per_s"],
            "one_worker_steps_per_s": worker["steps_per_s"],
            "two_workers_steps_per_s": pair["steps_per_s"],
            "mirrored_efficiency": mirrored["steps_per_s"] / one["steps_per_s"],
            "multi_worker_efficiency": pair["steps_per_s"] / worker["steps_per_s"],
            "one_worker_vs_one_device": worker["steps_per_s"] / one["steps_per_s"],
            "replicas": [one["replicas"], mirrored["replicas"], worker["replicas"], pair["replicas"]],
        }

    batch_norm = {mode: settings(overrides) for mode, overrides in SCALING_BATCH_NORM.items()}
    return {"steps_per_epoch": steps, "epochs": epochs, "batch_norm": batch_norm}


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
    ms = {
        batch: {name: median_ms(call, n) for name, call in runners(model, serve, session, images[:batch]).items()}
        for batch, n in calls.items()
    }
    return {
        "calls": calls,
        "median_ms": ms,
        "ort_vs_saved_model_batch1": ms[1]["onnxruntime"] / ms[1]["saved_model"],
        "verification": json.loads((version / "verification.json").read_text()),
        "version_dir": version,
    }


def segmentation(tmp: Path, quick: bool) -> dict:
    """Item 9: the U-Net experiment trained by `train` (timed as item 4), exported, then one whole held-out slice
    timed through the reloaded SavedModel and ONNX Runtime."""
    redirect = [f"runs_dir={tmp / 'runs'}", f"export.dir={tmp / 'exports'}"]
    cfg = load_experiment(SEGMENTATION_EXPERIMENT, [*redirect, *(QUICK_SEGMENTATION if quick else [])])
    trained = train_default(cfg)
    splits = task_for(cfg).load_splits()
    crops = int(splits.train.cardinality())
    version = export_run(cfg, trained["run_dir"])
    serve = tf.saved_model.load(str(version)).signatures["serving_default"]
    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    image = next(splits.test.batch(1).as_numpy_iterator())[0]
    calls = 5 if quick else 20
    ms = {
        "saved_model": median_ms(lambda: serve(image=tf.constant(image))["probabilities"].numpy(), calls, warmup=2),
        "onnxruntime": median_ms(lambda: session.run(["probabilities"], {"image": image})[0], calls, warmup=2),
    }
    verification = json.loads((version / "verification.json").read_text())
    return {
        "experiment": SEGMENTATION_EXPERIMENT,
        "overrides": QUICK_SEGMENTATION if quick else [],
        "test_metrics": trained["test_metrics"],
        "epochs_run": len(trained["epoch_s"]),
        "wall_s": trained["wall_s"],
        "crops_per_epoch": crops,
        "crops_per_s": crops / steady(trained["epoch_s"]),
        "steps_only_crops_per_s": crops / steady(trained["steps_s"]),
        "parity_max_abs_diff": max(d for diffs in verification["max_abs_diff"].values() for d in diffs.values()),
        "parity_samples": verification["samples"],
        "batch1_median_ms": ms,
        "ort_vs_saved_model_batch1": ms["onnxruntime"] / ms["saved_model"],
    }


def segmentation_rows(seg: dict) -> list[tuple[str, str, str, str]]:
    metrics = seg["test_metrics"]
    ious = " | ".join(f"{metrics[k]:.3f}" for k in sorted(metrics) if k.startswith("iou_"))
    ms = seg["batch1_median_ms"]
    return [
        (f"13. {seg['experiment']}: test mean IoU, held-out slices", f"{metrics['mean_iou']:.3f}", "", ""),
        ("   IoU per class | Dice", f"{ious} | {metrics['dice']:.3f}", "", ""),
        (
            "   training crops/s: whole epochs | steps only",
            f"{seg['crops_per_s']:.1f} | {seg['steps_only_crops_per_s']:.1f}",
            "",
            "",
        ),
        ("   training wall time (epochs run)", f"{seg['wall_s']:.0f} s ({seg['epochs_run']})", "", ""),
        (
            "   export parity: max abs diff",
            f"{seg['parity_max_abs_diff']:.2e} ({seg['parity_samples']} slices)",
            "",
            "",
        ),
        (
            "   ORT / SavedModel, batch 1 (ms: SM | ORT)",
            f"{seg['ort_vs_saved_model_batch1']:.3f} ({ms['saved_model']:.0f} | {ms['onnxruntime']:.0f})",
            "",
            "",
        ),
    ]


def machine() -> dict:
    info = {"python": platform.python_version(), "cpu_count": os.cpu_count(), "cpu_model": None, "flags": {}}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    info["cpu_model"] = fields.get("model name")
    info["flags"] = {
        "avx2": "avx2" in flags,
        "avx512f": "avx512f" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "amx": sorted(f for f in flags if f.startswith("amx")),
    }
    return info


def table(results: dict) -> str:
    """Rows of (figure, value, target, met?)."""
    pipe, thr, lat, acc, tun = (results[k] for k in ("input_pipeline", "throughput", "latency", "accuracy", "tuning"))
    accuracy, ort_ratio = acc["test_metrics"]["accuracy"], lat["ort_vs_saved_model_batch1"]

    def pair(a: float, b: float, digits: int) -> str:
        return f"{a:.{digits}f} | {b:.{digits}f}"

    rows = [
        (
            "1. input pipeline: step time, ours / in-memory",
            f"{pipe['ratio']:.3f}",
            "<= 1.05",
            met(pipe["ratio"] <= TARGETS["pipeline_overhead_max"]),
        ),
        ("   step ms: pipeline | in-memory", pair(pipe["pipeline_step_ms"], pipe["in_memory_step_ms"], 1), "", ""),
        ("2. training throughput, ours / plain fit", f"{thr['ratio']:.3f}", "", ""),
        ("   samples/s: ours | plain fit", pair(thr["ours_samples_per_s"], thr["plain_samples_per_s"], 0), "", ""),
        ("   ours, training steps only / plain fit", f"{thr['steps_only_ratio']:.3f}", "", ""),
    ]
    for batch, ms in lat["median_ms"].items():
        value = " | ".join(f"{ms[k]:.2f}" for k in LATENCY_COLUMNS)
        rows.append((f"3. latency ms, batch {batch}: keras pob | keras call | SM | ORT", value, "", ""))
    rows += [
        (
            "   ORT / SavedModel, batch 1",
            f"{ort_ratio:.3f}",
            "<= 0.50",
            met(ort_ratio <= TARGETS["ort_vs_saved_model_batch1_max"]),
        ),
        (
            "4. test accuracy, default experiment",
            f"{100 * accuracy:.2f}%",
            ">= 99.0%",
            met(accuracy >= TARGETS["test_accuracy_min"]),
        ),
        ("   training wall time (epochs run)", f"{acc['wall_s']:.0f} s ({acc['epochs_run']})", "", ""),
        (
            "5. test accuracy: default | tuned",
            pair(100 * tun["default_test_accuracy"], 100 * tun["tuned_test_accuracy"], 2),
            "tuned > default",
            met(tun["gain_points"] > 0),
        ),
        (
            "   tuning budget (search wall time)",
            f"{' '.join(b.split('.')[-1] for b in tun['budget'])} ({tun['search_s']:.0f} s)",
            "",
            "",
        ),
    ]
    rows += serving_table_rows(results["serving"])
    rows.append(("7. scaling, same global batch; BatchNorm statistics:", "", "", ""))
    for mode, scale in results["scaling"]["batch_norm"].items():
        rows += [
            (f"   {mode}: 2 replicas / 1 device", f"{scale['mirrored_efficiency']:.3f}", "", ""),
            (
                "   steps/s: 1 device | 2 replicas",
                pair(scale["one_device_steps_per_s"], scale["mirrored_2_replicas_steps_per_s"], 2),
                "",
                "",
            ),
            (f"   {mode}: 2 workers / 1 worker (loopback)", f"{scale['multi_worker_efficiency']:.3f}", "", ""),
            (
                "   steps/s: 1 worker | 2 workers",
                pair(scale["one_worker_steps_per_s"], scale["two_workers_steps_per_s"], 2),
                "",
                "",
            ),
        ]
    rows += zoo_table_rows(results["zoo"])
    rows += generative_table_rows(results["generative"])
    rows += perf.table_rows(results["performance"])
    rows += segmentation_rows(results["segmentation"])
    rows += tabular_table_rows(results["tabular"])
    rows += transfer_table_rows(results["transfer"])
    return format_table(rows)


def serving_models(cfg: ExperimentConfig) -> list[str]:
    """Item 6's models, each exported into cfg's repository before item 6 runs: the CNN, and (by item 8) the
    text classifier."""
    return [cfg.model_name, "imdb_lstm"]


def serving_only(args: argparse.Namespace) -> int:
    """Item 6 against a running server, for every model in the repository it serves."""
    if not (args.grpc and args.repo):
        raise SystemExit("--server needs --grpc HOST:PORT and --repo DIR (the repository that server serves)")
    models = [p.name for p in model_dirs(args.repo)]
    served = serving_item(models, args.repo, args.quick, server=args.server, grpc_target=args.grpc)
    args.out.write_text(json.dumps({"serving": served, "machine": machine()}, indent=2, default=str) + "\n")
    print(format_table(serving_table_rows(served)))
    print(f"\nresults: {args.out}")
    return 0


def perf_only(args: argparse.Namespace) -> int:
    """Items 10-12 alone: their table rows, results JSON and benchmarks/RESULTS.md."""
    started, start = datetime.now(UTC).isoformat(timespec="seconds"), time.perf_counter()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="kerasline-bench-") as tmp:
        suite = perf.performance_suite(Path(tmp), args.quick, progress=args.out.with_suffix(".partial.json"))
    results = {**run_record(args.quick, started, start, load_before), "performance": suite}
    write_perf_outputs(results, args.out)
    print(f"\nkerasline performance suite ({results['mode']}, {results['elapsed_s']:.0f} s, load {load_before:.2f})")
    print(format_table(perf.table_rows(suite)))
    print(f"\nresults: {args.out}, {perf.RESULTS_MD}")
    return 0


def tabular_only(args: argparse.Namespace) -> int:
    """Item 14 alone: its table rows, results JSON, and its section of benchmarks/RESULTS.md (the rest kept)."""
    started, start = datetime.now(UTC).isoformat(timespec="seconds"), time.perf_counter()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="kerasline-bench-") as tmp:
        item = tabular_item(Path(tmp), args.quick)
    results = {**run_record(args.quick, started, start, load_before), "tabular": item}
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    current = perf.RESULTS_MD.read_text() if perf.RESULTS_MD.exists() else ""
    section = tabular_section(item, started, results["mode"])
    write_text_atomic(perf.RESULTS_MD, with_tabular_section(current, current, section))
    print(f"\nkerasline tabular item ({results['mode']}, {results['elapsed_s']:.0f} s, load {load_before:.2f})")
    print(format_table(tabular_table_rows(item)))
    print(f"\nresults: {args.out}, {perf.RESULTS_MD}")
    return 0


def transfer_only(args: argparse.Namespace) -> int:
    """Item 15 alone: its table rows, results JSON, and its section of benchmarks/RESULTS.md (the rest kept)."""
    started, start = datetime.now(UTC).isoformat(timespec="seconds"), time.perf_counter()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="kerasline-bench-") as tmp:
        item = transfer_item(Path(tmp), args.quick)
    results = {**run_record(args.quick, started, start, load_before), "transfer": item}
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    current = perf.RESULTS_MD.read_text() if perf.RESULTS_MD.exists() else ""
    section = transfer_section(item, started, results["mode"])
    write_text_atomic(perf.RESULTS_MD, with_transfer_section(current, current, section))
    print(f"\nkerasline transfer item ({results['mode']}, {results['elapsed_s']:.0f} s, load {load_before:.2f})")
    print(format_table(transfer_table_rows(item)))
    print(f"\nresults: {args.out}, {perf.RESULTS_MD}")
    return 0


def run_record(quick: bool, started: str, start: float, load_before: float) -> dict:
    """What every results JSON opens with: the mode, when and for how long, the machine and its load, the versions."""
    return {
        "mode": "quick" if quick else "full",
        "started": started,
        "elapsed_s": time.perf_counter() - start,
        "machine": {**machine(), "load_avg_1min_before": load_before, "load_avg_1min_after": os.getloadavg()[0]},
        "versions": versions(),
    }


def write_perf_outputs(results: dict, out: Path) -> None:
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    markdown = perf.results_markdown(results["performance"], results["machine"], results["started"], results["mode"])
    # Item 14's section: this run's when it ran item 14, else the one RESULTS.md already holds.
    current = perf.RESULTS_MD.read_text() if perf.RESULTS_MD.exists() else ""
    tabular = results.get("tabular")
    section = tabular_section(tabular, results["started"], results["mode"]) if tabular else None
    markdown = with_tabular_section(markdown, current, section)
    transfer = results.get("transfer")  # item 15's likewise
    section = transfer_section(transfer, results["started"], results["mode"]) if transfer else None
    write_text_atomic(perf.RESULTS_MD, with_transfer_section(markdown, current, section))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"shrink everything ({' '.join(QUICK_OVERRIDES)})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results (default: %(default)s)")
    parser.add_argument("--perf", action="store_true", help="items 10-12 only: PyTorch race, pipelines, ONNX")
    parser.add_argument("--tabular", action="store_true", help="item 14 only: the penguins experiments, baselines")
    parser.add_argument("--transfer", action="store_true", help="item 15 only: init_from against scratch, few labels")
    parser.add_argument("--soak", action="store_true", help="the soak run alone: 16 clients, 10 min")
    parser.add_argument("--server", help="item 6 only, against this REST URL (e.g. real TF Serving)")
    parser.add_argument("--grpc", metavar="HOST:PORT", help="with --server: its gRPC address")
    parser.add_argument("--repo", type=Path, help="with --server: the repository it serves (in-process reference)")
    args = parser.parse_args(argv)
    if args.soak:
        return soak.main([*(["--quick"] if args.quick else []), "--out", str(args.out)])
    if args.server:
        return serving_only(args)
    if args.perf:
        return perf_only(args)
    if args.tabular:
        return tabular_only(args)
    if args.transfer:
        return transfer_only(args)
    epochs = 2 if args.quick else 3
    started, start = datetime.now(UTC).isoformat(timespec="seconds"), time.perf_counter()
    # Other work on the machine skews every timing here; the load average before we start is the witness.
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(prefix="kerasline-bench-") as tmp:
        cfg = experiment(Path(tmp), args.quick)
        short = experiment(Path(tmp), args.quick, f"training.epochs={epochs}")
        print(f"[4] training {cfg.name} in full ({cfg.training.epochs} epochs at most)", flush=True)
        trained = train_default(cfg)
        print("[2] plain model.fit on numpy arrays", flush=True)
        plain = plain_fit(short, epochs)
        print("[1] input pipeline vs the same batches in memory", flush=True)
        pipe = pipeline_overhead(short, epochs)
        print("[3] export and inference latency", flush=True)
        lat = latency(cfg, trained["run_dir"], calls={1: 50, 64: 10} if args.quick else {1: 200, 64: 50})
        print("[5] tuning with a fixed budget, then training the tuned experiment in full", flush=True)
        tun = tuning(Path(tmp), args.quick, trained["test_metrics"]["accuracy"])
        print("[8] the model zoo: each experiment trained, exported and checked", flush=True)
        zoo = zoo_item(Path(tmp), args.quick)
        print("[6] serving: REST and gRPC on the development server beside in-process calls", flush=True)
        served = serving_item(serving_models(cfg), Path(cfg.export.dir), args.quick)
        print("[7] scaling: 1 device vs 2 replicas, 1 worker vs 2 workers", flush=True)
        scale = scaling(args.quick)
        print("[9] generative experiments, scored with the classifier of [4]", flush=True)
        generative = generative_item(Path(tmp), args.quick, cfg, trained["run_dir"])
        suite = perf.performance_suite(Path(tmp), args.quick)
        print(f"[13] segmentation: {SEGMENTATION_EXPERIMENT} trained in full, exported, timed", flush=True)
        seg = segmentation(Path(tmp), args.quick)
        print("[14] tabular: the penguins experiments beside baselines on the same split", flush=True)
        tab = tabular_item(Path(tmp), args.quick)
        print("[15] transfer: init_from against scratch with 10 and 50 labels per class", flush=True)
        transfer = transfer_item(Path(tmp), args.quick)

    results = {
        **run_record(args.quick, started, start, load_before),
        "experiment": EXPERIMENT,
        "overrides": QUICK_OVERRIDES if args.quick else [],
        "targets": TARGETS,
        "input_pipeline": pipe,
        "throughput": throughput(trained, plain),
        "latency": lat,
        "accuracy": {k: v for k, v in trained.items() if k != "run_dir"},
        "tuning": tun,
        "serving": served,
        "scaling": scale,
        "zoo": zoo,
        "generative": generative,
        "performance": suite,
        "segmentation": seg,
        "tabular": tab,
        "transfer": transfer,
    }
    write_perf_outputs(results, args.out)
    print(
        f"\nkerasline benchmarks ({results['mode']}, {results['elapsed_s']:.0f} s, "
        f"{results['machine']['cpu_model']}, {results['machine']['cpu_count']} CPUs)"
    )
    if load_before >= 0.5:
        print(f"warning: 1-minute load average was {load_before:.2f} before the run; timings share the CPUs")
    print(table(results))
    if tun["gain_points"] <= 0:
        print(
            f"tuning did not earn its keep here: {tun['gain_points']:+.2f} points on test for {tun['search_s']:.0f} s"
        )
    print(SCALING_NOTE)
    print(f"\nresults: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
