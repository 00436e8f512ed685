"""Exact moments by enumerating every spike pattern of a small network, in float64.

With V binary spike variables there are 2^V patterns. For each (a batch dimension, in
chunks) the network is run with the pattern's spikes imposed: the inputs x of every unit
follow, hence the pattern's probability P = prod_i p(x_i)^s_i (1 - p(x_i))^(1 - s_i) and
its loss L. Then E[L] = sum P L and its exact gradient is autograd through that sum. The
exact mean of the surrogate gradient is sum P * SG(pattern), the SG of each pattern being
the library's backward pass with the pattern's spikes; the same for further surrogates
(e.g. `ops.OutputSmoothing`, whose SG is the output-conditioned smoothed derivative).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from sgtheory.theory.ops import Replay, stage_probability

MAX_VARIABLES = 24


@dataclass
class Exact:
    """Enumeration results; gradients are flat (P,) in the order of the params dict."""

    expected_loss: float
    gradient: torch.Tensor
    expected_sg: torch.Tensor | None
    total_probability: float
    nb_patterns: int
    expected_others: dict[str, torch.Tensor] = field(default_factory=dict)


def patterns(sizes: list[int], start: int, stop: int) -> list[torch.Tensor]:
    """Patterns number start..stop-1 (bit i of the number = variable i), split by stage."""
    index = torch.arange(start, stop, dtype=torch.int64)
    bits = (index[:, None] >> torch.arange(sum(sizes))) & 1
    return list(bits.to(torch.float64).split(sizes, dim=1))


def pattern_probability(escape, inputs, spikes) -> torch.Tensor:
    """P(pattern) (batch,): the product over stages and units of P(spike | input)."""
    prob = 1.0
    for x, s in zip(inputs, spikes):
        prob = prob * stage_probability(escape, x, s).flatten(1).prod(1)
    return prob


def flat(grads) -> torch.Tensor:
    """Concatenate per-parameter gradients (1 or batch, ...) into (1 or batch, P)."""
    return torch.cat([g.reshape(g.shape[0], -1) for g in grads], dim=1)


def exact_moments(
    net,
    params: dict,
    escape,
    surrogate=None,
    chunk: int = 1 << 15,
    others: dict | None = None,
) -> Exact:
    """E[L], d E[L] / d params and (given a surrogate) E[SG], by enumeration.

    `params` have a leading dimension 1. Patterns are processed `chunk` at a time. `others`
    (name -> surrogate) adds the exact mean of each one's SG to `expected_others`.
    """
    others = dict(others or {})
    sizes = net.stage_sizes()
    nb_vars = sum(sizes)
    if nb_vars > MAX_VARIABLES:
        raise ValueError(f"{nb_vars} spike variables are too many to enumerate (max 24)")
    leaves = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    values = list(leaves.values())
    total = 1 << nb_vars
    expected, mass = 0.0, 0.0
    grad = torch.zeros(sum(v.numel() for v in values), dtype=torch.float64)
    sg = grad.clone() if surrogate is not None else None
    extra = {name: grad.clone() for name in others}
    for start in range(0, total, chunk):
        stop = min(total, start + chunk)
        spikes = patterns(sizes, start, stop)
        op = Replay(spikes)
        loss = net.forward(leaves, op, stop - start)
        prob = pattern_probability(escape, op.inputs, spikes)
        chunk_mean = (prob * loss).sum()
        grad += flat(torch.autograd.grad(chunk_mean, values))[0]
        expected += float(chunk_mean.detach())
        mass += float(prob.detach().sum())
        if surrogate is not None:
            sg_loss = net.forward(leaves, Replay(spikes, surrogate), stop - start)
            sg += flat(torch.autograd.grad((prob.detach() * sg_loss).sum(), values))[0]
        for name, other in others.items():
            other_loss = net.forward(leaves, Replay(spikes, other), stop - start)
            grads = torch.autograd.grad((prob.detach() * other_loss).sum(), values)
            extra[name] += flat(grads)[0]
    return Exact(expected, grad, sg, mass, total, extra)
