"""Argument types of the `vc` command: every option is checked when it is parsed, and a bad value gets one line
that names the option and the allowed range (argparse adds the option's name and exits with code 2)."""
from __future__ import annotations

import argparse
import math
from typing import Callable


def number(kind: type = float, low: float | None = None, high: float | None = None, *,
           low_open: bool = False, what: str = "") -> Callable[[str], float]:
    """An argparse type: a finite `kind` (int or float) within [low, high] (or (low, high] with `low_open`)."""
    if low is not None and high is not None:
        bounds = f"greater than {low} and at most {high}" if low_open else f"between {low} and {high}"
    elif low is not None:
        bounds = f"greater than {low}" if low_open else f"at least {low}"
    else:
        bounds = f"at most {high}"
    noun = what or ("a whole number" if kind is int else "a number")

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not {noun}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"'{text}' is not a finite number")
        below = low is not None and (value <= low if low_open else value < low)
        if below or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is out of range (must be {bounds})")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


SAMPLE_RATE = number(int, 8000, 192000)
PITCH_SHIFT = number(float, -24, 24)  # semitones: two octaves either way
TIMBRE_MATCH = number(float, 0, 1)
JOBS = number(int, 1, 256)
THREADS = number(int, 0, 1024)  # 0: torch's default
BLOCK_MS = number(float, 1, 10000)
POSITIVE = number(float, 0, low_open=True)
NON_NEGATIVE = number(float, 0)  # 0 means "none" for the time budgets that accept it
STEPS = number(int, 1)
STEP = number(int, 0)  # a step index: 0 is the first
COUNT = number(int, 1)
LEARNING_RATE = number(float, 0, 1, low_open=True)
RATIO = number(float, 1)


def threads_list(text: str) -> int:
    return number(int, 1, 1024)(text)
