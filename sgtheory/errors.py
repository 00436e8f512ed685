"""One error type and small validators, so every bad setting fails the same clear way."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


class ConfigError(ValueError):
    """A setting has a value that cannot work; the message names setting, value and choices."""


def check_choice(setting: str, value: Any, choices: Iterable[Any]) -> Any:
    """Return `value` if it is one of `choices`, else raise a ConfigError listing them."""
    choices = list(choices)
    if value not in choices:
        raise ConfigError(
            f"{setting}={value!r} is not valid; choose one of: {', '.join(map(str, choices))}"
        )
    return value


def check_positive(setting: str, value: Any, integer: bool = False) -> Any:
    """Return `value` if it is a finite number > 0 (an int if `integer`), else raise."""
    kind = "a positive integer" if integer else "a positive finite number"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and integer:
        ok = float(value).is_integer()
    if not ok or not math.isfinite(float(value)) or value <= 0:
        raise ConfigError(f"{setting}={value!r} is not valid; it must be {kind}")
    return value
