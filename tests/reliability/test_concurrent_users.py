"""Two users, one project: trains, exports, deploys and rollbacks of one experiment, started at once as real processes,
each write their own run and version, and leave labels.json and models.config valid."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from kerasline.export.repository import current_labels, read_labels, served_versions, versions, write_blessing
from kerasline.training.runs import LOCK, RunInUse, claim_run, open_run, release_run

# Holds a run's lock the way a training process does, then dies holding it (SIGKILL) or lives on.
HOLDER = """
import os, signal, sys, time
from pathlib import Path
from kerasline.training.runs import claim_run
claim_run(Path(sys.argv[1]))
print(os.getpid(), flush=True)
if sys.argv[2] == "die":
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(300)
"""

# The real CLI, synchronised so that the races happen every time: `train` opens its run in turn (the second opens
# once the first holds its run, so it always finds that run held: opened at the same instant, both could see no run
# and start two new ones without meeting) and waits at two barriers (both trainers have opened their runs before
# either trains; both have staged their exports before either publishes); `labels` waits at
# the second, then calls kerasline.cli.main with 150 random deploy / deploy --canary / rollback commands, racing the
# other labeller and the two exports' rewrites of models.config.
RACER = """
import os, random, sys, time
from pathlib import Path

import kerasline.cli

sync, role, experiment = Path(sys.argv[1]), sys.argv[2], sys.argv[3]


def barrier(name, count):
    (sync / f"{name}-{os.getpid()}").touch()
    deadline = time.monotonic() + 600  # the test's own deadline comes first
    while len(list(sync.glob(f"{name}-*"))) < count and time.monotonic() < deadline:
        time.sleep(0.02)


def waiting(name, count, function):
    def wrapped(*args, **kwargs):
        barrier(name, count)
        return function(*args, **kwargs)

    return wrapped


def in_turn(function):
    def wrapped(*args, **kwargs):
        try:
            (sync / "opening").touch(exist_ok=False)  # the first to arrive opens first
        except FileExistsError:
            # Not barrier("opened", 1): that counts this process's own marker, and the second would not wait.
            deadline = time.monotonic() + 600
            while not (sync / "opened").exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        try:
            return function(*args, **kwargs)
        finally:
            (sync / "opened").touch()

    return wrapped


if role == "train":
    import kerasline.export.publish as publish
    import kerasline.training.fit as fit

    fit.open_run = in_turn(fit.open_run)
    fit._fit = waiting("training", 2, fit._fit)
    publish._publish = waiting("publishing", 4, publish._publish)
    sys.exit(kerasline.cli.main(["train", experiment, *sys.argv[4:]]))

# deploy and rollback never use TensorFlow: its import (7 CPU-seconds here) would only slow the trainers they race.
kerasline.cli._import_tensorflow_quietly = lambda: None
rng = random.Random(role)
options = [[], ["--version", "1"], ["--version", "2"], ["--canary", "--version", "1"], ["--canary", "--version", "2"]]
barrier("publishing", 4)
for _ in range(150):
    command = ["rollback", experiment] if rng.random() < 0.3 else ["deploy", experiment, *rng.choice(options)]
    kerasline.cli.main(command)
    time.sleep(rng.uniform(0, 0.01))
"""


def test_a_live_holders_run_is_left_alone_and_a_dead_holders_is_resumed(tiny_cfg, capsys):
    first = open_run(tiny_cfg)
    release_run(first)  # unfinished and free, as a run whose process ended is left

    dead = subprocess.run([sys.executable, "-c", HOLDER, str(first), "die"], capture_output=True, text=True)
    assert dead.returncode == -signal.SIGKILL, dead.stderr
    assert (first / LOCK).read_text() == dead.stdout  # its pid: what a SIGKILLed (or OOM-killed) trainer leaves
    assert open_run(tiny_cfg) == first  # taken over: crash-resume still works
    assert (first / LOCK).read_text() == f"{os.getpid()}\n"
    release_run(first)
    assert not (first / LOCK).exists()

    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(first), "live"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == f"{holder.pid}\n"
        second = open_run(tiny_cfg)
        assert (
            second == first.with_name("run-002")
            and (second / "config.toml").read_text() == (first / "config.toml").read_text()
        )
        assert capsys.readouterr().out == f"{first} is in use by process {holder.pid}: starting {second}\n"
        with pytest.raises(RunInUse) as refused:  # resuming that very run is refused, naming its process
            claim_run(first)
        assert str(refused.value) == (
            f"{first} is in use by process {holder.pid}, which is training it; it can be resumed once that process ends"
        )
        release_run(second)
    finally:
        holder.kill()
        holder.wait()
    assert open_run(tiny_cfg) == second  # the newest unfinished run, now free
    release_run(second)


def test_trains_exports_deploys_and_rollbacks_at_once_each_write_their_own_and_leave_valid_labels(
    tiny_experiment: Path,
):
    started, tmp_path, experiment = time.monotonic(), tiny_experiment.parent, tiny_experiment
    model_dir = _seed_blessed_versions(tmp_path / "exports" / "tiny", [1, 2])
    sync = tmp_path / "sync"
    sync.mkdir()
    args = [str(experiment), "training.epochs=1", "data.limit=256", "export.parity_samples=16"]
    trainers = {f"trainer{i}": _start(tmp_path, sync, f"trainer{i}", "train", *args) for i in range(2)}
    labellers = {
        f"labeller{i}": _start(tmp_path, sync, f"labeller{i}", f"labels{i}", str(experiment)) for i in range(2)
    }
    try:
        _wait(trainers | labellers, deadline=started + 420)
    finally:
        for proc in [*trainers.values(), *labellers.values()]:
            proc.kill()
            proc.wait()
    for name, proc in (trainers | labellers).items():
        assert proc.returncode == 0, (tmp_path / f"{name}.err").read_text()[-3000:]
    outputs = {proc.pid: (tmp_path / f"{name}.out").read_text() for name, proc in trainers.items()}

    # Two runs, one per trainer, each trained once from the start: no process resumed or wrote into the other's.
    runs = tmp_path / "runs" / "tiny"
    assert sorted(p.name for p in runs.iterdir()) == ["run-001", "run-002"]
    assert {_line(out, "run:") for out in outputs.values()} == {str(runs / "run-001"), str(runs / "run-002")}
    for run_dir in runs.iterdir():
        record = json.loads((run_dir / "run.json").read_text())
        assert record["status"] == "finished" and record["attempts"] == 1
        assert sum(line.startswith("--- ") for line in (run_dir / "run.log").read_text().splitlines()) == 1
        assert (run_dir / "metrics.json").is_file() and not (run_dir / LOCK).exists()
    # Whoever opened second found the first's run held, and named its process.
    (second,) = [pid for pid, out in outputs.items() if "is in use by process" in out]
    (first,) = set(outputs) - {second}
    note = f"{runs / 'run-001'} is in use by process {first}: starting {runs / 'run-002'}"
    assert note in outputs[second].splitlines()

    # Both exports, staged together, published: versions 3 and 4, one from each run, nothing half-published.
    assert versions(model_dir) == [1, 2, 3, 4]
    assert {_line(out, "savedmodel:").split()[0] for out in outputs.values()} == {
        str(model_dir / "3"),
        str(model_dir / "4"),
    }
    exported_from = {json.loads((model_dir / f"{v}" / "verification.json").read_text())["run_dir"] for v in (3, 4)}
    assert exported_from == {str(runs / "run-001"), str(runs / "run-002")}
    assert all((model_dir / f"{v}" / "model.onnx").is_file() for v in (3, 4))
    assert not list(model_dir.glob(".tmp-*")) and not list(model_dir.parent.glob(".tmp-*"))

    _assert_labels_and_config_valid(model_dir, [tmp_path / name for name in labellers])
    print(f"race took {time.monotonic() - started:.0f} s")


def _seed_blessed_versions(model_dir: Path, numbers: list[int]) -> Path:
    """Versions for deploy and rollback to label: they read only the version numbers and the blessings."""
    for number in numbers:
        (model_dir / str(number)).mkdir(parents=True)
        write_blessing(model_dir, number, {"version": number, "verdict": "BLESSED", "reasons": []})
    return model_dir


def _start(cwd: Path, sync: Path, name: str, role: str, *args: str) -> subprocess.Popen:
    with open(cwd / f"{name}.out", "w") as out, open(cwd / f"{name}.err", "w") as err:
        return subprocess.Popen([sys.executable, "-c", RACER, str(sync), role, *args], cwd=cwd, stdout=out, stderr=err)


def _wait(procs: dict[str, subprocess.Popen], deadline: float) -> None:
    """Until every process ends; fails at once if one fails (the others would wait at a barrier)."""
    while any(proc.poll() is None for proc in procs.values()):
        failed = [name for name, proc in procs.items() if proc.poll() not in (None, 0)]
        assert not failed and time.monotonic() < deadline, f"failed: {failed}"
        time.sleep(0.2)


def _line(output: str, prefix: str) -> str:
    (line,) = [line for line in output.splitlines() if line.startswith(prefix)]
    return line[len(prefix) :].strip()


def _assert_labels_and_config_valid(model_dir: Path, labellers: list[Path]) -> None:
    """labels.json holds every successful deploy and rollback (none lost to a concurrent rewrite), its history
    replays to its labels, every label names a version, and models.config says the same. The refusals are the
    expected ones: nothing to roll back to, and the new exports, not blessed."""
    done = sum(
        line.startswith(("stable:", "canary:"))
        for path in labellers
        for line in path.with_suffix(".out").read_text().splitlines()
    )
    refusals = [line for path in labellers for line in path.with_suffix(".err").read_text().splitlines()]
    expected = (
        "error: tiny: no earlier stable version",
        "error: tiny version 3 is not",
        "error: tiny version 4 is not",
    )
    assert all(line.startswith(expected) for line in refusals), refusals[:5]
    labels = read_labels(model_dir)
    assert done > 20 and len(labels["history"]) == done
    stable, canary = [], None
    for entry in labels["history"]:
        if entry["action"] == "rollback":
            assert entry["previous"] == stable.pop() and entry["version"] == stable[-1]
        elif entry["label"] == "stable":
            assert entry["previous"] == (stable[-1] if stable else None)
            stable += [entry["version"]] if entry["previous"] != entry["version"] else []
        else:
            assert entry["previous"] == canary
            canary = entry["version"]
    assert labels["stable"] == stable and labels["canary"] == canary
    assert set(current_labels(model_dir).values()) <= set(versions(model_dir))

    text = (model_dir.parent / "models.config").read_text()
    config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    (entry,) = config.model_config_list.config
    assert entry.name == "tiny" and list(entry.model_version_policy.specific.versions) == served_versions(model_dir)
    assert dict(entry.version_labels) == current_labels(model_dir)
    assert 4 in entry.model_version_policy.specific.versions  # the newest export is served
