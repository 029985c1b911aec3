"""Run directories: one per training run, resumed when the same experiment is rerun unfinished.

runs/<experiment>/run-NNN/ holds config.toml (resolved), versions.json, logs/ (TensorBoard),
backup/ (resume state), best.weights.h5 (chosen on validation), history.csv, learning_curves.png, run.log (the
console), run.json (start, end and status) and metrics.json. While a process trains a run it holds the run's
.lock (flock, with its pid): a second `train` of the same experiment starts its own run instead of writing into it.
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
from kerasline.files import lock_holder, try_lock, unlock, write_text_atomic

RECORD = "run.json"
ENDINGS = {Diverged: "diverged", Preempted: "preempted"}  # any other error: "failed"
LOCK = ".lock"  # in the run directory, held by the process training the run
PACKAGES = ["tensorflow", "keras", "tensorflow-datasets", "tensorboard", "tf2onnx", "onnx", "onnxruntime", "numpy"]
_held: dict[Path, int] = {}  # the runs this process holds (resolved path → lock fd), released by `recorded`


class RunInUse(UserError):
    """A run that another live process holds."""

    def __init__(self, run_dir: Path, pid: int | None):
        self.pid = pid
        by = f"process {pid}" if pid else "another process"
        super().__init__(f"{run_dir} is in use by {by}, which is training it; it can be resumed once that process ends")


def open_run(cfg: ExperimentConfig) -> Path:
    """The unfinished run with this exact config if there is one and no live process holds it (to resume), else a
    new run; this process holds it until `recorded` ends."""
    unfinished, busy = resumable(cfg), None
    if unfinished is not None:
        try:
            claim_run(unfinished)
            return unfinished
        except RunInUse as e:
            busy = e
    run_dir = _new_run(Path(cfg.runs_dir) / cfg.name, to_toml(cfg))
    if busy:
        print(f"{unfinished} is in use by process {busy.pid or '(unknown)'}: starting {run_dir}")
    return run_dir


def resumable(cfg: ExperimentConfig) -> Path | None:
    """The newest run if it is unfinished and has this exact config: the run open_run resumes (unless a live
    process holds it)."""
    runs = run_dirs(Path(cfg.runs_dir) / cfg.name)
    if runs and not (runs[-1] / "metrics.json").exists() and _read(runs[-1] / "config.toml") == to_toml(cfg):
        return runs[-1]
    return None


def _new_run(root: Path, resolved: str) -> Path:
    """The next free run-NNN, locked before its config.toml is written: a run a resume could match is always held
    by its creator first. mkdir fails on a number another process just took: take the next."""
    root.mkdir(parents=True, exist_ok=True)
    while True:
        runs = run_dirs(root)
        run_dir = root / f"run-{int(runs[-1].name[4:]) + 1 if runs else 1:03d}"
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue
        claim_run(run_dir)
        (run_dir / "config.toml").write_text(resolved)
        (run_dir / "versions.json").write_text(json.dumps(versions(), indent=2) + "\n")
        return run_dir


def claim_run(run_dir: Path) -> None:
    """Holds the run for this process (already held by it: nothing to do), or raises RunInUse naming the live
    process that does. A lock whose holder died is free again (see kerasline.files.try_lock): crash-resume works."""
    if run_dir.resolve() in _held:
        return
    fd = try_lock(run_dir / LOCK)
    if fd is None:
        raise RunInUse(run_dir, lock_holder(run_dir / LOCK))
    _held[run_dir.resolve()] = fd


def release_run(run_dir: Path) -> None:
    """Lets the run go (removing its .lock); a run this process does not hold: nothing."""
    fd = _held.pop(run_dir.resolve(), None)
    if fd is not None:
        unlock(fd, run_dir / LOCK)


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
    write: False on the non-chief workers. The run's lock (open_run) is released when the block ends."""
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
        with contextlib.suppress(OSError):  # a disk full to the last byte: the error itself matters more
            _write_record(run_dir, _ended(record, began, _ending(e)) | {"error": str(e)})
        raise
    else:
        _write_record(run_dir, _ended(record, began, "finished"))
    finally:
        release_run(run_dir)


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
