"""kerasline: experiment file → tf.data → Keras 3 → SavedModel + ONNX.

The Python API beside the CLI (each name is imported on first use, so `import kerasline` stays light):

    import kerasline
    cfg = kerasline.load_experiment("mnist_cnn", ["training.epochs=3"])
    result = kerasline.train(cfg)                         # run_dir, metrics, replicas, ...
    version_dir = kerasline.export_run(cfg, result.run_dir)
    kerasline.evaluate(cfg, result.run_dir)               # test metrics of a finished run
"""

import importlib
import os
import platform
from importlib import metadata

# TensorFlow 2.21 turns its oneDNN kernels on by default only on x86 CPUs with AVX512_VNNI, AVX512_BF16 or AMX,
# and decides once, when it is imported. Elsewhere it falls back to Eigen's: on an AVX2 EPYC Milan (2026-12-07) they
# trained `mnist_convnet` 1.3x and `imdb_transformer` 2.1x slower a step. So kerasline asks for oneDNN on every x86
# CPU, before anything of it imports TensorFlow; TF_ENABLE_ONEDNN_OPTS=0 in the environment still turns it off, and
# a script that imports TensorFlow before kerasline keeps TensorFlow's own choice.
if platform.machine().lower() in {"x86_64", "amd64"}:
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = metadata.version("kerasline")

_API = {
    "load_experiment": "kerasline.config",
    "train": "kerasline.training.fit",
    "evaluate": "kerasline.training.fit",
    "export_run": "kerasline.export",  # not `export`: that name is the kerasline.export package
}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'kerasline' has no attribute {name!r}")
    return getattr(importlib.import_module(_API[name]), name)
