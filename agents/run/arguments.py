"""Argument types for the scripts' numeric options: a value out of range is argparse's own usage error (exit 2, the
option named, no traceback) instead of a crash or a silent run deep inside the script."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def integer(low: int) -> Callable[[str], int]:
    """An ``int`` option that must be >= ``low``: ``parser.add_argument("--steps", type=integer(1))``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def positive(text: str) -> float:
    """A ``float`` option that must be > 0 (seconds, scales)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value
