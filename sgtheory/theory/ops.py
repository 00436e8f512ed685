"""Spike operations for the theory networks: callables x -> spikes, one call per stage.

A network calls its spike operation once per stage (a layer of binary units, or one time
step of one LIF layer), always in the same order. Each operation here keeps the inputs x
and the spikes of every call, so that a trial can be scored (log-probability), replayed
(the same spikes, another backward pass) or re-run with common random numbers.

The escape noises and surrogate derivatives are the objects of `sgtheory.spikes`; nothing
here restates their formulas. Escape-noise derivatives are taken by forward-mode autograd
of `escape.prob`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.autograd.forward_ad as fwad

from sgtheory.errors import check_choice
from sgtheory.spikes import SpikeFn, make_escape, make_surrogate

# matched pairs: escape noise name -> surrogate name whose derivative is the escape's
# derivative (up to a constant factor, see `library_pair`)
PAIRS = {"sigmoid": "sigmoid", "exponential": "exponential", "superspike": "superspike"}


@dataclass(frozen=True)
class ScaledSurrogate:
    """A library surrogate times a constant: dS/dx := factor * inner.derivative(x)."""

    inner: object
    factor: float

    @property
    def name(self) -> str:
        return f"{self.factor:g}*{self.inner.name}"

    def derivative(self, x: torch.Tensor, spikes: torch.Tensor) -> torch.Tensor:
        return self.factor * self.inner.derivative(x, spikes)


def library_pair(name: str, beta: float, p0: float, delta_u: float) -> tuple[Any, Any, float]:
    """(escape, surrogate, factor) of a matched pair as the library defines them.

    `factor` is the constant with factor * surrogate' = d escape.prob / dx: 1 for sigmoid
    (beta s (1 - s)) and exponential (below saturation); beta / 2 for the fast sigmoid,
    whose escape probability 1/2 (1 + beta x / (1 + beta |x|)) has derivative
    (beta / 2) / (1 + beta |x|)^2 while the SuperSpike surrogate is 1 / (1 + beta |x|)^2.
    """
    check_choice("pair", name, PAIRS)
    escape = make_escape(name, beta=beta, p0=p0, delta_u=delta_u)
    surrogate = make_surrogate(PAIRS[name], beta=beta, p0=p0, delta_u=delta_u)
    factor = beta / 2.0 if name == "superspike" else 1.0
    return escape, surrogate, factor


def matched_pair(name: str, beta: float, p0: float, delta_u: float) -> tuple[Any, Any]:
    """(escape, surrogate) with surrogate' exactly the escape noise's derivative."""
    escape, surrogate, factor = library_pair(name, beta, p0, delta_u)
    if factor != 1.0:
        surrogate = ScaledSurrogate(surrogate, factor)
    return escape, surrogate


CONDITIONINGS = ("input", "output")
TINY = 1e-300


def escape_slope(escape, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(p, p') of an elementwise escape noise at x: escape.prob and its derivative (autograd)."""
    with torch.enable_grad():
        leaf = x.detach().clone().requires_grad_()
        prob = escape.prob(leaf)
        (slope,) = torch.autograd.grad(prob.sum(), leaf)
    return prob.detach(), slope


def smoothing_weight(p: torch.Tensor, spikes: torch.Tensor, conditioning: str) -> torch.Tensor:
    """Factor c with which a spike's smoothed derivative is c * dp: 1 for input conditioning.

    Output conditioning (StochasticAD.jl's Bernoulli smoothing rule): the average of the
    right and left stochastic derivatives given the sampled outcome, 1 / (2 (1 - p)) for a
    silent unit and 1 / (2 p) for a firing one; its mean over the outcome is 1.
    """
    if conditioning == "input":
        return torch.ones_like(p)
    silent = 0.5 / (1.0 - p).clamp(min=TINY)
    firing = 0.5 / p.clamp(min=TINY)
    return torch.where(spikes > 0, firing, silent)


@dataclass(frozen=True)
class OutputSmoothing:
    """Surrogate whose SG is the output-conditioned smoothed stochastic derivative.

    dS/dx := escape'(x) c(S, p(x)) with c = 1 / (2 (1 - p)) if S = 0, 1 / (2 p) if S = 1
    (`smoothing_weight`): the chain rule through the sampled trial with these local
    derivatives is the output-conditioned smoothing, in reverse mode (enumeration, training).
    """

    escape: object
    name = "output-smoothing"

    def derivative(self, x: torch.Tensor, spikes: torch.Tensor) -> torch.Tensor:
        p, slope = escape_slope(self.escape, x)
        return slope * smoothing_weight(p, spikes, "output")


def coupled_sample(escape, x: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Spikes from given uniforms by the library's rule: spike iff x > escape.prob_inverse(u).

    With the uniforms of `escape.sample`'s generator this gives its very spikes (a test
    checks it); fixed uniforms couple two runs of a network (common random numbers).
    """
    return (x > escape.prob_inverse(uniform)).to(x.dtype)


def stage_probability(escape, x: torch.Tensor, spikes: torch.Tensor) -> torch.Tensor:
    """P(spikes | x) per unit: escape.prob(x) where a spike, 1 - escape.prob(x) where none."""
    p = escape.prob(x)
    return torch.where(spikes > 0, p, 1.0 - p)


def log_prob(escape, inputs: list[torch.Tensor], spikes: list[torch.Tensor]) -> torch.Tensor:
    """log P(trial) (batch,): the sum over stages and units of log P(spike | its input)."""
    total = 0.0
    for x, s in zip(inputs, spikes):
        total = total + torch.log(stage_probability(escape, x, s)).flatten(1).sum(1)
    return total


class StageOp:
    """Base class: calls `spike(k, x)` for stage k and keeps the inputs and spikes."""

    def __init__(self) -> None:
        self.inputs: list[torch.Tensor] = []
        self.spikes: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        s = self.spike(len(self.spikes), x)
        self.inputs.append(x)
        self.spikes.append(s)
        return s

    def spike(self, k: int, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def detached_spikes(self) -> list[torch.Tensor]:
        return [s.detach() for s in self.spikes]


class Sample(StageOp):
    """The library's spike operation: Bernoulli(escape.prob(x)) forward, SG backward."""

    def __init__(self, spike_fn: SpikeFn) -> None:
        super().__init__()
        self.spike_fn = spike_fn

    def spike(self, k: int, x: torch.Tensor) -> torch.Tensor:
        return self.spike_fn(x)


class SampleFixed(StageOp):
    """Spikes drawn by `escape.sample` with no gradient through them (score functions)."""

    def __init__(self, escape, generator: torch.Generator) -> None:
        super().__init__()
        self.escape, self.generator = escape, generator

    def spike(self, k: int, x: torch.Tensor) -> torch.Tensor:
        return self.escape.sample(x.detach(), self.generator)


class _ForcedEscape:
    """Stands in for an escape noise inside SpikeFn: its spikes are given ones.

    Marked deterministic, so that SpikeFn draws no uniforms for it.
    """

    deterministic = True
    name = "forced"

    def __init__(self, spikes: torch.Tensor) -> None:
        self.given = spikes

    def sample(self, x: torch.Tensor, generator) -> torch.Tensor:
        return self.given.to(x.dtype)

    def spikes(self, x: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        return self.given.to(x.dtype)


class Replay(StageOp):
    """Given spikes, stage by stage: fixed (no gradient), or with a surrogate's SG backward.

    With a surrogate, each stage runs the library's SpikeFn with an escape noise that
    returns the given spikes, so the backward pass is the library's own SG.
    """

    def __init__(self, spikes: list[torch.Tensor], surrogate=None) -> None:
        super().__init__()
        self.given, self.surrogate = spikes, surrogate

    def spike(self, k: int, x: torch.Tensor) -> torch.Tensor:
        if self.surrogate is None:
            return self.given[k].to(x.dtype)
        return SpikeFn(_ForcedEscape(self.given[k]), self.surrogate)(x)


class Coupled(StageOp):
    """Spikes from fixed uniforms (common random numbers), optionally flipping some units.

    `flips[k]` (a bool mask shaped like stage k, or None) marks units whose spike is
    inverted: the alternative trajectory of a stochastic derivative.
    """

    def __init__(self, escape, uniforms: list[torch.Tensor], flips=None) -> None:
        super().__init__()
        self.escape, self.uniforms, self.flips = escape, uniforms, flips

    def spike(self, k: int, x: torch.Tensor) -> torch.Tensor:
        s = coupled_sample(self.escape, x.detach(), self.uniforms[k])
        if self.flips is not None and self.flips[k] is not None:
            s = torch.where(self.flips[k], 1.0 - s, s)
        return s


def forward_tangent(value: torch.Tensor) -> torch.Tensor:
    """The forward-mode tangent of `value` (zeros when it carries none)."""
    tangent = fwad.unpack_dual(value).tangent
    return torch.zeros_like(fwad.unpack_dual(value).primal) if tangent is None else tangent


def escape_jvp(escape, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(p, p_dot): escape.prob at a dual x's primal, and escape'(x) times x's tangent.

    escape' comes from reverse-mode autograd of `escape.prob` (an elementwise function),
    which spares forward-mode formulas that import torch's compiler on first use (~7 s).
    """
    prob, slope = escape_slope(escape, fwad.unpack_dual(x).primal)
    return prob, slope * forward_tangent(x)


class Smoothed(StageOp):
    """The smoothed stochastic derivative, forward mode: given spikes carry a smoothed tangent.

    Used inside `torch.autograd.forward_ad.dual_level` with dual parameters: each spike
    keeps its sampled value and gets the tangent c * escape'(x) x_dot, where x_dot collects
    the tangents of every path into x. Input conditioning (c = 1) averages the jump over the
    spike's outcome given its input x; output conditioning (c of `smoothing_weight`)
    conditions on the sampled outcome as well.
    """

    def __init__(self, escape, spikes: list[torch.Tensor], conditioning: str = "input") -> None:
        super().__init__()
        check_choice("conditioning", conditioning, CONDITIONINGS)
        self.escape, self.given, self.conditioning = escape, spikes, conditioning

    def spike(self, k: int, x: torch.Tensor) -> torch.Tensor:
        p, tangent = escape_jvp(self.escape, x)
        given = self.given[k].to(x.dtype)
        weight = smoothing_weight(p, given.expand_as(p), self.conditioning)
        return fwad.make_dual(given.expand_as(p).clone(), weight * tangent)
