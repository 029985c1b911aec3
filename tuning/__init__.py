"""Hyperparameter search with KerasTuner over an experiment's [tune] space."""

from tuning.search import SearchResult, tune

__all__ = ["SearchResult", "tune"]
