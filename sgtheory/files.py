"""Atomic files: readers see the old content or the new, never half a file.

Every result, record and checkpoint is written to a temporary file beside its target and
renamed into place; several files can be replaced together (`atomic_write_many`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _umask() -> int:
    """The process's umask, read without changing it where the OS allows."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:  # pragma: no cover - not Linux
        pass
    mask = os.umask(0o022)  # pragma: no cover - not Linux
    os.umask(mask)  # pragma: no cover
    return mask  # pragma: no cover


def _write_temp(path: Path, write: Callable[[Any], None]) -> str:
    """Write `path`'s new content into a temporary file beside it (mode as umask allows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a plain open would not
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def atomic_write_many(files: Sequence[tuple[str | Path, Callable[[Any], None]]]) -> None:
    """Write several files so that readers see all old or all new contents.

    Every new content is written to a temporary file first (a full disk or any other error
    leaves every old file as it was); only then are the temporary files renamed into place.
    `files` holds (path, write) pairs; `write(fh)` writes bytes to a binary file handle.
    """
    temps: list[tuple[str, Path]] = []
    try:
        for path, write in files:
            temps.append((_write_temp(Path(path), write), Path(path)))
    except BaseException:
        for tmp, _ in temps:
            os.unlink(tmp)
        raise
    # The renames go together: a SIGTERM or Ctrl-C arriving between two of them would
    # leave a new checkpoint beside an old results.json; it is delivered after the last.
    with signals_deferred():
        for tmp, path in temps:
            os.replace(tmp, path)


@contextlib.contextmanager
def signals_deferred():
    """Hold SIGINT and SIGTERM back inside the block; they are delivered when it ends."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    atomic_write_many([(path, write)])


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _to_jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, np.ndarray):
        return _to_jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if np.isfinite(value) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write `obj` as JSON via a temporary file and rename: readers never see half a file.

    Tensors and arrays become lists; NaN and inf become null (JSON has no NaN).
    """
    _atomic_write(Path(path), json_writer(obj))


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) via a temporary file and rename."""
    data = text.encode()
    _atomic_write(Path(path), lambda fh: fh.write(data))


def json_writer(obj: Any) -> Callable[[Any], None]:
    """A writer for `atomic_write_many` that writes `obj` as JSON (see `write_json_atomic`)."""
    text = json.dumps(_to_jsonable(obj), indent=2, sort_keys=False)
    return lambda fh: fh.write(text.encode())


def read_json(path: str | Path) -> Any:
    """Read a JSON file written by `write_json_atomic`."""
    with open(path) as fh:
        return json.load(fh)


def torch_writer(state: Any) -> Callable[[Any], None]:
    """A writer for `atomic_write_many` that writes `state` as torch.save would.

    Serialised in memory first: torch.save writing into a file on a full disk fails with a
    RuntimeError ("unexpected pos") instead of the OSError (ENOSPC) a plain write gives.
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return lambda fh: fh.write(buffer.getbuffer())


def save_atomic(path: str | Path, state: dict) -> None:
    """torch.save `state` atomically (used for checkpoints)."""
    _atomic_write(Path(path), torch_writer(state))


def save_npy_atomic(path: str | Path, array: np.ndarray) -> None:
    """np.save `array` atomically."""
    _atomic_write(Path(path), lambda fh: np.save(fh, np.asarray(array)))
