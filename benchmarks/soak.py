"""The soak run (a `make bench` item, not CI): the development server, in its own process, under 16 concurrent
clients for 10 minutes, each sending valid and malformed requests at random, REST and gRPC.

    python -m benchmarks.soak [--seconds 600] [--clients 16] [--quick] [--out PATH]
    python -m benchmarks.run --soak [--quick]          (make bench BENCH=--soak)

The models, the malformed requests and the senders are tests/reliability/test_hostile_requests.py's: seven tiny
SavedModels (image, tokens, text, segmentation, generator, encode/decode, columns) and a pool of requests its
hypothesis strategies generate (every REST and gRPC kind, seeded). Reported: 5xx answers (the target is none), valid
requests that failed (none), malformed ones not refused with a 4xx, the server's resident memory (RSS) sampled over
time with its growth from the end of warm-up (the first fifth of the run) to the end, and p50 / p99 latency per
window (a minute; 5 s with --quick), valid and malformed apart. --quick: 20 s, the check that it runs. The 1-minute
load average before and after is recorded: on a shared machine the latencies are not meaningful, the counts are.
"""

import argparse
import importlib.util
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
from tensorflow_serving.apis import prediction_service_pb2_grpc

from benchmarks.figures import Figure
from kerasline.serving.launch import wait_until_available
from kerasline.serving.tensors import HTTP_STATUS

HOSTILE = Path(__file__).resolve().parents[1] / "tests" / "reliability" / "test_hostile_requests.py"
DEFAULT_OUT = Path(__file__).resolve().parent / "results.json"
VALID_SHARE = 0.5


def load_hostile():
    """The test module, by path (tests/ is not a package)."""
    spec = importlib.util.spec_from_file_location("hostile_requests", HOSTILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def soak_item(seconds: float, clients: int = 16, window: float = 60, pool: int = 600, seed: int = 0) -> dict:
    hostile = load_hostile()
    load_before = os.getloadavg()[0]
    print(f"[soak] generating {2 * pool} malformed requests (seed {seed})", flush=True)
    bad = hostile.sample(hostile.rest_requests(), pool, seed) + hostile.sample(hostile.grpc_requests(), pool, seed)
    good = [hostile.valid_request(m, s, p) for m in hostile.MODELS for s in range(6) for p in ("rest", "grpc")]
    with tempfile.TemporaryDirectory(prefix="kerasline-soak-") as tmp:
        repo = hostile.build_repo(Path(tmp) / "exports")
        rest_port, grpc_port = _free_port(), _free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "serving.devserver", "--repo", str(repo),
             "--rest-port", str(rest_port), "--grpc-port", str(grpc_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )  # fmt: skip
        try:
            wait_until_available(f"http://127.0.0.1:{rest_port}", list(hostile.MODELS), timeout=120)
            channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            for model in hostile.MODELS:  # every model loaded before the clock starts
                hostile.assert_serves(rest_port, stub, model)
            print(f"[soak] {clients} clients for {seconds:.0f} s (server pid {server.pid})", flush=True)
            records, rss = _run(hostile, rest_port, stub, server.pid, good, bad, seconds, clients, seed)
            alive = server.poll() is None
            channel.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    result = _summarise(records, rss, seconds, window)
    result.update(
        clients=clients,
        seconds=seconds,
        pool={"malformed": len(bad), "valid": len(good)},
        server_alive_at_end=alive,
        load_avg_1min_before=load_before,
        load_avg_1min_after=os.getloadavg()[0],
    )
    return result


def _run(hostile, rest_port, stub, pid, good, bad, seconds, clients, seed):
    """Each client: a valid request or a malformed one at random, back to back, until the time is up."""
    records: list[tuple] = []  # (seconds since start, latency s, valid, kind, outcome)
    rss: list[tuple[float, float]] = []
    lock, start = threading.Lock(), time.monotonic()
    deadline = start + seconds

    def client(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        mine = []
        while time.monotonic() < deadline:
            valid = rng.random() < VALID_SHARE
            request = rng.choice(good if valid else bad)
            began = time.monotonic()
            outcome = _send(hostile, rest_port, stub, request)
            mine.append((began - start, time.monotonic() - began, valid, request.kind, outcome))
        with lock:
            records.extend(mine)

    def sample_rss() -> None:
        while time.monotonic() < deadline:
            rss.append((time.monotonic() - start, _rss_mb(pid)))
            time.sleep(min(5.0, seconds / 60))
        rss.append((time.monotonic() - start, _rss_mb(pid)))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    threads.append(threading.Thread(target=sample_rss, daemon=True))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 300)
    return records, rss


def _send(hostile, rest_port: int, stub, request) -> str:
    """'200', '4xx', '5xx' (REST status, or the HTTP status TF Serving maps a gRPC code to), or 'error: ...' where
    no answer came (a reset, a timeout)."""
    try:
        if request.protocol == "grpc":
            try:
                stub.Predict(request.grpc, timeout=60)
                return "200"
            except grpc.RpcError as e:
                status = HTTP_STATUS.get(e.code().name, 500)
        else:
            status, _ = hostile.send_rest(rest_port, request)
    except Exception as e:  # noqa: BLE001 - a request with no answer is itself the finding
        return f"error: {type(e).__name__}"
    return "200" if status == 200 else "4xx" if 400 <= status < 500 else "5xx" if status >= 500 else str(status)


def _summarise(records: list[tuple], rss: list[tuple[float, float]], seconds: float, window: float) -> dict:
    valid = [r for r in records if r[2]]
    malformed = [r for r in records if not r[2]]
    outcomes = Counter(r[4] for r in records)
    failed_valid = [r for r in valid if r[4] != "200"]
    not_refused = [r for r in malformed if r[4] != "4xx"]
    warm = seconds / 5
    after_warmup = [mb for t, mb in rss if t >= warm] or [mb for _, mb in rss]
    windows = []
    for start in np.arange(0, seconds, window):
        row = {"from_s": float(start)}
        for name, group in (("valid", valid), ("malformed", malformed)):
            latencies = [r[1] * 1000 for r in group if start <= r[0] < start + window]
            row[name] = {
                "requests": len(latencies),
                "p50_ms": float(np.percentile(latencies, 50)) if latencies else None,
                "p99_ms": float(np.percentile(latencies, 99)) if latencies else None,
            }
        windows.append(row)
    return {
        "requests": len(records),
        "requests_per_s": len(records) / seconds,
        "valid": len(valid),
        "malformed": len(malformed),
        "outcomes": dict(outcomes),
        "count_5xx": sum(1 for r in records if r[4] == "5xx"),
        "no_answer": sum(1 for r in records if r[4].startswith("error")),
        "failed_valid": len(failed_valid),
        "malformed_not_refused": len(not_refused),
        "not_refused_kinds": dict(Counter(f"{r[3]} → {r[4]}" for r in not_refused)),
        "malformed_by_kind": dict(sorted(Counter(r[3].split(":")[0] for r in malformed).items())),
        "rss_mb": {
            "start": rss[0][1] if rss else None,
            "after_warmup": after_warmup[0],
            "end": rss[-1][1] if rss else None,
            "max": max(mb for _, mb in rss) if rss else None,
            "growth_after_warmup_mb": after_warmup[-1] - after_warmup[0],
            "growth_after_warmup_pct": 100 * (after_warmup[-1] - after_warmup[0]) / after_warmup[0],
            "warmup_s": warm,
            "samples": [(round(t, 1), mb) for t, mb in rss],
        },
        "windows": windows,
    }


def table(result: dict) -> str:
    rss = result["rss_mb"]
    lines = [
        f"soak: {result['clients']} clients, {result['seconds']:.0f} s, {result['requests']} requests "
        f"({result['requests_per_s']:.0f}/s; {result['valid']} valid, {result['malformed']} malformed), "
        f"load {result['load_avg_1min_before']:.2f} → {result['load_avg_1min_after']:.2f}",
        f"  5xx: {result['count_5xx']}   no answer: {result['no_answer']}   failed valid: {result['failed_valid']}   "
        f"malformed not refused with a 4xx: {result['malformed_not_refused']}   "
        f"server alive at the end: {result['server_alive_at_end']}",
        f"  server RSS: {rss['start']:.0f} MB at start, {rss['after_warmup']:.0f} MB after {rss['warmup_s']:.0f} s of "
        f"warm-up, {rss['end']:.0f} MB at the end (growth {rss['growth_after_warmup_mb']:+.1f} MB, "
        f"{rss['growth_after_warmup_pct']:+.1f} %), max {rss['max']:.0f} MB",
        "  window    valid: n   p50 ms   p99 ms   malformed: n   p50 ms   p99 ms",
    ]
    for row in result["windows"]:
        v, m = row["valid"], row["malformed"]
        lines.append(
            f"  {row['from_s']:>5.0f} s  {v['requests']:>9}  {_ms(v['p50_ms'])}  {_ms(v['p99_ms'])}  "
            f"{m['requests']:>12}  {_ms(m['p50_ms'])}  {_ms(m['p99_ms'])}"
        )
    if result["not_refused_kinds"]:
        lines.append(f"  not refused: {result['not_refused_kinds']}")
    verdict = (
        result["count_5xx"] == 0
        and result["no_answer"] == 0
        and result["failed_valid"] == 0
        and result["server_alive_at_end"]
    )
    lines.append(f"  verdict: {'PASS' if verdict else 'FAIL'} (zero 5xx, every request answered, every valid one 200)")
    return "\n".join(lines)


def figures(result: dict) -> list[Figure]:
    """The counts that must be zero (5xx answers, unanswered requests, failed valid requests), the malformed
    requests not refused with a 4xx, and the server's memory growth after warm-up."""
    return [
        Figure("soak: 5xx answers", result["count_5xx"], "requests", target="<= 0"),
        Figure("soak: requests with no answer", result["no_answer"], "requests", target="<= 0"),
        Figure("soak: valid requests that failed", result["failed_valid"], "requests", target="<= 0"),
        Figure("soak: malformed requests not refused with a 4xx", result["malformed_not_refused"], "requests"),
        Figure("soak: server RSS growth after warm-up", result["rss_mb"]["growth_after_warmup_mb"], "MB"),
    ]


def _ms(value: float | None) -> str:
    return f"{value:>7.1f}" if value is not None else "      -"


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, help="how long (default: 600; 20 with --quick)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default: %(default)s)")
    parser.add_argument("--window", type=float, help="seconds per latency window (default: 60; 5 with --quick)")
    parser.add_argument("--quick", action="store_true", help="20 s and a smaller pool: the check that it runs")
    parser.add_argument("--seed", type=int, default=0, help="the malformed requests' pool and the clients' choices")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results (default: %(default)s)")
    args = parser.parse_args(argv)
    seconds = args.seconds or (20 if args.quick else 600)
    window = args.window or (5 if args.quick else 60)
    result = soak_item(seconds, args.clients, window, pool=150 if args.quick else 600, seed=args.seed)
    args.out.write_text(json.dumps({"soak": result}, indent=2, default=str) + "\n")
    print(table(result))
    print(f"\nresults: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
