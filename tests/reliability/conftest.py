"""The fault tests' experiment: small but real, with dropout and augmentation on, so both RNG state
and data-stream position matter on resume."""

from pathlib import Path

import pytest

RELIABLE = """
name = "rel"
seed = 11
deterministic = {deterministic}
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
epochs = {epochs}

[training.schedule]
name = "cosine"
warmup_epochs = 1

[export]
dir = "exports"
"""


@pytest.fixture
def experiment(tmp_path_factory):
    """experiment(deterministic=True, epochs=3) → a fresh folder holding rel.toml; runs and exports go beside it."""

    def make(deterministic: bool = True, epochs: int = 3) -> Path:
        folder = tmp_path_factory.mktemp("rel")
        path = folder / "rel.toml"
        path.write_text(RELIABLE.format(deterministic=str(deterministic).lower(), epochs=epochs))
        return path

    return make
