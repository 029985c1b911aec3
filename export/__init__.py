"""Exports: a TF Serving SavedModel and ONNX per version, verified against Keras before publishing."""

from kerasline.export.publish import export_run

__all__ = ["export_run"]
