"""Item 15 of `make bench`: what a start from an earlier run (`model.init_from`) is worth with few labels.

1. `mnist_pretrain` is trained once on the 8,000 shipped MNIST digits (28×28).
2. For each label budget (`BUDGETS`: 10 and 50 training examples per class, `data.labels_per_class`), the UCI
   optical digits (8×8, other writers and scanner; data/uci_digits_1200.npz) are trained from scratch
   (`uci_digits_scratch`) and from the pretrained run (`uci_digits_finetune`, `model.init_from` = that run), on the
   same labelled examples; both take the raw 8×8 image and resize it to 28×28 inside the model.
3. `digits_conv_autoencoder` is trained (for `AUTOENCODER_EPOCHS`, not its configured 30: its encoder is what is
   reused), then `digits_from_autoencoder` (a CNN whose two convs are named as the encoder's) is trained from it
   and from scratch, on 10 labelled MNIST digits per class; the autoencoder saw the training split's images
   without their labels, never the validation or test split.

Each figure is the test accuracy of the run's best weights (chosen on validation, as `train` chooses them), on
examples no run trained on: the 480 UCI digits of its test split, or the 1,000 of the MNIST sample's. Beside it:
the paired difference (fine-tuned − scratch, over the same test examples) with its standard error, each run's
wall time and the 1-minute load average before and after it. These are accuracy figures, not speed figures.

`python -m benchmarks.transfer [--quick] [--out PATH]` runs this item alone, printing its table;
`python -m benchmarks.run --transfer` also writes results.json and this item's section of RESULTS.md.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import train_default
from benchmarks.figures import Figure, figure_table
from kerasline.config import ExperimentConfig, load_experiment
from kerasline.training.init_from import REPORT_FILE
from kerasline.training.tasks import task_for

PRETRAIN, SCRATCH, FINETUNE = "mnist_pretrain", "uci_digits_scratch", "uci_digits_finetune"
AUTOENCODER, FROM_AUTOENCODER = "digits_conv_autoencoder", "digits_from_autoencoder"
BUDGETS = (10, 50)  # labelled training examples per class
AUTOENCODER_EPOCHS = 8  # of its configured 30 (early stopping, patience 5): the encoder is what is reused
QUICK = {  # --quick: checks that the item runs; its figures mean nothing
    PRETRAIN: ["data.limit=1200", "training.epochs=1"],
    AUTOENCODER: ["data.limit=1200", "training.epochs=1"],
    "classifiers": ["training.epochs=2"],
}
SECTION_BEGIN, SECTION_END = "<!-- transfer: begin -->", "<!-- transfer: end -->"  # its part of RESULTS.md
# How the shipped hyperparameters were chosen: on the UCI validation split only (seed 42, 10 labels per class, 120
# digits: one is 0.83 points), before the measured run. RESULTS.md carries it under the table.
TRIED = """\
How the UCI experiments' settings were chosen, on the validation split only (10 labels per class, seed 42, 120
validation digits, one is 0.83 points; best validation loss, its accuracy):

| variant | scratch | fine-tuned |
|---|---|---|
| as first written: BatchNorm, 40 epochs; scratch lr 1e-3, fine-tune lr 3e-4 | 87.5% (0.412) | 67.5% (0.979) |
| no BatchNorm in any of the three (pretraining: 99.0% on MNIST validation); same learning rates | 95.0% (0.167) | \
99.2% (0.052) |
| no BatchNorm; fine-tune lr 1e-3 | | **99.2% (0.027)** |
| no BatchNorm; scratch lr 2e-3 (80 epochs allowed, early stopping at 44) | **95.0% (0.111)** | |
| no BatchNorm, lr as chosen; digits framed as MNIST's (8×8 → 20×20, 4 zero pixels each side; a prototype \
patched into the bench, not shipped) | 94.2% (0.197, lr 1e-3) | 99.2% (0.033) |

With BatchNorm the fine-tuned run was worse than scratch because of BatchNorm, not of what it had learned: on 100
training digits (4 batches an epoch) the moving statistics, which start as MNIST's, move 1% a step towards the UCI
batches', so after its 17 epochs they were still about half MNIST's. Its best weights classified 70% of their own
100 training digits in inference mode, and 80% of the validation digits with batch statistics (dropout on) against
67.5% with the moving ones. Without BatchNorm nothing depends on the source's statistics. Framing the 8×8 digit as
MNIST frames its digits (a 20×20 box in 28×28) instead of stretching it over the whole 28×28 gained nothing on
validation, so the model keeps `input_size = 28`. The shipped experiments: no BatchNorm in `mnist_pretrain`,
`uci_digits_finetune` and `uci_digits_scratch`; fine-tune lr 1e-3, scratch lr 2e-3; 60 epochs at most for both
(early stopping, patience 10).

`digits_from_autoencoder` is as its author wrote it; what was tried on its validation split (800 MNIST digits, 10
labels per class): in the runs measured above, 82.0% from the encoder against 83.9% from scratch (lr 1e-3, 40
epochs, both still improving); from another 8-epoch autoencoder run, 77.9% with lr 3e-4, and 80.0% with 100 epochs
allowed (early stopping at 42) against 86.4% from scratch (stopping at 63); the encoder's dense `latent` layer loaded
too (a prototype: the CNN's dense layer matched to it, `dense_units = 32`) 65.6% against 82.5% from scratch at that
width. The encoder's convs are
not a better start than random ones here: they are 2 of the CNN's 4 weighted layers (about 19 of its 220 thousand
parameters), learned as stride-2 convs for denoising and used as stride-1 convs each followed by max-pooling; with
them the flattened features are 78% non-zero (50% from a random start) and about a quarter smaller.
"""


def experiment(tmp: Path, name: str, *overrides: str) -> ExperimentConfig:
    redirect = [f"runs_dir={tmp / 'runs'}", f"export.dir={tmp / 'exports'}"]
    return load_experiment(name, [*redirect, *overrides])


def from_scratch(cfg: ExperimentConfig) -> ExperimentConfig:
    """The same experiment without model.init_from, under its own name (so its runs sit apart)."""
    model = cfg.model.model_copy(update={"init_from": None})
    return cfg.model_copy(update={"name": f"{cfg.name}_scratch", "model": model})


def best_epoch(run_dir: Path, monitor: str) -> dict:
    """The history row of the epoch whose weights `train` kept (the best `monitor`; the first of equals)."""
    with open(run_dir / "history.csv", newline="") as f:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    pick = max if monitor.endswith(("accuracy", "iou", "dice")) else min
    best = pick(rows, key=lambda row: row[monitor])
    return {"epoch": int(best["epoch"]) + 1, "val_accuracy": best["val_accuracy"], "val_loss": best["val_loss"]}


def test_correct(cfg: ExperimentConfig, run_dir: Path) -> np.ndarray:
    """Which test examples the run's best weights classify right (bool [N], the split's order)."""
    images, labels = task_for(cfg).load_splits().test.batch(100_000).get_single_element()
    model = task_for(cfg).export_model(run_dir / "best.weights.h5")
    probabilities = model.predict(images.numpy().astype(np.float32), batch_size=256, verbose=0)
    return np.asarray(probabilities).argmax(axis=1) == labels.numpy()


def trained(cfg: ExperimentConfig) -> dict:
    """`train` timed as item 4 times it, with the load average around it; then what the run chose and scored."""
    load_before = os.getloadavg()[0]
    run = train_default(cfg)
    load_after = os.getloadavg()[0]
    run_dir = run["run_dir"]
    record = {
        "experiment": cfg.name,
        "run_dir": str(run_dir),
        "seed": cfg.seed,
        "labels_per_class": cfg.data.labels_per_class,
        "training_examples": int(task_for(cfg).load_splits().train.cardinality()),
        "wall_s": run["wall_s"],
        "epochs_run": run["epochs_run"],
        "load_avg_1min_before": load_before,
        "load_avg_1min_after": load_after,
        "test_metrics": run["test_metrics"],
    }
    if (run_dir / REPORT_FILE).is_file():
        report = json.loads((run_dir / REPORT_FILE).read_text())
        record["init_from"] = {**report, "skipped": sorted(report["skipped"])}
    if "accuracy" in run["test_metrics"]:
        correct = test_correct(cfg, run_dir)
        record |= {"best": best_epoch(run_dir, cfg.training.monitor), "test_examples": len(correct)}
        record |= {"test_accuracy": float(correct.mean()), "test_correct": correct.astype(int).tolist()}
        if abs(record["test_accuracy"] - run["test_metrics"]["accuracy"]) > 1e-6:
            print(f"warning: {cfg.name}: {record['test_accuracy']} on test here, {run['test_metrics']} in train")
    return record


def compared(scratch: dict, transferred: dict) -> dict:
    """The two runs over the same test examples: accuracies, their paired difference and its standard error."""
    a, b = np.array(scratch.pop("test_correct")), np.array(transferred.pop("test_correct"))
    gap = b - a  # +1: only the transferred model is right; -1: only scratch
    return {
        "scratch": scratch,
        "transferred": transferred,
        "difference_points": 100 * float(gap.mean()),
        "standard_error_points": 100 * float(gap.std(ddof=1) / np.sqrt(len(gap))),
        "only_transferred_right": int((gap > 0).sum()),
        "only_scratch_right": int((gap < 0).sum()),
    }


def transfer_item(tmp: Path, quick: bool, budgets: tuple[int, ...] = BUDGETS, autoencoder: bool = True) -> dict:
    """Trains every run of this item in `tmp`; returns the pretraining runs and each comparison. The 45-minute
    `make bench` asks for the UCI comparison with 10 labels per class only (`budgets`, no `autoencoder`)."""
    short, start = QUICK["classifiers"] if quick else [], time.perf_counter()
    print(f"    {PRETRAIN}", flush=True)
    pretrain = trained(experiment(tmp, PRETRAIN, *(QUICK[PRETRAIN] if quick else [])))
    comparisons = {}
    for n in budgets:
        budget = f"data.labels_per_class={n}"
        print(f"    {SCRATCH}, {FINETUNE} with {n} labels per class", flush=True)
        scratch = trained(experiment(tmp, SCRATCH, budget, *short))
        finetune = trained(experiment(tmp, FINETUNE, budget, f"model.init_from={pretrain['run_dir']}", *short))
        comparisons[f"uci_{n}"] = compared(scratch, finetune) | {"labels_per_class": n, "source": PRETRAIN}
    if not autoencoder:
        return {"pretrain": pretrain, "comparisons": comparisons, "elapsed_s": time.perf_counter() - start}
    shortened = QUICK[AUTOENCODER] if quick else [f"training.epochs={AUTOENCODER_EPOCHS}"]
    print(f"    {AUTOENCODER} ({' '.join(shortened)}), then {FROM_AUTOENCODER} from it and from scratch", flush=True)
    autoencoder = trained(experiment(tmp, AUTOENCODER, *shortened))
    initialised = experiment(tmp, FROM_AUTOENCODER, f"model.init_from={autoencoder['run_dir']}", *short)
    scratch, encoder = trained(from_scratch(initialised)), trained(initialised)
    comparisons["autoencoder"] = compared(scratch, encoder) | {
        "labels_per_class": initialised.data.labels_per_class,
        "source": AUTOENCODER,
    }
    return {
        "overrides": QUICK if quick else {AUTOENCODER: [f"training.epochs={AUTOENCODER_EPOCHS}"]},
        "pretrain": pretrain,
        "autoencoder": autoencoder,
        "comparisons": comparisons,
        "elapsed_s": time.perf_counter() - start,
    }


def results_elapsed(results: dict) -> str:
    elapsed = results.get("elapsed_s")
    return f"{elapsed / 60:.0f} minutes here" if elapsed else "about 15 minutes here"


def figures(results: dict) -> list[Figure]:
    """The pretraining run's test accuracy; per comparison, the transferred run's test accuracy against scratch's
    on the same test examples (target: transfer > scratch)."""
    out = [Figure(f"transfer {PRETRAIN}: MNIST test accuracy", results["pretrain"]["test_accuracy"], "accuracy")]
    for key, c in results["comparisons"].items():
        what = f"UCI digits from {PRETRAIN}" if key.startswith("uci") else f"MNIST digits from {AUTOENCODER}"
        out.append(
            Figure(
                f"transfer, {what}, {c['labels_per_class']} labels per class: test accuracy, transfer vs scratch",
                c["transferred"]["test_accuracy"],
                "accuracy",
                baseline=c["scratch"]["test_accuracy"],
                target="> 1.0",
            )
        )
    return out


def results_section(results: dict, started: str, mode: str) -> str:
    """This item's part of RESULTS.md, between its markers."""
    pretrain, autoencoder = results["pretrain"], results["autoencoder"]
    quick = f": {json.dumps(QUICK)}, figures not meaningful" if mode == "quick" else ""
    lines = [
        SECTION_BEGIN,
        "## 15. Transfer: a start from an earlier run with few labels (accuracy figures, not speed figures)",
        "",
        "Measured by `make bench`; alone: `make bench BENCH=--transfer` (`python -m benchmarks.run --transfer`, "
        f"{results_elapsed(results)}). This one: {mode}, started {started}{quick}; raw numbers in results.json. "
        "Each run is `kerasline.train` on the shipped experiment (its seed, 42), runs in a temporary directory; the "
        "figure is the test accuracy of the weights `train` kept (best validation loss), on test examples no run of "
        "this item trained on. Difference: transfer − scratch over the same test examples, ± its paired standard "
        "error; one UCI test digit is 0.21 points, one MNIST test digit 0.1.",
        "",
        f"Sources: `{PRETRAIN}` ({pretrain['training_examples']:,} MNIST training digits, {pretrain['epochs_run']} "
        f"epochs, {100 * pretrain['test_accuracy']:.2f}% on its MNIST test split, {pretrain['wall_s']:.0f} s, "
        f"load {pretrain['load_avg_1min_before']:.2f} → {pretrain['load_avg_1min_after']:.2f}); `{AUTOENCODER}` "
        f"({autoencoder['epochs_run']} epochs{'' if mode == 'quick' else ' of its configured 30'}, test MSE "
        f"{autoencoder['test_metrics']['loss']:.4f}, {autoencoder['wall_s']:.0f} s, load "
        f"{autoencoder['load_avg_1min_before']:.2f} → {autoencoder['load_avg_1min_after']:.2f}).",
        "",
        "| target (labels per class, training examples) | scratch | transfer | difference, points | layers loaded "
        "/ new / skipped | wall time scratch; transfer (epochs run, best epoch) | 1-minute load before → after |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, c in results["comparisons"].items():
        s, t = c["scratch"], c["transferred"]
        init = t.get("init_from", {"loaded": [], "new": [], "skipped": []})
        target = f"UCI digits ← `{PRETRAIN}`" if key.startswith("uci") else f"MNIST digits ← `{AUTOENCODER}` encoder"
        better = {side: "**" if c["difference_points"] * sign > 0 else "" for side, sign in (("s", -1), ("t", 1))}
        lines.append(
            f"| {target} ({c['labels_per_class']}, {s['training_examples']}) | "
            f"{better['s']}{100 * s['test_accuracy']:.2f}%{better['s']} | "
            f"{better['t']}{100 * t['test_accuracy']:.2f}%{better['t']} | "
            f"{c['difference_points']:+.2f} ± {c['standard_error_points']:.2f} "
            f"({c['only_transferred_right']} right only with transfer, {c['only_scratch_right']} only from scratch) | "
            f"{len(init['loaded'])} / {len(init['new'])} / {len(init['skipped'])} | "
            f"{s['wall_s']:.0f} s ({s['epochs_run']}, {s['best']['epoch']}); {t['wall_s']:.0f} s ({t['epochs_run']}, "
            f"{t['best']['epoch']}) | {s['load_avg_1min_before']:.2f} → {s['load_avg_1min_after']:.2f}; "
            f"{t['load_avg_1min_before']:.2f} → {t['load_avg_1min_after']:.2f} |"
        )
    ratios = [
        f"{c['labels_per_class']} labels per class from `{c['source']}`, "
        f"{c['difference_points'] / max(c['standard_error_points'], 1e-9):+.1f}"
        for c in results["comparisons"].values()
    ]
    lines += [
        "",
        f"Difference ÷ its standard error: {'; '.join(ratios)}. One seed each (the shipped 42): the split, the "
        "labelled examples and the initialisation are those of that seed. A budget of 50 keeps 498 UCI digits: the "
        "training split holds only 48 zeros. In the autoencoder row, only the encoder's two convs load; the "
        "CNN's dense layers are new.",
        "",
        "The wall times share 2 cores with other work (the load average beside each): they say what a run costs "
        "here, not how fast it can be.",
        "",
        TRIED.rstrip("\n"),
        SECTION_END,
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.transfer", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shrink the training: figures not meaningful")
    parser.add_argument("--out", type=Path, help="JSON results (default: print only)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kerasline-bench-") as tmp:
        results = transfer_item(Path(tmp), args.quick)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(figure_table(figures(results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
