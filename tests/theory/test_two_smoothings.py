"""The two smoothed stochastic derivatives: conditioned on each spike's input (= the SG, claim
(c)) and on its sampled outcome (StochasticAD.jl's Bernoulli smoothing rule).

Independent facts: the two-unit chain's closed forms (written out by hand below), Monte
Carlo means of the forward-mode estimator against them and against enumeration, and the
reverse-mode surrogate `OutputSmoothing` against the forward-mode propagation per trial.
"""

from __future__ import annotations

import pytest
import torch

from sgtheory.theory import exact_moments, matched_pair, sg_samples, smoothed_samples
from sgtheory.theory.networks import two_unit_chain
from sgtheory.theory.ops import OutputSmoothing, smoothing_weight
from sgtheory.theory.study import deep3, lif

ESCAPE, SURROGATE = matched_pair("sigmoid", 5.0, 2 / 3, 0.133)


def test_weights_average_to_one_over_the_outcome():
    p = torch.tensor([1e-3, 0.2, 0.5, 0.9], dtype=torch.float64)
    ones, zeros = torch.ones_like(p), torch.zeros_like(p)
    firing, silent = smoothing_weight(p, ones, "output"), smoothing_weight(p, zeros, "output")
    torch.testing.assert_close(firing, 1 / (2 * p))
    torch.testing.assert_close(p * firing + (1 - p) * silent, ones)
    torch.testing.assert_close(smoothing_weight(p, ones, "input"), ones)


def test_chain_closed_forms_of_both_smoothings(chain_means):
    """Enumeration with the library surrogate and with `OutputSmoothing` against the hand-
    worked formulas; Monte Carlo of the forward-mode estimator within 4 SE of them."""
    net, params = two_unit_chain()
    means = chain_means
    ex = exact_moments(net, params, ESCAPE, SURROGATE, others={"output": OutputSmoothing(ESCAPE)})
    torch.testing.assert_close(ex.gradient, means["gradient"])
    torch.testing.assert_close(ex.expected_sg, means["input"])
    torch.testing.assert_close(ex.expected_others["output"], means["output"])
    sg = sg_samples(net, params, ESCAPE, SURROGATE, 20_000, torch.Generator().manual_seed(3))
    out = smoothed_samples(net, params, ESCAPE, sg.spikes, "output")
    assert ((out.mean - means["output"]).abs() < 4 * out.standard_error).all()
    # the trapezoid is nearer the finite difference than the p-weighted slope, here
    gap_out = abs(means["output"][0] - means["gradient"][0])
    assert gap_out < abs(means["input"][0] - means["gradient"][0])


@pytest.mark.parametrize("build", [deep3, lif])
def test_output_conditioned_forward_mode_equals_its_reverse_mode_surrogate(build):
    """Per trial: forward-mode propagation with outcome-conditioned tangents equals the
    backward pass of `OutputSmoothing`, on the same spikes; and it differs from the SG."""
    net, params = build()
    gen = torch.Generator().manual_seed(7)
    rev = sg_samples(net, params, ESCAPE, OutputSmoothing(ESCAPE), 300, gen)
    fwd = smoothed_samples(net, params, ESCAPE, rev.spikes, "output")
    assert rev.values.abs().max() > 1e-2
    assert (rev.values - fwd.values).abs().max() < 1e-10
    sg = smoothed_samples(net, params, ESCAPE, rev.spikes, "input")
    assert (sg.values - fwd.values).abs().max() > 0.1  # claim (c) is about the input one


def test_output_conditioned_sample_mean_agrees_with_its_enumerated_mean_on_deep3():
    """N trials of the forward-mode estimator against the enumerated mean (4 SE); both
    smoothings are biased there, by different amounts."""
    net, params = deep3()
    ex = exact_moments(net, params, ESCAPE, SURROGATE, others={"output": OutputSmoothing(ESCAPE)})
    sg = sg_samples(net, params, ESCAPE, SURROGATE, 8000, torch.Generator().manual_seed(5))
    out = smoothed_samples(net, params, ESCAPE, sg.spikes, "output")
    mean = ex.expected_others["output"]
    assert ((out.mean - mean).abs() < 4 * out.standard_error).all()
    rel = lambda m: float((m - ex.gradient).norm() / ex.gradient.norm())  # noqa: E731
    assert 0.005 < rel(mean) < rel(ex.expected_sg)
