"""Item 6 of `make bench`: serving latency and throughput, REST and gRPC, beside in-process SavedModel calls.

For each model and each number of concurrent clients (one thread per client, each with its own REST connection;
one shared gRPC channel, as gRPC clients share one), every client sends batch-1 predict requests back to back. The
same threads calling the loaded SavedModel's signature directly are the in-process reference, measured in the same
run. The server is the development server in a subprocess (so it does not share this process's GIL), or, with
`--server URL --grpc HOST:PORT`, whatever serves there (real TF Serving), given the repository it serves.
"""

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from benchmarks.figures import Figure
from kerasline.export.repository import WARMUP_FILE
from kerasline.serving.client import GrpcClient, RestClient
from kerasline.serving.launch import wait_until_available

CLIENTS = (1, 8, 32)


def serving_item(models: list[str], repo: Path, quick: bool, server: str | None = None,
                 grpc_target: str | None = None) -> dict:  # fmt: skip
    """Each model's newest version in `repo`, fed batch-1 slices of its warmup records (real held-out inputs)."""
    process = None
    if server is None:
        rest_port, grpc_port = _free_port(), _free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "serving.devserver", "--repo", str(repo),
             "--rest-port", str(rest_port), "--grpc-port", str(grpc_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )  # fmt: skip
        server, grpc_target = f"http://127.0.0.1:{rest_port}", f"127.0.0.1:{grpc_port}"
    try:
        wait_until_available(server, list(models), timeout=120)
        results = {"server": "development server" if process else server, "models": {}}
        for model in models:
            results["models"][model] = _measure(model, repo, server, grpc_target, quick)
        return results
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)


def warmup_inputs(version_dir: Path) -> dict[str, np.ndarray]:
    """The version's warmup requests (real held-out inputs, whatever the signature's inputs are), concatenated."""
    requests = [
        prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
        for record in tf.data.TFRecordDataset(str(version_dir / WARMUP_FILE)).as_numpy_iterator()
    ]
    return {name: np.concatenate([tf.make_ndarray(r.inputs[name]) for r in requests]) for name in requests[0].inputs}


def _measure(model: str, repo: Path, server: str, grpc_target: str, quick: bool) -> dict:
    version_dir = max((p for p in (repo / model).iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    pool = warmup_inputs(version_dir)
    serve = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    grpc_client = GrpcClient(grpc_target)
    rows = len(next(iter(pool.values())))

    def batch(i: int) -> dict[str, np.ndarray]:
        return {name: values[i % rows : i % rows + 1] for name, values in pool.items()}

    def in_process() -> Callable[[int], object]:
        return lambda i: serve(**{k: tf.constant(v) for k, v in batch(i).items()})

    def rest() -> Callable[[int], object]:
        client = RestClient(server)  # one keep-alive connection per client thread
        return lambda i: client.predict(model, batch(i))

    def grpc() -> Callable[[int], object]:
        return lambda i: grpc_client.predict(model, batch(i))

    out = {"version": int(version_dir.name)}
    for clients in CLIENTS:
        calls = max(3, 40 // clients) if quick else max(20, 400 // clients)
        row = {mode: _run(make, clients, calls) for mode, make in (("in_process", in_process), ("rest", rest),
                                                                  ("grpc", grpc))}  # fmt: skip
        for mode in ("rest", "grpc"):
            row[f"{mode}_p50_vs_in_process"] = row[mode]["p50_ms"] / row["in_process"]["p50_ms"]
            row[f"{mode}_throughput_vs_in_process"] = row[mode]["per_s"] / row["in_process"]["per_s"]
        out[clients] = row
    grpc_client.close()
    return out


def _run(make: Callable[[], Callable[[int], object]], clients: int, calls: int) -> dict:
    """`clients` threads, each `calls` requests back to back after 3 warm-up calls; latency of every call."""
    callers = [make() for _ in range(clients)]
    for call in callers:
        for i in range(3):
            call(i)
    latencies: list[float] = []
    lock, start_line = threading.Lock(), threading.Barrier(clients + 1)

    def client(call: Callable[[int], object], offset: int) -> None:
        mine = []
        start_line.wait()
        for i in range(calls):
            begin = time.perf_counter()
            call(offset + i)
            mine.append(time.perf_counter() - begin)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(call, k * calls)) for k, call in enumerate(callers)]
    for thread in threads:
        thread.start()
    start_line.wait()
    begin = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - begin
    ms = 1000 * np.array(latencies)
    return {"calls": len(latencies), "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "per_s": len(latencies) / wall}  # fmt: skip


def figures(results: dict) -> list[Figure]:
    """Per model and number of clients: REST's and gRPC's p50 latency and requests/s against the same threads
    calling the SavedModel in process. No targets: what serving costs over the model itself."""
    out = []
    for model, by_clients in results["models"].items():
        for clients in CLIENTS:
            row, what = by_clients[clients], f"serving {model}, {clients} client(s)"
            for mode, label in (("rest", "REST"), ("grpc", "gRPC")):
                out += [
                    Figure(f"{what}: p50 latency, {label} vs in-process", row[mode]["p50_ms"], "ms",
                           baseline=row["in_process"]["p50_ms"]),
                    Figure(f"{what}: requests/s, {label} vs in-process", row[mode]["per_s"], "requests/s",
                           baseline=row["in_process"]["per_s"]),
                ]  # fmt: skip
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
