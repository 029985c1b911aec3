"""Real resources running out, not simulated ones, in the life of one run on a real file system of its own (a small
tmpfs): it is SIGKILLed half-way through writing a checkpoint, as the out-of-memory killer does; the rerun's disk
fills up while it writes that checkpoint again; the rerun after space is freed finishes with the weights of an
uninterrupted run; an export's disk fills up; a later export succeeds. Each fault ends with the kill or a
one-line error (exit 2) and keeps nothing partial.

The disk is filled by tests/reliability/faulty.py right after the free-space check passed, as another process
writing to the same disk would: the check cannot prevent that, so the write itself must fail cleanly. The faults
are injected at a point of the code, not by a size or a time, so they happen whatever kernels the CPU runs.
"""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import assert_same_weights, run, weights

# The free-space checks keep 16 MiB spare beyond their estimate (kerasline.files.SPACE_MARGIN): the tmpfs must let
# them pass before a ballast file takes the space. The tiny run itself needs about 1 MiB.
TMPFS_SIZE = "24m"
TF_LOG = re.compile(r"^[IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\] ")  # TensorFlow's C++ log lines, printed by any CLI run


def write_experiment(folder: Path) -> Path:
    from conftest import RELIABLE  # the reliability tests' experiment (imported as test_crash_resume.py does)

    path = folder / "rel.toml"
    path.write_text(RELIABLE.format(deterministic="true", epochs=2))
    return path


def finished(folder: Path) -> dict:
    run_dir = folder / "runs" / "rel" / "run-001"
    return {
        "metrics": json.loads((run_dir / "metrics.json").read_text()),
        "history": (run_dir / "history.csv").read_text(),
        "best": run_dir / "best.weights.h5",
    }


def one_line(stderr: str) -> str:
    """The CLI's one line, with TensorFlow's own log lines set aside: no traceback, nothing else."""
    lines = [line for line in stderr.splitlines() if not TF_LOG.match(line)]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
    return lines[0]


def staging(root: Path) -> list[Path]:
    return sorted(root.rglob(".tmp-*"))


def epochs_run(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("Epoch ")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[subprocess.Popen, Path]:
    """The same run never interrupted (trained only: the export adds nothing to compare), started at once so that
    it trains beside the faulty runs."""
    folder = tmp_path_factory.mktemp("reference")
    write_experiment(folder)
    train = "import sys, kerasline; kerasline.train(kerasline.load_experiment(sys.argv[1]))"
    with open(folder / "stdout", "w") as stdout, open(folder / "stderr", "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", train, "rel.toml"], cwd=folder, stdout=stdout, stderr=stderr)
    try:
        yield proc, folder
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def uninterrupted(reference) -> dict:
    proc, folder = reference
    assert proc.wait(timeout=300) == 0, (folder / "stderr").read_text()[-3000:]
    return finished(folder)


@pytest.fixture(scope="module")
def tmpfs(tmp_path_factory) -> Path:
    """A real, small file system of its own; unmounted at the end whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI and the development machine run the tests as root)")
    mount = tmp_path_factory.mktemp("tmpfs")
    try:
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mount)], capture_output=True, text=True
        )
    except FileNotFoundError:
        pytest.skip("no mount command")
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)  # busy: detach now, free when unused


@pytest.fixture(scope="module")
def story(tmpfs, reference) -> dict:
    """The run's first three attempts, on the tmpfs, and what each left; the tests read them."""
    experiment = write_experiment(tmpfs)
    backup = tmpfs / "runs" / "rel" / "run-001" / "backup"
    # 1. The out-of-memory killer's SIGKILL half-way through epoch 2's checkpoint: 4 of its arrays written.
    killed = run(experiment, fault="checkpoint-middle:2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    (half,) = staging(backup)
    after_kill = {
        "checkpoints": sorted(p.name for p in backup.iterdir() if not p.name.startswith(".tmp-")),
        "staged": sorted(p.name for p in half.iterdir()),
        "arrays": len(weights(half / "model.weights.h5")),
        "complete": len(weights(backup / "epoch-0001" / "model.weights.h5")),
    }
    # 2. The rerun; as it writes epoch 2's checkpoint (its first), another writer takes the disk's free space.
    full = run(experiment, fault="disk-full:checkpoint:1")
    record = json.loads((backup.parent / "run.json").read_text())
    after_full = {
        "checkpoints": sorted(p.name for p in backup.iterdir()),
        "staging": staging(tmpfs),
        "record": record,
        "log": (backup.parent / "run.log").read_text(),
        "free": os.statvfs(tmpfs).f_bavail * os.statvfs(tmpfs).f_frsize,
    }
    # 3. Space freed, the same command again.
    (tmpfs / "ballast").unlink(missing_ok=True)  # missing: the test says why
    resumed = run(experiment)
    return {"killed": killed, "after_kill": after_kill, "full": full, "after_full": after_full, "resumed": resumed}


def test_a_run_killed_half_way_through_writing_a_checkpoint_resumes_from_the_last_complete_one(story):
    assert story["killed"].returncode == -signal.SIGKILL, story["killed"].stderr[-3000:]
    state = story["after_kill"]
    assert state["checkpoints"] == ["epoch-0001"]
    assert state["staged"] == ["model.weights.h5"]  # no RNG states, no state.json: not a checkpoint
    assert state["arrays"] == 4 < state["complete"]  # and its weights file half-written
    assert epochs_run(story["full"].stdout)[0] == "Epoch 2/2"  # the rerun resumed from epoch 1's checkpoint
    assert story["after_full"]["staging"] == []  # and swept the killed writer's staging


def test_a_disk_that_fills_up_during_a_checkpoint_keeps_the_last_good_one_and_the_rerun_finishes_exactly(
    story, tmpfs, uninterrupted
):
    full, state = story["full"], story["after_full"]
    assert full.returncode == 2, full.stderr[-3000:]
    line = one_line(full.stderr)
    assert line == (
        "error: runs/rel/run-001/backup: no space left on device while writing the checkpoint epoch-0002; it was not "
        "kept; the newest complete checkpoint is epoch-0001; free some space and rerun"
    )
    assert state["free"] < 2**20  # the file system was full: the ballast left 64 KiB
    assert state["checkpoints"] == ["epoch-0001"]  # the half-written checkpoint is not taken for a good one
    assert state["staging"] == []  # and no staging is left, even before a rerun would sweep it
    assert state["record"]["status"] == "failed" and state["record"]["error"] == line.removeprefix("error: ")
    assert state["log"].rstrip().endswith(line.removeprefix("error: "))

    resumed = story["resumed"]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "run:         runs/rel/run-001 (resumed at epoch 2)" in resumed.stdout
    assert epochs_run(resumed.stdout) == ["Epoch 2/2"]
    assert "savedmodel:  exports/rel/1  (TF Serving layout)" in resumed.stdout
    # Exact, as in test_crash_resume.py: a deterministic run resumed on the same machine runs the same kernels on
    # the same batches from the same state as the uninterrupted one.
    after = finished(tmpfs)
    assert after["metrics"] == uninterrupted["metrics"]
    assert after["history"] == uninterrupted["history"]
    assert_same_weights(after["best"], uninterrupted["best"])
    assert staging(tmpfs) == []


def test_a_disk_that_fills_up_during_an_export_publishes_nothing_and_a_later_export_succeeds(story, tmpfs):
    assert story["resumed"].returncode == 0  # a finished run, exported once
    exports = tmpfs / "exports" / "rel"
    models_config = (tmpfs / "exports" / "models.config").read_text()

    failed = run(tmpfs / "rel.toml", command="export", fault="disk-full:export")
    assert failed.returncode == 2, failed.stderr[-3000:]
    assert one_line(failed.stderr) == (
        "error: exports/rel: no space left on device while writing an export of runs/rel/run-001; "
        "nothing was published; free some space and rerun"
    )
    assert failed.stdout == ""
    assert sorted(p.name for p in exports.iterdir()) == ["1"]  # no half version, no staging
    assert (tmpfs / "exports" / "models.config").read_text() == models_config
    assert staging(tmpfs) == []

    (tmpfs / "ballast").unlink()
    exported = run(tmpfs / "rel.toml", command="export")
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert "savedmodel:  exports/rel/2  (TF Serving layout)" in exported.stdout
    assert sorted(p.name for p in exports.iterdir()) == ["1", "2"]
    assert "versions: 2" in (tmpfs / "exports" / "models.config").read_text()


def test_a_full_disk_is_recognised_however_the_writer_reports_it():
    """What the real runs above met (h5py's OSError, TensorFlow's ResourceExhaustedError), a quota, an error raised
    from one of them; not an out-of-memory ResourceExhaustedError, nor another OSError."""
    import errno

    import tensorflow as tf

    from kerasline.files import out_of_space

    h5py_write = OSError(errno.ENOSPC, "Can't synchronously write data (errno = 28, 'No space left on device')")
    save_v2 = tf.errors.ResourceExhaustedError(None, None, "variables_temp/part-00000; No space left on device")
    try:
        try:
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
        except OSError as e:
            raise RuntimeError("saving failed") from e
    except RuntimeError as e:
        wrapped = e
    for error in (h5py_write, save_v2, OSError(errno.EDQUOT, "Disk quota exceeded"), wrapped):
        assert out_of_space(error), error
    memory = tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[4096,4096]")
    for error in (memory, OSError(errno.EACCES, "Permission denied"), ValueError("No such layer"), None):
        assert not out_of_space(error), error
