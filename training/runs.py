"""Run directories: one per training run, resumed when the same experiment is rerun unfinished.

runs/<experiment>/run-NNN/ holds config.toml (resolved), versions.json, logs/ (TensorBoard),
backup/ (resume state), best.weights.h5 (chosen on validation), history.csv, learning_curves.png, run.log (the
console), run.json (start, end and status) and metrics.json.
"""

import contextlib
import json
import platform
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from kerasline.config import ExperimentConfig, to_toml
from kerasline.errors import Diverged, Preempted, UserError
from kerasline.files import write_text_atomic

RECORD = "run.json"
ENDINGS = {Diverged: "diverged", Preempted: "preempted"}  # any other error: "failed"
PACKAGES = ["tensorflow", "keras", "tensorflow-datasets", "tensorboard", "tf2onnx", "onnx", "onnxruntime", "numpy"]


def open_run(cfg: ExperimentConfig) -> Path:
    """The unfinished run with this exact config if there is one (to resume), else a new run."""
    root = Path(cfg.runs_dir) / cfg.name
    runs = run_dirs(root)
    resolved = to_toml(cfg)
    if runs and not (runs[-1] / "metrics.json").exists() and _read(runs[-1] / "config.toml") == resolved:
        return runs[-1]
    run_dir = run_path(cfg, int(runs[-1].name[4:]) + 1 if runs else 1)
    run_dir.mkdir(parents=True)
    (run_dir / "config.toml").write_text(resolved)
    (run_dir / "versions.json").write_text(json.dumps(versions(), indent=2) + "\n")
    return run_dir


def run_path(cfg: ExperimentConfig, number: int) -> Path:
    return Path(cfg.runs_dir) / cfg.name / f"run-{number:03d}"


def latest_finished_run(cfg: ExperimentConfig) -> Path:
    finished = [run for run in run_dirs(Path(cfg.runs_dir) / cfg.name) if (run / "metrics.json").exists()]
    if not finished:
        raise UserError(f"no finished run of {cfg.name!r} under {cfg.runs_dir}/; train it first")
    return finished[-1]


@contextlib.contextmanager
def recorded(run_dir: Path, write: bool = True) -> Iterator[None]:
    """run.json: status "unfinished" while the block runs, then finished, diverged, preempted or failed, with the
    end time and the error. `started` is the first attempt's; `wall_s` sums the attempts that ended (a resumed run
    adds to it). A killed process never leaves the block: its run stays unfinished, with no end (nor wall time).
    write: False on the non-chief workers."""
    if not write:
        yield
        return
    earlier, began = read_record(run_dir) or {}, datetime.now(UTC)
    record = {
        "status": "unfinished",
        "started": earlier.get("started", began.isoformat(timespec="seconds")),
        "ended": None,
        "wall_s": earlier.get("wall_s", 0.0),
        "attempts": earlier.get("attempts", 0) + 1,
    }
    _write_record(run_dir, record)
    try:
        yield
    except Exception as e:  # KeyboardInterrupt is not one: Ctrl-C leaves the run unfinished, to resume
        _write_record(run_dir, _ended(record, began, _ending(e)) | {"error": str(e)})
        raise
    _write_record(run_dir, _ended(record, began, "finished"))


def read_record(run_dir: Path) -> dict | None:
    """The run's run.json; None for a run from before it was written."""
    path = run_dir / RECORD
    return json.loads(path.read_text()) if path.exists() else None


def _ending(error: Exception) -> str:
    return next((status for kind, status in ENDINGS.items() if isinstance(error, kind)), "failed")


def _ended(record: dict, began: datetime, status: str) -> dict:
    ended = datetime.now(UTC)
    wall_s = round(record["wall_s"] + (ended - began).total_seconds(), 3)
    return record | {"status": status, "ended": ended.isoformat(timespec="seconds"), "wall_s": wall_s}


def _write_record(run_dir: Path, record: dict) -> None:
    write_text_atomic(run_dir / RECORD, json.dumps(record, indent=2) + "\n")


def run_dirs(root: Path) -> list[Path]:
    """run-001, run-002, ... in numeric order (run-1000 sorts after run-999)."""
    return sorted((p for p in root.glob("run-*") if p.name[4:].isdigit()), key=lambda p: int(p.name[4:]))


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


def versions() -> dict:
    """Python, the stack's package versions and the git commit: what reproducing a run needs."""
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {"python": platform.python_version(), "packages": packages, "git": _git_commit()}


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(Path(__file__).resolve().parent), "describe", "--always", "--dirty", "--abbrev=40"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None
