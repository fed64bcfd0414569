"""argparse types shared by the tools: numbers that must be positive, factors that must exceed one.

Each refuses a bad value with argparse's usage error (exit 2) whose message states the rule it broke.
"""

from __future__ import annotations

import argparse
import math


def positive_int(text: str) -> int:
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    return _finite_above(text, 0, "expected a finite number > 0")


def factor(text: str) -> float:
    """A ratio head / base that counts as a regression: a finite number > 1."""
    return _finite_above(text, 1, "a regression factor must be > 1 and finite (1.05 = 5% slower)")


def _finite_above(text: str, bound: float, rule: str) -> float:
    """``text`` as a float in (``bound``, inf), else argparse's error: ``rule`` and the value given."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{rule}, got {text!r}") from None
    if not bound < value < math.inf:
        raise argparse.ArgumentTypeError(f"{rule}, got {text}")
    return value
