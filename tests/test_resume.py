"""A training process killed mid-run resumes from its last completed epoch when rerun."""

import csv
import json
import subprocess
import sys
import time


def test_killed_run_resumes_instead_of_restarting(tiny_experiment, kerasline):
    args = ["train", str(tiny_experiment), "training.epochs=10", "training.early_stopping_patience=100"]
    run = tiny_experiment.parent / "runs" / "tiny" / "run-001"
    metadata = run / "backup" / "training_metadata.json"

    first = subprocess.Popen(
        [sys.executable, "-m", "kerasline.cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 240
    while not (metadata.exists() and json.loads(metadata.read_text() or "{}").get("epoch", 0) >= 2):
        assert first.poll() is None, first.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint after 240 s"
        time.sleep(0.2)
    first.kill()
    first.wait()
    killed_at = json.loads(metadata.read_text())["epoch"]
    assert not (run / "metrics.json").exists()

    second = kerasline(*args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"run:         {run} (resumed)" in second.stdout
    first_epoch_line = next(line for line in second.stdout.splitlines() if line.startswith("Epoch "))
    assert first_epoch_line == f"Epoch {killed_at + 1}/10"
    with (run / "history.csv").open() as f:
        epochs = [int(row["epoch"]) for row in csv.DictReader(f)]
    assert epochs == sorted(set(epochs)) and epochs[-1] == 9  # no epoch trained twice, none restarted from 0
    assert not (tiny_experiment.parent / "runs" / "tiny" / "run-002").exists()


def test_finished_run_is_not_resumed(tiny_cfg):
    from training.runs import open_run

    run, resumed = open_run(tiny_cfg)
    assert not resumed
    assert open_run(tiny_cfg) == (run, True)  # unfinished, same config: resume
    (run / "metrics.json").write_text("{}")
    assert open_run(tiny_cfg) == (run.parent / "run-002", False)  # finished: a new run
    changed = tiny_cfg.model_copy(update={"seed": 1})
    assert open_run(changed) == (run.parent / "run-003", False)  # other config: a new run
