"""Everything tf.data: sources, splits, augmentation and the batched datasets that feed training.

`Datasets` and `build_datasets` are imported on first use, so that `kerasline.pipelines.columns` (a table's
schema, which the model builders read) can be imported where TensorFlow is not installed.
"""

import importlib

__all__ = ["Datasets", "build_datasets"]


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module 'kerasline.pipelines' has no attribute {name!r}")
    return getattr(importlib.import_module("kerasline.pipelines.datasets"), name)
