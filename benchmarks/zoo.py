"""Item 8, the model zoo: a row per experiment, each trained as `make train` trains it, then exported and
checked. Quality is the test split's accuracy (MAE for regression); throughput is the steady training rate of
that same run; parity is the export's worst max abs difference; latency compares ONNX Runtime with the
SavedModel at batch 1 on a real held-out input."""

import json
from pathlib import Path

import onnxruntime as ort
import tensorflow as tf

from benchmarks.common import met, steady, train_default
from kerasline.config import load_experiment
from kerasline.export import export_run
from kerasline.timing import median_ms
from kerasline.training.tasks import task_for

ZOO = [
    "mnist_mlp",
    "digits_lenet",
    "digits_fc_baseline",
    "digits_wide_cnn",
    "digits_resnet",
    "digits_vit",
    "digits_mlp_regression",
    "imdb_bow_logreg",
    "imdb_lstm",
    "imdb_gru",
    "imdb_transformer",
]
BASELINE = "imdb_bow_logreg"  # what the sequence models must beat, on the same reviews and split
QUICK_OVERRIDES = ["data.limit=300", "training.epochs=2"]


def zoo_item(tmp: Path, quick: bool) -> list[dict]:
    rows = []
    for name in ZOO:
        print(f"    {name}", flush=True)
        redirect = [f"runs_dir={tmp / 'runs'}", f"export.dir={tmp / 'exports'}"]
        cfg = load_experiment(name, [*redirect, *(QUICK_OVERRIDES if quick else [])])
        trained = train_default(cfg)
        samples = sum(1 for _ in task_for(cfg).load_splits().train)
        version = export_run(cfg, trained["run_dir"])
        report = json.loads((version / "verification.json").read_text())
        inputs = {key: value[:1] for key, value in task_for(cfg).sample_inputs().items()}
        serve = tf.saved_model.load(str(version)).signatures["serving_default"]
        session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
        tensors = {key: tf.constant(value) for key, value in inputs.items()}
        saved_model_ms = median_ms(lambda: serve(**tensors), 200)  # noqa: B023 (called before the next loop)
        onnx_ms = median_ms(lambda: session.run(None, inputs), 200)  # noqa: B023
        metric = "mae" if cfg.data.target == "value" else "accuracy"
        rows.append(
            {
                "experiment": name,
                "model": cfg.model.name,
                "metric": f"test {metric}",
                "quality": trained["test_metrics"][metric],
                "epochs_run": trained["epochs_run"],
                "samples_per_s": samples / steady(trained["epoch_s"]),
                "parity_max_abs_diff": max(d for diffs in report["max_abs_diff"].values() for d in diffs.values()),
                "saved_model_ms_b1": saved_model_ms,
                "onnxruntime_ms_b1": onnx_ms,
                "ort_vs_saved_model_b1": onnx_ms / saved_model_ms,
                "wall_s": trained["wall_s"],
            }
        )
    return rows


def table_rows(rows: list[dict]) -> list[tuple[str, str, str, str]]:
    """(figure, value, target, met?) rows: one per experiment, then the sequence models against the baseline."""
    out = [("8. zoo: quality | samples/s | parity | ORT÷SM b1", "", "", "")]
    for row in rows:
        quality = f"{row['quality']:.4f}" if row["metric"] == "test mae" else f"{100 * row['quality']:.2f}%"
        value = (
            f"{row['metric']} {quality} | {row['samples_per_s']:.0f} | {row['parity_max_abs_diff']:.1e} | "
            f"{row['ort_vs_saved_model_b1']:.2f}"
        )
        ok = met(row["parity_max_abs_diff"] <= 1e-5)
        out.append((f"   {row['experiment']} ({row['model']})", value, "parity ≤ 1e-5", ok))
    baseline = next((row for row in rows if row["experiment"] == BASELINE), None)
    for row in rows:
        if baseline and row["experiment"].startswith("imdb_") and row is not baseline:
            gain = 100 * (row["quality"] - baseline["quality"])
            label = f"   {row['experiment']} vs bag-of-words baseline"
            out.append((label, f"{gain:+.2f} points", "> 0", met(gain > 0)))
    return out
