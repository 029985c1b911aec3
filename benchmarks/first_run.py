"""Item 4: the first run a newcomer makes, `make train` of the default experiment, against a script a Keras user
already knows.

Lane `default`: `kerasline train EXPERIMENT`, the whole command in a fresh process as `make train` runs it (imports,
data, every epoch with its validation and callbacks, the test pass, the export with its parity check). Lane
`convnet`: the keras-io "Simple MNIST convnet", 8 epochs of plain `model.fit` (`benchmarks/race.py keras
mnist_convnet 8`), also timed as a whole fresh process. The lanes take turns (A B B A ...), each run after the load
gate. Issue #14's target: the default reaches >= 99.0% test accuracy in at most 3x the convnet's wall time.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.figures import Figure, LoadGate, Reading, spread
from benchmarks.perf import ROOT, lanes_in_turn

CONVNET = ("mnist_convnet", 8)
KERASLINE = Path(sys.executable).with_name("kerasline")  # the console script `make train` calls
TIMES_CONVNET = 3.0


def first_run(tmp: Path, experiment: str, overrides: list[str], rounds: int, gate: LoadGate) -> dict:
    """Both lanes `rounds` times; the default's last run (its run directory, test metrics) feeds the later items."""
    exports = tmp / "exports"

    def run(lane: str, last: bool) -> dict:
        if lane == "default":
            runs = [f"runs_dir={tmp / 'runs'}", f"export.dir={exports}"]
            command = [str(KERASLINE), "train", experiment, *runs, *overrides]
        else:
            convnet, epochs = CONVNET
            limit = [o for o in overrides if o.startswith("data.limit=")]  # --quick: the same slice
            command = [sys.executable, "-m", "benchmarks.race", "keras", convnet, str(epochs), *limit]
        start = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=3600)
        wall_s = time.perf_counter() - start
        if proc.returncode:
            raise RuntimeError(f"{' '.join(command)} failed:\n{proc.stderr[-3000:]}")
        if lane == "convnet":
            return {"wall_s": wall_s, "accuracy": json.loads(proc.stdout.splitlines()[-1])["accuracy"]}
        run_dir = Path(next(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("run:")))
        metrics = json.loads((run_dir / "metrics.json").read_text())
        return {"wall_s": wall_s, "accuracy": metrics["test"]["accuracy"], "run_dir": run_dir, "metrics": metrics}

    runs = lanes_in_turn(["default", "convnet"], run, rounds, gate, "first run")
    kept = runs["default"][-1]
    return {
        "experiment": experiment,
        "convnet": CONVNET,
        "runs": runs,
        "run_dir": kept["run_dir"],
        "test_metrics": kept["metrics"]["test"],
    }


def figures(result: dict) -> list[Figure]:
    """The default's wall time against the convnet's (target <= 3x), and its test accuracy (target >= 0.99, met only
    if every run reached it)."""
    default, convnet = result["runs"]["default"], result["runs"]["convnet"]
    load = Reading.worst(r["gate"] for r in default + convnet)
    (wall, wall_range), (base, base_range) = (spread([r["wall_s"] for r in lane]) for lane in (default, convnet))
    accuracies = [r["accuracy"] for r in default]
    name = f"first run {result['experiment']}"
    return [
        Figure(
            f"{name}: whole `kerasline train` ÷ keras-io convnet {CONVNET[1]} epochs, wall s",
            wall,
            "s",
            baseline=base,
            target=f"<= {TIMES_CONVNET}",
            value_range=wall_range,
            baseline_range=base_range,
            runs=len(default),
            load=load,
        ),
        Figure(
            f"{name}: test accuracy (worst run)",
            min(accuracies),
            "accuracy",
            target=">= 0.99",
            value_range=(min(accuracies), max(accuracies)),
            runs=len(accuracies),
            load=load,
        ),
    ]
