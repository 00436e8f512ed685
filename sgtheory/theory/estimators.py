"""Per-trial, per-parameter gradient estimates of E[L], all through the same network code.

Each estimator returns `Samples`: values (N, P), one row per sampled trial, one column per
parameter (flattened in the order of the params dict), and the trials' losses (N,).

* `sg_samples`: the library's spike operation (escape noise forward, surrogate backward);
* `reinforce_samples`: (L - b) d log P(trial) / d theta, b = 0 or the leave-one-out mean;
* `stochad_samples`: unbiased stochastic AD for Bernoulli spikes (Arya et al. 2022) with
  pruning: one alternative trajectory per trial and parameter, coupled by common uniforms;
* `smoothed_samples`: the smoothed stochastic derivative of given trials, by forward mode,
  conditioned on each spike's input or on its sampled outcome (`ops.smoothing_weight`).

Parameters have a leading dimension 1 (shared by all trials) or n (one set per trial: many
networks or initialisations side by side, as in the learning study).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.autograd.forward_ad as fwad

from sgtheory.spikes import SpikeFn
from sgtheory.theory.exact import flat
from sgtheory.theory.ops import (
    TINY,
    Coupled,
    Replay,
    Sample,
    SampleFixed,
    Smoothed,
    escape_jvp,
    forward_tangent,
    log_prob,
)


@dataclass
class Samples:
    """values (N, P) per trial and parameter; losses (N,); spikes per stage (optional)."""

    values: torch.Tensor
    losses: torch.Tensor
    spikes: list[torch.Tensor] | None = None

    @property
    def mean(self) -> torch.Tensor:
        return self.values.mean(0)

    @property
    def standard_error(self) -> torch.Tensor:
        return self.values.std(0) / self.values.shape[0] ** 0.5


def tile(v: torch.Tensor, times: int) -> torch.Tensor:
    """v (n, ...) repeated `times` times along the first dimension, block after block."""
    return v.repeat(times, *([1] * (v.dim() - 1)))


def per_trial(params: dict, n: int) -> dict:
    """One leaf copy of every parameter per trial: (n, ...), for per-trial gradients.

    Parameters with a leading dimension n are copied row by row.
    """
    return {
        k: v.detach().expand(n, *v.shape[1:]).clone().requires_grad_() for k, v in params.items()
    }


def nb_parameters(params: dict) -> int:
    return sum(v[0].numel() for v in params.values())


def sg_samples(net, params: dict, escape, surrogate, n: int, gen: torch.Generator) -> Samples:
    """The surrogate gradient of n trials sampled by `SpikeFn(escape, surrogate, gen)`."""
    leaves = per_trial(params, n)
    op = Sample(SpikeFn(escape, surrogate, gen))
    loss = net.forward(leaves, op, n)
    grads = torch.autograd.grad(loss.sum(), list(leaves.values()))
    return Samples(flat(grads), loss.detach(), op.detached_spikes())


def leave_one_out_mean(loss: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """For each trial the mean loss of the other trials of its group (n / groups in a row).

    Independent of the trial itself, so subtracting it keeps REINFORCE unbiased.
    """
    rows = loss.reshape(groups, -1)
    if rows.shape[1] < 2:
        raise ValueError("a leave-one-out baseline needs at least 2 trials per group")
    return ((rows.sum(1, keepdim=True) - rows) / (rows.shape[1] - 1)).reshape(-1)


def reinforce_samples(
    net,
    params: dict,
    escape,
    n: int,
    gen: torch.Generator,
    baseline: bool = False,
    groups: int = 1,
) -> Samples:
    """Score-function estimates (L - b) grad log P of n trials drawn by `escape.sample`.

    With `baseline`, b is the mean loss of the other trials of the same group
    (`leave_one_out_mean`; `groups` consecutive blocks of n / groups trials, e.g. one per
    network when parameters differ by row); otherwise b = 0.
    """
    leaves = per_trial(params, n)
    op = SampleFixed(escape, gen)
    loss = net.forward(leaves, op, n)
    if loss.requires_grad:
        raise ValueError("REINFORCE here needs a loss that depends on theta only via spikes")
    score = flat(
        torch.autograd.grad(log_prob(escape, op.inputs, op.spikes).sum(), list(leaves.values()))
    )
    b = leave_one_out_mean(loss, groups) if baseline else torch.zeros_like(loss)
    return Samples((loss - b)[:, None] * score, loss, op.detached_spikes())


def _directions(params: dict):
    """Yield (index, tangents) for every parameter element: the unit tangent basis."""
    j = 0
    for name, value in params.items():
        for i in range(value[0].numel()):
            tangents = {k: torch.zeros_like(v) for k, v in params.items()}
            tangents[name].view(value.shape[0], -1)[:, i] = 1.0
            yield j, tangents
            j += 1


def _dual_forward(net, params: dict, tangents: dict, op, n: int) -> torch.Tensor:
    """Run the network on dual parameters; return the loss's tangent (n,)."""
    duals = {k: fwad.make_dual(v.detach(), tangents[k]) for k, v in params.items()}
    return forward_tangent(net.forward(duals, op, n))


def smoothed_samples(
    net, params: dict, escape, spikes: list[torch.Tensor], conditioning: str = "input"
) -> Samples:
    """Smoothed stochastic derivative dL~/dtheta of given trials (spikes per stage).

    Forward mode: every spike keeps its sampled value and carries the tangent c escape'(x)
    x_dot, where x_dot collects the tangents of all paths into x (weights, earlier spikes,
    the membrane and the reset); c = 1 conditioned on the input ("input"), c = 1 / (2 (1 -
    p)) or 1 / (2 p) conditioned on the sampled outcome as well ("output").
    """
    n = spikes[0].shape[0]
    values = torch.zeros(n, nb_parameters(params), dtype=torch.float64)
    with fwad.dual_level():
        for j, tangents in _directions(params):
            op = Smoothed(escape, spikes, conditioning)
            values[:, j] = _dual_forward(net, params, tangents, op, n)
        loss = fwad.unpack_dual(net.forward(params, Replay(spikes), n)).primal
    return Samples(values, loss.detach(), spikes)


def bernoulli_rates(p: torch.Tensor, p_dot: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Rate of a Bernoulli spike's jump under s = [u < p]: p_dot / (1 - p) for a silent unit
    when p_dot > 0, -p_dot / p for a firing one when p_dot < 0, else 0."""
    up = torch.where(s == 0, p_dot.clamp(min=0) / (1 - p).clamp(min=TINY), 0.0)
    down = torch.where(s > 0, (-p_dot).clamp(min=0) / p.clamp(min=TINY), 0.0)
    return up + down


def jump_rates(net, params: dict, escape, spikes: list[torch.Tensor]) -> torch.Tensor:
    """(P, n, V): rate w at which each spike flips per unit change of each parameter.

    With the upstream spikes held, the input x of a unit moves by x_dot and its escape
    probability p by p_dot = escape'(x) x_dot. Under the coupling s = [x > F^-1(u)] a
    silent unit starts spiking at rate p_dot / (1 - p) when p_dot > 0, a spiking one stops
    at rate -p_dot / p when p_dot < 0 (Arya et al.'s Bernoulli stochastic derivative).
    """
    n = spikes[0].shape[0]
    rates = []
    with fwad.dual_level():
        for _, tangents in _directions(params):
            op = Replay(spikes)
            duals = {k: fwad.make_dual(v.detach(), tangents[k]) for k, v in params.items()}
            net.forward(duals, op, n)
            per_stage = []
            for x, s in zip(op.inputs, spikes):
                p, p_dot = escape_jvp(escape, x)
                per_stage.append(bernoulli_rates(p, p_dot, s).flatten(1))
            rates.append(torch.cat(per_stage, dim=1))
    return torch.stack(rates)


def stochad_samples(net, params: dict, escape, n: int, gen: torch.Generator) -> Samples:
    """Unbiased stochastic-AD estimates W (L(Y) - L(X)) of n trials, per parameter.

    X is the trial, drawn from uniforms u (common random numbers). Each unit i may flip at
    rate w_i (`jump_rates`); pruning keeps one alternative, i with probability w_i / W,
    W = sum_i w_i, and Y is the trial re-run from the same u with unit i flipped (units
    downstream follow; those upstream are unchanged). E[W (L(Y) - L(X))] = sum_i E[w_i
    (L(Y_i) - L(X))] = d E[L] / d theta. The continuous part delta is 0 here: the loss
    depends on theta only through the spikes.
    """
    sizes = net.stage_sizes()
    uniforms = [torch.rand((n, k), generator=gen, dtype=torch.float64) for k in sizes]
    op = Coupled(escape, uniforms)
    with torch.no_grad():
        loss = net.forward(params, op, n)
    spikes = op.detached_spikes()
    rates = jump_rates(net, params, escape, spikes)  # (P, n, V)
    nb_params, _, nb_vars = rates.shape
    total = rates.sum(-1)
    weights = torch.where(total[..., None] > 0, rates, 1.0).reshape(-1, nb_vars)
    choice = torch.multinomial(weights, 1, generator=gen).squeeze(1)
    flips = torch.nn.functional.one_hot(choice, nb_vars).bool().split(sizes, dim=1)
    alt_uniforms = [u.repeat(nb_params, 1) for u in uniforms]
    alt_params = {k: v if v.shape[0] == 1 else tile(v, nb_params) for k, v in params.items()}
    with torch.no_grad():
        alt = net.forward(alt_params, Coupled(escape, alt_uniforms, list(flips)), nb_params * n)
    values = total * (alt.reshape(nb_params, n) - loss)
    return Samples(values.T.contiguous(), loss, spikes)
