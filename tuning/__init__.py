"""Hyperparameter search with KerasTuner over an experiment's [tune] space."""

from kerasline.tuning.search import SearchResult, tune

__all__ = ["SearchResult", "tune"]
