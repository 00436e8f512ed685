"""Build the convolutional SNN of a config and the spike operations of a named method."""

from __future__ import annotations

from typing import Any

import torch

from sgtheory.init import fluctuation_driven_init_, psp_eps_hat, readout_init_
from sgtheory.layers import ConvLIFLayer, Readout, SpikingNetwork
from sgtheory.spikes import SpikeFn, spike_fn_for_method

from .settings import PRECISIONS, Geometry, layer_lists

# stork's readout potential before any input (ReadoutGroup's initial_state)
STORK_READOUT_START = -1e-3


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


def readout_tau(cfg: Any, geo: Geometry) -> float:
    """`tau_readout`, else the sample duration: `dataset.duration` if set, else steps x dt."""
    if cfg.tau_readout is not None:
        return float(cfg.tau_readout)
    duration = cfg.dataset.get("duration")
    return float(duration) if duration is not None else geo.nb_steps * float(cfg.dataset.dt)


def build_network(
    cfg: Any, geo: Geometry, fns: list[SpikeFn], init_gen: torch.Generator
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
        geo.nb_readout_inputs,
        geo.nb_classes,
        readout_tau(cfg, geo),
        cfg.tau_syn,
        dt,
        **delays["readout"],
    )
    readout_init_(readout.weight, init_gen)
    return SpikingNetwork(layers, readout, autocast=PRECISIONS[cfg.precision])
