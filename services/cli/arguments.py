"""Argument types shared by the `studio` commands: a bad number is refused by argparse in one line."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def whole_number(minimum: int, zero_means: str = "") -> Callable[[str], int]:
    """An int of at least MINIMUM; ZERO_MEANS says what 0 stands for, where 0 is a default."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            meaning = f" (0 means {zero_means})" if zero_means else ""
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}{meaning}")
        return value

    return parse
