"""Exports: a TF Serving SavedModel and ONNX per version, verified against Keras before publishing.

export_run is imported on first use: reading the repository (versions, blessings: `kerasline runs`) needs no
TensorFlow, which publishing does.
"""

import importlib

__all__ = ["export_run"]


def __getattr__(name: str):
    if name != "export_run":
        raise AttributeError(f"module 'kerasline.export' has no attribute {name!r}")
    return importlib.import_module("kerasline.export.publish").export_run
