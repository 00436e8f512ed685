"""Check a run's settings before any work: names, numbers, escape noises, the target image.

The Hydra entry point calls `precheck_argv` on the raw command line (an unknown method or
dataset would otherwise fail inside Hydra's composition) and `validate` on the composed
config. Both raise `ConfigError` naming the setting, the value and what is allowed.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from sgtheory.errors import ConfigError, check_choice, check_known, check_positive
from sgtheory.spikes import METHODS

from .data import load_target
from .methods import VALID_ESCAPES, Params

CONFIG_DIR = Path(__file__).resolve().parents[1] / "experiments" / "config_experiments"


def choices(config_dir: Path, group: str) -> tuple[str, ...]:
    """The names of a config group: the stems of its yaml files."""
    return tuple(sorted(p.stem for p in (config_dir / group).glob("*.yaml")))


def precheck_argv(argv: list[str], config_dir: Path = CONFIG_DIR) -> None:
    """Reject an unknown method/dataset on the command line before Hydra composes anything.

    Settings of earlier versions that a method now fixes are named with what replaced them.
    """
    for arg in argv[1:]:
        key, _, value = arg.lstrip("+~").partition("=")
        if key in REPLACED:
            raise ConfigError(f"{key}={value} is not a setting any more: {REPLACED[key]}")
        match = re.fullmatch(r"\+{0,2}(method|dataset)=(.*)", arg)
        if not match:
            continue
        group, values = match.groups()
        for value in re.sub(r"^choice\((.*)\)$", r"\1", values).split(","):
            check_choice(group, value.strip(), choices(config_dir, group))
    chosen = {"method": "superspike", "dataset": "scene"}
    for arg in argv[1:]:
        match = re.fullmatch(r"\+{0,2}(method|dataset)=([\w-]+)", arg)
        if match:
            chosen[match.group(1)] = match.group(2)
    pair = f"{chosen['dataset']}_{chosen['method']}"
    if not (config_dir / "dataset_method" / f"{pair}.yaml").exists():
        raise ConfigError(
            f"dataset_method={pair!r} has no learning rates (config_experiments/dataset_method/"
            f"{pair}.yaml); add that file"
        )


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


# Settings by kind; dotted names reach into the groups.
POSITIVE_INTS = (
    "nb_epochs logging_freq fano_window method.nb_trials valid_nb_trials dataset.nb_inputs "
    "dataset.nb_hidden dataset.nb_outputs dataset.nb_steps dataset.batch_size num_threads"
).split()
POSITIVE_FLOATS = (
    "dt tau_mem tau_syn threshold eps0 beta_h beta_o delta_u_h delta_u_o p0 input_rate sigma_u "
    "out_prob"
).split()
BOOLS = (
    "reset_mode validate_with_other_method save_spk save_mem save_dw save_w resume progress "
    "method.sigm"
).split()
STRINGS = ("dataset.data_path", "device", "wandb.project")
OTHERS = (
    "seed max_chunks wandb.entity wandb.mode dataset_method.lr_h dataset_method.lr_o "
    "dataset.name method.name valid_escape"
).split()
KNOWN = (*POSITIVE_INTS, *POSITIVE_FLOATS, *BOOLS, *STRINGS, *OTHERS)  # every setting
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit integer
# settings of earlier versions, and what replaced them
REPLACED = {
    "stochastic_escape_h": "the escape noise comes from the method (sgtheory.spikes.METHODS, "
    "method.sigm); a deterministic method is validated with valid_escape",
    "method.surrogate_h": "the surrogate comes from the method (sgtheory.spikes.METHODS, "
    "method.sigm)",
    "method.stochastic": "the method (sgtheory.spikes.METHODS, method.sigm) says whether it is "
    "stochastic",
}
REPLACED["stochastic_escape_o"] = REPLACED["stochastic_escape_h"]


def _get(cfg, dotted: str) -> Any:
    value = cfg
    for key in dotted.split("."):
        value = value[key]
    return value


def _check_types(cfg) -> None:
    """Every setting of the right type and range: one ConfigError naming the first bad one."""
    for name in POSITIVE_INTS:
        check_positive(name, _get(cfg, name), integer=True)
    for name in POSITIVE_FLOATS:
        check_positive(name, _get(cfg, name))
    for name in BOOLS:
        value = _get(cfg, name)
        if not isinstance(value, bool):
            raise ConfigError(f"{name}={value!r} is not valid; it must be true or false")
    for name in STRINGS:
        value = _get(cfg, name)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{name}={value!r} is not valid; it must be a non-empty string")
    seed = cfg.seed
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed={seed!r} is not valid; it must be an integer in [0, 2**63 - 1]")
    if cfg.max_chunks is not None:
        check_positive("max_chunks", cfg.max_chunks, integer=True)
    if cfg.wandb.entity is not None and not isinstance(cfg.wandb.entity, str):
        raise ConfigError(f"wandb.entity={cfg.wandb.entity!r} is not valid; a name or null")


def _leaves(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(tree, dict):
        return [leaf for k, v in tree.items() for leaf in _leaves(v, f"{prefix}{k}.")]
    return [(prefix[:-1], tree)]


def _check_known(cfg) -> None:
    """No setting outside KNOWN (`+foo=1` or a misspelt `++` override would be ignored)."""
    from omegaconf import OmegaConf

    tree = OmegaConf.to_container(cfg, resolve=False) if OmegaConf.is_config(cfg) else cfg
    check_known(_leaves(tree), KNOWN, "experiments/config_experiments/config.yaml")


def _check_ranges(cfg) -> None:
    """Relations between settings, and finite non-negative learning rates."""
    for name in ("lr_h", "lr_o"):
        value = cfg.dataset_method[name]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or value < 0:
            raise ConfigError(
                f"dataset_method.{name}={value!r} is not valid; it must be a finite number >= 0"
            )
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
    if cfg.device != "cpu":
        raise ConfigError(f"device={cfg.device!r} is not valid; choose one of: cpu")


def validate(cfg, config_dir: Path = CONFIG_DIR) -> dict[str, Any]:
    """Check every setting and load the target; raise ConfigError before any work.

    Returns the method's parameters (`stm.methods.Params`) and the target raster.
    """
    _check_known(cfg)
    check_choice("method", cfg.method.name, (*choices(config_dir, "method"), *METHODS))
    check_choice("dataset", cfg.dataset.name, choices(config_dir, "dataset"))
    _check_types(cfg)
    _check_ranges(cfg)
    check_choice("valid_escape", cfg.valid_escape, VALID_ESCAPES)
    check_choice("wandb.mode", cfg.wandb.mode, ("offline", "online", "disabled"))
    params = Params(cfg.beta_h, cfg.beta_o, cfg.p0, cfg.delta_u_h, cfg.delta_u_o)
    target = load_target(
        resolve_data_path(cfg.dataset.data_path, config_dir.parent),
        cfg.out_prob,
        cfg.dataset.nb_steps,
        cfg.dataset.nb_outputs,
        cfg.dataset.name,
    )
    return {"params": params, "target": target}
