"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 train like one process with two replicas, only
the chief writes, a job whose worker died resumes from the chief's checkpoint, and the plumbing around it."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from kerasline.cluster import free_ports, parse_workers, tf_configs
from kerasline.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
FAULTY = ROOT / "tests" / "reliability" / "faulty.py"

EXPERIMENT = """
name = "pair"
seed = 5
deterministic = true
runs_dir = "runs"

[data]
limit = 400
batch_size = 32

[data.augment]
rotation = 0.03
translation = 0.1

[model]
filters = [8]
convs_per_block = 1
dense_units = 16
dropout = 0.3

[training]
epochs = 2

[export]
dir = "exports"
"""
STRATEGY = "training.strategy=multi_worker"

# Trains through training.fit.train and saves the weights fit ended with (before the best epoch is reloaded); prints
# the first pixel of each training example it read. argv: experiment, output .npz, strategy. "mirrored" first makes
# two logical CPUs of the one physical CPU.
DRIVER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    if sys.argv[3] == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import kerasline.training.fit as fit
    from kerasline.config import load_experiment

    # The weights fit ended with, before train() reloads the best epoch's. A resumed run may fit twice (the rest
    # of an epoch, then the others): the last fit's end wins.
    class KeepWeights(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            self.ended = self.model.get_weights()

    keep = KeepWeights()
    result = fit.train(load_experiment(sys.argv[1], [f"training.strategy={sys.argv[3]}"]), callbacks=[keep])
    np.savez(sys.argv[2], *keep.ended)
    read = sorted(int(x[0, 0, 0]) for x, _ in result.datasets.train_examples.as_numpy_iterator())
    result.leave()
    report = {"chief": result.chief, "replicas": result.replicas, "run_dir": str(result.run_dir), "read": read}
    print(json.dumps(report))
    """
)


def worker_env(workers: list[str], index: int, **extra: str) -> dict:
    return {**os.environ, "TF_CONFIG": json.dumps(tf_configs(workers)[index]), **extra}


def start(args: list[str], cwd: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(procs: list[subprocess.Popen], timeout: float = 400) -> list[tuple[int, str, str]]:
    """Waits for every process; whatever happens, none is left running."""
    try:
        outputs = [p.communicate(timeout=timeout) for p in procs]
        return [(p.returncode, *output) for p, output in zip(procs, outputs, strict=True)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> dict:
    """Two workers and, at the same time, one process with two replicas, on the same experiment."""
    folders = {name: tmp_path_factory.mktemp(name) for name in ("workers", "mirrored", "worker1_tmp")}
    for name in ("workers", "mirrored"):
        (folders[name] / "pair.toml").write_text(EXPERIMENT)
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    out = folders["workers"]
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    procs = [
        start(["-c", DRIVER, "pair.toml", str(out / "w0.npz"), "multi_worker"], out, worker_env(workers, 0)),
        # worker 1's temporary directories go where the test can see that nothing is left
        start(
            ["-c", DRIVER, "pair.toml", str(out / "w1.npz"), "multi_worker"],
            out,
            worker_env(workers, 1, TMPDIR=str(folders["worker1_tmp"])),
        ),
        start(["-c", DRIVER, "pair.toml", str(folders["mirrored"] / "m.npz"), "mirrored"], folders["mirrored"], env),
    ]
    pids = [p.pid for p in procs]
    results = finish(procs)
    for code, _, stderr in results:
        assert code == 0, stderr[-3000:]
    reports = [json.loads(stdout.strip().splitlines()[-1]) for _, stdout, _ in results]
    return {"folders": folders, "reports": reports, "pids": pids, "stderr": [r[2] for r in results]}


def load(path: Path) -> list[np.ndarray]:
    with np.load(path) as npz:
        return [npz[f"arr_{i}"] for i in range(len(npz.files))]


def test_two_workers_train_like_one_process_with_two_replicas(pair):
    w0, w1, m = pair["reports"]
    assert (w0["chief"], w1["chief"], m["chief"]) == (True, False, True)
    assert w0["replicas"] == w1["replicas"] == m["replicas"] == 2
    assert w0["run_dir"] == w1["run_dir"] == "runs/pair/run-001"  # the chief's run, learnt by worker 1
    out = pair["folders"]["workers"]
    a, b, mirrored = load(out / "w0.npz"), load(out / "w1.npz"), load(pair["folders"]["mirrored"] / "m.npz")
    for x, y, z in zip(a, b, mirrored, strict=True):
        np.testing.assert_array_equal(x, y)  # one all-reduced update, applied on both workers
        # No tolerance needed (measured: bit for bit). Both split each global batch the same way between two
        # replicas, run the same kernels on each half, and all-reduce two values at a time, which float32 adds
        # exactly alike in either order, whether over gRPC or in one process.
        np.testing.assert_array_equal(x, z)


def test_only_the_chief_writes(pair):
    out = pair["folders"]["workers"]
    run_dir = out / "runs" / "pair" / "run-001"
    assert sorted(p.name for p in (out / "runs" / "pair").iterdir()) == ["run-001"]
    assert {"metrics.json", "best.weights.h5", "history.csv", "logs"} <= {p.name for p in run_dir.iterdir()}
    assert not (run_dir / "backup").exists()  # the finished run's checkpoints are removed
    # Event files are named …<host>.<pid>.<n>.v2: every one is the chief's.
    writers = {int(p.name.split(".")[-3]) for p in (run_dir / "logs").rglob("events.out.tfevents.*")}
    assert writers == {pair["pids"][0]}
    assert list(pair["folders"]["worker1_tmp"].iterdir()) == []  # worker 1's scratch directories are gone
    assert sorted(p.name for p in out.iterdir()) == ["pair.toml", "runs", "w0.npz", "w1.npz"]


def test_a_job_whose_worker_died_resumes_from_the_chiefs_checkpoint(pair, tmp_path):
    (tmp_path / "pair.toml").write_text(EXPERIMENT)
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    train = ["train", "pair.toml", "--strategy", "multi_worker"]
    chief = start(["-m", "kerasline.cli", *train], tmp_path, worker_env(workers, 0))
    # Worker 1 SIGKILLs itself as epoch 2 begins; the chief then cannot finish a step, and is killed too.
    doomed = start([str(FAULTY), "between-epochs:1", *train], tmp_path, worker_env(workers, 1))
    checkpoint = tmp_path / "runs" / "pair" / "run-001" / "backup" / "epoch-0001"
    try:
        deadline = time.monotonic() + 300
        while doomed.poll() is None or not checkpoint.is_dir():
            assert chief.poll() is None and time.monotonic() < deadline, chief.stderr.read()[-3000:]
            time.sleep(0.1)
        assert doomed.returncode == -signal.SIGKILL
        chief.send_signal(signal.SIGKILL)
    finally:
        finish([chief, doomed], timeout=60)

    # The restarted pair, through the local-cluster launcher (new ports, same run).
    proc = subprocess.run(
        [sys.executable, "-m", "kerasline.cluster", "--workers", "2", "pair.toml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[worker 0] run:         runs/pair/run-001 (resumed at epoch 2)" in proc.stdout
    assert re.search(r"^\[worker 1\] worker done: test accuracy ", proc.stdout, re.M)
    assert "[worker 0] parity:" in proc.stdout  # the chief exported, once
    assert sorted(p.name for p in (tmp_path / "exports" / "pair").iterdir()) == ["1"]
    # Deterministic and resumed exactly: the same best weights as the uninterrupted pair.
    uninterrupted = h5_arrays(pair["folders"]["workers"] / "runs" / "pair" / "run-001" / "best.weights.h5")
    resumed = h5_arrays(tmp_path / "runs" / "pair" / "run-001" / "best.weights.h5")
    assert resumed.keys() == uninterrupted.keys()
    for name, array in resumed.items():
        np.testing.assert_array_equal(array, uninterrupted[name], err_msg=name)


def end_job(procs: list[subprocess.Popen]) -> None:
    """What kerasline.cluster does to the rest of a job once a worker failed: SIGTERM, SIGKILL after its grace."""
    from kerasline.cluster import _end

    _end(procs)


def test_the_chief_killed_mid_epoch_then_a_worker_killed_mid_checkpoint_the_job_resumes_exactly(pair, tmp_path):
    """Two faults in one job's life, each followed by a restart of every worker, as a launcher or the Job does:
    the chief SIGKILLed mid-epoch; then, in the restarted job, worker 1 SIGKILLed while the chief writes a checkpoint
    (the chief is held there until it is, then ended with the job). Each restart resumes from the chief's newest
    complete checkpoint, and the job ends with the uninterrupted pair's weights."""
    (tmp_path / "pair.toml").write_text(EXPERIMENT)
    train = ["train", "pair.toml", "--strategy", "multi_worker"]
    backup = tmp_path / "runs" / "pair" / "run-001" / "backup"

    # The chief SIGKILLs itself after step 5 of epoch 2 (of 2); worker 1, waiting on it at its next step, is ended.
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    chief = start([str(FAULTY), "mid-epoch:1:5", *train], tmp_path, worker_env(workers, 0))
    worker = start(["-m", "kerasline.cli", *train], tmp_path, worker_env(workers, 1))
    try:
        chief.wait(timeout=300)
    finally:
        end_job([worker])
        (_, _, chief_stderr), _ = finish([chief, worker], timeout=60)
    assert chief.returncode == -signal.SIGKILL, chief_stderr[-3000:]
    assert sorted(p.name for p in backup.iterdir()) == ["epoch-0001"]  # epoch 2 was not checkpointed

    # Restarted: the chief resumes at epoch 2 and, writing its checkpoint, holds once its weights file is staged;
    # then worker 1 is SIGKILLed and the job ended.
    held = tmp_path / "held"
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    chief = start([str(FAULTY), "hold-checkpoint:1", *train], tmp_path, worker_env(workers, 0, FAULTY_MARKER=str(held)))
    worker = start(["-m", "kerasline.cli", *train], tmp_path, worker_env(workers, 1))
    try:
        deadline = time.monotonic() + 300
        while not held.exists():
            assert chief.poll() is None and worker.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=60)
        end_job([chief])
    finally:
        (_, chief_stdout, chief_stderr), (_, _, worker_stderr) = finish([chief, worker], timeout=60)
    assert worker.returncode == -signal.SIGKILL, worker_stderr[-3000:]
    assert chief.returncode in (-signal.SIGTERM, -signal.SIGKILL), chief_stderr[-3000:]
    assert re.search(r"^Epoch 2/2$", chief_stdout, re.M) and not re.search(r"^Epoch 1/2$", chief_stdout, re.M)
    (half,) = backup.glob(f".tmp-{chief.pid}-*")  # the chief's checkpoint of epoch 2, half-written
    assert sorted(p.name for p in half.iterdir()) == ["model.weights.h5"]
    assert sorted(p.name for p in backup.iterdir() if p != half) == ["epoch-0001"]

    # Restarted again (training only: the test above restarts through the launcher and exports).
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    driver = ["-c", DRIVER, "pair.toml"]
    procs = [start([*driver, f"w{i}.npz", "multi_worker"], tmp_path, worker_env(workers, i)) for i in (0, 1)]
    (chief_code, chief_stdout, chief_stderr), (worker_code, _, worker_stderr) = finish(procs)
    assert chief_code == worker_code == 0, chief_stderr[-3000:] + worker_stderr[-3000:]
    assert [line for line in chief_stdout.splitlines() if line.startswith("Epoch ")] == ["Epoch 2/2"]
    assert not list(tmp_path.rglob(".tmp-*"))  # the half checkpoint was swept, never taken for a good one
    # Exact, as the tests above: deterministic, and resumed from the same state on the same kernels.
    for i in (0, 1):
        for a, b in zip(load(tmp_path / f"w{i}.npz"), load(pair["folders"]["workers"] / f"w{i}.npz"), strict=True):
            np.testing.assert_array_equal(a, b)  # the weights fit ended with
    uninterrupted = h5_arrays(pair["folders"]["workers"] / "runs" / "pair" / "run-001" / "best.weights.h5")
    resumed = h5_arrays(tmp_path / "runs" / "pair" / "run-001" / "best.weights.h5")
    assert resumed.keys() == uninterrupted.keys()
    for name, array in resumed.items():
        np.testing.assert_array_equal(array, uninterrupted[name], err_msg=name)


SHARDED = """
name = "sharded"
seed = 3
deterministic = true
runs_dir = "runs"

[data]
source = "tfds"
name = "shard_probe"
image_shape = [8, 8, 1]
num_classes = 2
batch_size = 8
shard = "file"

[model]
filters = [4]
convs_per_block = 1
dense_units = 8

[training]
epochs = 2
"""


def test_under_file_sharding_each_worker_reads_its_own_tfds_files(sharded_tfds, tmp_path):
    (tmp_path / "sharded.toml").write_text(SHARDED)
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    procs = [
        start(
            ["-c", DRIVER, "sharded.toml", str(tmp_path / f"w{i}.npz"), "multi_worker"],
            tmp_path,
            worker_env(workers, i, TFDS_DATA_DIR=str(sharded_tfds)),  # shard_probe: 40 examples in 4 files
        )
        for i in (0, 1)
    ]
    results = finish(procs)
    for code, _, stderr in results:
        assert code == 0, stderr[-3000:]
    read = [json.loads(stdout.strip().splitlines()[-1])["read"] for _, stdout, _ in results]
    assert read[0] and read[1] and not set(read[0]) & set(read[1])  # example i holds pixel value i
    assert len(read[0] + read[1]) == 36  # train[:90%] between them
    for a, b in zip(load(tmp_path / "w0.npz"), load(tmp_path / "w1.npz"), strict=True):
        np.testing.assert_array_equal(a, b)  # different data, one all-reduced update
    assert (tmp_path / "runs" / "sharded" / "run-001" / "best.weights.h5").is_file()


def h5_arrays(path: Path) -> dict[str, np.ndarray]:
    import h5py

    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, node: arrays.__setitem__(name, node[()]) if isinstance(node, h5py.Dataset) else None)
    return arrays


def test_cluster_spec_prints_and_writes_each_workers_tf_config(kerasline, tmp_path):
    proc = kerasline("cluster-spec", "--workers", "10.0.0.1:2222,trainer-1.trainer:2222")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    cluster = {"worker": ["10.0.0.1:2222", "trainer-1.trainer:2222"]}
    assert lines == [{"cluster": cluster, "task": {"type": "worker", "index": i}} for i in (0, 1)]

    proc = kerasline("cluster-spec", "--workers", "a:1,b:2,c:3", "--index", "2")
    assert json.loads(proc.stdout) == {
        "cluster": {"worker": ["a:1", "b:2", "c:3"]},
        "task": {"type": "worker", "index": 2},
    }

    proc = kerasline("cluster-spec", "--workers", "a:1,b:2", "--out", str(tmp_path / "specs"))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "specs").iterdir()) == ["worker-0.json", "worker-1.json"]
    assert json.loads((tmp_path / "specs" / "worker-1.json").read_text())["task"] == {"type": "worker", "index": 1}

    for workers, message in [("a:1,a:1", "listed twice"), ("a:1,b", "'b' is not host:port"), ("a:0", "not host")]:
        proc = kerasline("cluster-spec", "--workers", workers)
        assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    proc = kerasline("cluster-spec", "--workers", "a:1", "--index", "1")
    assert proc.returncode == 2 and "--index 1: there are 1 workers" in proc.stderr


def test_parse_workers_and_free_ports():
    assert parse_workers("h:1, [::1]:2") == ["h:1", "[::1]:2"]
    with pytest.raises(UserError, match="not host:port"):
        parse_workers(":80")
    ports = free_ports(3)
    assert len(set(ports)) == 3 and all(0 < p < 65536 for p in ports)


def test_a_wrong_tf_config_is_named_before_any_training():
    from kerasline.training.strategy import _check_tf_config

    for tf_config, message in [
        ("{not json", "TF_CONFIG: expected"),
        ('{"cluster": {"worker": ["a:1"]}}', "TF_CONFIG: expected"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}', "TF_CONFIG: expected"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}', "TF_CONFIG: task index 3"),
    ]:
        with pytest.raises(UserError, match=re.escape(message)):
            _check_tf_config(tf_config)
    _check_tf_config('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}')


def test_auto_picks_a_tpu_through_its_cluster_resolver_when_one_is_configured(monkeypatch):
    import tensorflow as tf

    from kerasline.training import strategy as strategies

    calls = []
    monkeypatch.setattr(
        tf.distribute.cluster_resolver, "TPUClusterResolver", lambda tpu: calls.append(tpu) or "resolver"
    )
    monkeypatch.setattr(tf.config, "experimental_connect_to_cluster", lambda r: calls.append(("connect", r)))
    monkeypatch.setattr(tf.tpu.experimental, "initialize_tpu_system", lambda r: calls.append(("initialize", r)))
    monkeypatch.setattr(tf.distribute, "TPUStrategy", lambda r: ("TPUStrategy", r))

    monkeypatch.setenv("TPU_NAME", "grpc://10.0.0.2:8470")
    assert strategies.make_strategy("auto") == ("TPUStrategy", "resolver")
    assert calls == ["grpc://10.0.0.2:8470", ("connect", "resolver"), ("initialize", "resolver")]

    calls.clear()
    monkeypatch.delenv("TPU_NAME")
    assert strategies.make_strategy("auto") is tf.distribute.get_strategy()  # no TPU, no GPUs: the default
    assert strategies.make_strategy("mirrored") != ("TPUStrategy", "resolver") and calls == []


def test_kubernetes_manifest_builds_each_pods_tf_config_from_its_index(tmp_path):
    import yaml

    service, job = yaml.safe_load_all((ROOT / "training" / "deploy" / "training-job.yaml").read_text())
    assert (service["kind"], job["kind"]) == ("Service", "Job")
    assert service["spec"]["clusterIP"] == "None"  # headless
    assert service["spec"]["selector"] == {"job-name": job["metadata"]["name"]}
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert spec["completionMode"] == "Indexed" and pod["subdomain"] == service["metadata"]["name"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert spec["completions"] == spec["parallelism"] == int(env["WORKERS"])
    port = service["spec"]["ports"][0]["port"]
    assert container["ports"][0]["containerPort"] == port

    # Run the pod's script as pod 1 would, with `kerasline train` replaced by a probe that prints what it got.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kerasline").write_text(
        f'#!/bin/sh\nif [ "$1" = train ]; then echo "$TF_CONFIG"; echo "$@"; exit 0; fi\n'
        f'exec {sys.executable} -m kerasline.cli "$@"\n'
    )
    (bin_dir / "kerasline").chmod(0o755)
    script_env = {**os.environ, **env, "JOB_COMPLETION_INDEX": "1", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = subprocess.run(
        [*container["command"], *container["args"]], env=script_env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    tf_config, args = proc.stdout.splitlines()
    hosts = [f"kerasline-train-{i}.kerasline-train:{port}" for i in range(int(env["WORKERS"]))]
    assert json.loads(tf_config) == {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": 1}}
    assert args.startswith(f"train {env['EXPERIMENT']} --strategy multi_worker runs_dir=/shared/runs")
