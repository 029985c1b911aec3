"""kerasline: experiment file → tf.data → Keras 3 → SavedModel + ONNX.

The Python API beside the CLI (each name is imported on first use, so `import kerasline` stays light):

    import kerasline
    cfg = kerasline.load_experiment("mnist_cnn", ["training.epochs=3"])
    result = kerasline.train(cfg)                         # run_dir, metrics, replicas, ...
    version_dir = kerasline.export_run(cfg, result.run_dir)
    kerasline.evaluate(cfg, result.run_dir)               # test metrics of a finished run
"""

import importlib
from importlib import metadata

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
