"""Strategy, optimiser, callbacks, run directories, fit and resume."""
