"""Claim (b) and the unbiased estimators, against exact enumeration (4 / 10 standard errors).

`deep3` and `lif` are the named networks of `sgtheory.theory.study` (spike probabilities
within [0.006, 0.992], so no estimator's standard error is dominated by events too rare to
be seen in N trials).
"""

from __future__ import annotations

import pytest
import torch

from sgtheory.theory import (
    BinaryNet,
    exact_moments,
    matched_pair,
    reinforce_samples,
    sg_samples,
    stochad_samples,
)
from sgtheory.theory.study import deep3, lif

ESCAPE, SURROGATE = matched_pair("sigmoid", 5.0, 2 / 3, 0.133)
N = 20_000


def within(samples, expected, bound=4.0):
    z = (samples.mean - expected).abs() / samples.standard_error
    return bool((z < bound).all()), float(z.max())


@pytest.mark.parametrize("build,n", [(deep3, 10_000), (lif, 8000)])
def test_unbiased_estimators_agree_with_the_exact_gradient(build, n):
    net, params = build()
    exact = exact_moments(net, params, ESCAPE).gradient
    gen = torch.Generator().manual_seed(11)
    estimators = {
        "reinforce": reinforce_samples(net, params, ESCAPE, n, gen),
        "reinforce_baseline": reinforce_samples(net, params, ESCAPE, n, gen, baseline=True),
        "stochastic_ad": stochad_samples(net, params, ESCAPE, n, gen),
    }
    for name, samples in estimators.items():
        assert (samples.standard_error > 0).all(), name
        ok, z = within(samples, exact)
        assert ok, (name, z)


def test_expected_sg_is_biased_on_deep3():
    """E[SG] (exact) differs from grad E[L] by more than 10 SE of an N-trial SG mean, and the
    sampled SG mean agrees with the enumerated E[SG] (so the bias is not an artefact)."""
    net, params = deep3()
    ex = exact_moments(net, params, ESCAPE, SURROGATE)
    sg = sg_samples(net, params, ESCAPE, SURROGATE, N, torch.Generator().manual_seed(12))
    ok, z = within(sg, ex.expected_sg)
    assert ok, z
    bias_in_se = (ex.expected_sg - ex.gradient).abs() / sg.standard_error
    assert bias_in_se.max() > 10
    # the output unit's own weights are unbiased (claim (a) holds for the last layer)
    torch.testing.assert_close(ex.expected_sg[-4:], ex.gradient[-4:], rtol=1e-12, atol=1e-15)


def test_one_layer_with_a_loss_linear_in_its_spikes_has_an_unbiased_sg():
    """Claim (a) for a whole layer: E[SG] = grad E[L] exactly when L = v . s (depth 1)."""
    net = BinaryNet((3, 4), torch.tensor([0.5, -1.0, 2.0]), torch.tensor([1.0, -2.0, 0.5, 3.0]))
    params = net.init_params(torch.Generator().manual_seed(0))
    ex = exact_moments(net, params, ESCAPE, SURROGATE)
    torch.testing.assert_close(ex.expected_sg, ex.gradient, rtol=1e-12, atol=1e-15)
    # a quadratic loss makes even one layer biased: (L(1) - L(0)) is not L'(s)
    net.loss, net.target = "mse", 1.0
    ex = exact_moments(net, params, ESCAPE, SURROGATE)
    assert (ex.expected_sg - ex.gradient).norm() > 0.1 * ex.gradient.norm()
