"""What a checkpoint holds: model, optimiser, every random generator, and the history so far.

Writing, locking, settings comparison and resumption are the run folder's
(`sgruns.folder`); this module only turns the training state into a dict and back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sgruns.errors import CheckpointError


def state(
    epoch: int,
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generators: dict[str, list[torch.Generator]],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The training state after `epoch` completed epochs, as a checkpoint dict."""
    return {
        "epoch": epoch,
        "model": net.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generators": {k: [g.get_state() for g in gens] for k, gens in generators.items()},
        "torch_rng": torch.get_rng_state(),
        **extra,
    }


def restore(
    ckpt: dict[str, Any],
    path: Path,
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generators: dict[str, list[torch.Generator]],
) -> None:
    """Load `ckpt` (read from `path`) into net, optimizer and generators.

    A checkpoint that does not fit this network (missing keys, other shapes) raises
    CheckpointError naming the file and how to start afresh.
    """
    try:
        net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        for key, gens in generators.items():
            for gen, st in zip(gens, ckpt["generators"][key], strict=True):
                gen.set_state(st)
        torch.set_rng_state(ckpt["torch_rng"])
    except (KeyError, ValueError, RuntimeError, TypeError) as err:
        why = " ".join(f"{type(err).__name__}: {err}".split())[:200]
        raise CheckpointError(
            f"checkpoint={path} does not fit this run ({why}); to start afresh, move the run "
            f"aside: mv {path.parent} {path.parent}.old"
        ) from None
