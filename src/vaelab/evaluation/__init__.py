"""Evaluation: likelihood bounds, diagnostics and classifiers that judge generated images."""
