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


@pytest.fixture(scope="session")
def sharded_tfds(tmp_path_factory) -> Path:
    """A real TFDS dataset, `shard_probe`, prepared offline in 4 TFRecord files per split: 40 train and 10 test
    examples of 8×8×1 images, example i filled with the value i and labelled i % 2. tfds.load reads it from
    files once tfds looks in the returned folder (TFDS_DATA_DIR, or tfds.core.constants.DATA_DIR in-process)."""
    import numpy as np
    import tensorflow_datasets as tfds
    from etils import epath

    root = tmp_path_factory.mktemp("tfds")

    class ShardProbe(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")
        pkg_dir_path = epath.Path(root)  # where tfds looks for metadata files: none here

        def _info(self):
            features = {"image": tfds.features.Image(shape=(8, 8, 1)), "label": tfds.features.ClassLabel(num_classes=2)}
            return self.dataset_info_from_configs(
                features=tfds.features.FeaturesDict(features), supervised_keys=("image", "label")
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(range(40)), "test": self._generate_examples(range(100, 110))}

        def _generate_examples(self, ids):
            for i in ids:
                yield i, {"image": np.full((8, 8, 1), i, np.uint8), "label": i % 2}

    ShardProbe(data_dir=str(root)).download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=4))
    return root
