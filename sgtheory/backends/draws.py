"""A scan's uniforms and firing points by the fastest code at hand, the same numbers.

`sgtheory.random` defines the draws (`random.Draws.uniform`, integer tensor operations) and
each escape noise its firing points (`prob_inverse`); on the CPU in float32 the C kernels
compute both faster (`native.lif.philox_uniform`, `native.lif.logit_points`), bitwise
equal. The torch loop and the dispatch's reference path take them from here.
"""

from __future__ import annotations

import torch

from sgtheory import random
from sgtheory.backends.native import build
from sgtheory.backends.native import lif as native
from sgtheory.spikes import ESC_SIGMOID


def uniform(
    draws: random.Draws, start: int, stop: int, shape: tuple, device: torch.device | str | None
) -> torch.Tensor:
    """`draws.uniform(start, stop, shape, device)`: on the CPU by the C kernel where it is
    built, else by the definition."""
    on_cpu = device is None or torch.device(device).type == "cpu"
    if draws.given is None and on_cpu:
        first = draws.first_step + start
        out = native.philox_uniform(draws.seed, draws.stream, first, stop - start, shape)
        if out is not None:
            return out
    return draws.uniform(start, stop, shape, device)


def firing_points(escape, u: torch.Tensor) -> torch.Tensor:
    """`escape.prob_inverse(u)`; for sigmoid escape noise on contiguous float32 CPU draws by
    the C logit (the operations of `spikes.logit_f32`, the same numbers)."""
    rule, beta, _ = escape.kernel_form() if hasattr(escape, "kernel_form") else (None, 0, 0)
    if rule == ESC_SIGMOID and u.is_contiguous() and not u.requires_grad and build.runs(u):
        return native.logit_points(u, beta)
    return escape.prob_inverse(u)


class FastPoints:
    """`escape` with its firing points by `firing_points` (the same numbers), for the
    reference recursion run by the dispatch: a spike iff x > prob_inverse(u), as
    `spikes._Stochastic.spikes` decides it."""

    deterministic = False

    def __init__(self, escape) -> None:
        self.escape = escape
        self.name = getattr(escape, "name", type(escape).__name__)

    def prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.escape.prob(x)

    def prob_inverse(self, u: torch.Tensor) -> torch.Tensor:
        return firing_points(self.escape, u.contiguous())

    def spikes(self, x: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        return (x > self.prob_inverse(uniform.to(x.dtype))).to(x.dtype)
