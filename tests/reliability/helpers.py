"""Shared by the fault tests: the faulty runner and exact weight comparison."""

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

FAULTY = Path(__file__).with_name("faulty.py")


def run(
    experiment: Path, *args: str, command: str = "train", fault: str | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """`kerasline COMMAND EXPERIMENT ARGS`, in the experiment's folder, optionally with a fault injected."""
    prefix = [str(FAULTY), fault] if fault else ["-m", "kerasline.cli"]
    return subprocess.run(
        [sys.executable, *prefix, command, experiment.name, *args],
        cwd=experiment.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def weights(path: Path) -> dict[str, np.ndarray]:
    """Every array in a Keras weights file (model and optimizer), by its path."""
    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, node: arrays.__setitem__(name, node[()]) if isinstance(node, h5py.Dataset) else None)
    return arrays


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        np.testing.assert_array_equal(wa[name], wb[name], err_msg=name)
