"""How a run fails: the errors of running experiments and the one-line `error: ...` convention.

The library's own errors (bad values, bad data, non-finite numbers) are in `sgtheory.errors`;
a run reports those and these as one line and exit status 1 (`RUN_ERRORS`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from sgtheory.errors import ConfigError, DataError, NonFiniteError


class RunFolderError(RuntimeError):
    """The run folder cannot be used: held by another process, not writable, or the disk is full."""


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read back; the message names the file and how to start afresh."""


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
    from sgtheory.backends.threads import usable_cores

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
