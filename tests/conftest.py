"""Shared fixtures: a tiny experiment (a few hundred real digits, a tiny CNN) and one trained run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kerasline.config import load_experiment  # noqa: E402

TINY = """
name = "tiny"
seed = 7
runs_dir = "{root}/runs"

[data]
source = "samples"
name = "mnist_8k"
limit = 480
batch_size = 32

[data.augment]
rotation = 0.03
translation = 0.1

[model]
name = "cnn"
filters = [8]
convs_per_block = 1
dense_units = 16

[training]
epochs = 2

[export]
dir = "{root}/exports"
"""


@pytest.fixture
def tiny_experiment(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(root=tmp_path))
    return path


@pytest.fixture
def tiny_cfg(tiny_experiment: Path):
    return load_experiment(str(tiny_experiment))


def run_cli(*args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Runs the real console entry point in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "kerasline.cli", *args], capture_output=True, text=True, timeout=timeout, **kwargs
    )


@pytest.fixture(scope="session")
def kerasline():
    return run_cli


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> dict:
    """One tiny run, trained and exported through the CLI; shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("trained")
    experiment = root / "tiny.toml"
    experiment.write_text(TINY.format(root=root))
    proc = run_cli("train", str(experiment))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"root": root, "experiment": experiment, "stdout": proc.stdout, "cfg": load_experiment(str(experiment))}
