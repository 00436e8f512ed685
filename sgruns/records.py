"""What a run records about itself and where it runs: the device, checkpoints, versions."""

from __future__ import annotations

import platform
import re
import shlex
import subprocess
from pathlib import Path

import numpy as np
import torch

from sgruns.errors import CheckpointError
from sgtheory.errors import ConfigError


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
    from sgtheory import __version__

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
