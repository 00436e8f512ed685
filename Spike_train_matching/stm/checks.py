"""Value ranges and the rules joining several settings, checked before any work.

Types and names are the schema's (`stm.schema`, refused by Hydra while composing); `check`
takes a composed config and checks what a type cannot say: positive sizes and time
constants, choices, relations between settings, the memory the run needs against the memory
available (`stm.memory`), the quantities that several settings make together
(`stm.derived`) and the target image. Each failure is a `ConfigError` naming the setting,
the value and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sgruns.errors import check_seed, check_threads
from sgtheory.errors import ConfigError, check_choice, check_positive
from sgtheory.spikes import METHODS

from . import derived, memory
from .data import load_target
from .derived import get, ranked, shown
from .methods import VALID_ESCAPES, Params
from .model import eps_kernel

CONFIG_DIR = Path(__file__).resolve().parents[1] / "experiments" / "config_experiments"

POSITIVE_INTS = (
    "nb_epochs logging_freq fano_window method.nb_trials valid_nb_trials dataset.nb_inputs "
    "dataset.nb_hidden dataset.nb_outputs dataset.nb_steps dataset.batch_size"
).split()
POSITIVE_FLOATS = (
    "dt tau_mem tau_syn threshold eps0 beta_h beta_o delta_u_h delta_u_o p0 input_rate sigma_u "
    "out_prob"
).split()
WANDB_FORBIDDEN = "/\\#?%:"  # characters wandb refuses in a project name
# sizes that set the memory a run needs (stm.memory)
SIZES = (
    "dataset.batch_size method.nb_trials valid_nb_trials dataset.nb_hidden dataset.nb_outputs "
    "dataset.nb_inputs dataset.nb_steps logging_freq nb_epochs"
).split()


def choices(config_dir: Path, group: str) -> tuple[str, ...]:
    """The names of a config group: the stems of its yaml files."""
    return tuple(sorted(p.stem for p in (config_dir / group).glob("*.yaml")))


def resolve_data_path(path: str, base: Path = CONFIG_DIR.parent) -> Path:
    """Relative paths: first against the directory the user ran from, then `base`."""
    candidate = Path(path).expanduser()
    if candidate.is_absolute():
        return candidate
    try:
        from hydra.utils import get_original_cwd

        first = Path(get_original_cwd()) / candidate
    except (ImportError, ValueError):
        first = Path.cwd() / candidate
    return first if first.exists() else base / candidate


def check(
    cfg: Any, config_dir: Path = CONFIG_DIR, chosen: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Check every setting's range and the rules between settings, load the target; raise
    ConfigError before any work.

    `chosen`: the config groups picked ({"dataset": "scene", ...}: Hydra's runtime choices;
    None skips the rule that dataset.name names the chosen dataset). Returns the method's
    parameters (`stm.methods.Params`), the target raster and the shipped defaults
    (`stm.derived.shipped_defaults`, for naming settings later).
    """
    _check_set(cfg)
    check_choice("method", cfg.method.name, (*choices(config_dir, "method"), *METHODS))
    check_choice("dataset", cfg.dataset.name, choices(config_dir, "dataset"))
    _check_name(cfg, chosen)
    for name in POSITIVE_INTS:
        check_positive(name, get(cfg, name), integer=True)
    for name in POSITIVE_FLOATS:
        check_positive(name, get(cfg, name))
    check_seed("seed", cfg.seed)
    check_threads("threads", cfg.threads)
    if cfg.max_chunks is not None:
        check_positive("max_chunks", cfg.max_chunks, integer=True)
    check_choice("device", cfg.device, ("cpu",))
    check_choice("valid_escape", cfg.valid_escape, VALID_ESCAPES)
    check_choice("wandb.mode", cfg.wandb.mode, ("offline", "online", "disabled"))
    _check_relations(cfg)
    group = (chosen or {}).get("dataset", cfg.dataset.name)
    defaults = derived.shipped_defaults(config_dir, group, cfg.method.name)
    _check_memory(cfg, defaults)
    derived.check_decay(cfg, defaults)
    derived.check_init(cfg, defaults)
    eps = eps_kernel(cfg.dataset.nb_steps, cfg.dt, cfg.tau_mem, cfg.tau_syn, cfg.eps0)
    derived.check_kernel(cfg, defaults, eps)
    params = Params(cfg.beta_h, cfg.beta_o, cfg.p0, cfg.delta_u_h, cfg.delta_u_o)
    path = resolve_data_path(cfg.dataset.data_path, config_dir.parent)
    _check_own_image(cfg, path, config_dir)
    ds = cfg.dataset
    target = load_target(path, cfg.out_prob, ds.nb_steps, ds.nb_outputs, ds.name)
    # every float the network computes with (out_prob only compares pixels, in float64)
    derived.check_range(cfg, [n for n in POSITIVE_FLOATS if n != "out_prob"])
    return {"params": params, "target": target, "defaults": defaults}


def _check_set(cfg: Any) -> None:
    """Every setting has a value (a config file that leaves one out, `seed: ???`)."""
    from omegaconf import OmegaConf

    missing = sorted(OmegaConf.missing_keys(cfg)) if OmegaConf.is_config(cfg) else []
    if missing:
        name = missing[0]
        raise ConfigError(
            f"{name} is not set; it is a required setting: give it a value ({name}=<value>); "
            "the defaults are in experiments/config_experiments/"
        )


def _check_relations(cfg: Any) -> None:
    """Finite non-negative learning rates, and the rules between settings."""
    for name in ("dataset_method.lr_h", "dataset_method.lr_o"):
        value = get(cfg, name)
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{name}={value!r} is not valid; it must be a finite number >= 0")
    if cfg.input_rate * cfg.dt > 1:
        raise ConfigError(
            f"input_rate={cfg.input_rate!r} is not valid with dt={cfg.dt!r}: input_rate * dt "
            f"= {cfg.input_rate * cfg.dt} must be a probability (<= 1)"
        )
    if cfg.p0 > 1:
        raise ConfigError(f"p0={cfg.p0!r} is not valid; it must lie in (0, 1]")
    if cfg.fano_window > cfg.dataset.nb_steps:
        raise ConfigError(
            f"fano_window={cfg.fano_window!r} is not valid; it must be at most "
            f"dataset.nb_steps={cfg.dataset.nb_steps} (steps per spike-count window)"
        )
    for name in ("dataset.data_path", "wandb.project"):
        if not get(cfg, name):
            raise ConfigError(f"{name}='' is not valid; it must be a non-empty string")
    bad = sorted(set(WANDB_FORBIDDEN) & set(cfg.wandb.project))
    if bad:
        raise ConfigError(
            f"wandb.project={cfg.wandb.project!r} is not valid; a wandb project name may not "
            f"contain {' '.join(WANDB_FORBIDDEN)} (found {' '.join(bad)})"
        )


def _check_name(cfg: Any, chosen: Mapping[str, Any] | None) -> None:
    """dataset.name labels the run; it must name the dataset whose data the run uses."""
    group = (chosen or {}).get("dataset")
    if group is not None and cfg.dataset.name != group:
        raise ConfigError(
            f"dataset.name={cfg.dataset.name!r} does not match the dataset chosen (dataset="
            f"{group}, whose image is {cfg.dataset.data_path}); the name only labels the run: "
            f"choose the dataset itself with dataset={cfg.dataset.name}"
        )


def _check_own_image(cfg: Any, path: Path, config_dir: Path) -> None:
    """The image of another dataset's config (the scene's under dataset=oxford) is refused:
    the run would be recorded under a name that is not its data's."""
    from omegaconf import OmegaConf

    for other in choices(config_dir, "dataset"):
        theirs = OmegaConf.load(config_dir / "dataset" / f"{other}.yaml").get("data_path")
        if other == cfg.dataset.name or not isinstance(theirs, str):
            continue
        their_path = resolve_data_path(theirs, config_dir.parent)
        try:
            same = path.is_file() and their_path.is_file() and path.samefile(their_path)
        except OSError:
            same = False
        if same:
            raise ConfigError(
                f"dataset.data_path={cfg.dataset.data_path} is not valid with dataset="
                f"{cfg.dataset.name}: it is the image of dataset={other}; use dataset={other} "
                f"for it, or give {cfg.dataset.name}'s own image"
            )


def _check_memory(cfg: Any, defaults: dict[str, Any]) -> None:
    """Refuse a run whose arrays cannot fit in the memory available (before allocating)."""
    need, parts = memory.estimate(cfg)
    have = memory.available()  # beyond what this process holds already
    if have is None or need - memory.process_peak() <= have:
        return
    first, *others = ranked(cfg, SIZES, defaults)
    big = ", ".join(
        f"{k} {memory.human(v)}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])[:3]
    )
    raise ConfigError(
        f"{first}={get(cfg, first)!r} is not valid here: the run would need about "
        f"{memory.human(need)} of memory ({big}), more than the {memory.human(have)} available "
        f"on this machine; lower it or the other sizes ({shown(cfg, others)})"
    )
