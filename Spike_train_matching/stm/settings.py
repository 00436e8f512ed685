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

from sgtheory.errors import ConfigError, check_choice
from sgtheory.runs import resolve_device

from . import core

CONFIG_DIR = Path(__file__).resolve().parents[1] / "experiments" / "config_experiments"
SURROGATES_H = ("superspike", "sigmoid", "scaled_sigmoid", "exponential", "multilayerspiker")


def choices(config_dir: Path, group: str) -> tuple[str, ...]:
    """The names of a config group: the stems of its yaml files."""
    return tuple(sorted(p.stem for p in (config_dir / group).glob("*.yaml")))


def precheck_argv(argv: list[str], config_dir: Path = CONFIG_DIR) -> None:
    """Reject an unknown method/dataset on the command line before Hydra composes anything."""
    for arg in argv[1:]:
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


def _check_numbers(cfg) -> None:
    """Positive times, rates, sizes and counts; finite non-negative learning rates."""
    names = (
        "dt tau_mem tau_syn nb_epochs logging_freq threshold eps0 beta_h beta_o delta_u_h "
        "delta_u_o p0 input_rate sigma_u out_prob fano_window method.nb_trials valid_nb_trials "
        "dataset.nb_inputs dataset.nb_hidden dataset.nb_outputs dataset.nb_steps "
        "dataset.batch_size num_threads"
    ).split()
    core.check_positive_all({name: _get(cfg, name) for name in names})
    for name in ("lr_h", "lr_o"):
        value = cfg.dataset_method[name]
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"dataset_method.{name}={value!r} is not valid; it must be >= 0")
    if cfg.input_rate * cfg.dt > 1:
        raise ConfigError(f"input_rate * dt = {cfg.input_rate * cfg.dt} is not a probability")
    if cfg.p0 > 1:
        raise ConfigError(f"p0={cfg.p0!r} is not valid; it must lie in (0, 1]")


def _get(cfg, dotted: str) -> Any:
    value = cfg
    for key in dotted.split("."):
        value = value[key]
    return value


def validate(cfg, config_dir: Path = CONFIG_DIR) -> dict[str, Any]:
    """Check every setting and load the target; raise ConfigError before any work.

    Returns the escape noises of training (the method's own mode) and validation (the other
    mode), the hidden surrogate, the target raster and the device.
    """
    check_choice("method", cfg.method.name, choices(config_dir, "method"))
    check_choice("dataset", cfg.dataset.name, choices(config_dir, "dataset"))
    check_choice("method.surrogate_h", cfg.method.surrogate_h, SURROGATES_H)
    _check_numbers(cfg)
    settings = (
        cfg.stochastic_escape_h,
        cfg.stochastic_escape_o,
        cfg.beta_h,
        cfg.beta_o,
        cfg.p0,
        cfg.delta_u_h,
        cfg.delta_u_o,
    )
    escapes = {
        "train": core.make_escapes(cfg.method.stochastic, *settings),
        "valid": core.make_escapes(not cfg.method.stochastic, *settings),
    }
    surrogate = core.make_hidden_surrogate(
        cfg.method.surrogate_h, cfg.beta_h, cfg.p0, cfg.delta_u_h
    )
    check_choice("wandb.mode", cfg.wandb.mode, ("offline", "online", "disabled"))
    device = resolve_device(cfg.device)
    target = core.load_target(
        resolve_data_path(cfg.dataset.data_path, config_dir.parent),
        cfg.out_prob,
        cfg.dataset.nb_steps,
        cfg.dataset.nb_outputs,
        cfg.dataset.name,
    )
    return {"escapes": escapes, "surrogate": surrogate, "target": target, "device": device}
