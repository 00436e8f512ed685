"""What every run shares: seeding, device choice, atomic files, checkpoints, wandb, versions."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ConfigError

WANDB_MODES = ("offline", "online", "disabled")


def resolve_device(name: str) -> torch.device:
    """Turn a `device` setting ('cpu', 'cuda', 'cuda:1') into a torch.device, or raise."""
    kind = str(name).split(":")[0]
    if kind not in ("cpu", "cuda"):
        raise ConfigError(f"device={name!r} is not valid; choose one of: cpu, cuda, cuda:<index>")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} was asked for but no CUDA device is available; use cpu")
    return torch.device(name)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch.Generator on `device`, seeded with `seed`: the only source of random draws."""
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(int(seed))
    return gen


def seed_everything(seed: int) -> None:
    """Seed the global torch and numpy RNGs too (for library code we do not control)."""
    torch.manual_seed(int(seed))
    np.random.seed(int(seed) % (2**32))


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
    text = json.dumps(_to_jsonable(obj), indent=2, sort_keys=False)
    _atomic_write(Path(path), lambda fh: fh.write(text.encode()))


def read_json(path: str | Path) -> Any:
    """Read a JSON file written by `write_json_atomic`."""
    with open(path) as fh:
        return json.load(fh)


def save_atomic(path: str | Path, state: dict) -> None:
    """torch.save `state` atomically (used for checkpoints)."""
    _atomic_write(Path(path), lambda fh: torch.save(state, fh))


def save_npy_atomic(path: str | Path, array: np.ndarray) -> None:
    """np.save `array` atomically."""
    _atomic_write(Path(path), lambda fh: np.save(fh, np.asarray(array)))


def load_checkpoint(path: str | Path) -> dict | None:
    """Load a checkpoint written by `save_atomic`, or None if there is none."""
    path = Path(path)
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


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
    return wandb.init(**kwargs)
