"""Writing result tables: CSV with NaN as an empty cell, JSON with arrays as lists and NaN as null."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    """One header row, then ``rows``; a NaN cell is written empty (how spreadsheets and pandas read a gap)."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([["" if isinstance(v, float) and math.isnan(v) else v for v in row] for row in rows])


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(json_ready(data), indent=2) + "\n")


def json_ready(value: Any) -> Any:
    """JSON-ready: arrays and tuples to lists, numpy scalars to Python ones, NaN and infinities to null."""
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return json_ready(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
