"""A real TensorBoard server on 127.0.0.1 serves the run's scalars, images and histograms."""

import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tensorboard(trained):
    port = free_port()
    tensorboard_bin = Path(sys.executable).parent / "tensorboard"
    proc = subprocess.Popen(
        [str(tensorboard_bin), "--logdir", str(trained["root"] / "runs"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def get(base: str, path: str, **params) -> object:
    with urllib.request.urlopen(f"{base}{path}?{urllib.parse.urlencode(params)}", timeout=10) as response:
        return json.loads(response.read())


def wait_for(base: str, path: str, predicate, timeout: float = 90) -> object:
    deadline = time.monotonic() + timeout
    while True:
        try:
            body = get(base, path)
            if predicate(body):
                return body
        except OSError:
            pass  # not listening yet
        assert time.monotonic() < deadline, f"TensorBoard never served {path}"
        time.sleep(0.5)


def test_tensorboard_serves_the_run(tensorboard):
    train, validation = "tiny/run-001/logs/train", "tiny/run-001/logs/validation"
    wait_for(tensorboard, "/data/plugin/scalars/tags", lambda tags: "epoch_loss" in tags.get(validation, {}))

    for run in (train, validation):
        points = get(tensorboard, "/data/plugin/scalars/scalars", run=run, tag="epoch_loss")
        assert [step for _, step, _ in points] == [0, 1]  # one point per epoch
        assert all(value > 0 for _, _, value in points)
    learning_rate = get(tensorboard, "/data/plugin/scalars/scalars", run=train, tag="epoch_learning_rate")
    assert [value for _, _, value in learning_rate] == pytest.approx([1e-3, 1e-3])

    images = get(tensorboard, "/data/plugin/images/tags")
    assert "augmented_training_images" in images[train]
    assert "confusion_matrix" in images[validation]
    matrices = get(tensorboard, "/data/plugin/images/images", run=validation, tag="confusion_matrix", sample=0)
    assert [m["step"] for m in matrices] == [1]  # drawn once, when the fit ended (its last epoch), not every epoch
    histograms = get(tensorboard, "/data/plugin/histograms/tags")
    assert any(tag.startswith("block0_conv0") for tag in histograms[train])
