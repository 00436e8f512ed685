"""Quantities computed from several settings, checked where they come from.

The network runs in float32. A decay factor that rounds to 1, initial weights or a van
Rossum distance beyond float32's range, or a kernel that rounds to 0 would otherwise show
up only as NaN weights later, blamed on the learning rates. Each check here names the
settings that produce the quantity, the one farthest from its shipped default first (the
one the user most likely changed), so that messages read `<setting>=<value> ...`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sgtheory.errors import ConfigError

from .data import log_init_std

F32_MAX = float(np.finfo(np.float32).max)  # 3.4e38
F32_TINY = float(np.finfo(np.float32).tiny)  # 1.2e-38, the smallest normal float32
LOG_F32_MAX = math.log(F32_MAX)
# settings that scale the network's values (for blaming a NaN that appears during training)
SCALES = (
    "dataset_method.lr_h dataset_method.lr_o sigma_u input_rate tau_mem tau_syn dt eps0 "
    "delta_u_o delta_u_h beta_h beta_o p0 threshold"
).split()


def get(cfg: Any, dotted: str) -> Any:
    """The setting `dotted` (e.g. `dataset.nb_hidden`) of a config."""
    value = cfg
    for key in dotted.split("."):
        value = value[key]
    return value


def shipped_defaults(config_dir: Path, dataset: str, method: str) -> dict[str, Any]:
    """Flat {setting: value} of the config files as they are: config.yaml and the files of
    the chosen dataset, method and their learning rates (missing files are skipped)."""
    from omegaconf import OmegaConf

    out: dict[str, Any] = {}
    files = (
        ("config.yaml", ""),
        (f"dataset/{dataset}.yaml", "dataset."),
        (f"method/{method}.yaml", "method."),
        (f"dataset_method/{dataset}_{method}.yaml", "dataset_method."),
    )
    for name, prefix in files:
        path = config_dir / name
        if not path.is_file():
            continue
        tree = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        for key, value in tree.items():
            if key not in ("defaults", "hydra") and not isinstance(value, (dict, list)):
                out[prefix + key] = value
    return out


def deviation(value: Any, default: Any) -> float:
    """How far a positive setting is from its default: |log(value / default)| (0 if either
    is not a positive number)."""
    numbers = all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 and math.isfinite(v)
        for v in (value, default)
    )
    return abs(math.log(value) - math.log(default)) if numbers else 0.0


def ranked(cfg: Any, names: Sequence[str], defaults: dict[str, Any]) -> list[str]:
    """`names` ordered by their deviation from the defaults, largest first (stable)."""
    return sorted(names, key=lambda n: -deviation(get(cfg, n), defaults.get(n)))


def shown(cfg: Any, names: Sequence[str]) -> str:
    """`a=1, b=2` for the settings `names`."""
    return ", ".join(f"{n}={get(cfg, n)!r}" for n in names)


def log_text(log_value: float) -> str:
    """A positive number given by its natural logarithm, printed even beyond float64."""
    if log_value < 700:
        return f"{math.exp(log_value):.3g}"
    return f"1e{log_value / math.log(10):.0f}"


def _blame(cfg: Any, names: Sequence[str], defaults: dict[str, Any], what: str) -> ConfigError:
    order = ranked(cfg, names, defaults)
    first, rest = order[0], order[1:]
    default = defaults.get(first)
    was = f" (default {default!r})" if default is not None and default != get(cfg, first) else ""
    with_rest = f"; it comes from {shown(cfg, order)}" if rest else ""
    return ConfigError(f"{first}={get(cfg, first)!r} is not valid{was}: {what}{with_rest}")


def check_decay(cfg: Any, defaults: dict[str, Any]) -> None:
    """Each decay factor exp(-dt / tau) below 1 in float32: a factor of 1 means a membrane
    that never takes up its input (tau_mem) or a current that never decays (tau_syn)."""
    effect = {
        "tau_mem": "the membrane never takes up its input",
        "tau_syn": "the synaptic current never decays",
    }
    for tau, what in effect.items():
        ratio = cfg.dt / get(cfg, tau)
        if np.float32(math.exp(-ratio)) == 1.0:
            raise _blame(
                cfg,
                [tau, "dt"],
                defaults,
                f"the decay factor per step exp(-dt / {tau}) = exp(-{ratio:.3g}) rounds to 1 "
                f"in float32, so {what}; {tau} / dt must stay below 3.3e7",
            )


def check_init(cfg: Any, defaults: dict[str, Any]) -> None:
    """Initial weights representable in float32: std above the smallest normal float32 and
    every layer's summed input (fan-in x 6 std) below the largest."""
    ds = cfg.dataset
    for name, n_pre, size in (
        ("W_ih", ds.nb_inputs, "dataset.nb_inputs"),
        ("W_ho", ds.nb_hidden, "dataset.nb_hidden"),
    ):
        log_std = log_init_std(int(n_pre), cfg.sigma_u, cfg.input_rate, cfg.tau_mem, cfg.tau_syn)
        too_big = log_std + math.log(6 * n_pre) > LOG_F32_MAX
        if too_big or log_std < math.log(F32_TINY):
            bound = f"the std must be at least {F32_TINY:.3g}"
            if too_big:
                bound = f"its fan-in x 6 std must stay below {F32_MAX:.3g}"
            raise _blame(
                cfg,
                ["sigma_u", "input_rate", "tau_syn", "tau_mem", size],
                defaults,
                f"the initial weights {name} would have std sigma_u / sqrt(N nu eps_hat) = "
                f"{log_text(log_std)} (N = {size} = {n_pre}, nu = input_rate, eps_hat = "
                f"tau_syn^2 / (2 (tau_syn + tau_mem))), which float32 cannot hold ({bound})",
            )


def check_kernel(cfg: Any, defaults: dict[str, Any], eps: np.ndarray) -> None:
    """The kernel eps (float64 `eps`) nonzero in float32 and the van Rossum distance and the
    error of the learning rule (with unit weights) below float32's largest value."""
    names = ["eps0", "tau_mem", "tau_syn", "dt", "dataset.nb_steps"]
    total = float(np.abs(eps).sum())
    if not np.any(eps.astype(np.float32)):
        raise _blame(
            cfg,
            names,
            defaults,
            "the kernel eps rounds to 0 in float32, so the van Rossum distance and the hidden "
            "layer's update would be 0",
        )
    one_spike = 0.5 * float(np.square(eps).sum()) / int(cfg.dataset.nb_outputs)
    if one_spike < F32_TINY:
        raise _blame(
            cfg,
            names,
            defaults,
            f"the van Rossum distance of a single missing spike would be {one_spike:.3g} "
            f"(1/2 sum eps^2 / dataset.nb_outputs), below float32's smallest normal number "
            f"{F32_TINY:.3g}: every distance would round to 0",
        )
    steps = int(cfg.dataset.nb_steps)
    if not math.isfinite(total) or 2 * math.log(total) + math.log(steps) > LOG_F32_MAX:
        raise _blame(
            cfg,
            names,
            defaults,
            f"the kernel eps sums to {total:.3g}, so the van Rossum distance (up to nb_steps x "
            f"the square of that) would overflow float32 (largest {F32_MAX:.3g})",
        )
    log_err = math.log(total) - math.log(cfg.delta_u_o) + math.log(steps * cfg.dataset.nb_outputs)
    if log_err > LOG_F32_MAX:
        raise _blame(
            cfg,
            ["delta_u_o", *names],
            defaults,
            f"the learning rule divides the output error by delta_u_o; filtered by eps and summed "
            f"it would reach {log_text(log_err)}, beyond float32 (largest {F32_MAX:.3g})",
        )


def check_range(cfg: Any, names: Sequence[str]) -> None:
    """Each positive float setting representable as a normal float32 number."""
    for name in names:
        value = get(cfg, name)
        if not F32_TINY <= value <= F32_MAX:
            raise ConfigError(
                f"{name}={value!r} is not valid; the network computes in float32, which holds "
                f"magnitudes from {F32_TINY:.3g} to {F32_MAX:.3g}"
            )


def nonfinite_hint(cfg: Any, defaults: dict[str, Any]) -> str:
    """The start of the message when a weight or loss turns NaN during training: the
    learning rates, unless another setting that scales the network is farther from its
    default than they are (then that setting, with the learning rates as the alternative)."""
    order = ranked(cfg, SCALES, defaults)
    first = order[0]
    lrs = "dataset_method.lr_h dataset_method.lr_o".split()
    if first in lrs or deviation(get(cfg, first), defaults.get(first)) == 0:
        return f"{shown(cfg, lrs).replace(', ', ' ')}: lower the learning rates"
    return (
        f"{first}={get(cfg, first)!r} is far from its default {defaults.get(first)!r} (bring "
        f"it closer, or lower {' and '.join(f'{n}={get(cfg, n)!r}' for n in lrs)})"
    )
