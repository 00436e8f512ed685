"""wandb for a run: offline by default (no account, no network), online when asked."""

from __future__ import annotations

import os
from pathlib import Path

from sgtheory.errors import ConfigError

WANDB_MODES = ("offline", "online", "disabled")


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
