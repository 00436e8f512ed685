"""The one dispatch: which backend runs a LIF scan, a readout or a convolution.

The rule. A LIF scan (`run`, `lif_scan`) runs by the backend that its setting names: the
argument ``backend``, else the environment variable ``SGTHEORY_BACKEND``, else ``auto``:

* ``reference``: `lif.reference`, the model itself, step by step through autograd (any scan);
* ``torch``: per-step torch operations with a hand-written adjoint (any scan);
* ``native``: the C kernels (a float32 CPU current, with a recurrent weight shaped (time,
  batch, channels, positions); the kernels built: a C compiler and ``SGTHEORY_FUSED`` not 0);
* ``triton``: the Triton kernels (a float32 CUDA current, or any under
  ``TRITON_INTERPRET=1``; triton installed and ``SGTHEORY_TRITON`` not 0; a recurrent block
  of at most MAX_BLOCK padded channels x positions and ``rec_delay`` up to the steps);
* ``auto``: the first of triton, native, torch that can run the scan.

The compiled backends (native, triton) also need draws they can make themselves: a
deterministic escape noise, or one with a `kernel_form` drawing from a `random.Stream` or
torch.Generator (explicit `random.GivenUniforms` run by the torch loop). A forced backend
that cannot run the scan is a ConfigError naming the setting, its value, what the backend
needs and the choices. Every backend gives the same spikes (gradients up to rounding).

A readout (`readout_scan`) with ``fast=True`` runs as one matrix product
(``backends.readout``) unless the setting is ``reference``; otherwise, and with
``fast=False``, by the recursion of `lif.readout_reference`.

A convolution over batch x time (`conv1d`) runs by the algorithm measured fastest for its
shape on this machine (``backends.conv``; ``SGTHEORY_CONV_ALGO`` forces one), in the layout
that `use_channels_last` chooses (``SGTHEORY_CHANNELS_LAST``).
"""

from __future__ import annotations

import os
from types import ModuleType

import torch

from sgtheory import lif, random
from sgtheory.backends import draws as fast_draws
from sgtheory.backends import readout as readout_backend
from sgtheory.backends import torch_loop
from sgtheory.backends.base import ScanFunction
from sgtheory.backends.conv import algos as conv_algos
from sgtheory.backends.conv import chunked
from sgtheory.backends.native import lif as native
from sgtheory.backends.triton import scan as triton
from sgtheory.errors import ConfigError, check_choice
from sgtheory.lif import LIFParams, delay_in_time
from sgtheory.spikes import SpikeFn

ENV = "SGTHEORY_BACKEND"
BACKENDS: dict[str, ModuleType] = {"torch": torch_loop, "native": native, "triton": triton}
CHOICES = ("auto", "reference", *BACKENDS)
AUTO_ORDER = ("triton", "native", "torch")
MAX_BLOCK = triton.MAX_BLOCK


def setting(backend: str | None = None) -> tuple[str, str]:
    """(name, value) of the backend setting in force: the argument, else SGTHEORY_BACKEND,
    else auto; a value that is not one of CHOICES is a ConfigError."""
    name, value = "backend", backend
    if value is None:
        name, value = ENV, os.environ.get(ENV, "").strip() or "auto"
    return name, check_choice(name, value, CHOICES)


def choose(
    current: torch.Tensor,
    spike_fn: SpikeFn,
    params: LIFParams,
    rec_weight: torch.Tensor | None = None,
    backend: str | None = None,
) -> str:
    """The name of the backend that runs the scan of time-major `current` (the rule in the
    module docstring)."""
    name, value = setting(backend)
    if value == "auto":
        for candidate in AUTO_ORDER:
            if BACKENDS[candidate].usable(current, rec_weight, spike_fn, params):
                return candidate
    if value == "reference" or BACKENDS[value].usable(current, rec_weight, spike_fn, params):
        return value
    kind = f"{current.device.type} {str(current.dtype).removeprefix('torch.')} current"
    kind += ", a recurrent weight" if rec_weight is not None else ""
    raise ConfigError(
        f"{name}={value!r} cannot run this scan ({kind}): the {value} backend needs "
        f"{BACKENDS[value].REQUIRES}; choose one of: {', '.join(CHOICES)}"
    )


def run(
    current: torch.Tensor,
    spike_fn: SpikeFn,
    params: LIFParams,
    rec_weight: torch.Tensor | None = None,
    time_major: bool = False,
    input_delay: int = 0,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(spikes, mem) of LIF neurons with `params` driven by `current` (batch, time, ...;
    with `time_major`, (time, batch, ...) in and out, which spares transposes between
    layers), by the backend that the rule chooses.

    `mem` is the membrane potential from which each step's spike was drawn (no gradient).
    `rec_weight` (channels, channels, odd kernel) adds a recurrent convolution of the
    spikes; then `current` is shaped (batch, time, channels, length). The spikes of step t
    enter the synaptic current syn[t + rec_delay]. `input_delay` makes the current arrive
    that many steps late (`lif.delay_in_time`; the native backend reads it late instead of
    shifting a copy).
    """
    lif.check_recurrent(rec_weight, current.shape)
    cur = current if time_major else current.transpose(0, 1)
    name = choose(cur, spike_fn, params, rec_weight, backend)
    chosen = BACKENDS.get(name)
    if input_delay and not (chosen is not None and chosen.TAKES_INPUT_DELAY):
        cur, input_delay = delay_in_time(cur, input_delay, 0), 0
    if chosen is None:
        spikes, mem = _reference(cur, spike_fn, params, rec_weight)
    else:
        with torch.autocast(cur.device.type, enabled=False):  # dynamics in full precision
            spikes, mem = ScanFunction.apply(
                cur, rec_weight, chosen, spike_fn, params, int(input_delay)
            )
    return (spikes, mem) if time_major else (spikes.transpose(0, 1), mem.transpose(0, 1))


def _reference(
    cur: torch.Tensor, spike_fn: SpikeFn, params: LIFParams, rec_weight: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`lif.reference` of time-major `cur`, its uniforms and firing points computed by the
    fastest code at hand (``backends.draws``: the same numbers)."""
    draws = None
    if isinstance(spike_fn, SpikeFn) and not spike_fn.deterministic:
        draws = spike_fn.take(cur.shape[0])
        if draws.given is None and cur.device.type == "cpu":
            shape = tuple(cur.shape[1:])
            u = fast_draws.uniform(draws, 0, cur.shape[0], shape, cur.device)
            draws = random.Draws(draws.seed, draws.stream, 0, given=u)
            escape = fast_draws.FastPoints(spike_fn.escape)
            spike_fn = SpikeFn(escape, spike_fn.surrogate, spike_fn.generator)
    return lif.reference(cur, spike_fn, params, rec_weight, True, draws)


def lif_scan(
    current: torch.Tensor,
    spike_fn: SpikeFn,
    a_syn: float,
    a_mem: float,
    threshold: float = 1.0,
    reset: str = "full",
    diff_reset: bool = False,
    rec_weight: torch.Tensor | None = None,
    time_major: bool = False,
    rec_delay: int = 1,
    input_delay: int = 0,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`run` with the LIF parameters given one by one (see `lif.LIFParams`)."""
    params = LIFParams(a_syn, a_mem, threshold, reset, diff_reset, rec_delay)
    return run(current, spike_fn, params, rec_weight, time_major, input_delay, backend)


def readout_scan(
    current: torch.Tensor,
    a_syn: float,
    a_mem: float,
    time_major: bool = False,
    initial_mem: float = 0.0,
    after_update: bool = False,
    fast: bool = False,
    backend: str | None = None,
) -> torch.Tensor:
    """The readout's potentials (`lif.readout_reference`, same arguments): with `fast`, as
    one matrix product (equal up to rounding) unless the backend setting is reference."""
    args = (current, a_syn, a_mem, time_major, initial_mem, after_update)
    if fast and setting(backend)[1] != "reference":
        return readout_backend.readout_scan(*args)
    return lif.readout_reference(*args)


def conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: int = 1,
    padding: int = 0,
    binary: bool | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """`F.conv1d(x, weight, stride=stride, padding=padding)` (no bias) over a large batch
    (e.g. batch x time samples), by the measured algorithm (``backends.conv.chunked``).
    `binary`: whether x holds only 0 and 1 (None checks); `channels_last`: the result's
    layout."""
    return chunked.conv1d_chunked(x, weight, stride, padding, binary, channels_last)


def use_channels_last(device: torch.device) -> bool:
    """Whether activations on `device` are kept channels-last (``backends.conv.algos``)."""
    return conv_algos.use_channels_last(device)
