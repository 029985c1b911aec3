"""Run directories: one per training run, resumed when the same experiment is rerun unfinished.

runs/<experiment>/run-NNN/ holds config.toml (resolved), versions.json, logs/ (TensorBoard),
backup/ (resume state), best.weights.h5 (chosen on validation), history.csv and metrics.json.
"""

import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from kerasline.config import ExperimentConfig, to_toml
from kerasline.errors import UserError

PACKAGES = ["tensorflow", "keras", "tensorflow-datasets", "tensorboard", "tf2onnx", "onnx", "onnxruntime", "numpy"]


def open_run(cfg: ExperimentConfig) -> Path:
    """The unfinished run with this exact config if there is one (to resume), else a new run."""
    root = Path(cfg.runs_dir) / cfg.name
    runs = _runs(root)
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
    finished = [run for run in _runs(Path(cfg.runs_dir) / cfg.name) if (run / "metrics.json").exists()]
    if not finished:
        raise UserError(f"no finished run of {cfg.name!r} under {cfg.runs_dir}/; train it first")
    return finished[-1]


def _runs(root: Path) -> list[Path]:
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
