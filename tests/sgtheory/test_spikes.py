"""Spike operation: surrogates vs analytic derivatives, escape noise vs its probability,
the single-neuron theorem, float32 robustness, seeding, and per-layer independence."""

import math

import pytest
import torch

from sgtheory import random
from sgtheory.backends.native import build
from sgtheory.backends.native import lif as native
from sgtheory.errors import ConfigError
from sgtheory.spikes import (
    ESCAPE_NOISES,
    METHODS,
    SURROGATES,
    SpikeFn,
    log_f32,
    logit_f32,
    make_escape,
    make_surrogate,
    method_pair,
    spike_fn_for_method,
)

BETA, P0, DU = 7.0, 2 / 3, 0.133
X = torch.linspace(-1.5, 1.5, 601, dtype=torch.float64)

# Smooth primitives written independently of the library: d/dx primitive = surrogate.
PRIMITIVES = {
    "superspike": lambda x: x / (BETA * x.abs() + 1.0),
    "sigmoid": lambda x: 1.0 / (1.0 + torch.exp(-BETA * x)),
    "scaled_sigmoid": lambda x: 1.0 / (1.0 + torch.exp(-BETA * x)) / BETA,
    "exponential": lambda x: P0 * torch.exp(x / DU),
}


def central_difference(f, x, h=1e-6):
    return (f(x + h) - f(x - h)) / (2 * h)


@pytest.mark.parametrize("name", sorted(PRIMITIVES))
def test_surrogate_equals_derivative_of_its_primitive(name):
    surrogate = make_surrogate(name, beta=BETA, p0=P0, delta_u=DU)
    x = X[X < DU * math.log(1 / P0) - 1e-3] if name == "exponential" else X
    x = x[x.abs() > 1e-4]  # the superspike primitive has a kink in its 2nd derivative at 0
    expected = central_difference(PRIMITIVES[name], x)
    got = surrogate.derivative(x, torch.zeros_like(x))
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-8)


def test_multilayerspiker_surrogate_is_the_spike_train():
    spikes = (torch.arange(10) % 3 == 0).double()
    got = make_surrogate("multilayerspiker").derivative(torch.randn(10), spikes)
    assert torch.equal(got, spikes)


@pytest.mark.parametrize(
    "escape,surrogate,factor",
    [
        ("sigmoid", "sigmoid", 1.0),
        ("exponential", "exponential", 1.0),
        ("superspike", "superspike", BETA / 2),
    ],
)
def test_matched_surrogate_is_derivative_of_escape_probability(escape, surrogate, factor):
    esc = make_escape(escape, beta=BETA, p0=P0, delta_u=DU)
    sur = make_surrogate(surrogate, beta=BETA, p0=P0, delta_u=DU)
    x = X[X < DU * math.log(1 / P0) - 1e-3] if escape == "exponential" else X
    x = x[x.abs() > 1e-4]  # central differences lose accuracy at the kink of |x|
    expected = central_difference(esc.prob, x)
    got = factor * sur.derivative(x, torch.zeros_like(x))
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-8)


def test_a_swapped_surrogate_is_not_the_escape_derivative():
    esc = make_escape("sigmoid", beta=BETA)
    wrong = make_surrogate("superspike", beta=BETA).derivative(X, X)
    assert (wrong - central_difference(esc.prob, X)).abs().max() > 0.1


ESCAPE_FUNCTIONS = {  # independent formulas of the escape probabilities
    "sigmoid": lambda x: 1 / (1 + math.exp(-BETA * x)),
    "exponential": lambda x: min(1.0, P0 * math.exp(x / DU)),
    "superspike": lambda x: 0.5 * (1 + BETA * x / (1 + BETA * abs(x))),
    "step": lambda x: float(x > 0),
}


@pytest.mark.parametrize("name", sorted(ESCAPE_NOISES))
def test_empirical_spike_probability_within_binomial_bound(name):
    esc = make_escape(name, beta=BETA, p0=P0, delta_u=DU)
    points = torch.tensor([-0.5, -0.2, -0.05, 0.0, 0.03, 0.1, 0.4])
    n = 40000
    gen = torch.Generator().manual_seed(5)
    x = points.repeat(n, 1)
    p_hat = esc.sample(x, gen).mean(dim=0)
    for i, xi in enumerate(points.tolist()):
        p = ESCAPE_FUNCTIONS[name](xi)
        bound = 5 * math.sqrt(p * (1 - p) / n) + 1e-12
        assert abs(p_hat[i].item() - p) <= bound, (name, xi, p_hat[i].item(), p)


def test_single_neuron_sg_is_not_matched_with_a_mismatched_surrogate():
    beta = 5.0
    x = torch.tensor([0.2], dtype=torch.float64, requires_grad=True)
    spike = SpikeFn(make_escape("sigmoid", beta=beta), make_surrogate("superspike", beta=beta))
    spike(x).backward()
    true = beta * torch.sigmoid(beta * x) * (1 - torch.sigmoid(beta * x))
    assert abs(x.grad.item() - true.item()) > 0.1


def test_float32_finite_and_correct_for_extreme_inputs():
    x32 = torch.cat([torch.linspace(-1e4, 1e4, 20001), torch.tensor([-3e38, 3e38])])
    x64 = x32.double()
    spikes = (x32 > 0).float()
    for name in ESCAPE_NOISES:
        p32 = make_escape(name, beta=10, p0=P0, delta_u=DU).prob(x32)
        p64 = make_escape(name, beta=10, p0=P0, delta_u=DU).prob(x64)
        assert torch.isfinite(p32).all(), name
        assert ((p32 >= 0) & (p32 <= 1)).all(), name
        torch.testing.assert_close(p32.double(), p64, rtol=1e-5, atol=1e-6)
    for name in SURROGATES:
        d32 = make_surrogate(name, beta=10, p0=P0, delta_u=DU).derivative(x32, spikes)
        d64 = make_surrogate(name, beta=10, p0=P0, delta_u=DU).derivative(x64, spikes.double())
        assert torch.isfinite(d32).all(), name
        assert (d32 >= 0).all(), name
        torch.testing.assert_close(d32.double(), d64, rtol=1e-5, atol=1e-6)


def test_method_table_matches_the_paper():
    assert method_pair("superspike") == ("step", "superspike")
    assert method_pair("superspike", sigm=True) == ("step", "sigmoid")
    assert method_pair("stochasticsuperspike") == ("sigmoid", "superspike")
    assert method_pair("exponentialstochasticsuperspike") == ("exponential", "superspike")
    assert method_pair("realstochasticsuperspike") == ("superspike", "superspike")
    assert method_pair("multilayerspiker") == ("exponential", "multilayerspiker")
    assert method_pair("multilayerspiker", sigm=True) == ("sigmoid", "multilayerspiker")
    assert method_pair("scaled_sigmoid", sigm=True) == ("sigmoid", "scaled_sigmoid")
    assert len(METHODS) == 6


@pytest.mark.parametrize(
    "call,names",
    [
        (lambda: make_escape("gauss"), ESCAPE_NOISES),
        (lambda: make_surrogate("tanh"), SURROGATES),
        (lambda: spike_fn_for_method("bogus"), METHODS),
    ],
)
def test_unknown_names_list_the_valid_ones(call, names):
    with pytest.raises(ConfigError) as err:
        call()
    for name in names:
        assert name in str(err.value)


def test_bad_parameters_are_rejected():
    with pytest.raises(ConfigError, match="beta"):
        make_escape("sigmoid", beta=-1.0)
    with pytest.raises(ConfigError, match="p0"):
        make_escape("exponential", p0=1.5)


def test_same_seed_same_spikes_and_gradients_different_seed_different_spikes():
    def run(seed):
        gen = torch.Generator().manual_seed(seed)
        spike = spike_fn_for_method("stochasticsuperspike", generator=gen)
        x = torch.linspace(-0.3, 0.3, 5000, requires_grad=True)
        s = spike(x)
        (s * torch.arange(5000.0)).sum().backward()
        return s.detach(), x.grad

    s1, g1 = run(1)
    s2, g2 = run(1)
    s3, _ = run(2)
    assert torch.equal(s1, s2) and torch.equal(g1, g2)
    assert not torch.equal(s1, s3)


def test_two_spike_fns_with_different_settings_do_not_interfere():
    x = torch.linspace(-0.5, 0.5, 11, dtype=torch.float64, requires_grad=True)
    a = spike_fn_for_method("superspike", beta=10)
    b = spike_fn_for_method("superspike", beta=2, sigm=True)
    (a(x).sum() + 0 * b(x).sum()).backward()
    expected = 1 / (10 * x.detach().abs() + 1) ** 2
    torch.testing.assert_close(x.grad, expected)
    x.grad = None
    b(x).sum().backward()
    s = torch.sigmoid(2 * x.detach())
    torch.testing.assert_close(x.grad, 2 * s * (1 - s))


def _ulps(approx: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """|approx - exact| in units of the float32 spacing at exact."""
    single = exact.float().abs()
    spacing = torch.nextafter(single, torch.tensor(math.inf)).double() - single.double()
    return (approx.double() - exact).abs() / spacing


def test_logit_and_log_of_basic_operations_for_every_draw():
    """logit_f32 and log_f32 (the firing points every backend computes alike) within 2 ulp
    of the exact value for all 2^24 draws k 2^-24 (log also of u / p0), -inf at u = 0."""
    u = torch.arange(0, 2**24, dtype=torch.float32) / 2**24
    logit = logit_f32(u)
    assert _ulps(logit[1:], torch.logit(u[1:].double())).max() <= 2.0
    assert logit[0] == -math.inf
    for p0 in (1.0, P0, 0.1):
        q = u[1:] / p0
        exact = torch.log(q.double())
        nonzero = exact != 0
        assert _ulps(log_f32(q)[nonzero], exact[nonzero]).max() <= 2.0
    assert log_f32(torch.tensor([0.0, 1.0])).tolist() == [-math.inf, 0.0]


@pytest.mark.skipif(build.compiler() is None, reason="no C compiler here")
def test_c_logit_points_are_the_basic_operations_bitwise():
    """The C kernel's logit (native.logit_points, which the torch loop runs on the CPU for
    SigmoidEscape.prob_inverse) and logit_f32 (torch operations): the same numbers for
    every draw."""
    u = torch.arange(0, 2**24, dtype=torch.float32) / 2**24
    assert torch.equal(native.logit_points(u, 1.0), logit_f32(u))
    assert torch.equal(native.logit_points(u, 7.0), logit_f32(u) / 7.0)


@pytest.mark.parametrize("name", [n for n in ESCAPE_NOISES if n != "step"])
def test_spikes_from_a_stream_are_the_rule_applied_to_its_draws(name):
    """SpikeFn with a Stream: step by step the stream's uniforms (random.uniform_reference),
    a spike iff x > prob_inverse(u); the stream advances one step per call."""
    escape = make_escape(name, beta=BETA, p0=P0, delta_u=DU)
    stream = random.Stream(3, "layer", 0)
    spike = SpikeFn(escape, make_surrogate("superspike"), stream)
    x = torch.linspace(-0.3, 0.3, 999).view(9, 111)
    for step in range(3):
        u = random.uniform_reference(3, random.stream_id("layer", 0), step, 1, (9, 111))[0]
        assert torch.equal(spike(x), (x > escape.prob_inverse(u)).float())
    assert stream.offset == 3
    assert torch.equal(escape.sample(x, random.Stream(3, "layer", 0)), spike.escape.spikes(
        x, random.uniform_reference(3, random.stream_id("layer", 0), 0, 1, (9, 111))[0]
    ))  # fmt: skip
