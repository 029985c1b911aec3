"""Item 8, the model zoo: a row per experiment, each trained by `train` (on a slice, for a few epochs: the 45-minute
bench cannot train twelve experiments as configured), then exported and checked. The export's figures are the
point: parity is its worst max abs difference, latency compares ONNX Runtime with the SavedModel at batch 1 on a real
held-out input. Quality (test accuracy, MAE for regression) and the steady training rate of that short run are
recorded beside them, with no target: the as-configured accuracies come from `make train`."""

import json
from pathlib import Path

from benchmarks.common import steady, train_default
from benchmarks.figures import Figure, block_medians, ort_figure
from benchmarks.latency import in_fresh_process
from kerasline.config import load_experiment
from kerasline.export import export_run
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
    "imdb_nb_logreg",
    "imdb_lstm",
    "imdb_gru",
    "imdb_transformer",
]
BASELINE = "imdb_bow_logreg"  # the sequence models beside it, on the same reviews and split
PLANS = {  # --quick: two experiments (imdb_lstm is one of the models item 6 serves)
    "full": {"experiments": ZOO, "overrides": ["data.limit=600", "training.epochs=2"], "calls": 100},
    "quick": {"experiments": ("mnist_mlp", "imdb_lstm"), "overrides": ["data.limit=300", "training.epochs=1"],
              "calls": 30},
}  # fmt: skip


def zoo_item(tmp: Path, plan: dict) -> list[dict]:
    rows = []
    for name in plan["experiments"]:
        print(f"    {name}", flush=True)
        redirect = [f"runs_dir={tmp / 'runs'}", f"export.dir={tmp / 'exports'}"]
        cfg = load_experiment(name, [*redirect, *plan["overrides"]])
        trained = train_default(cfg)
        samples = sum(1 for _ in task_for(cfg).load_splits().train)
        version = export_run(cfg, trained["run_dir"])
        report = json.loads((version / "verification.json").read_text())
        inputs = {key: value[:1] for key, value in task_for(cfg).sample_inputs().items()}
        rounds = in_fresh_process(version, inputs, {1: plan["calls"]})[1]
        ms = block_medians(rounds)
        metric = "mae" if cfg.data.target == "value" else "accuracy"
        rows.append(
            {
                "experiment": name,
                "overrides": plan["overrides"],
                "model": cfg.model.name,
                "metric": f"test {metric}",
                "quality": trained["test_metrics"][metric],
                "epochs_run": trained["epochs_run"],
                "samples_per_s": samples / steady(trained["epoch_s"]),
                "parity_max_abs_diff": max(d for diffs in report["max_abs_diff"].values() for d in diffs.values()),
                "median_ms_b1": ms,
                "median_ms_b1_rounds": rounds,
                "ort_vs_saved_model_b1": ms["onnxruntime"] / ms["saved_model"],
                "wall_s": trained["wall_s"],
            }
        )
    return rows


def figures(rows: list[dict]) -> list[Figure]:
    """Per experiment: export parity (≤ 1e-5) and ONNX Runtime ÷ SavedModel at batch 1 (≤ 0.5); test quality after
    the short training, and the sequence models' test accuracy beside the bag-of-words baseline's, with no target."""
    out = []
    baseline = next((row for row in rows if row["experiment"] == BASELINE), None)
    for row in rows:
        name, metric = row["experiment"], row["metric"]
        out += [
            Figure(f"zoo {name}: export parity, max abs diff", row["parity_max_abs_diff"], "abs", target="<= 1e-05"),
            ort_figure(f"zoo {name}", row["median_ms_b1_rounds"], 1),
            Figure(f"zoo {name}: {metric} ({' '.join(row['overrides'])})", row["quality"], metric.split()[-1]),
        ]  # fmt: skip
        if baseline and name.startswith("imdb_") and row is not baseline:
            out.append(
                Figure(f"zoo {name}: test accuracy vs {BASELINE}", row["quality"], "accuracy",
                       baseline=baseline["quality"])
            )  # fmt: skip
    return out
