"""Scores, retention matrices, plots and method comparisons of trained agents."""
