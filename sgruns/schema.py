"""What every experiment's structured config shares: the wandb settings and storing the nodes.

Light to import (no torch): the entry scripts register their schema before Hydra composes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from omegaconf import MISSING


@dataclass
class WandbSchema:
    """The `wandb` group of every experiment (see `sgruns.wandb_run.init_wandb`)."""

    mode: str = MISSING  # offline | online | disabled
    project: str = MISSING
    entity: str | None = MISSING


def store(nodes: Iterable[tuple[str | None, str, type]]) -> None:
    """Store (group, name, node) schema nodes in Hydra's ConfigStore."""
    from hydra.core.config_store import ConfigStore

    config_store = ConfigStore.instance()
    for group, name, node in nodes:
        config_store.store(group=group, name=name, node=node)
