"""Exact enumeration: closed forms, finite differences, Monte Carlo of E[L], bookkeeping."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from sgtheory.spikes import SigmoidEscape, SigmoidSurrogate
from sgtheory.theory import BinaryNet, LIFNet, exact_moments, matched_pair, sg_samples
from sgtheory.theory.exact import patterns
from sgtheory.theory.networks import two_unit_chain
from sgtheory.theory.study import deep3, lif

BETA = 5.0
ESCAPE, SURROGATE = matched_pair("sigmoid", BETA, 2 / 3, 0.133)


def test_chain_matches_hand_worked_closed_forms():
    """E[L], its gradient and E[SG] of s1 -> s2 against formulas written out by hand.

    p1 = sig(beta u1), q1 = sig(beta (w2 + b2)), q0 = sig(beta b2), sig' = beta sig (1 - sig):
    E[L] = p1 q1 + (1 - p1) q0; dE/dw1 = x0 p1' (q1 - q0), dE/dw2 = p1 q1',
    dE/db2 = p1 q1' + (1 - p1) q0'; the SG replaces (q1 - q0) by w2 E[sig'(u2)].
    """
    w1, b1, w2, b2, x0 = 0.7, -0.2, -0.9, 0.4, 1.3
    net, params = two_unit_chain(w1, b1, w2, b2, x0)
    ex = exact_moments(net, params, SigmoidEscape(BETA), SigmoidSurrogate(BETA))
    sig = lambda u: 1 / (1 + math.exp(-BETA * u))  # noqa: E731
    dsig = lambda u: BETA * sig(u) * (1 - sig(u))  # noqa: E731
    p1, q1, q0 = sig(w1 * x0 + b1), sig(w2 + b2), sig(b2)
    dp1, dq1, dq0 = dsig(w1 * x0 + b1), dsig(w2 + b2), dsig(b2)
    mean_dq = p1 * dq1 + (1 - p1) * dq0
    exact = [x0 * dp1 * (q1 - q0), dp1 * (q1 - q0), p1 * dq1, mean_dq]
    sg = [x0 * dp1 * w2 * mean_dq, dp1 * w2 * mean_dq, p1 * dq1, mean_dq]
    assert ex.expected_loss == pytest.approx(p1 * q1 + (1 - p1) * q0, abs=1e-14)
    torch.testing.assert_close(ex.gradient, torch.tensor(exact, dtype=torch.float64))
    torch.testing.assert_close(ex.expected_sg, torch.tensor(sg, dtype=torch.float64))
    # the hidden weight's SG is biased (here by 60 %), the output unit's is not
    assert abs(ex.expected_sg[0] - ex.gradient[0]) > 0.5 * abs(ex.gradient[0])


def lif4():
    """The LIF network of `lif` over its first 4 steps (12 spike variables, 64 x cheaper)."""
    net, params = lif()
    return dataclasses.replace(net, current=net.current[:4]), params


@pytest.mark.parametrize("build", [deep3, lif4])
def test_gradient_matches_finite_differences_and_probabilities_sum_to_one(build):
    """Directional derivatives along random directions by central differences of E[L]."""
    net, params = build()
    ex = exact_moments(net, params, ESCAPE)
    assert ex.total_probability == pytest.approx(1.0, abs=1e-12)
    assert ex.nb_patterns == 2 ** sum(net.stage_sizes())
    gen, h = torch.Generator().manual_seed(3), 1e-5
    for _ in range(2 if build is deep3 else 1):
        dirs = {k: torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in params.items()}
        flat_dir = torch.cat([d.flatten() for d in dirs.values()])
        plus = {k: v + h * dirs[k] for k, v in params.items()}
        minus = {k: v - h * dirs[k] for k, v in params.items()}
        diff = exact_moments(net, plus, ESCAPE).expected_loss
        diff = (diff - exact_moments(net, minus, ESCAPE).expected_loss) / (2 * h)
        assert float(ex.gradient @ flat_dir) == pytest.approx(diff, rel=1e-6, abs=1e-10)


@pytest.mark.parametrize("build", [deep3, lif])
def test_enumeration_matches_monte_carlo_of_the_library_sampler(build):
    """E[L] by enumeration against the mean loss of trials drawn by SpikeFn (4 SE)."""
    net, params = build()
    ex = exact_moments(net, params, ESCAPE)
    n = 10_000
    losses = sg_samples(net, params, ESCAPE, SURROGATE, n, torch.Generator().manual_seed(5)).losses
    se = losses.std().item() / math.sqrt(n)
    assert abs(losses.mean().item() - ex.expected_loss) < 4 * se


def test_chunks_give_the_same_moments_and_patterns_are_all_distinct():
    current = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
    net = LIFNet((2, 2, 1), current, torch.tensor([1.0]), threshold=0.3)
    params = net.init_params(torch.Generator().manual_seed(1))
    whole = exact_moments(net, params, ESCAPE, SURROGATE)
    parts = exact_moments(net, params, ESCAPE, SURROGATE, chunk=1000)
    assert parts.expected_loss == pytest.approx(whole.expected_loss, rel=1e-12)
    torch.testing.assert_close(parts.gradient, whole.gradient, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(parts.expected_sg, whole.expected_sg, rtol=1e-12, atol=1e-15)
    bits = torch.cat(patterns([2, 3], 0, 32), dim=1)
    assert torch.unique(bits, dim=0).shape == (32, 5)


def test_too_many_variables_is_refused_with_a_clear_message():
    net = BinaryNet((2, 13, 13), torch.ones(2), torch.ones(13))
    params = net.init_params(torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="26 spike variables"):
        exact_moments(net, params, ESCAPE)
