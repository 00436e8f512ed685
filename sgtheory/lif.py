"""The LIF neuron with synaptic current: its parameters and its definition, step by step.

With x = mem - threshold, spikes S[t] = spike(x[t]) and R[t] = S[t] (detached unless
``diff_reset``), the two reset orders are

* ``reset="full"`` (default, as in stork):
  mem[t+1] = (a_mem mem[t] + (1 - a_mem) syn[t]) (1 - R[t])
* ``reset="leak"`` (the spike-train-matching model):
  mem[t+1] = a_mem mem[t] (1 - R[t]) + (1 - a_mem) syn[t]

and always syn[t+1] = a_syn syn[t] + I[t] + rec(S[t + 1 - rec_delay]), with a = exp(-dt / tau),
mem[0] = syn[0] = 0. ``rec`` is an optional recurrent 1-D convolution (stride 1,
size-preserving); with ``rec_delay=1`` (default) a spike enters the synaptic current of the
next step, with ``rec_delay=2`` one step later (as in stork, where every connection
delivers its output at the next step; spikes before step 0 count as 0).

`LIFParams` holds the constants of these equations; `reference` runs them plainly with
autograd, one step at a time: the definition that every backend of ``sgtheory.backends``
reproduces (same spikes, gradients up to float rounding) and the baseline of the
benchmarks. ``sgtheory.scan`` chooses the backend that runs a layer's scan.

Stochastic escape noise: a scan takes one draw of all its steps from the spike operation's
stream (`SpikeFn.take`), and step t compares with the uniforms of that draw's step t
(``sgtheory.random``), so every backend gives the same spikes.

The readout is the same dynamics without spikes or reset (`readout_reference`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sgtheory import random
from sgtheory.errors import ConfigError, check_choice, check_positive
from sgtheory.spikes import SpikeFn

RESETS = ("full", "leak")


def decay(tau: float, dt: float) -> float:
    """exp(-dt / tau): the per-step decay factor of a time constant tau (seconds)."""
    check_positive("tau", tau)
    check_positive("dt", dt)
    return math.exp(-dt / tau)


@dataclass(frozen=True)
class LIFParams:
    """The constants of the LIF dynamics (module docstring): per-step decay factors of the
    synaptic current and the membrane, threshold, reset order, whether the reset carries a
    gradient, and the steps from a spike to the recurrent current it causes."""

    a_syn: float
    a_mem: float
    threshold: float = 1.0
    reset: str = "full"
    diff_reset: bool = False
    rec_delay: int = 1

    def __post_init__(self) -> None:
        check_choice("reset", self.reset, RESETS)
        delay = self.rec_delay
        if isinstance(delay, bool) or not isinstance(delay, int) or delay < 1:
            raise ConfigError(
                f"rec_delay={delay!r} is not valid; it must be an integer >= 1 (steps from a "
                "spike to the synaptic current it enters; 1 = the next step)"
            )
        for name in ("a_syn", "a_mem", "threshold"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "diff_reset", bool(self.diff_reset))

    @classmethod
    def from_time_constants(
        cls, tau_mem: float, tau_syn: float, dt: float, **rest: float | str | bool | int
    ) -> LIFParams:
        """The parameters of time constants tau_mem, tau_syn and step dt (seconds); `rest`
        are the other fields (threshold, reset, diff_reset, rec_delay)."""
        return cls(a_syn=decay(tau_syn, dt), a_mem=decay(tau_mem, dt), **rest)


def check_recurrent(weight: torch.Tensor | None, shape: torch.Size) -> None:
    """A recurrent weight (channels, channels, odd kernel) needs a current shaped
    (batch, time, channels, length) (or time-major): else a ValueError."""
    if weight is None:
        return
    if len(shape) != 4 or weight.dim() != 3 or weight.shape[-1] % 2 != 1:
        raise ValueError(
            "a recurrent convolution needs input shaped (batch, time, channels, length) and an "
            f"odd kernel; got input {tuple(shape)} and weight {tuple(weight.shape)}"
        )


def delay_in_time(x: torch.Tensor, steps: int, time_dim: int) -> torch.Tensor:
    """`x` shifted later by `steps` along `time_dim`: out[t] = x[t - steps], 0 for t < steps."""
    if steps == 0:
        return x
    if steps < 0:
        raise ConfigError(f"input_delay={steps!r} is not valid; it must be >= 0")
    return _Delay.apply(x, steps, time_dim)


class _Delay(torch.autograd.Function):
    """The shift of `delay_in_time` with a backward that writes the input's gradient once
    (shifted back, zero where the steps fell off the end), instead of zero-filling a whole
    tensor and copying into it as the backward of a slice does."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, steps: int, time_dim: int) -> torch.Tensor:
        ctx.steps, ctx.time_dim = steps, time_dim
        length = x.shape[time_dim]
        kept = max(length - steps, 0)
        out = torch.empty_like(x)  # in x's layout (e.g. channels-last spikes)
        out.narrow(time_dim, 0, length - kept).zero_()
        out.narrow(time_dim, length - kept, kept).copy_(x.narrow(time_dim, 0, kept))
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        steps, time_dim = ctx.steps, ctx.time_dim
        length = grad.shape[time_dim]
        kept = max(length - steps, 0)
        out = torch.empty_like(grad)
        out.narrow(time_dim, 0, kept).copy_(grad.narrow(time_dim, length - kept, kept))
        out.narrow(time_dim, kept, length - kept).zero_()
        return out, None, None


def reference(
    current: torch.Tensor,
    spike_fn: SpikeFn,
    params: LIFParams,
    rec_weight: torch.Tensor | None = None,
    time_major: bool = False,
    draws: random.Draws | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(spikes, mem) of LIF neurons driven by `current` (batch, time, ...; with
    `time_major`, (time, batch, ...)), one step at a time through autograd (slow, plain).

    `mem` is the potential from which each step's spike was drawn. `rec_weight`
    (channels, channels, odd kernel) adds a recurrent convolution of the spikes; then the
    current is (batch, time, channels, length). `draws`: this scan's uniforms (default: one
    draw of all its steps from `spike_fn`)."""
    check_recurrent(rec_weight, current.shape)
    steps = current.unbind(0 if time_major else 1)
    a_syn, a_mem, threshold = params.a_syn, params.a_mem, params.threshold
    mem = torch.zeros_like(steps[0])
    syn = torch.zeros_like(steps[0])
    spikes, mems = [], []
    if draws is None and isinstance(spike_fn, SpikeFn):
        draws = spike_fn.take(len(steps))  # one draw for the whole scan, step t its step t
    for t, cur_t in enumerate(steps):
        mems.append(mem.detach())
        s = spike_fn(mem - threshold) if draws is None else spike_fn(mem - threshold, draws, t)
        spikes.append(s)
        r = s if params.diff_reset else s.detach()
        if params.reset == "full":
            mem = (a_mem * mem + (1 - a_mem) * syn) * (1 - r)
        else:
            mem = a_mem * mem * (1 - r) + (1 - a_mem) * syn
        syn = a_syn * syn + cur_t
        if rec_weight is not None and len(spikes) >= params.rec_delay:
            src = spikes[len(spikes) - params.rec_delay]
            syn = syn + F.conv1d(src, rec_weight, padding=rec_weight.shape[-1] // 2)
    dim = 0 if time_major else 1
    return torch.stack(spikes, dim=dim), torch.stack(mems, dim=dim)


def lif_scan_reference(
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
) -> tuple[torch.Tensor, torch.Tensor]:
    """`reference` with the parameters given one by one (see `LIFParams`)."""
    params = LIFParams(a_syn, a_mem, threshold, reset, diff_reset, rec_delay)
    return reference(current, spike_fn, params, rec_weight, time_major)


def readout_reference(
    current: torch.Tensor,
    a_syn: float,
    a_mem: float,
    time_major: bool = False,
    initial_mem: float = 0.0,
    after_update: bool = False,
) -> torch.Tensor:
    """Non-spiking leaky integrator: the LIF dynamics without spikes or reset, step by step.

    Returns mem (batch, time, ...) with mem[t+1] = a_mem mem[t] + (1 - a_mem) syn[t],
    syn[t+1] = a_syn syn[t] + I[t], mem[0] = `initial_mem`, syn[0] = 0; the output at step
    t is mem[t], or mem[t+1] with `after_update` (stork reports the potential after its
    update and starts it at -1e-3). With `time_major`, input and output are
    (time, batch, ...).
    """
    steps = current.unbind(0 if time_major else 1)
    mem = torch.full_like(steps[0], float(initial_mem))
    syn = torch.zeros_like(steps[0])
    out = []
    for cur_t in steps:  # unbind: its backward stacks, where indexing would zero-fill T times
        if not after_update:
            out.append(mem)
        mem = a_mem * mem + (1 - a_mem) * syn
        syn = a_syn * syn + cur_t
        if after_update:
            out.append(mem)
    return torch.stack(out, dim=0 if time_major else 1)
