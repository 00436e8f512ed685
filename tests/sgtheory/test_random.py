"""The counter-based draws of `sgtheory.random` against independent facts: Random123's
published Philox4x32-10 known-answer vectors, an independent pure-Python Philox written
from its published definition, bitwise equality of the C and Triton (interpreter) draws
with the reference, and statistical tests with stated significance (uniformity of 10^7
draws, independence of neighbouring streams, keys, steps and elements, and a layer's spike
counts against the binomial law of its escape probability)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from sgtheory import random
from sgtheory.backends.native import build
from sgtheory.backends.native import lif as native
from sgtheory.lif import lif_scan_reference
from sgtheory.scan import lif_scan
from sgtheory.spikes import ESCAPE_NOISES, SpikeFn, make_escape, make_surrogate

needs_compiler = pytest.mark.skipif(build.compiler() is None, reason="no C compiler here")
P_REJECT = 1e-6  # significance of every statistical test here: rejected if p < 1e-6


# ------------------------------------------------------------------ the definition


# Random123's kat_vectors (philox4x32 10): counter words, key words, output words
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


def philox_python(counter, key, rounds: int = 10) -> tuple[int, int, int, int]:
    """Philox4x32 as Salmon et al. (2011) define it, on Python integers: per round
    (hi, lo) = M0 c0 and M1 c2, c <- (hi(M1 c2) ^ c1 ^ k0, lo(M1 c2), hi(M0 c0) ^ c3 ^ k1,
    lo(M0 c0)), the key bumped by the Weyl constants between rounds."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for r in range(rounds):
        if r > 0:
            k0, k1 = (k0 + 0x9E3779B9) % 2**32, (k1 + 0xBB67AE85) % 2**32
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 % 2**32, (p0 >> 32) ^ c3 ^ k1, p0 % 2**32
    return c0, c1, c2, c3


@pytest.mark.parametrize("counter, key, expected", KAT)
def test_philox_reproduces_the_published_known_answers(counter, key, expected):
    ours = random.philox4x32(tuple(torch.tensor(c) for c in counter), key)
    assert tuple(int(w) for w in ours) == expected
    assert philox_python(counter, key) == expected  # the independent one too
    assert philox_python(counter, key, rounds=9) != expected  # the test can fail


def test_draws_are_the_published_definition_at_every_counter_word():
    """u(seed, stream, step, element) = top 24 bits of word (step & 3) of Philox at counter
    (element, step >> 2, stream_lo, stream_hi), key (seed_lo, seed_hi), times 2^-24."""
    rng = np.random.default_rng(0)
    for _ in range(40):
        seed, stream = (int(rng.integers(0, 2**63)) * 2 + int(rng.integers(0, 2)) for _ in "ab")
        step, element = int(rng.integers(0, random.MAX_STEPS)), int(rng.integers(0, 2**32))
        counter = (element, step >> 2, stream % 2**32, stream >> 32)
        word = philox_python(counter, (seed % 2**32, seed >> 32))[step & 3]
        got = random.words(seed, stream, torch.tensor([step]), torch.tensor([element]))
        assert int(got) == word
        assert float(random.to_uniform(got)) == (word >> 8) / 2**24
        first = philox_python(
            (0, step >> 2, stream % 2**32, stream >> 32), (seed % 2**32, seed >> 32)
        )
        assert (
            float(random.uniform_reference(seed, stream, step, 1, (1,)))
            == (first[step & 3] >> 8) / 2**24
        )
    u = random.uniform_reference(3, 4, 0, 5, (7,))
    assert u.dtype == torch.float32 and 0 <= float(u.min()) and float(u.max()) < 1


def test_a_draw_is_a_pure_function_of_where_it_is_used():
    """Any block of steps and elements gives each (step, element) the same number."""
    whole = random.uniform_reference(9, 10, 5, 11, (3, 4))
    part = random.uniform_reference(9, 10, 7, 3, (3, 4))
    assert torch.equal(part, whole[2:5])
    assert torch.equal(random.Draws(9, 10, 5).uniform(2, 5, (3, 4)), part)
    assert not torch.equal(whole[0], whole[1])


@needs_compiler
def test_c_draws_equal_the_reference_at_any_first_step():
    for first in range(0, 9):
        assert torch.equal(
            native.philox_uniform(1, 2, first, 6, (5, 3)),
            random.uniform_reference(1, 2, first, 6, (5, 3)),
        )


DRAW_KERNEL = """
import triton
import triton.language as tl

from sgtheory.backends.triton import scan as triton_scan

lane = triton_scan.kernels(True)._philox_lane
BIAS = tl.constexpr(triton_scan.WORD_BIAS)


@triton.jit
def draw(out, first, k0, k1, s0, s1, N: tl.constexpr):
    n = tl.arange(0, N)
    step = first - BIAS
    word = lane(
        (n * 977).to(tl.uint32), (step >> 2).to(tl.uint32), step & 3, (k0 - BIAS).to(tl.uint32),
        (k1 - BIAS).to(tl.uint32), (s0 - BIAS).to(tl.uint32), (s1 - BIAS).to(tl.uint32),
    )
    tl.store(out + n, word.to(tl.int64))
"""


def test_triton_draws_equal_the_reference(monkeypatch, tmp_path):
    """The kernels' Philox (`_philox_lane`, uint32 products, run by Triton's interpreter)
    gives the reference's words for any step and element."""
    pytest.importorskip("triton")
    import importlib.util

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    path = tmp_path / "draw_kernel.py"
    path.write_text(DRAW_KERNEL)
    spec = importlib.util.spec_from_file_location("draw_kernel", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    seed, stream, bias = 2**64 - 3, 2**40 + 17, 2**32
    words = random.Draws(seed, stream).kernel_words()
    for step in (0, 1, 2, 3, 4, 5, 2**33 + 3):
        out = torch.zeros(16, dtype=torch.int64)
        module.draw[(1,)](out, step + bias, *(w + bias for w in words), N=16)
        expected = random.words(seed, stream, torch.tensor(step), torch.arange(16) * 977)
        assert torch.equal(out, expected)


# ------------------------------------------------------------------- streams


def test_streams_advance_and_their_state_restores():
    stream = random.Stream(5, "train_spikes", 0)
    first, second = stream.take(10), stream.take(10)
    assert (first.first_step, second.first_step, stream.offset) == (0, 10, 20)
    state = stream.get_state()
    third = stream.take(3)
    stream.set_state(state)
    assert stream.take(3) == third
    with pytest.raises(ValueError, match="int64 tensor of shape"):
        stream.set_state(torch.zeros(5056, dtype=torch.uint8))  # e.g. a torch.Generator's
    other = random.Stream(5, "train_spikes", 1)
    assert other.stream != stream.stream and other.seed == stream.seed
    assert random.stream_id("a", 1) == random.stream_id("a", 1) != random.stream_id("a", "1")


def test_a_generator_gives_each_draw_a_fresh_key_from_its_state():
    a, b = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    first = random.take(a, 5)
    assert first == random.take(b, 5)
    assert random.take(a, 5).seed != first.seed


def test_given_uniforms_feed_a_layer_its_spikes():
    """The test-only hook: explicit uniforms u give a spike iff u < prob(x), through the
    scan (the torch loop) and through the plain reference alike."""
    threshold, shape = 0.05, (3, 20, 40)  # batch, time, neurons
    escape = make_escape("sigmoid", beta=10.0)
    u = torch.rand(20, 3, 40, generator=torch.Generator().manual_seed(1))
    x = torch.full((3, 40), -threshold, dtype=torch.float64)
    p = escape.prob(x)  # constant potential 0 (no current): x = -threshold
    expected = (u.double() < p).float().transpose(0, 1)
    for scan in (lif_scan, lif_scan_reference):
        spike = SpikeFn(escape, make_surrogate("superspike"), random.GivenUniforms(u))
        spikes, _ = scan(torch.zeros(shape), spike, 0.9, 0.95, threshold)
        assert torch.equal(spikes, expected)
    assert 0.2 < expected.mean() < 0.5
    with pytest.raises(ValueError, match="steps of uniforms given"):
        random.GivenUniforms(u[:5]).take(6)


# ----------------------------------------------------------------- statistics


@needs_compiler
def test_ten_million_draws_are_uniform():
    """Chi-square over 1000 equal bins and Kolmogorov-Smirnov, both at p >= 1e-6; the values
    are multiples of 2^-24 in [0, 1)."""
    u = native.philox_uniform(2024, random.stream_id("uniformity"), 0, 40, (250_000,)).view(-1)
    assert u.numel() == 10**7
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    assert torch.equal(u * 2**24, torch.floor(u * 2**24))
    counts = torch.bincount((u * 1000).long(), minlength=1000).double().numpy()
    assert stats.chisquare(counts).pvalue >= P_REJECT
    sample = u[::10].double().numpy()  # 10^6 for the KS test (its cost is a sort)
    assert stats.kstest(sample, "uniform").pvalue >= P_REJECT
    # the test can fail: the same counts of squared draws are far from uniform
    assert stats.chisquare(np.bincount((u**2 * 1000).long().numpy(), minlength=1000)).pvalue < 1e-6


def _pair_chisquare(a: torch.Tensor, b: torch.Tensor, bins: int = 16) -> float:
    """p-value of independence of paired uniforms: chi-square of their bins x bins joint
    histogram against the uniform product law."""
    cell = (a * bins).long() * bins + (b * bins).long()
    counts = torch.bincount(cell.reshape(-1), minlength=bins * bins).double().numpy()
    return stats.chisquare(counts).pvalue


def _correlation_p(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sided p-value of Pearson's r of paired draws under independence (r sqrt(n) ~ N(0,1))."""
    r = np.corrcoef(a.double().reshape(-1).numpy(), b.double().reshape(-1).numpy())[0, 1]
    return 2 * stats.norm.sf(abs(r) * math.sqrt(a.numel()))


def test_neighbouring_streams_keys_steps_and_elements_are_independent():
    """Pairs of draws one stream id, one key, one step and one element apart (counters that
    differ in one bit or one unit): the joint histograms and correlations at p >= 1e-6."""
    n, s = 40_000, 2**32 - 1  # a stream whose low word carries over into the high one
    base = random.uniform_reference(7, s, 0, 25, (n,))
    pairs = {
        "stream": (base, random.uniform_reference(7, s + 1, 0, 25, (n,))),
        "key": (base, random.uniform_reference(8, s, 0, 25, (n,))),
        "step": (base[:-1], base[1:]),
        "element": (base[:, :-1], base[:, 1:]),
    }
    for name, (a, b) in pairs.items():
        assert _pair_chisquare(a, b) >= P_REJECT, name
        assert _correlation_p(a, b) >= P_REJECT, name
    assert _pair_chisquare(base, base) < 1e-6  # the test can fail: a draw with itself


@needs_compiler
@pytest.mark.parametrize("escape_name", [n for n, e in ESCAPE_NOISES.items() if n != "step"])
def test_spike_counts_of_a_layer_follow_its_escape_probability(monkeypatch, escape_name):
    """Without input a layer's potential stays 0, so x = -threshold at every step and each
    neuron's count over T steps is Binomial(T, prob(-threshold)): the mean and the variance
    of 40 000 neurons' counts within 5 standard errors (two-sided p about 6e-7)."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # the C scan
    escape = make_escape(escape_name, beta=10.0, p0=0.5, delta_u=0.2)
    threshold, steps, neurons = 0.1, 50, 40_000
    p = float(escape.prob(torch.tensor(-threshold, dtype=torch.float64)))
    assert 0.1 < p < 0.5
    spike = SpikeFn(escape, make_surrogate("superspike"), random.Stream(11, escape_name))
    spikes, _ = lif_scan(torch.zeros(8, steps, neurons // 8), spike, 0.9, 0.95, threshold)
    counts = spikes.sum(1).double().view(-1).numpy()
    mean, var = steps * p, steps * p * (1 - p)
    mu4 = var * (1 + 3 * (steps - 2) * p * (1 - p))  # 4th central moment of the binomial
    assert abs(counts.mean() - mean) < 5 * math.sqrt(var / neurons)
    assert abs(counts.var(ddof=1) - var) < 5 * math.sqrt((mu4 - var**2) / neurons)
    # and the steps are independent: neighbouring steps' spikes uncorrelated
    s = spikes.double()
    assert _correlation_p(s[:, :-1].cpu(), s[:, 1:].cpu()) >= P_REJECT


def test_the_uniform_conversion_is_stated():
    """Top 24 bits times 2^-24: 0 maps to 0, the largest word to 1 - 2^-24."""
    words = torch.tensor([0, 255, 256, 2**32 - 1])
    assert random.to_uniform(words).tolist() == [0.0, 0.0, 2**-24, 1 - 2**-24]
