"""Claim (c): on every sampled trial the SG is the smoothed stochastic derivative.

The SG comes from the library's backward pass (SpikeFn: surrogate derivative); the smoothed
stochastic derivative from forward-mode propagation in which each sampled spike carries the
tangent of its escape probability, escape'(x) x_dot. They agree to rounding when the
surrogate is the escape noise's derivative, and not otherwise.
"""

from __future__ import annotations

import math

import pytest
import torch

from sgtheory.scan import lif_scan
from sgtheory.spikes import SpikeFn, make_escape, make_surrogate
from sgtheory.theory import (
    coupled_sample,
    library_pair,
    matched_pair,
    sg_samples,
    smoothed_samples,
)
from sgtheory.theory.study import below_saturation, deep3, lif, max_unit_input

BETA, P0, DU = 5.0, 2 / 3, 0.133
N = 500


def unsaturated(build):
    """The network shrunk so that the exponential escape never saturates, on any pattern."""
    net, params = build()
    params = below_saturation(net, params)
    largest = max_unit_input(net, params)
    assert largest < DU * math.log(1 / P0), largest  # every input of every pattern
    return net, params


def networks(pair):
    if pair == "exponential":
        return [unsaturated(deep3), unsaturated(lif)]
    return [deep3(), lif()]


@pytest.mark.parametrize("pair", ["sigmoid", "exponential", "superspike"])
def test_sg_equals_smoothed_stochastic_derivative_on_every_trial(pair):
    escape, surrogate = matched_pair(pair, BETA, P0, DU)
    for net, params in networks(pair):
        sg = sg_samples(net, params, escape, surrogate, N, torch.Generator().manual_seed(7))
        smooth = smoothed_samples(net, params, escape, sg.spikes)
        assert sg.values.abs().max() > 1e-2  # not trivially zero
        assert (sg.values - smooth.values).abs().max() < 1e-10
        torch.testing.assert_close(smooth.losses, sg.losses, rtol=0, atol=0)
        assert sg.losses.unique().numel() > 1  # the trials differ


def test_raw_superspike_surrogate_is_off_by_beta_over_2_per_spike_layer():
    """Library SuperSpike surrogate = (2 / beta) escape': the SG of the last layer's weights
    is 2 / beta times the smoothed derivative, that of the first layer's (2 / beta)^3."""
    escape, surrogate, factor = library_pair("superspike", BETA, P0, DU)
    assert factor == BETA / 2
    net, params = deep3()
    sg = sg_samples(net, params, escape, surrogate, N, torch.Generator().manual_seed(7))
    smooth = smoothed_samples(net, params, escape, sg.spikes).values
    last = slice(-4, None)  # W3 (3 weights) and b3
    first = slice(0, 9)  # W1 (6) and b1 (3)
    torch.testing.assert_close(sg.values[:, last], smooth[:, last] / factor, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(
        sg.values[:, first], smooth[:, first] / factor**3, rtol=1e-10, atol=1e-14
    )
    assert (sg.values - smooth).abs().max() > 1e-2


@pytest.mark.parametrize("surrogate_name", ["superspike", "exponential", "multilayerspiker"])
def test_mismatched_pair_differs(surrogate_name):
    escape = make_escape("sigmoid", beta=BETA)
    surrogate = make_surrogate(surrogate_name, beta=BETA, p0=P0, delta_u=DU)
    for net, params in (deep3(), lif()):
        sg = sg_samples(net, params, escape, surrogate, N, torch.Generator().manual_seed(7))
        smooth = smoothed_samples(net, params, escape, sg.spikes)
        assert (sg.values - smooth.values).abs().max() > 1e-2


@pytest.mark.parametrize("name", ["sigmoid", "exponential", "superspike"])
def test_coupled_sampling_reproduces_escape_sample(name):
    """Spikes from explicit uniforms equal escape.sample's from the same generator state."""
    escape = make_escape(name, beta=BETA, p0=P0, delta_u=DU)
    x = torch.linspace(-0.5, 0.3, 4000, dtype=torch.float64).reshape(100, 40)
    library = escape.sample(x, torch.Generator().manual_seed(9))
    uniform = torch.rand(x.shape, generator=torch.Generator().manual_seed(9), dtype=x.dtype)
    torch.testing.assert_close(coupled_sample(escape, x, uniform), library, rtol=0, atol=0)
    assert 0 < library.mean() < 1


def test_fast_lif_scan_backward_is_the_smoothed_stochastic_derivative():
    """The library's fast scan (hand-written adjoint, as used in training) on its own
    sampled trials gives the smoothed stochastic derivative too (diff_reset, float64)."""
    net, params = lif()
    escape, surrogate = matched_pair("sigmoid", BETA, P0, DU)
    spike_fn = SpikeFn(escape, surrogate, torch.Generator().manual_seed(8))
    leaves = {k: v.expand(N, -1, -1).clone().requires_grad_() for k, v in params.items()}
    s, stages = net.current, []
    for layer in (1, 2):
        cur = (s @ leaves[f"W{layer}"].transpose(-1, -2)).contiguous()
        s, _ = lif_scan(cur, spike_fn, net.a_syn, net.a_mem, net.threshold, diff_reset=True)
        stages += list(s.detach().unbind(1))
    loss = s.sum(1) @ net.readout.double()
    grads = torch.autograd.grad(loss.sum(), list(leaves.values()))
    sg = torch.cat([g.reshape(N, -1) for g in grads], dim=1)
    smooth = smoothed_samples(net, params, escape, stages)
    torch.testing.assert_close(smooth.losses, loss.detach(), rtol=0, atol=0)
    assert sg.abs().max() > 1e-2
    assert (sg - smooth.values).abs().max() < 1e-10


def test_detached_reset_drops_the_same_path_on_both_sides():
    """With the reset detached (the training default) the SG is the smoothed derivative of
    the program whose reset carries no derivative; it differs from the full one."""
    net, params = lif()
    escape, surrogate = matched_pair("sigmoid", BETA, P0, DU)
    net.diff_reset = False
    sg = sg_samples(net, params, escape, surrogate, N, torch.Generator().manual_seed(7))
    assert (sg.values - smoothed_samples(net, params, escape, sg.spikes).values).abs().max() < 1e-10
    net.diff_reset = True
    assert (sg.values - smoothed_samples(net, params, escape, sg.spikes).values).abs().max() > 1e-3
