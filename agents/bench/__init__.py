"""Measurements behind the benchmark scripts (speed, task inference)."""
