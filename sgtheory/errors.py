"""Error types, small validators and a non-finite check, so every failure reads the same way."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where needed: the command line starts without it
    import torch


class ConfigError(ValueError):
    """A setting has a value that cannot work; the message names setting, value and choices."""


class DataError(ValueError):
    """A data file cannot be used as it is; the message names the file and the first bad sample."""


class RunFolderError(RuntimeError):
    """The run folder cannot be used: held by another process, not writable, or the disk is full."""


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read back; the message names the file and how to start afresh."""


class NonFiniteError(RuntimeError):
    """A loss, weight, gradient or state became NaN or infinite; training stopped."""


# What a run reports as one line `error: ...` (exit status 1) instead of a traceback.
RUN_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    DataError,
    RunFolderError,
    CheckpointError,
    NonFiniteError,
    OSError,  # missing files, no network, a full disk, lost permissions
)


def one_line(err: BaseException) -> str:
    """The message of `err` on one line (newlines and runs of spaces become one space)."""
    return " ".join(str(err).split()) or type(err).__name__


def first_nonfinite(named: Sequence[tuple[str, torch.Tensor | None]]) -> str | None:
    """The name of the first tensor holding a NaN or an infinity, or None if all are finite.

    One sum per tensor, accumulated in float64, and one synchronisation: a float64 sum of
    float32/bf16 values cannot overflow, so it is finite exactly when every element is
    (NaN and inf propagate; inf - inf is NaN). Cheap enough for every weight, gradient and
    optimiser state after every step (~0.3 ms for the 16 tensors of the default network).
    """
    import torch

    pairs = [(n, t.detach()) for n, t in named if t is not None and t.is_floating_point()]
    if not pairs:
        return None
    sums = torch.stack([t.sum(dtype=torch.float64) for _, t in pairs])
    if bool(torch.isfinite(sums.sum())):
        return None
    return pairs[int((~torch.isfinite(sums)).nonzero()[0, 0])][0]


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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_seed(setting: str, value: Any) -> int:
    """Return `value` if it is a seed: an integer from 0 to 2**63 - 1 (both experiments)."""
    if not _is_int(value) or not 0 <= value < 2**63:
        raise ConfigError(
            f"{setting}={value!r} is not valid; it must be an integer from 0 to 2**63 - 1"
        )
    return value


def check_threads(setting: str, value: Any) -> int | None:
    """Return `value` if it is null or a positive integer not above the usable cores.

    More threads than cores make every step several times slower (spinning threads wait on
    each other); null means all usable cores. The same rule in both experiments.
    """
    from .threads import usable_cores

    if value is None:
        return None
    cores = usable_cores()
    if not _is_int(value) or value < 1:
        raise ConfigError(
            f"{setting}={value!r} is not valid; it must be a positive integer (at most {cores}, "
            "the cores this process may run on) or null (all of them)"
        )
    if value > cores:
        raise ConfigError(
            f"{setting}={value} is not valid: this process may run on {cores} core(s), and "
            f"more threads than cores slow every step down; use at most {cores}, or null"
        )
    return value


def check_known(settings: Iterable[tuple[str, Any]], known: Iterable[str], where: str) -> None:
    """ConfigError for the first (dotted name, value) pair whose name is not in `known`.

    A setting added on the command line (`+foo=1`, or a misspelt `++dataset.nb_sample=5`)
    would otherwise be carried along and ignored; `where` names the file listing them all.
    """
    known = set(known)
    for key, value in settings:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise ConfigError(
                f"{key}={value!r} is not a setting of this experiment; {hint}the settings and "
                f"their defaults are in {where}"
            )
