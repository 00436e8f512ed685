"""Build the convolutional SNN of a config and the spike operations of a named method."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from sgtheory.errors import ConfigError
from sgtheory.init import fluctuation_driven_init_, psp_eps_hat, readout_init_
from sgtheory.layers import ConvLIFLayer, Readout, SpikingNetwork, conv_output_length
from sgtheory.spikes import SpikeFn, spike_fn_for_method

# stork's readout potential before any input (ReadoutGroup's initial_state)
STORK_READOUT_START = -1e-3
# `precision`: the autocast dtype of convolutions and weight products (None: float32 throughout)
PRECISIONS = {"float32": None, "bf16": torch.bfloat16}
# the per-layer settings of a dataset config: one entry per hidden layer each
LAYER_KEYS = ("nb_filters", "kernel_size", "stride", "padding", "recurrent_kernel")


@dataclass(frozen=True)
class NetworkShape:
    """Input shape and per-layer sizes of the network a config describes."""

    nb_steps: int
    nb_units: int
    nb_classes: int
    lengths: tuple[int, ...]  # input length, then each hidden layer's output length
    nb_readout_inputs: int  # filters x positions of the last hidden layer


def layer_lists(ds: Any) -> dict[str, list[int]]:
    """The per-layer settings of dataset config `ds` as plain lists (`LAYER_KEYS`)."""
    return {key: [int(v) for v in ds[key]] for key in LAYER_KEYS}


def network_shape(cfg: Any) -> NetworkShape:
    """Sizes of every layer; a ConfigError naming the kernel that does not fit its input."""
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
    return NetworkShape(
        int(ds.nb_steps), int(ds.nb_units), int(ds.nb_classes), tuple(lengths), flat
    )


def min_steps(cfg: Any) -> int:
    """The fewest time steps at which the readout can see any input at all.

    Each hidden layer passes input on two steps later (synaptic current, then membrane),
    one more with `connection_delay`; the readout adds three.
    """
    per_layer = 2 + int(bool(cfg.connection_delay))
    return per_layer * len(cfg.dataset.nb_filters) + 3


def init_stds(cfg: Any) -> list[tuple[str, float]]:
    """(weight, standard deviation) of every fluctuation-driven initial weight (float64):
    sigma_w = sqrt(share sigma_u^2 / (fan_in nu eps_hat)), as `build_network` draws them."""
    ds = cfg.dataset
    lists = layer_lists(ds)
    eps_hat = psp_eps_hat(cfg.tau_mem, cfg.tau_syn, float(ds.dt))
    sigma_u, nu, alpha = float(cfg.method.target_sigma_u), float(ds.nu), float(cfg.alpha)
    out, channels = [], 1
    for i, (filters, kernel) in enumerate(zip(lists["nb_filters"], lists["kernel_size"])):
        rec = lists["recurrent_kernel"][i]
        share = alpha if rec else 1.0
        fans = [(f"hidden.{i}.weight", channels * kernel, share)]
        if rec:
            fans.append((f"hidden.{i}.rec_weight", filters * rec, 1 - share))
        for name, fan_in, fraction in fans:
            if fraction == 0:
                out.append((name, 0.0))  # `alpha` gives these weights no share
                continue
            try:
                std = math.sqrt(fraction * sigma_u**2 / (fan_in * nu * eps_hat))
            except (OverflowError, ZeroDivisionError):
                std = math.inf
            out.append((name, std))
        channels = filters
    return out


def init_settings(cfg: Any) -> str:
    """The settings that set the initial weights, as `<setting>=<value>, ...` (for messages)."""
    nu, sigma_u = float(cfg.dataset.nu), float(cfg.method.target_sigma_u)
    pair = [f"dataset.nu={cfg.dataset.nu}", f"method.target_sigma_u={cfg.method.target_sigma_u}"]
    if abs(math.log10(sigma_u)) > abs(math.log10(nu / 10)):  # the one furthest from usual first
        pair.reverse()
    return (
        f"{pair[0]}, {pair[1]} (with tau_mem={cfg.tau_mem}, tau_syn={cfg.tau_syn}, "
        f"dataset.dt={cfg.dataset.dt})"
    )


def beta_at(cfg: Any, epoch: int) -> float:
    """Escape-noise / surrogate steepness during `epoch` (0-based), with annealing if enabled.

    From `anneal_start` on, beta grows by `anneal_step` at the start of every
    `anneal_interval` epochs: beta + anneal_step * (1 + (epoch - anneal_start) // interval).
    """
    if not cfg.anneal or epoch < cfg.anneal_start:
        return float(cfg.beta)
    return float(
        cfg.beta + cfg.anneal_step * (1 + (epoch - cfg.anneal_start) // cfg.anneal_interval)
    )


def spike_fns(
    cfg: Any, method: str, generators: list[torch.Generator], beta: float | None = None
) -> list[SpikeFn]:
    """One SpikeFn of `method` per hidden layer, each drawing from its own generator."""
    beta = float(cfg.beta if beta is None else beta)
    return [
        spike_fn_for_method(method, beta, cfg.p0, cfg.delta_u, cfg.sigm, gen) for gen in generators
    ]


def timing(cfg: Any) -> dict[str, dict[str, Any]]:
    """Layer and readout arguments of the `connection_delay` setting.

    true (stork's order: all neurons update, then all connections propagate): every
    connection delivers its input one step later, the recurrent one too, and the readout
    reports its potential after the update, starting from -1e-3. false: the undelayed model.
    """
    delay = int(bool(cfg.connection_delay))
    return {
        "layer": {"input_delay": delay, "rec_delay": 1 + delay},
        "readout": {
            "input_delay": delay,
            "initial_mem": STORK_READOUT_START if delay else 0.0,
            "after_update": bool(delay),
        },
    }


def readout_tau(cfg: Any, shape: NetworkShape) -> float:
    """`tau_readout`, else the sample duration: `dataset.duration` if set, else steps x dt."""
    if cfg.tau_readout is not None:
        return float(cfg.tau_readout)
    duration = getattr(cfg.dataset, "duration", None)
    return float(duration) if duration is not None else shape.nb_steps * float(cfg.dataset.dt)


def build_network(
    cfg: Any, shape: NetworkShape, fns: list[SpikeFn], init_gen: torch.Generator
) -> SpikingNetwork:
    """Conv LIF layers + readout, with fluctuation-driven initial weights.

    Feedforward weights get a share `alpha` of the target membrane variance
    `method.target_sigma_u`^2 in layers with a recurrent convolution (the rest goes to the
    recurrent weights), all of it otherwise. Every layer assumes inputs at `dataset.nu` Hz.
    Timing: `connection_delay` (see `timing`).
    """
    ds = cfg.dataset
    lists = layer_lists(ds)
    dt = float(ds.dt)
    delays = timing(cfg)
    eps_hat = psp_eps_hat(cfg.tau_mem, cfg.tau_syn, dt)
    sigma_u = float(cfg.method.target_sigma_u)
    layers = []
    in_channels = 1
    for i, fn in enumerate(fns):
        rec = lists["recurrent_kernel"][i] or None
        layer = ConvLIFLayer(
            in_channels,
            lists["nb_filters"][i],
            lists["kernel_size"][i],
            fn,
            stride=lists["stride"][i],
            padding=lists["padding"][i],
            recurrent_kernel=rec,
            tau_mem=cfg.tau_mem,
            tau_syn=cfg.tau_syn,
            dt=dt,
            threshold=cfg.threshold,
            reset=cfg.reset,
            diff_reset=cfg.diff_reset,
            **delays["layer"],
        )
        share = float(cfg.alpha) if rec else 1.0
        fluctuation_driven_init_(layer.weight, sigma_u, ds.nu, eps_hat, share, init_gen)
        if rec:
            fluctuation_driven_init_(layer.rec_weight, sigma_u, ds.nu, eps_hat, 1 - share, init_gen)
        layers.append(layer)
        in_channels = lists["nb_filters"][i]
    readout = Readout(
        shape.nb_readout_inputs,
        shape.nb_classes,
        readout_tau(cfg, shape),
        cfg.tau_syn,
        dt,
        **delays["readout"],
    )
    readout_init_(readout.weight, init_gen)
    return SpikingNetwork(layers, readout, autocast=PRECISIONS[cfg.precision])
