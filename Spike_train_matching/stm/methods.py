"""Spike operations of a run, from the repository's one methods table `sgtheory.spikes.METHODS`.

A method name and its `sigm` variant fix the pair (escape noise, surrogate derivative), the
same pair as in the Classification experiment. The spike-train-matching defaults of the
paper's code are `superspike` with sigm false (step + SuperSpike), and
`stochasticsuperspike` and `multilayerspiker` with sigm true (sigmoid escape noise + sigmoid
derivative, sigmoid escape noise + the hidden spikes).

Each run also has a validation pass in "the other mode" after every update: a stochastic
method is validated deterministically (step escape noise), a deterministic one with the
escape noise `valid_escape`. The hidden layer uses beta_h / delta_u_h, the output layer
beta_o / delta_u_o; p0 is shared.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sgtheory.errors import check_choice
from sgtheory.spikes import METHODS, SpikeFn, make_escape, make_surrogate, method_pair

VALID_ESCAPES = ("sigmoid", "exponential", "superspike")


@dataclass(frozen=True)
class Params:
    """Escape-noise and surrogate parameters of both layers."""

    beta_h: float
    beta_o: float
    p0: float
    delta_u_h: float
    delta_u_o: float


@dataclass
class Mode:
    """The spike operations of both layers in one mode (training or validation)."""

    spike_h: SpikeFn
    spike_o: SpikeFn

    @property
    def stochastic(self) -> bool:
        return not self.spike_h.deterministic


def layer_pair(escape: str, surrogate: str, p: Params, generator: torch.Generator) -> Mode:
    """SpikeFns of the hidden and output layer for one (escape, surrogate) pair."""
    hidden = SpikeFn(
        make_escape(escape, p.beta_h, p.p0, p.delta_u_h),
        make_surrogate(surrogate, p.beta_h, p.p0, p.delta_u_h),
        generator,
    )
    output = SpikeFn(
        make_escape(escape, p.beta_o, p.p0, p.delta_u_o),
        make_surrogate(surrogate, p.beta_o, p.p0, p.delta_u_o),
        generator,
    )
    return Mode(hidden, output)


def make_modes(
    method: str, sigm: bool, valid_escape: str, p: Params, generator: torch.Generator
) -> tuple[Mode, Mode]:
    """(training mode, validation mode) of a method; all draws from `generator`."""
    check_choice("method.name", method, METHODS)
    check_choice("valid_escape", valid_escape, VALID_ESCAPES)
    escape, surrogate = method_pair(method, sigm)
    train = layer_pair(escape, surrogate, p, generator)
    other = "step" if train.stochastic else valid_escape
    return train, layer_pair(other, surrogate, p, generator)
