"""Claim (a): for one stochastic neuron, E[SG] = d E[S] / dw when the surrogate is the
derivative of the escape noise, for all three matched pairs; a mismatched pair is rejected.

The spikes are drawn by the library: the SG through `SpikeFn` (whose forward is
`escape.sample`), the Monte Carlo derivative by REINFORCE on spikes from `escape.sample`.
Neither side uses a formula written in this file.
"""

from __future__ import annotations

import math

import pytest
import torch

from sgtheory.spikes import make_escape, make_surrogate
from sgtheory.theory import BinaryNet, library_pair, reinforce_samples, sg_samples

BETA, P0, DU = 5.0, 2 / 3, 0.133
N = 40_000
NEURON = BinaryNet((2, 1), torch.tensor([1.0, -0.6], dtype=torch.float64), torch.ones(1))
# x = w1 - 0.6 w2 - 0.1: 0.12 (sigmoid, fast sigmoid), -0.23 for the exponential escape,
# below its saturation point delta_u log(1 / p0) = 0.054 (above it, p' = 0, surrogate 1/delta_u)
INPUTS = {"sigmoid": (0.1, -0.2), "superspike": (0.1, -0.2), "exponential": (0.05, 0.3)}


def neuron_params(pair: str) -> dict:
    w = torch.tensor(INPUTS[pair], dtype=torch.float64).reshape(1, 1, 2)
    return {"W1": w, "b1": torch.full((1, 1), -0.1, dtype=torch.float64)}


def mc_derivative(escape, params, seed):
    """d E[S] / d(w, b) by REINFORCE with baseline on spikes drawn by escape.sample."""
    samples = reinforce_samples(
        NEURON, params, escape, N, torch.Generator().manual_seed(seed), True
    )
    return samples.mean, samples.standard_error


@pytest.mark.parametrize("pair", ["sigmoid", "exponential", "superspike"])
def test_expected_sg_equals_derivative_of_expected_output(pair):
    escape, surrogate, factor = library_pair(pair, BETA, P0, DU)
    params = neuron_params(pair)
    x = NEURON.inputs @ params["W1"].flatten() + params["b1"].item()
    assert pair != "exponential" or x < DU * math.log(1 / P0)
    sg = sg_samples(NEURON, params, escape, surrogate, N, torch.Generator().manual_seed(1))
    mc, mc_se = mc_derivative(escape, params, 2)
    se = torch.sqrt(mc_se**2 + (factor * sg.standard_error) ** 2)
    assert ((factor * sg.mean - mc).abs() < 4 * se).all()
    assert (mc.abs() > 10 * mc_se).all()  # the derivative is resolved, not just noise
    if factor != 1:  # SuperSpike: the raw SG is the derivative divided by beta / 2
        assert ((sg.mean - mc).abs() > 10 * se).all()


@pytest.mark.parametrize(
    "escape_name,surrogate_name", [("sigmoid", "superspike"), ("sigmoid", "exponential")]
)
def test_mismatched_pair_is_rejected(escape_name, surrogate_name):
    escape = make_escape(escape_name, beta=BETA, p0=P0, delta_u=DU)
    surrogate = make_surrogate(surrogate_name, beta=BETA, p0=P0, delta_u=DU)
    params = neuron_params("sigmoid")
    sg = sg_samples(NEURON, params, escape, surrogate, N, torch.Generator().manual_seed(1))
    mc, mc_se = mc_derivative(escape, params, 2)
    se = torch.sqrt(mc_se**2 + sg.standard_error**2)
    assert ((sg.mean - mc).abs() > 10 * se).all()


@pytest.mark.parametrize("name", ["sigmoid", "exponential", "superspike"])
def test_mean_spike_equals_escape_probability(name):
    escape = make_escape(name, beta=BETA, p0=P0, delta_u=DU)
    x = torch.tensor([-0.4, -0.1, 0.0, 0.04], dtype=torch.float64)
    gen = torch.Generator().manual_seed(4)
    spikes = escape.sample(x.expand(N, -1), gen)
    p = escape.prob(x)
    se = torch.sqrt(p * (1 - p) / N)
    assert ((spikes.mean(0) - p).abs() < 4 * se).all()
    assert (p > 0.01).all() and (p < 0.99).all()
