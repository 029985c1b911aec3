"""The performance suite (items 10, 11 and 12 of `make bench`), and benchmarks/RESULTS.md, which it regenerates.

7. Race against PyTorch: whole training runs of `training.fit.train` (ours) and a plain eager PyTorch loop
   (benchmarks/torch_models.py) on the same data, architecture, batch size and optimiser, each run in a fresh
   process (benchmarks/race.py), the two sides interleaved A B B A so drifting machine load falls on both.
   Two ratios per model: steady-state samples/s (median epoch after the first) and whole-run wall time.
   Then the levers, each a variant of our run interleaved with the plain one on the convnet.
8. Input pipeline for every experiment with augmentation on: item 1's measurement (the pipeline vs the same
   batches from memory) on a slice of its data, and the augmentation pipeline's examples/s with no model.
9. Inference: each race model's last run exported as the project publishes it, then ONNX Runtime against the
   SavedModel at batch 1 and 64, and an int8 ONNX variant (dynamic quantisation) with its test-accuracy change.
"""

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tensorflow as tf
from onnxruntime.quantization import QuantType, quantize_dynamic

from benchmarks.common import met, pipeline_overhead
from kerasline.config import load_experiment
from kerasline.export import export_run
from kerasline.files import write_text_atomic
from kerasline.timing import median_ms
from kerasline.training.tasks import build_inputs, task_for

ROOT = Path(__file__).resolve().parents[1]
RACE = ("mnist_convnet", "imdb_lstm", "imdb_transformer")
RACE_EPOCHS = {"mnist_convnet": 6, "imdb_lstm": 3, "imdb_transformer": 2}
TARGETS = {"steady_vs_torch_min": 1.5, "whole_run_vs_torch_min": 1.2, "bf16_accuracy_drop_max_points": 0.2}
# Every experiment with augmentation on, and the slice of it item 11 uses (the ratio is per step, so a slice
# with ~20 steps an epoch is enough). imdb_reviews_lstm needs the tfds download: not measured offline.
PIPELINE_EXPERIMENTS = {
    "digits_lenet": [],
    "digits_resnet": ["data.limit=2400"],
    "digits_vit": ["data.limit=2400"],
    "digits_wide_cnn": ["data.limit=2400"],
    "imdb_lstm": ["data.limit=1200"],
    "imdb_gru": ["data.limit=1200"],
    "imdb_transformer": ["data.limit=1200"],
}
# Levers, each a variant of our real training run timed against a base run of the same experiment (`base` and
# `lever` are overrides or environment). `predicted` is what we expected before measuring; `kept` is what the code
# and experiment files now do (the knobs are declared in kerasline/config.py). Text levers run on a slice: the
# speed-up is per step, and a slice keeps XLA's compile from dominating a 2-epoch comparison of the whole run.
TEXT_SLICE = ["data.limit=800"]
LEVERS = {
    "mnist_convnet: jit_compile": {
        "lever": ["training.jit_compile=true"],
        "predicted": "slower: the issue measured XLA on CPU about 7x slower for the convnet",
        "kept": "off (auto: Keras turns XLA off on a CPU-only machine)",
    },
    "mnist_convnet: steps_per_execution=8": {
        "lever": ["training.steps_per_execution=8"],
        "predicted": "a few % faster: fewer Python round trips; the convnet's steps are short",
        "kept": "knob training.steps_per_execution, default 1",
    },
    "mnist_convnet: mixed_bfloat16": {
        "lever": ["training.mixed_precision=mixed_bfloat16"],
        "predicted": "faster convolutions on AVX512_BF16, if oneDNN picks bf16 kernels",
        "kept": "knob training.mixed_precision (already there), default float32",
    },
    "mnist_convnet: oneDNN off": {
        "lever_env": {"TF_ENABLE_ONEDNN_OPTS": "0"},
        "predicted": "slower: plain Eigen kernels instead of oneDNN's",
        "kept": "oneDNN on (TensorFlow's default on x86)",
    },
    "mnist_convnet: 1 thread per pool": {
        "lever_env": {"KERASLINE_BENCH_THREADS": "1,1"},
        "predicted": "slower on an idle machine; maybe faster when other work loads the 2 cores",
        "kept": "TensorFlow's default pools (one thread per core)",
    },
    "imdb_lstm: jit_compile": {
        "base": ["training.jit_compile=false", *TEXT_SLICE],
        "lever": ["training.jit_compile=true", *TEXT_SLICE],
        "epochs": 2,
        "predicted": "faster: XLA fuses the 256-step recurrence that the masked LSTM runs op by op",
        "kept": "on in experiments/imdb_lstm.toml",
    },
    "imdb_transformer: mixed_bfloat16": {
        "base": TEXT_SLICE,
        "lever": ["training.mixed_precision=mixed_bfloat16", *TEXT_SLICE],
        "epochs": 2,
        "predicted": "faster matmuls on AVX512_BF16",
        "kept": "float32",
    },
}
QUICK = {
    "race_epochs": 2,
    "race_overrides": ["data.limit=640"],
    "levers": ("mnist_convnet: jit_compile",),
    "pipelines": ("digits_lenet", "imdb_lstm"),
}


def race_run(side: str, experiment: str, epochs: int, overrides: list[str], env: dict | None = None) -> dict:
    """One whole run in a fresh process (benchmarks/race.py); its JSON line."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.race", side, experiment, str(epochs), *overrides],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        timeout=1800,
    )
    if proc.returncode:
        raise RuntimeError(f"race {side} {experiment} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def samples_per_s(run: dict, samples: int) -> float:
    epochs = run["epoch_s"][1:] or run["epoch_s"]
    return samples / statistics.median(epochs)


def summarise(runs: list[dict], samples: int) -> dict:
    """Median and spread (min, max) over the repeats."""
    sps, wall = [samples_per_s(r, samples) for r in runs], [r["wall_s"] for r in runs]
    return {
        "samples_per_s": statistics.median(sps),
        "samples_per_s_range": [min(sps), max(sps)],
        "wall_s": statistics.median(wall),
        "wall_s_range": [min(wall), max(wall)],
        "accuracy": [r["accuracy"] for r in runs],
        "runs": runs,
    }


def race(experiment: str, epochs: int, repeats: int, keep_runs: Path, overrides: list[str]) -> dict:
    """Ours and PyTorch in turns, A B B A ...; the last of our runs is kept in `keep_runs` for item 12."""
    samples = int(task_for(load_experiment(experiment, overrides)).load_splits().train.cardinality())
    runs: dict[str, list[dict]] = {"ours": [], "torch": []}
    order = [side for i in range(repeats) for side in (("ours", "torch") if i % 2 == 0 else ("torch", "ours"))]
    for i, side in enumerate(order):
        keep = [f"runs_dir={keep_runs}"] if side == "ours" and "ours" not in order[i + 1 :] else []
        runs[side].append(race_run(side, experiment, epochs, [*overrides, *keep]))
    ours, torch = summarise(runs["ours"], samples), summarise(runs["torch"], samples)
    return {
        "epochs": epochs,
        "repeats": repeats,
        "train_samples": samples,
        "ours": ours,
        "torch": torch,
        "steady_ratio": ours["samples_per_s"] / torch["samples_per_s"],
        "whole_run_ratio": torch["wall_s"] / ours["wall_s"],
    }


def levers(names: tuple[str, ...], epochs: int, shrink: list[str]) -> dict:
    """Each lever's run against its base run, interleaved base, lever, lever, base."""
    out = {}
    for name in names:
        lever = LEVERS[name]
        experiment = name.split(":")[0]
        overrides = {side: [*lever.get(side, []), *shrink] for side in ("base", "lever")}
        samples = int(task_for(load_experiment(experiment, overrides["base"])).load_splits().train.cardinality())
        runs: dict[str, list[dict]] = {"base": [], "lever": []}
        for side in ("base", "lever", "lever", "base"):
            env = lever.get(f"{side}_env")
            runs[side].append(race_run("ours", experiment, lever.get("epochs", epochs), overrides[side], env))
        base, variant = summarise(runs["base"], samples), summarise(runs["lever"], samples)
        out[name] = {
            "predicted": lever["predicted"],
            "kept": lever["kept"],
            "base": base,
            "lever": variant,
            "steady_ratio": variant["samples_per_s"] / base["samples_per_s"],
            "whole_run_ratio": base["wall_s"] / variant["wall_s"],
            "accuracy_change_points": 100 * (statistics.mean(variant["accuracy"]) - statistics.mean(base["accuracy"])),
        }
    return out


def pipelines(names: tuple[str, ...], epochs: int, shrink: list[str]) -> dict:
    """Item 8: item 1's overhead measurement per experiment, and the augmentation pipeline alone."""
    out = {}
    for name in names:
        cfg = load_experiment(name, [*PIPELINE_EXPERIMENTS[name], *shrink])
        overhead = pipeline_overhead(cfg, epochs)
        data = build_inputs(cfg)
        start, count = time.perf_counter(), 0
        for x, _ in data.train(0, 2):
            count += int(x.shape[0])
        alone = count / (time.perf_counter() - start)
        consumed = cfg.data.batch_size / (overhead["in_memory_step_ms"] / 1000)
        out[name] = {
            "overrides": [*PIPELINE_EXPERIMENTS[name], *shrink],
            **overhead,
            "pipeline_examples_per_s": alone,
            "model_examples_per_s": consumed,
            "headroom": alone / consumed,
        }
    return out


def inference(experiment: str, runs_dir: Path, exports_dir: Path, calls: dict[int, int]) -> dict:
    """Item 9 for one model: export its run, time SavedModel and ONNX Runtime (float32 and int8)."""
    cfg = load_experiment(experiment, [f"runs_dir={runs_dir}", f"export.dir={exports_dir}"])
    run_dir = max((runs_dir / cfg.name).iterdir())  # the newest (and only) run of this experiment
    version = export_run(cfg, run_dir)
    name = cfg.data.input  # "image" or "tokens": the signature's input
    int8_path = version.parent / f"{version.name}-int8.onnx"  # beside the version, not in it: never served
    quantize_dynamic(version / "model.onnx", int8_path, weight_type=QuantType.QInt8)
    serve = tf.saved_model.load(str(version)).signatures["serving_default"]
    sessions = {
        "onnxruntime": ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"]),
        "onnxruntime_int8": ort.InferenceSession(str(int8_path), providers=["CPUExecutionProvider"]),
    }
    x, y = (t.numpy() for t in task_for(cfg).load_splits().test.batch(1 << 20).get_single_element())
    ms = {}
    for batch, n in calls.items():
        inputs = x[:batch]
        tensor = tf.constant(inputs)
        row = {"saved_model": median_ms(lambda t=tensor: serve(**{name: t})["probabilities"].numpy(), n, warmup=5)}
        for key, session in sessions.items():
            row[key] = median_ms(lambda s=session, i=inputs: s.run(["probabilities"], {name: i})[0], n, warmup=5)
        ms[batch] = row

    def accuracy(session: ort.InferenceSession) -> float:
        predicted = np.concatenate(
            [session.run(["probabilities"], {name: x[i : i + 256]})[0] for i in range(0, len(x), 256)]
        )
        return float((predicted.argmax(-1) == y).mean())

    float32, int8 = accuracy(sessions["onnxruntime"]), accuracy(sessions["onnxruntime_int8"])
    return {
        "median_ms": ms,
        "ort_vs_saved_model_batch1": ms[1]["onnxruntime"] / ms[1]["saved_model"],
        "int8_vs_float32_batch1": ms[1]["onnxruntime_int8"] / ms[1]["onnxruntime"],
        "test_accuracy_float32": float32,
        "test_accuracy_int8": int8,
        "int8_accuracy_change_points": 100 * (int8 - float32),
        "onnx_bytes": (version / "model.onnx").stat().st_size,
        "int8_onnx_bytes": int8_path.stat().st_size,
    }


def performance_suite(tmp: Path, quick: bool, progress: Path | None = None) -> dict:
    """Items 10, 11 and 12, in that order (item 12 exports the runs item 10 kept). With `progress`, the figures so far
    are written there after each item, so a run stopped on a busy machine still leaves what it measured."""

    def save() -> None:
        if progress:
            write_text_atomic(progress, json.dumps(out, indent=2, default=str) + "\n")

    runs_dir, exports_dir = tmp / "perf-runs", tmp / "perf-exports"
    shrink = QUICK["race_overrides"] if quick else []
    out: dict = {"race": {}, "levers": {}, "pipelines": {}, "inference": {}, "targets": TARGETS}
    for experiment in RACE:
        epochs = QUICK["race_epochs"] if quick else RACE_EPOCHS[experiment]
        print(f"[10] {experiment}: ours vs PyTorch, {epochs} epochs a run", flush=True)
        out["race"][experiment] = race(experiment, epochs, 1 if quick else 2, runs_dir, shrink)
        save()
    print("[10] levers", flush=True)
    out["levers"] = levers(QUICK["levers"] if quick else tuple(LEVERS), QUICK["race_epochs"] if quick else 3, shrink)
    save()
    print("[11] input pipeline of every experiment with augmentation on", flush=True)
    out["pipelines"] = pipelines(QUICK["pipelines"] if quick else tuple(PIPELINE_EXPERIMENTS), 2, shrink)
    save()
    for experiment in RACE:
        print(f"[12] {experiment}: export, SavedModel vs ONNX Runtime (float32, int8)", flush=True)
        calls = {1: 30, 64: 5} if quick else {1: 200, 64: 30}
        out["inference"][experiment] = inference(experiment, runs_dir, exports_dir, calls)
    return out


def table_rows(perf: dict) -> list[tuple[str, str, str, str]]:
    rows = []
    for name, r in perf["race"].items():
        ours, torch = r["ours"], r["torch"]
        rows += [
            (
                f"10. {name}: samples/s ours / PyTorch (steady)",
                f"{r['steady_ratio']:.2f}",
                ">= 1.5",
                met(r["steady_ratio"] >= TARGETS["steady_vs_torch_min"]),
            ),
            ("   samples/s: ours | PyTorch", f"{ours['samples_per_s']:.0f} | {torch['samples_per_s']:.0f}", "", ""),
            (
                f"   whole run ({r['epochs']} epochs), PyTorch s / ours s",
                f"{r['whole_run_ratio']:.2f}",
                ">= 1.2",
                met(r["whole_run_ratio"] >= TARGETS["whole_run_vs_torch_min"]),
            ),
            ("   wall s: ours | PyTorch", f"{ours['wall_s']:.1f} | {torch['wall_s']:.1f}", "", ""),
        ]
    for name, lever in perf["levers"].items():
        rows.append(
            (
                f"10. lever {name}: speed-up steady | whole",
                f"{lever['steady_ratio']:.2f} | {lever['whole_run_ratio']:.2f}",
                "",
                "",
            )
        )
    for name, p in perf["pipelines"].items():
        rows += [
            (f"11. {name}: step time, pipeline / in-memory", f"{p['ratio']:.3f}", "<= 1.05", met(p["ratio"] <= 1.05)),
            (
                "   examples/s: pipeline alone | model consumes",
                f"{p['pipeline_examples_per_s']:.0f} | {p['model_examples_per_s']:.0f}",
                "",
                "",
            ),
        ]
    for name, inf in perf["inference"].items():
        for batch, ms in inf["median_ms"].items():
            value = " | ".join(f"{ms[k]:.2f}" for k in ("saved_model", "onnxruntime", "onnxruntime_int8"))
            rows.append((f"12. {name} ms, batch {batch}: SM | ORT | ORT int8", value, "", ""))
        rows += [
            (
                "   ORT / SavedModel, batch 1",
                f"{inf['ort_vs_saved_model_batch1']:.3f}",
                "<= 0.50",
                met(inf["ort_vs_saved_model_batch1"] <= 0.5),
            ),
            ("   int8 test accuracy change (points)", f"{inf['int8_accuracy_change_points']:+.2f}", "", ""),
        ]
    return rows


RESULTS_MD = Path(__file__).resolve().parent / "RESULTS.md"


def results_markdown(perf: dict, machine: dict, started: str, mode: str) -> str:
    """benchmarks/RESULTS.md: every figure with both absolute numbers and its spread, levers with their verdicts."""

    def spread(values: list[float], digits: int = 0) -> str:
        return f"{values[0]:.{digits}f}–{values[1]:.{digits}f}"

    flags = machine.get("flags", {})
    lines = [
        "# Performance suite results",
        "",
        f"Regenerated by `make bench` ({mode}, started {started}); raw numbers in results.json.",
        "",
        f"- CPU: {machine.get('cpu_model')}, {machine.get('cpu_count')} logical CPUs; flags: "
        + ", ".join(f"{k}={v}" for k, v in flags.items()),
        f"- 1-minute load average: {machine.get('load_avg_1min_before', float('nan')):.2f} before, "
        f"{machine.get('load_avg_1min_after', float('nan')):.2f} after. Other work on the machine shares the "
        "cores: runs are interleaved (A B B A) and the range over repeats is given beside each median.",
        "",
        "## 7. Training against PyTorch (whole runs, each in a fresh process)",
        "",
        "| model | epochs | steady samples/s ours (range) | PyTorch (range) | ratio | target | "
        "whole run s ours (range) | PyTorch (range) | ratio | target | test acc ours / PyTorch |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in perf["race"].items():
        o, t = r["ours"], r["torch"]
        lines.append(
            f"| {name} | {r['epochs']} | {o['samples_per_s']:.0f} ({spread(o['samples_per_s_range'])}) | "
            f"{t['samples_per_s']:.0f} ({spread(t['samples_per_s_range'])}) | **{r['steady_ratio']:.2f}** | ≥ 1.5 | "
            f"{o['wall_s']:.1f} ({spread(o['wall_s_range'], 1)}) | "
            f"{t['wall_s']:.1f} ({spread(t['wall_s_range'], 1)}) | "
            f"**{r['whole_run_ratio']:.2f}** | ≥ 1.2 | "
            f"{100 * statistics.mean(o['accuracy']):.1f}% / {100 * statistics.mean(t['accuracy']):.1f}% |"
        )
    lines += [
        "",
        "Steady state: training samples ÷ the median epoch after the first (an epoch includes its validation "
        "pass; ours also its callbacks). Whole run: data loading, model building, every epoch and the test pass.",
        "PyTorch runs with OMP_WAIT_POLICY=PASSIVE: with its OpenMP workers spinning (the default) its convnet step "
        "took 1.3 s instead of 79 ms while other work shared the cores, so passive waiting is its best case here.",
        "",
        "## Levers (our run with the lever against its base run, interleaved; text levers on 800 examples)",
        "",
        "| lever | predicted | steady speed-up | whole-run speed-up | samples/s lever / base | "
        "accuracy change (points) | kept |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, lever in perf["levers"].items():
        lines.append(
            f"| {name} | {lever['predicted']} | {lever['steady_ratio']:.2f} | {lever['whole_run_ratio']:.2f} | "
            f"{lever['lever']['samples_per_s']:.0f} / {lever['base']['samples_per_s']:.0f} | "
            f"{lever['accuracy_change_points']:+.2f} | {lever['kept']} |"
        )
    lines += [
        "",
        "Accuracy changes of the text levers come from 2 epochs on 800 examples: noise of a few points, not a verdict "
        "on the lever; their whole-run figure is dominated by compiling on such a short run.",
        "",
        "## 8. Input pipeline (augmentation on)",
        "",
        "| experiment | slice | step ms pipeline / in-memory | ratio | target | "
        "examples/s: pipeline alone / model consumes |",
        "|---|---|---|---|---|---|",
    ]
    for name, p in perf["pipelines"].items():
        lines.append(
            f"| {name} | {' '.join(p['overrides']) or 'all'} | {p['pipeline_step_ms']:.1f} / "
            f"{p['in_memory_step_ms']:.1f} | **{p['ratio']:.3f}** | ≤ 1.05 | "
            f"{p['pipeline_examples_per_s']:.0f} / {p['model_examples_per_s']:.0f} |"
        )
    lines += [
        "",
        "## 9. Inference (median ms per call)",
        "",
        "| model | batch | SavedModel | ONNX Runtime | ORT int8 | ORT / SM | target (batch 1) | "
        "test acc float32 → int8 | ONNX size float32 → int8 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, inf in perf["inference"].items():
        for batch, ms in inf["median_ms"].items():
            lines.append(
                f"| {name} | {batch} | {ms['saved_model']:.2f} | {ms['onnxruntime']:.2f} | "
                f"{ms['onnxruntime_int8']:.2f} | **{ms['onnxruntime'] / ms['saved_model']:.3f}** | "
                f"{'≤ 0.5' if str(batch) == '1' else ''} | {100 * inf['test_accuracy_float32']:.2f}% → "
                f"{100 * inf['test_accuracy_int8']:.2f}% ({inf['int8_accuracy_change_points']:+.2f}) | "
                f"{inf['onnx_bytes'] / 1024:.0f} → {inf['int8_onnx_bytes'] / 1024:.0f} KiB |"
            )
    return "\n".join(lines) + "\n"
