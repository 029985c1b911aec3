"""Model builders: plain functions `(model config, data config) → keras.Model`, backend-agnostic.

Builders use `keras.layers` and `keras.ops` only, so every model also builds on JAX and PyTorch.
Inputs are raw pixel values as float32 in [0, 255]; scaling is the model's first layer, so it is
inside every export. The last layer is float32 under mixed precision, named as models/heads.py says.
"""

from kerasline.models.registry import build_model

__all__ = ["build_model"]
