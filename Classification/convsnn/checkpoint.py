"""Checkpoints: model, optimiser, every random generator, and the history so far."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sgtheory.runs import load_checkpoint, save_atomic

CHECKPOINT = "checkpoint.pt"


def save(
    run_dir: Path,
    epoch: int,
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generators: dict[str, list[torch.Generator]],
    state: dict[str, Any],
) -> None:
    """Write the checkpoint after `epoch` completed epochs (atomically)."""
    save_atomic(
        Path(run_dir) / CHECKPOINT,
        {
            "epoch": epoch,
            "model": net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "generators": {k: [g.get_state() for g in gens] for k, gens in generators.items()},
            "torch_rng": torch.get_rng_state(),
            **state,
        },
    )


def restore(
    run_dir: Path,
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generators: dict[str, list[torch.Generator]],
) -> dict[str, Any] | None:
    """Load the run's checkpoint into net, optimizer and generators; return it (or None)."""
    ckpt = load_checkpoint(Path(run_dir) / CHECKPOINT)
    if ckpt is None:
        return None
    net.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    for key, gens in generators.items():
        for gen, st in zip(gens, ckpt["generators"][key], strict=True):
            gen.set_state(st)
    torch.set_rng_state(ckpt["torch_rng"])
    return ckpt
