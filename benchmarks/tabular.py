"""Item 14 of `make bench`: the tabular experiments (data/penguins.csv) beside baselines on the same split.

Each shipped experiment is trained as `make train` trains it (`kerasline.train`, its own seed, a timer added to its
callbacks) and exported (`kerasline.export_run`); its test figure is computed here from the export's
`serving_default` called on the test split's raw columns, as a client calls it, and checked against the test
metrics `train` reported. The baselines are fitted by this file on exactly the same split: `task_for(cfg).splits`
is the task's own read and split of the CSV, with its training-only statistics, and
`TableEncoder` encodes the columns as the model sees them (numbers standardised; each id one-hot, id 0, a category
training never saw, dropped).

- penguins_species (3 classes): test accuracy beside the majority class (the most frequent training class) and a
  softmax (multinomial logistic) regression in numpy: mean cross-entropy + λ/2 ‖W‖² (intercepts not penalised),
  solved by Newton's method; λ picked from `L2_GRID` by validation cross-entropy, fitted on the training rows.
- penguins_body_mass (grams): test MAE, RMSE and R² beside the mean predictor (the training mean) and ordinary
  least squares in numpy with an intercept (`numpy.linalg.lstsq`: the minimum-norm solution where one-hot
  columns are collinear with the intercept).

These are accuracy figures: the wall time of each training, with the 1-minute load average before and after it,
is recorded, not judged. `python -m benchmarks.tabular [--quick]` runs this item alone, printing its table;
`python -m benchmarks.run --tabular` also writes results.json and this item's section of RESULTS.md.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from benchmarks.common import train_default
from benchmarks.figures import Figure, figure_table
from kerasline.config import ExperimentConfig, load_experiment
from kerasline.export import export_run
from kerasline.pipelines.columns import NUMBERS, Table
from kerasline.pipelines.table import TableEncoder, TableSplits, as_tensors
from kerasline.training.tasks import task_for

EXPERIMENTS = ("penguins_species", "penguins_body_mass")
QUICK_OVERRIDES = ["training.epochs=3"]
L2_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # the softmax regression's λ, picked on the validation split
QUICK_NOTE = f": {' '.join(QUICK_OVERRIDES)}, figures not meaningful"
SECTION_BEGIN, SECTION_END = "<!-- tabular: begin -->", "<!-- tabular: end -->"  # its part of RESULTS.md


def features(table: Table, columns: dict[str, np.ndarray]) -> np.ndarray:
    """Raw columns → the encoded features [N, D] as float64: the numbers as the encoder gives them, then each id
    input one-hot without its column 0 (a category training never saw), as the MLP's input layer does."""
    encoded = {name: np.asarray(t) for name, t in TableEncoder(table)(as_tensors(columns)).items()}
    parts = [encoded[NUMBERS].astype(np.float64)] if NUMBERS in encoded else []
    for name, (size, _) in table.id_inputs().items():
        parts.append(np.eye(size)[encoded[name]][:, 1:])
    return np.concatenate(parts, axis=1)


def with_intercept(x: np.ndarray) -> np.ndarray:
    return np.concatenate([np.ones((len(x), 1)), x], axis=1)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def cross_entropy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, None))))


def fit_softmax(x: np.ndarray, labels: np.ndarray, classes: int, l2: float, steps: int = 100) -> np.ndarray:
    """Weights [1 + D, K] (row 0 the intercepts) minimising mean cross-entropy + l2/2 ‖W[1:]‖², by Newton's
    method with a halving line search. The problem is convex; its one flat direction (the same constant added to
    every class's intercept) leaves the probabilities unchanged, and the least-squares step ignores it."""
    x = with_intercept(x)
    n, d = x.shape
    onehot = np.eye(classes)[labels]
    penalty = np.full(d, l2)
    penalty[0] = 0.0

    def objective(w: np.ndarray) -> float:
        return cross_entropy(softmax(x @ w), labels) + 0.5 * float(np.sum(penalty[:, None] * w**2))

    w = np.zeros((d, classes))
    for _ in range(steps):
        p = softmax(x @ w)
        gradient = x.T @ (p - onehot) / n + penalty[:, None] * w
        if np.max(np.abs(gradient)) < 1e-10:
            break
        # Hessian of the mean cross-entropy, indices (feature, class) flattened row-major like w.
        curvature = (p[:, :, None] * np.eye(classes)[None]) - p[:, :, None] * p[:, None, :]  # [n, K, K]
        hessian = np.einsum("ni,nj,nab->iajb", x, x, curvature).reshape(d * classes, d * classes) / n
        hessian += np.diag(np.repeat(penalty, classes))
        step = np.linalg.lstsq(hessian, -gradient.reshape(-1), rcond=None)[0].reshape(d, classes)
        size, current = 1.0, objective(w)
        while objective(w + size * step) > current and size > 1e-8:
            size /= 2
        w = w + size * step
    return w


def predict_softmax(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return softmax(with_intercept(x) @ w)


def accuracy(predicted: np.ndarray, labels: np.ndarray) -> dict:
    """The share right, and which test rows (0-based, in the split's order) are wrong."""
    right = predicted == labels
    wrong = np.flatnonzero(~right).tolist()
    return {"accuracy": float(right.mean()), "correct": int(right.sum()), "rows": len(labels), "wrong_rows": wrong}


def regression_figures(predicted: np.ndarray, values: np.ndarray) -> dict:
    """MAE, RMSE and R² (1 − squared error ÷ the test values' own variance, as keras.metrics.R2Score) in float64."""
    predicted, values = np.asarray(predicted, np.float64).reshape(-1), np.asarray(values, np.float64)
    error = predicted - values
    r2 = 1.0 - float(np.sum(error**2)) / float(np.sum((values - values.mean()) ** 2))
    return {"mae": float(np.mean(np.abs(error))), "rmse": float(np.sqrt(np.mean(error**2))), "r2": r2}


def classification_baselines(splits: TableSplits) -> dict:
    table = splits.table
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = splits.train, splits.validation, splits.test
    majority = int(np.bincount(train_y, minlength=len(table.classes)).argmax())  # ties: the lowest class id
    x_train, x_val, x_test = (features(table, columns) for columns in (train_x, val_x, test_x))
    k = len(table.classes)
    fitted = {l2: fit_softmax(x_train, train_y, k, l2) for l2 in L2_GRID}
    validation_loss = {l2: cross_entropy(predict_softmax(w, x_val), val_y) for l2, w in fitted.items()}
    l2 = min(validation_loss, key=validation_loss.get)
    probabilities = predict_softmax(fitted[l2], x_test)
    return {
        "majority_class": accuracy(np.full(len(test_y), majority), test_y) | {"class": table.classes[majority]},
        "logistic_regression": accuracy(probabilities.argmax(1), test_y)
        | {
            "l2": l2,
            "validation_cross_entropy": validation_loss,
            "test_cross_entropy": cross_entropy(probabilities, test_y),
            "features": x_train.shape[1],
        },
    }


def least_squares(splits: TableSplits) -> tuple[np.ndarray, dict]:
    """Ordinary least squares with an intercept on the training rows: its test predictions, and its shape."""
    table, (train_x, train_y), test_x = splits.table, splits.train, splits.test[0]
    x_train, x_test = features(table, train_x), features(table, test_x)
    weights, _, rank, _ = np.linalg.lstsq(with_intercept(x_train), train_y.astype(np.float64), rcond=None)
    return with_intercept(x_test) @ weights, {"features": x_train.shape[1], "rank_with_intercept": int(rank)}


def regression_baselines(splits: TableSplits, linear: np.ndarray, shape: dict) -> dict:
    (_, train_y), test_y = splits.train, splits.test[1]
    mean = float(np.mean(train_y.astype(np.float64)))
    return {
        "mean_predictor": regression_figures(np.full(len(test_y), mean), test_y) | {"mean": mean},
        "linear_regression": regression_figures(linear, test_y) | shape,
    }


def paired_mae_difference(predicted: np.ndarray, other: np.ndarray, values: np.ndarray) -> dict:
    """Mean of |error| − other's |error| over the same test rows, and its standard error (how far apart two MAEs
    on so few rows must be to mean anything)."""
    values = values.astype(np.float64)
    gap = np.abs(predicted.reshape(-1) - values) - np.abs(other.reshape(-1) - values)
    return {"mae_difference": float(gap.mean()), "standard_error": float(gap.std(ddof=1) / np.sqrt(len(gap)))}


def exported_predictions(version: Path, splits: TableSplits) -> np.ndarray:
    """The export's serving_default on the test split's raw columns: class ids [N], or values [N]."""
    serve = tf.saved_model.load(str(version)).signatures["serving_default"]
    outputs = {name: t.numpy() for name, t in serve(**as_tensors(splits.test[0])).items()}
    return outputs["class_id" if splits.table.classes else "value"].reshape(-1)


def experiment(tmp: Path, name: str, quick: bool) -> ExperimentConfig:
    redirect = [f"runs_dir={tmp / 'runs'}", f"export.dir={tmp / 'exports'}"]
    return load_experiment(name, [*redirect, *(QUICK_OVERRIDES if quick else [])])


def tabular_item(tmp: Path, quick: bool) -> dict:
    """Trains, exports and scores each experiment in `tmp`, with its baselines on the same split."""
    results = {}
    for name in EXPERIMENTS:
        print(f"    {name}", flush=True)
        cfg = experiment(tmp, name, quick)
        splits = task_for(cfg).splits  # what the task trains on: the same rows, statistics, order
        load_before = os.getloadavg()[0]
        trained = train_default(cfg)
        load_after = os.getloadavg()[0]
        version = export_run(cfg, trained["run_dir"])
        verification = json.loads((version / "verification.json").read_text())
        classifier = bool(splits.table.classes)
        predicted, labels = exported_predictions(version, splits), splits.test[1]
        if classifier:
            scores, baselines = accuracy(predicted, labels), classification_baselines(splits)
            both = set(scores["wrong_rows"]) & set(baselines["logistic_regression"]["wrong_rows"])
            versus = {"logistic_regression": {"wrong_in_both": sorted(both)}}
        else:
            linear, shape = least_squares(splits)
            scores, baselines = regression_figures(predicted, labels), regression_baselines(splits, linear, shape)
            versus = {"linear_regression": paired_mae_difference(predicted, linear, labels)}
        metric = "accuracy" if classifier else "mae"
        reported = trained["test_metrics"][metric]
        agrees = abs(scores[metric] - reported) <= 1e-4 * max(1.0, abs(reported))
        if not agrees:
            print(f"warning: {name}: the export's test {metric} {scores[metric]} but train reported {reported}")
        results[name] = {
            "experiment": name,
            "kind": "classification" if classifier else "regression",
            "seed": cfg.seed,
            "hidden_units": list(cfg.model.hidden_units),
            "max_epochs": cfg.training.epochs,
            "overrides": QUICK_OVERRIDES if quick else [],
            "rows": {part: len(getattr(splits, part)[1]) for part in ("train", "validation", "test")},
            "skipped_rows": len(splits.skipped),
            "wall_s": trained["wall_s"],
            "epochs_run": trained["epochs_run"],
            "load_avg_1min_before": load_before,
            "load_avg_1min_after": load_after,
            "train_test_metrics": trained["test_metrics"],
            "parity_max_abs_diff": max(d for diffs in verification["max_abs_diff"].values() for d in diffs.values()),
            "train_metric_agrees": agrees,  # the export on raw columns against train's own test pass
            "model": scores,
            "baselines": baselines,
            "model_versus": versus,
        }
    return results


def figures(results: dict) -> list[Figure]:
    """Each experiment's test figure against its baselines: accuracy > the majority class's, MAE < the mean
    predictor's (targets); beside the softmax regression's and least squares' (no target); export parity."""
    out = []
    for name, r in results.items():
        model, base = r["model"], r["baselines"]
        if r["kind"] == "classification":
            majority, logistic = base["majority_class"]["accuracy"], base["logistic_regression"]["accuracy"]
            out += [
                Figure(f"tabular {name}: test accuracy, MLP vs majority class", model["accuracy"], "accuracy",
                       baseline=majority, target="> 1.0"),
                Figure(f"tabular {name}: test accuracy, MLP vs softmax regression", model["accuracy"], "accuracy",
                       baseline=logistic),
            ]  # fmt: skip
        else:
            mean, linear = base["mean_predictor"]["mae"], base["linear_regression"]["mae"]
            out += [
                Figure(f"tabular {name}: test MAE, MLP vs training mean", model["mae"], "g", baseline=mean,
                       target="< 1.0"),
                Figure(f"tabular {name}: test MAE, MLP vs least squares", model["mae"], "g", baseline=linear),
            ]  # fmt: skip
        out.append(
            Figure(f"tabular {name}: export parity, max abs diff", r["parity_max_abs_diff"], "abs", target="<= 1e-05")
        )
    return out


def results_section(results: dict, started: str, mode: str) -> str:
    """This item's part of RESULTS.md, between its markers."""
    species, mass = results.get("penguins_species"), results.get("penguins_body_mass")
    lines = [
        SECTION_BEGIN,
        "## 14. Tabular: penguins (accuracy figures, not speed figures)",
        "",
        f"Measured by `make bench`; alone: `make bench BENCH=--tabular` (`python -m benchmarks.run --tabular`). "
        f"This one: {mode}, started {started}{QUICK_NOTE if mode == 'quick' else ''}; raw numbers in results.json. "
        "Each experiment trained by `kerasline.train` with its shipped seed and exported; its figure is the export's "
        "`serving_default` on the test split's raw columns. Baselines fitted by the bench on the same split "
        "(`task_for(cfg).splits`: the same rows and training-only statistics) and the same encoded "
        "features (standardised numbers, one-hot ids).",
        "",
    ]
    if species:
        m, b = species["model"], species["baselines"]
        lr, maj = b["logistic_regression"], b["majority_class"]

        def acc(f: dict) -> str:
            return f"{100 * f['accuracy']:.2f}% ({f['correct']}/{f['rows']})"

        lines += [
            f"| penguins_species, test accuracy | MLP (`hidden_units = {species['hidden_units']}`) | "
            f"softmax regression (numpy, L2; λ from {min(L2_GRID):g}–{max(L2_GRID):g} on validation) | "
            "majority class |",
            "|---|---|---|---|",
            f"| {species['rows']['test']} test rows | **{acc(m)}** | {acc(lr)} (λ = {lr['l2']:g}) | "
            f"{acc(maj)} ({maj['class']}) |",
            "",
        ]
        both = species["model_versus"]["logistic_regression"]["wrong_in_both"]
        edge = " λ is the grid's smallest: the training classes are all but separable." * (lr["l2"] == L2_GRID[0])
        lines += [
            f"Test rows the MLP gets wrong: {m['rows'] - m['correct']}, of which the softmax regression also gets "
            f"{len(both)} wrong; one test row is {100 / m['rows']:.1f} points.{edge}",
            "",
        ]
    if mass:
        m, b = mass["model"], mass["baselines"]
        lr, mean = b["linear_regression"], b["mean_predictor"]
        lines += [
            f"| penguins_body_mass, {mass['rows']['test']} test rows | MLP (`hidden_units = {mass['hidden_units']}`, "
            "linear head) | "
            "least squares (numpy, intercept) | training mean |",
            "|---|---|---|---|",
            f"| MAE, g | **{m['mae']:.1f}** | {lr['mae']:.1f} | {mean['mae']:.1f} ({mean['mean']:.0f} g) |",
            f"| RMSE, g | {m['rmse']:.1f} | {lr['rmse']:.1f} | {mean['rmse']:.1f} |",
            f"| R² | {m['r2']:.3f} | {lr['r2']:.3f} | {mean['r2']:.3f} |",
            "",
        ]
        paired = mass["model_versus"]["linear_regression"]
        lines += [
            f"MLP − least squares, mean of the paired |error| difference over the same test rows: "
            f"{paired['mae_difference']:+.1f} g (standard error {paired['standard_error']:.1f} g).",
            "",
        ]
    lines += [
        "| experiment | rows train / validation / test | epochs run (at most) | training wall time | "
        "1-minute load average before → after | export parity max abs diff |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        rows = " / ".join(str(r["rows"][part]) for part in ("train", "validation", "test"))
        lines.append(
            f"| {name} | {rows} | {r['epochs_run']} ({r['max_epochs']}) | {r['wall_s']:.1f} s | "
            f"{r['load_avg_1min_before']:.2f} → {r['load_avg_1min_after']:.2f} | {r['parity_max_abs_diff']:.1e} |"
        )
    lines += [
        "",
        "Fewer epochs than the most: early stopping (`training.early_stopping_patience`) ended the run, and the "
        "weights tested are those of its best validation epoch. The wall times share 2 cores with other work (the "
        "load average beside each): they say what a run costs here, not how fast it can be.",
        SECTION_END,
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tabular", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"shrink the training ({' '.join(QUICK_OVERRIDES)})")
    parser.add_argument("--out", type=Path, help="JSON results (default: print only)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kerasline-bench-") as tmp:
        results = tabular_item(Path(tmp), args.quick)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(figure_table(figures(results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
