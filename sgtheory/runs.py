"""What every run shares: generators, device choice, atomic files, checkpoints, wandb, versions.

The run-folder life cycle (lock, status, resume, failure) built on these is in `runfolder`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CheckpointError, ConfigError

WANDB_MODES = ("offline", "online", "disabled")


def resolve_device(name: str) -> torch.device:
    """Turn a `device` setting ('cpu', 'cuda', 'cuda:1') into a torch.device, or raise."""
    match = re.fullmatch(r"(cpu|cuda)(?::(\d+))?", name) if isinstance(name, str) else None
    if match is None or (match[1] == "cpu" and match[2] not in (None, "0")):
        raise ConfigError(f"device={name!r} is not valid; choose one of: cpu, cuda, cuda:<index>")
    if match[1] == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} was asked for but no CUDA device is available; use cpu")
    if match[1] == "cuda" and match[2] is not None and int(match[2]) >= torch.cuda.device_count():
        raise ConfigError(
            f"device={name!r} is not valid; this machine has {torch.cuda.device_count()} CUDA "
            f"device(s): cuda:0..cuda:{torch.cuda.device_count() - 1}"
        )
    return torch.device(name)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch.Generator on `device`, seeded with `seed`: the only source of random draws."""
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(int(seed))
    return gen


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


def load_checkpoint(path: str | Path) -> dict | None:
    """Load a checkpoint written by `save_atomic`, or None if there is none.

    A file that cannot be read back as a dict (emptied, truncated, not a checkpoint) raises
    CheckpointError naming the file and how to start afresh.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many types for damaged files
        raise CheckpointError(_damaged(path, f"{type(err).__name__}: {err}")) from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(_damaged(path, f"it holds a {type(ckpt).__name__}, not a dict"))
    return ckpt


def _damaged(path: Path, why: str) -> str:
    why = " ".join(why.split())[:200]
    folder = path.parent
    return (
        f"checkpoint={path} cannot be read ({why}); to start afresh, move the run aside: "
        f"mv {shlex.quote(str(folder))} {shlex.quote(str(folder))}.old"
    )


def versions() -> dict[str, str]:
    """Versions of Python, the main libraries and (if available) the git commit."""
    from . import __version__

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "sgtheory": __version__,
    }
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


class _NoWandb:
    """Stand-in when wandb is disabled: same calls, nothing happens."""

    dir = None

    def log(self, *args, **kwargs) -> None:
        pass

    def finish(self, *args, **kwargs) -> None:
        pass


def init_wandb(
    mode: str = "offline",
    project: str = "surrogate-gradient-theory",
    entity: str | None = None,
    run_dir: str | Path = ".",
    config: dict | None = None,
    name: str | None = None,
    resume_id: str | None = None,
):
    """Start a wandb run: offline by default (no account, no network), inside `run_dir`.

    `mode` is 'offline' (files under run_dir/wandb, sync later with `wandb sync`),
    'online' (needs login and network) or 'disabled' (returns a no-op stand-in).
    """
    if mode not in WANDB_MODES:
        raise ConfigError(
            f"wandb.mode={mode!r} is not valid; choose one of: {', '.join(WANDB_MODES)}"
        )
    if mode == "disabled":
        return _NoWandb()
    import wandb

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_SILENT", "true")
    kwargs = dict(
        mode=mode,
        project=project,
        entity=entity,
        dir=str(run_dir),
        config=config or {},
        name=name,
        settings=wandb.Settings(console="off", x_disable_stats=True),
    )
    if resume_id:
        kwargs.update(id=resume_id, resume="allow")
    try:
        return wandb.init(**kwargs)
    except Exception as err:  # wandb's own errors: no login, no network, a refused name
        raise ConfigError(
            f"wandb.mode={mode}: wandb could not start ({' '.join(str(err).split())[:300]}); "
            "check wandb.project and wandb.entity, or use wandb.mode=offline or disabled"
        ) from None
