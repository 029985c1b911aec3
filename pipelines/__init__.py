"""Everything tf.data: sources, splits, augmentation and the batched datasets that feed training."""

from kerasline.pipelines.datasets import Datasets, build_datasets

__all__ = ["Datasets", "build_datasets"]
