"""`kerasline serve`: the repository on TF Serving in Docker when an engine answers, else the development server."""

import shutil
import subprocess
import time
from pathlib import Path

from kerasline.errors import UserError
from kerasline.export.repository import CONTAINER_ROOT, model_dirs
from kerasline.serving.client import RestClient
from kerasline.serving.tensors import ServingError

# TF Serving's release for our TensorFlow (2.21); the image's tag names the same release as tensorflow-serving-api.
IMAGE = "tensorflow/serving:2.21.0"
CONTAINER = "kerasline-serving"


def docker_answers() -> str | None:
    """None when `docker info` answers, else why not (one line)."""
    if shutil.which("docker") is None:
        return "no docker command on PATH"
    try:
        proc = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "docker info did not answer within 20 s"
    return None if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["docker info failed"])[-1]


def docker_command(repo: Path, host: str, rest_port: int, grpc_port: int, name: str = CONTAINER) -> list[str]:
    return [
        "docker", "run", "--detach", "--rm", "--name", name,
        "--publish", f"{host}:{grpc_port}:8500", "--publish", f"{host}:{rest_port}:8501",
        "--volume", f"{repo.resolve()}:{CONTAINER_ROOT}:ro",
        IMAGE,
        f"--model_config_file={CONTAINER_ROOT}/models.config",
        "--model_config_file_poll_wait_seconds=10",  # deploy, rollback and new exports apply without a restart
        "--allow_version_labels_for_unavailable_models=true",  # a label may name a version still loading
        "--enable_batching",
        f"--batching_parameters_file={CONTAINER_ROOT}/batching.config",
    ]  # fmt: skip


def wait_until_available(url: str, models: list[str], timeout: float) -> None:
    """Every model's every served version AVAILABLE, or a one-line error naming what was not."""
    client, deadline, last = RestClient(url, timeout=5), time.monotonic() + timeout, ""
    while True:
        pending = []
        for model in models:
            try:
                states = [s["state"] for s in client.status(model)["model_version_status"]]
            except ServingError as e:
                states = [e.message]
            if not states or any(state != "AVAILABLE" for state in states):
                pending.append(f"{model}: {', '.join(states) or 'no versions'}")
        if not pending:
            return
        last = "; ".join(pending)
        if time.monotonic() > deadline:
            raise UserError(f"models not AVAILABLE after {timeout:.0f} s: {last}")
        time.sleep(1)


def serve(repo: Path, host: str, rest_port: int, grpc_port: int, dev: bool = False, timeout: float = 300) -> None:
    if not (repo / "models.config").is_file():
        raise UserError(f"{repo}/models.config: not found; export a model first (kerasline export)")
    models = [p.name for p in model_dirs(repo)]
    why_not = "--dev given" if dev else docker_answers()
    if why_not is None:
        proc = subprocess.run(docker_command(repo, host, rest_port, grpc_port), capture_output=True, text=True)
        if proc.returncode:
            raise UserError(f"docker run {IMAGE} failed: {proc.stderr.strip().splitlines()[-1:]}")
        url = f"http://{host}:{rest_port}"
        print(f"TF Serving ({IMAGE}, container {CONTAINER}): waiting for {', '.join(models)}", flush=True)
        wait_until_available(url, models, timeout)
        print(f"serving {repo}/ on {url} (REST) and {host}:{grpc_port} (gRPC); stop: docker stop {CONTAINER}")
        return
    from kerasline.serving.devserver import main

    print(f"no Docker engine ({why_not}): starting the development server, a stand-in for testing", flush=True)
    main(["--repo", str(repo), "--host", host, "--rest-port", str(rest_port), "--grpc-port", str(grpc_port)])
