"""Each estimator's check catches a worse estimator: a planted error (a factor, a sign, a
wrong conditioning) makes the check fail, and REINFORCE's baseline must reduce its variance.

Every check below is the one the other tests apply to the real estimator; each test shows
it passes for the real one and fails for every mutant (built by a wrapper or monkeypatching
the estimator's own building block). Checks at 4 standard errors fail a correct estimator
with probability below 1e-4 per parameter (normal approximation), and are seeded.
"""

from __future__ import annotations

import math
from functools import cache

import pytest
import torch

from sgtheory.theory import (
    Samples,
    ScaledSurrogate,
    estimators,
    exact_moments,
    matched_pair,
    ops,
    reinforce_samples,
    sg_samples,
    smoothed_samples,
    stochad_samples,
)
from sgtheory.theory.networks import two_unit_chain
from sgtheory.theory.ops import OutputSmoothing
from sgtheory.theory.study import cosine, deep3

ESCAPE, SURROGATE = matched_pair("sigmoid", 5.0, 2 / 3, 0.133)
N = 20_000
Z = 4.0


@cache
def deep3_gradient() -> torch.Tensor:
    net, params = deep3()
    return exact_moments(net, params, ESCAPE).gradient


def unbiased(samples: Samples, expected: torch.Tensor) -> bool:
    """Every parameter's sample mean within Z standard errors of `expected`."""
    se = samples.standard_error
    return bool((se > 0).all() and ((samples.mean - expected).abs() < Z * se).all())


def variance_sum(samples: Samples) -> tuple[float, float]:
    """Sum over parameters of the per-trial variance, and its standard error: the mean and
    SE of q_i = |v_i - mean|^2 over the trials."""
    q = (samples.values - samples.mean).pow(2).sum(1)
    return float(q.mean()), float(q.std() / math.sqrt(q.numel()))


def baseline_reduces_variance(with_baseline: Samples, without: Samples) -> bool:
    """The baseline's variance is below the plain one's by more than Z SE of the difference
    (independent trials; one-sided, false alarm below 4e-5)."""
    (a, sa), (b, sb) = variance_sum(without), variance_sum(with_baseline)
    return (a - b) > Z * math.hypot(sa, sb)


# ------------------------------------------------------------------ REINFORCE's baseline


def test_baseline_reduces_variance_and_a_flipped_or_scaled_baseline_fails(monkeypatch):
    net, params = deep3()
    plain = reinforce_samples(net, params, ESCAPE, N, torch.Generator().manual_seed(3))
    real = reinforce_samples(net, params, ESCAPE, N, torch.Generator().manual_seed(4), True)
    assert baseline_reduces_variance(real, plain)
    assert unbiased(real, deep3_gradient()) and unbiased(plain, deep3_gradient())
    loo = estimators.leave_one_out_mean
    mutants = {
        "L + b": lambda loss, groups=1: -loo(loss, groups),
        "L - 3b": lambda loss, groups=1: 3 * loo(loss, groups),
    }
    for name, mutant in mutants.items():
        monkeypatch.setattr(estimators, "leave_one_out_mean", mutant)
        worse = reinforce_samples(net, params, ESCAPE, N, torch.Generator().manual_seed(4), True)
        assert unbiased(worse, deep3_gradient()), name  # still unbiased: only the variance
        assert not baseline_reduces_variance(worse, plain), name
    # a baseline that uses the trial's own loss is biased (here: every estimate 0)
    monkeypatch.setattr(estimators, "leave_one_out_mean", lambda loss, groups=1: loss)
    own = reinforce_samples(net, params, ESCAPE, N, torch.Generator().manual_seed(4), True)
    assert not unbiased(own, deep3_gradient())


# ------------------------------------------------------------- unbiased estimators' check


def reinforce_run(net, params, seed):
    return reinforce_samples(net, params, ESCAPE, N, torch.Generator().manual_seed(seed))


def stochad_run(net, params, seed):
    """5000 trials: every mutant below is more than 10 SE off (the real one 2.6 at most)."""
    return stochad_samples(net, params, ESCAPE, 5000, torch.Generator().manual_seed(seed))


LOG_PROB = estimators.log_prob
RATES = estimators.bernoulli_rates
MUTANTS = {
    "reinforce": (
        reinforce_run,
        "log_prob",
        {
            "factor 0.8": lambda e, x, s: 0.8 * LOG_PROB(e, x, s),
            "sign": lambda e, x, s: -LOG_PROB(e, x, s),
            "other outcome's probability": lambda e, x, s: LOG_PROB(e, x, [1 - v for v in s]),
        },
    ),
    "stochastic_ad": (
        stochad_run,
        "bernoulli_rates",
        {
            "factor 0.8": lambda p, p_dot, s: 0.8 * RATES(p, p_dot, s),
            "sign of p_dot": lambda p, p_dot, s: RATES(p, -p_dot, s),
            "rate not conditioned on the outcome (p_dot, not p_dot / (1 - p))": (
                lambda p, p_dot, s: (
                    torch.where(s == 0, p_dot.clamp(min=0), 0.0)
                    + torch.where(s > 0, (-p_dot).clamp(min=0), 0.0)
                )
            ),
        },
    ),
}


@pytest.mark.parametrize("estimator", list(MUTANTS))
def test_unbiased_estimator_check_fails_every_planted_error(estimator, monkeypatch):
    run, block, mutants = MUTANTS[estimator]
    net, params = deep3()
    assert unbiased(run(net, params, 21), deep3_gradient())
    for name, mutant in mutants.items():
        monkeypatch.setattr(estimators, block, mutant)
        assert not unbiased(run(net, params, 21), deep3_gradient()), name
        monkeypatch.undo()


# ------------------------------------------------------------------ smoothings' checks


def sg_is_input_smoothing(surrogate) -> bool:
    """The SG (library backward pass) equals the forward-mode input-conditioned smoothed
    derivative on every one of 300 trials of deep3 (1e-10)."""
    net, params = deep3()
    sg = sg_samples(net, params, ESCAPE, surrogate, 300, torch.Generator().manual_seed(7))
    smooth = smoothed_samples(net, params, ESCAPE, sg.spikes, "input")
    return bool((sg.values - smooth.values).abs().max() < 1e-10)


def test_sg_check_fails_a_wrong_factor_sign_or_conditioning():
    assert sg_is_input_smoothing(SURROGATE)
    mutants = {
        "factor 1.05": ScaledSurrogate(SURROGATE, 1.05),
        "sign": ScaledSurrogate(SURROGATE, -1.0),
        "output conditioning": OutputSmoothing(ESCAPE),
    }
    for name, mutant in mutants.items():
        assert not sg_is_input_smoothing(mutant), name


WEIGHT = ops.smoothing_weight
WEIGHT_MUTANTS = {
    "factor 1.05": lambda p, s, c: 1.05 * WEIGHT(p, s, c),
    "factor 2 (rates p'/(1-p), p'/p unhalved)": lambda p, s, c: 2 * WEIGHT(p, s, c),
    "sign": lambda p, s, c: -WEIGHT(p, s, c),
    "conditioning swapped": lambda p, s, c: WEIGHT(p, s, "output" if c == "input" else "input"),
    "outcomes swapped": lambda p, s, c: WEIGHT(p, 1 - s, c),
}


def test_input_smoothing_check_fails_every_planted_error(monkeypatch):
    """The forward-mode input-conditioned estimator must equal the library's SG per trial
    (the library surrogate does not use `smoothing_weight`)."""
    assert sg_is_input_smoothing(SURROGATE)
    for name, mutant in WEIGHT_MUTANTS.items():
        if name == "outcomes swapped":  # input conditioning ignores the outcome
            continue
        monkeypatch.setattr(ops, "smoothing_weight", mutant)
        assert not sg_is_input_smoothing(SURROGATE), name
        monkeypatch.undo()


def output_smoothing_matches_chain(expected: torch.Tensor) -> bool:
    """Forward-mode output-conditioned estimates on the two-unit chain: the mean of 20 000
    trials within 4 SE of the hand-worked closed form (trapezoid rule)."""
    net, params = two_unit_chain()
    sg = sg_samples(net, params, ESCAPE, SURROGATE, N, torch.Generator().manual_seed(9))
    return unbiased(smoothed_samples(net, params, ESCAPE, sg.spikes, "output"), expected)


def test_output_smoothing_check_fails_every_planted_error(monkeypatch, chain_means):
    assert output_smoothing_matches_chain(chain_means["output"])
    for name, mutant in WEIGHT_MUTANTS.items():
        if name == "factor 1.05":  # the chain's SE resolves 10 %, not 5 %: see below
            continue
        monkeypatch.setattr(ops, "smoothing_weight", mutant)
        assert not output_smoothing_matches_chain(chain_means["output"]), name
        monkeypatch.undo()
    # a 5 % factor in the forward mode breaks the per-trial identity with the reverse mode
    net, params = deep3()
    rev = sg_samples(net, params, ESCAPE, OutputSmoothing(ESCAPE), 300, torch.Generator())
    monkeypatch.setattr(ops, "smoothing_weight", WEIGHT_MUTANTS["factor 1.05"])
    fwd = smoothed_samples(net, params, ESCAPE, rev.spikes, "output")
    assert (rev.values - fwd.values).abs().max() > 1e-3


# ------------------------------------------------------------------------------ cosine


def test_cosine_is_exact_for_tiny_and_huge_gradients():
    """No clamping: the cosine of vectors scaled by 1e-20 (norms far below torch's 1e-8
    clamp) or 1e150 is that of the unscaled vectors; a zero vector gives NaN."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(25, generator=gen, dtype=torch.float64)
    b = a + 0.7 * torch.randn(25, generator=gen, dtype=torch.float64)
    reference = float(a @ b / (a.norm() * b.norm()))
    for scale_a, scale_b in ((1e-20, 1.0), (1e-20, 1e-17), (1e150, 1e150), (6.5e-17, 1.6e-9)):
        assert cosine(scale_a * a, scale_b * b) == pytest.approx(reference, rel=1e-14)
    clamped = torch.nn.functional.cosine_similarity(1e-20 * a, b, dim=0)
    assert abs(float(clamped) - reference) > 0.1  # what the clamp would have given
    assert math.isnan(cosine(torch.zeros(3), torch.ones(3)))
