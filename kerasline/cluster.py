"""Multi-worker plumbing that needs no TensorFlow: each worker's TF_CONFIG, and a local cluster on 127.0.0.1.

    python -m kerasline.cluster --workers N [EXPERIMENT] [KEY=VALUE ...]    (make train-local-cluster WORKERS=N)

starts N `kerasline train --strategy multi_worker` processes on free loopback ports, prefixes every line they print
with their worker, waits for all, and ends every one of them when one fails, on Ctrl-C or on SIGTERM.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from kerasline.errors import UserError
from kerasline.files import write_text_atomic

GRACE_S = 10  # after SIGTERM, before SIGKILL


def parse_workers(text: str) -> list[str]:
    """`host:port,host:port,...` → the list, checked."""
    workers = [w.strip() for w in text.split(",")]
    for worker in workers:
        host, _, port = worker.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UserError(f"--workers: {worker!r} is not host:port")
        if workers.count(worker) > 1:
            raise UserError(f"--workers: {worker} is listed twice")
    return workers


def tf_configs(workers: list[str]) -> list[dict]:
    """One TF_CONFIG per worker, in order. Worker 0 is the chief: TF's convention in a cluster without a `chief`."""
    return [{"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}} for i in range(len(workers))]


def write_tf_configs(configs: list[dict], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"worker-{i}.json" for i in range(len(configs))]
    for path, config in zip(paths, configs, strict=True):
        write_text_atomic(path, json.dumps(config) + "\n")
    return paths


def free_ports(count: int) -> list[int]:
    """Ports the kernel calls free now; the sockets stay bound until all are chosen, so the ports differ."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def run_local_cluster(count: int, train_args: list[str]) -> int:
    """Trains with `count` local workers; the exit code is the first failure's, else 0."""
    configs = tf_configs([f"127.0.0.1:{port}" for port in free_ports(count)])
    procs: list[subprocess.Popen] = []
    printers: list[threading.Thread] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        for i, config in enumerate(configs):
            proc = subprocess.Popen(
                [sys.executable, "-m", "kerasline.cli", "train", *train_args, "--strategy", "multi_worker"],
                env={**os.environ, "TF_CONFIG": json.dumps(config)},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,  # Ctrl-C reaches us only; we end the workers in order
            )
            procs.append(proc)
            printers.append(threading.Thread(target=_prefix_lines, args=(proc.stdout, f"[worker {i}] "), daemon=True))
            printers[-1].start()
        while True:
            codes = [proc.poll() for proc in procs]
            for i, code in enumerate(codes):
                if code not in (None, 0):
                    print(f"[cluster] worker {i} exited with {code}; ending the others", flush=True)
                    return code if code > 0 else 128 - code
            if all(code == 0 for code in codes):
                return 0
            time.sleep(0.2)
    except KeyboardInterrupt:
        print("[cluster] interrupted; ending the workers", flush=True)
        return 130
    finally:
        _end(procs)
        for printer in printers:
            printer.join(timeout=5)
        signal.signal(signal.SIGTERM, previous)


def _prefix_lines(stream, prefix: str) -> None:
    for line in stream:
        print(prefix + line, end="", flush=True)


def _end(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each live worker by its pid, then SIGKILL what is still there after the grace period."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + GRACE_S
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kerasline.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default: %(default)s)")
    parser.add_argument("train_args", nargs="*", metavar="EXPERIMENT|KEY=VALUE", help="as for `kerasline train`")
    args = parser.parse_args(argv)
    if not 1 <= args.workers <= 64:
        print(f"error: --workers: {args.workers} is not in 1..64", file=sys.stderr)
        return 2
    return run_local_cluster(args.workers, args.train_args)


if __name__ == "__main__":
    sys.exit(main())
