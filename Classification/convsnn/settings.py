"""Validate a whole experiment config up front, before any data is made or weights trained."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from sgtheory.errors import ConfigError, check_choice, check_known, check_positive
from sgtheory.layers import conv_output_length
from sgtheory.losses import LOSS_TYPES
from sgtheory.neurons import RESETS
from sgtheory.optim import OPTIMIZERS
from sgtheory.runs import WANDB_MODES, resolve_device
from sgtheory.spikes import METHODS
from sgtheory.stats import FANO_MODES
from sgtheory.threads import default_threads, usable_cores

DATASETS = ("randman", "shd")
# `precision`: the autocast dtype of convolutions and weight products (None: float32 throughout)
PRECISIONS = {"float32": None, "bf16": torch.bfloat16}
LAYER_KEYS = ("nb_filters", "kernel_size", "stride", "padding", "recurrent_kernel")
REGULARIZER_TERMS = {"upper_l2": ("upper", 2), "lower_l1": ("lower", 1), "lower_l2": ("lower", 2)}


@dataclass(frozen=True)
class Geometry:
    """Input shape and per-layer sizes of the network a config describes."""

    nb_steps: int
    nb_units: int
    nb_classes: int
    lengths: tuple[int, ...]  # input length, then each hidden layer's output length
    nb_readout_inputs: int  # filters x positions of the last hidden layer


def _get(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _positive(cfg: Any, keys: list[str], integer: bool = False) -> None:
    for key in keys:
        check_positive(key, _get(cfg, key), integer=integer)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def layer_lists(ds: Any) -> dict[str, list[int]]:
    """The per-layer lists of a dataset config, checked to have one entry per layer."""
    lists = {key: list(ds[key]) for key in LAYER_KEYS}
    layers = len(lists["nb_filters"])
    if not layers:
        raise ConfigError("dataset.nb_filters=[] is not valid: give one entry per hidden layer")
    for key, value in lists.items():
        if len(value) != layers:
            raise ConfigError(
                f"dataset.{key}={value} is not valid: it has {len(value)} entries, "
                f"dataset.nb_filters has {layers} (one entry per hidden layer)"
            )
    for key, values in lists.items():
        for i, value in enumerate(values):
            if not _is_int(value):
                raise ConfigError(f"dataset.{key}[{i}]={value!r} is not valid; it must be an int")
            if key in ("nb_filters", "kernel_size", "stride"):
                check_positive(f"dataset.{key}[{i}]", value, integer=True)
            elif value < 0:
                raise ConfigError(f"dataset.{key}[{i}]={value!r} is not valid; it must be >= 0")
            if key == "recurrent_kernel" and value and value % 2 != 1:
                raise ConfigError(
                    f"dataset.recurrent_kernel[{i}]={value!r} is not valid; use 0 (none) or an "
                    "odd kernel"
                )
    return lists


def geometry(cfg: Any) -> Geometry:
    """Sizes of every layer; a ConfigError if a kernel does not fit its input."""
    ds = cfg.dataset
    lists = layer_lists(ds)
    lengths = [int(ds.nb_units)]
    for i, (k, s, p) in enumerate(zip(lists["kernel_size"], lists["stride"], lists["padding"])):
        try:
            lengths.append(conv_output_length(lengths[-1], k, s, p))
        except ConfigError as err:
            raise ConfigError(
                f"dataset.kernel_size[{i}]={k} is not valid for hidden layer {i}: {err}"
            ) from None
    flat = lengths[-1] * lists["nb_filters"][-1]
    return Geometry(int(ds.nb_steps), int(ds.nb_units), int(ds.nb_classes), tuple(lengths), flat)


# The type of every setting ("?": null allowed; "*": any regularizer term). A wrong type
# (`seed=abc`) stops the run before anything else with one line naming setting and value.
TYPES = {
    **dict.fromkeys(
        ["seed", "batch_size", "nb_epochs", "epoch_chunk", "anneal_start", "anneal_interval"],
        "int",
    ),
    **dict.fromkeys(["threads", "stop_after_epochs", "dataset.max_samples"], "int?"),
    **dict.fromkeys(
        ["tau_mem", "tau_syn", "threshold", "beta", "p0", "delta_u", "alpha", "anneal_step"],
        "number",
    ),
    **dict.fromkeys(["tau_readout", "dataset.duration"], "number?"),
    **dict.fromkeys(
        ["sigm", "diff_reset", "connection_delay", "anneal", "progress", "plotting.enabled"],
        "bool",
    ),
    **dict.fromkeys(["device", "precision", "reset", "loss_type", "optimizer"], "str"),
    **dict.fromkeys(["method.name", "method.other", "regularizer.name"], "str"),
    **dict.fromkeys(["method.lr", "method.target_sigma_u"], "number"),
    **dict.fromkeys(["dataset.name", "fano.mode", "wandb.mode", "wandb.project"], "str"),
    "dataset.metric_average": "str",
    **dict.fromkeys(["dataset.datadir", "dataset.cache_dir", "wandb.entity"], "str?"),
    **dict.fromkeys(["dataset.download", "dataset.allow_silent_samples"], "bool"),
    **{
        f"dataset.{key}": "int"
        for key in ("nb_classes", "nb_units", "nb_steps", "nb_samples", "nb_spikes", "seed")
    },
    "dataset.dim_manifold": "int",
    **{f"dataset.{key}": "number" for key in ("dt", "step_frac", "alpha", "nu", "valid_fraction")},
    **{f"dataset.{key}": "list" for key in ("split", *LAYER_KEYS)},
    **dict.fromkeys(["fano.bin_dt", "fano.repeats", "fano.sample_index"], "int"),
    **dict.fromkeys(["plotting.nb_samples", "plotting.nb_trials", "plotting.dpi"], "int"),
    **dict.fromkeys(["regularizer.*.strength", "regularizer.*.threshold"], "number"),
    "regularizer.*.dims": "list?",
}
KINDS = {
    "int": ("an integer", lambda v: _is_int(v)),
    "number": ("a finite number", lambda v: _is_number(v) and math.isfinite(v)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "str": ("a string", lambda v: isinstance(v, str)),
    "list": ("a list", lambda v: isinstance(v, list)),
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _type_of(key: str) -> str | None:
    parts = key.split(".")
    if len(parts) == 3 and parts[0] == "regularizer":
        return TYPES.get(f"regularizer.*.{parts[2]}")
    return TYPES.get(key)


def _find(cfg: Any, key: str) -> Any:
    """The setting `key` (dotted), or None where the config has no such setting."""
    node = cfg
    for part in key.split("."):
        if part not in node:
            return None
        node = node[part]
    return node


def _leaves(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(tree, dict):
        return [leaf for k, v in tree.items() for leaf in _leaves(v, f"{prefix}{k}.")]
    return [(prefix[:-1], tree)]


def check_types(cfg: Any) -> None:
    """Every setting of a known name has its type (see TYPES), else a ConfigError."""
    from omegaconf import OmegaConf

    tree = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg
    leaves = _leaves(tree)
    known = [key for key in TYPES if not key.startswith("regularizer.*.")]
    for term in REGULARIZER_TERMS:
        known += [k.replace("*", term) for k in TYPES if k.startswith("regularizer.*.")]
    check_known(leaves, known, "Classification/experiments/config_stork/")
    for key, value in leaves:
        kind = _type_of(key)
        if kind is None or (kind.endswith("?") and value is None):
            continue
        what, ok = KINDS[kind.rstrip("?")]
        if not ok(value):
            null = " or null" if kind.endswith("?") else ""
            raise ConfigError(f"{key}={value!r} is not valid; it must be {what}{null}")


def _check_choices(cfg: Any) -> None:
    check_choice("method", cfg.method.name, METHODS)
    check_choice("method.other", cfg.method.other, METHODS)
    check_choice("dataset", cfg.dataset.name, DATASETS)
    check_choice("loss_type", cfg.loss_type, LOSS_TYPES)
    check_choice("optimizer", cfg.optimizer, OPTIMIZERS)
    check_choice("reset", cfg.reset, RESETS)
    check_choice("wandb.mode", cfg.wandb.mode, WANDB_MODES)
    check_choice("fano.mode", cfg.fano.mode, FANO_MODES)
    check_choice("precision", cfg.precision, tuple(PRECISIONS))
    resolve_device(cfg.device)


def _check_numbers(cfg: Any) -> None:
    _positive(cfg, ["tau_mem", "tau_syn", "threshold", "beta", "p0", "delta_u", "method.lr"])
    _positive(cfg, ["method.target_sigma_u", "dataset.dt", "dataset.nu"])
    _positive(cfg, ["batch_size", "nb_epochs", "epoch_chunk", "seed"], integer=True)
    _positive(cfg, ["dataset.nb_steps", "dataset.nb_units", "dataset.nb_classes"], integer=True)
    _positive(cfg, ["fano.bin_dt", "fano.repeats", "plotting.nb_samples"], integer=True)
    _positive(cfg, ["plotting.nb_trials", "plotting.dpi"], integer=True)
    for key in ("tau_readout", "dataset.duration", "threads", "stop_after_epochs"):
        if _find(cfg, key) is not None:
            check_positive(key, _find(cfg, key), integer=key in ("threads", "stop_after_epochs"))
    if cfg.fano.repeats < 2:
        raise ConfigError(f"fano.repeats={cfg.fano.repeats!r} is not valid; it must be >= 2")
    if cfg.fano.bin_dt > cfg.dataset.nb_steps:
        raise ConfigError(
            f"fano.bin_dt={cfg.fano.bin_dt!r} is not valid; it must be at most "
            f"dataset.nb_steps={cfg.dataset.nb_steps}"
        )
    if cfg.fano.sample_index < 0:
        raise ConfigError(
            f"fano.sample_index={cfg.fano.sample_index} is not valid; it must be >= 0"
        )
    if cfg.p0 > 1:
        raise ConfigError(f"p0={cfg.p0!r} is not valid; it must lie in (0, 1]")
    if not 0 <= cfg.alpha <= 1:
        raise ConfigError(f"alpha={cfg.alpha!r} is not valid; it must lie in [0, 1]")
    if math.isclose(cfg.tau_mem, cfg.tau_syn):
        raise ConfigError(f"tau_mem={cfg.tau_mem} is not valid: it must differ from tau_syn")
    _check_threads(cfg.threads)
    for term in REGULARIZER_TERMS:
        dims = cfg.regularizer[term].dims
        if dims is not None and not all(_is_int(d) and d in (-2, -1) for d in dims):
            raise ConfigError(
                f"regularizer.{term}.dims={list(dims)!r} is not valid; give dims of the "
                "per-sample counts (channels, positions): a list of -2 and/or -1, or null"
            )
        if cfg.regularizer[term].strength < 0:
            key = f"regularizer.{term}.strength"
            raise ConfigError(
                f"{key}={cfg.regularizer[term].strength!r} is not valid; it must be >= 0"
            )


def _check_threads(threads: int | None) -> None:
    """More threads than usable cores make every step several times slower (spinning)."""
    cores = usable_cores()
    if threads is not None and threads > cores:
        raise ConfigError(
            f"threads={threads} is not valid: this process may run on {cores} core(s), and "
            f"more threads than cores slow every step down; use at most {cores}, or null"
        )


def check_anneal(cfg: Any) -> None:
    """With annealing, beta must stay a positive number in every epoch of the run."""
    if not cfg.anneal:
        return
    _positive(cfg, ["anneal_interval"], integer=True)
    if cfg.anneal_start < 0:
        raise ConfigError(f"anneal_start={cfg.anneal_start!r} is not valid; it must be >= 0")
    from .model import beta_at  # model imports this module

    for epoch in range(int(cfg.nb_epochs)):
        beta = beta_at(cfg, epoch)
        if not (math.isfinite(beta) and beta > 0):
            raise ConfigError(
                f"anneal_step={cfg.anneal_step!r} is not valid: beta would be {beta:g} in epoch "
                f"{epoch + 1} of nb_epochs={cfg.nb_epochs} (beta={cfg.beta}, anneal_start="
                f"{cfg.anneal_start}, anneal_interval={cfg.anneal_interval}); beta must stay > 0"
            )


def _check_dataset(cfg: Any) -> None:
    from .data import metric_average

    metric_average(cfg)
    ds = cfg.dataset
    if ds.name == "randman":
        _positive(cfg, ["dataset.nb_samples", "dataset.nb_spikes", "dataset.dim_manifold"], True)
        split = list(ds.split)
        if (
            len(split) != 3
            or not all(_is_number(f) and f > 0 for f in split)
            or abs(sum(split) - 1) > 1e-6
        ):
            raise ConfigError(
                f"dataset.split={split!r} is not valid; give three positive fractions "
                "(train, valid, test) that sum to 1"
            )
        return
    if not 0 < ds.valid_fraction < 1:
        raise ConfigError(
            f"dataset.valid_fraction={ds.valid_fraction!r} is not valid; it must lie in (0, 1)"
        )
    if ds.max_samples is not None:
        check_positive("dataset.max_samples", ds.max_samples, integer=True)


def validate(cfg: Any) -> Geometry:
    """Check every setting of `cfg`; return the network geometry or raise ConfigError.

    Types first (so later checks compare numbers with numbers), then choices, ranges, the
    annealing schedule over all epochs, the dataset's settings and the layer geometry.
    """
    check_types(cfg)
    _check_choices(cfg)
    _check_numbers(cfg)
    check_anneal(cfg)
    _check_dataset(cfg)
    return geometry(cfg)


def nb_threads(setting: int | None) -> int:
    """The `threads` setting, or every core this process may use (its affinity mask)."""
    return default_threads(setting)
