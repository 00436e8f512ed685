"""Validate a whole experiment config up front, before any data is made or weights trained."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import torch

from sgtheory.errors import ConfigError, check_choice, check_positive
from sgtheory.layers import conv_output_length
from sgtheory.losses import LOSS_TYPES
from sgtheory.neurons import RESETS
from sgtheory.optim import OPTIMIZERS
from sgtheory.runs import WANDB_MODES, resolve_device
from sgtheory.spikes import METHODS
from sgtheory.stats import FANO_MODES

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
    lengths = {key: len(value) for key, value in lists.items()}
    if len(set(lengths.values())) != 1 or lengths["nb_filters"] == 0:
        detail = ", ".join(f"dataset.{k} has {n}" for k, n in lengths.items())
        raise ConfigError(
            f"layer lists must have the same non-zero length (one entry per hidden layer): {detail}"
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
            raise ConfigError(f"hidden layer {i} (dataset.kernel_size[{i}]): {err}") from None
    flat = lengths[-1] * lists["nb_filters"][-1]
    return Geometry(int(ds.nb_steps), int(ds.nb_units), int(ds.nb_classes), tuple(lengths), flat)


def validate(cfg: Any) -> Geometry:
    """Check every setting of `cfg`; return the network geometry or raise ConfigError."""
    check_choice("method", cfg.method.name, METHODS)
    check_choice("method.other", cfg.method.other, METHODS)
    check_choice("dataset", cfg.dataset.name, DATASETS)
    check_choice("loss_type", cfg.loss_type, LOSS_TYPES)
    check_choice("optimizer", cfg.optimizer, OPTIMIZERS)
    check_choice("reset", cfg.reset, RESETS)
    check_choice("wandb.mode", cfg.wandb.mode, WANDB_MODES)
    check_choice("fano.mode", cfg.fano.mode, FANO_MODES)
    for key in ("sigm", "diff_reset", "connection_delay", "anneal", "progress", "plotting.enabled"):
        if not isinstance(_get(cfg, key), bool):
            raise ConfigError(f"{key}={_get(cfg, key)!r} is not valid; choose one of: true, false")
    _positive(cfg, ["tau_mem", "tau_syn", "threshold", "beta", "p0", "delta_u", "method.lr"])
    _positive(cfg, ["method.target_sigma_u", "dataset.dt", "dataset.nu"])
    _positive(cfg, ["batch_size", "nb_epochs", "epoch_chunk", "seed"], integer=True)
    _positive(cfg, ["dataset.nb_steps", "dataset.nb_units", "dataset.nb_classes"], integer=True)
    _positive(cfg, ["fano.bin_dt", "fano.repeats", "plotting.nb_samples"], integer=True)
    _positive(cfg, ["plotting.nb_trials", "plotting.dpi"], integer=True)
    if cfg.fano.repeats < 2:
        raise ConfigError(f"fano.repeats={cfg.fano.repeats!r} is not valid; it must be >= 2")
    if cfg.fano.bin_dt > cfg.dataset.nb_steps:
        raise ConfigError(
            f"fano.bin_dt={cfg.fano.bin_dt!r} is not valid; it must be at most "
            f"dataset.nb_steps={cfg.dataset.nb_steps}"
        )
    if cfg.p0 > 1:
        raise ConfigError(f"p0={cfg.p0!r} is not valid; it must lie in (0, 1]")
    if cfg.tau_readout is not None:
        check_positive("tau_readout", cfg.tau_readout)
    if cfg.dataset.get("duration") is not None:
        check_positive("dataset.duration", cfg.dataset.duration)
    if not (isinstance(cfg.alpha, (int, float)) and 0 <= cfg.alpha <= 1):
        raise ConfigError(f"alpha={cfg.alpha!r} is not valid; it must lie in [0, 1]")
    if math.isclose(cfg.tau_mem, cfg.tau_syn):
        raise ConfigError(f"tau_mem={cfg.tau_mem} and tau_syn={cfg.tau_syn} must differ")
    if cfg.threads is not None:
        check_positive("threads", cfg.threads, integer=True)
    check_choice("precision", cfg.precision, tuple(PRECISIONS))
    if cfg.stop_after_epochs is not None:
        check_positive("stop_after_epochs", cfg.stop_after_epochs, integer=True)
    if cfg.anneal:
        _positive(cfg, ["anneal_interval"], integer=True)
        if not _is_int(cfg.anneal_start) or cfg.anneal_start < 0:
            raise ConfigError(f"anneal_start={cfg.anneal_start!r} is not valid; it must be >= 0")
        if not isinstance(cfg.anneal_step, (int, float)) or not math.isfinite(cfg.anneal_step):
            raise ConfigError(f"anneal_step={cfg.anneal_step!r} is not valid; it must be a number")
    for term in REGULARIZER_TERMS:
        reg = cfg.regularizer[term]
        if reg.strength < 0 or not math.isfinite(reg.strength):
            raise ConfigError(f"regularizer.{term}.strength={reg.strength!r} must be >= 0")
    resolve_device(cfg.device)
    if cfg.dataset.name == "randman":
        _positive(cfg, ["dataset.nb_samples", "dataset.nb_spikes", "dataset.dim_manifold"], True)
        split = list(cfg.dataset.split)
        if len(split) != 3 or any(f <= 0 for f in split) or abs(sum(split) - 1) > 1e-6:
            raise ConfigError(
                f"dataset.split={split!r} is not valid; give three positive fractions "
                "(train, valid, test) that sum to 1"
            )
    else:
        if not 0 < cfg.dataset.valid_fraction < 1:
            raise ConfigError(
                f"dataset.valid_fraction={cfg.dataset.valid_fraction!r} is not valid; "
                "it must lie in (0, 1)"
            )
        if cfg.dataset.max_samples is not None:
            check_positive("dataset.max_samples", cfg.dataset.max_samples, integer=True)
    return geometry(cfg)


def nb_threads(setting: int | None) -> int:
    """The `threads` setting, or every core this process may use."""
    if setting is not None:
        return int(setting)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1
