"""Randman: determinism, shapes, spike counts and timing window, the formula, its spectrum,
the step mapping, the split and the task's difficulty."""

import math

import numpy as np
import pytest
import torch

from sgtheory.data import make_randman, same_set, split_dataset
from sgtheory.data.randman import (
    eval_random_manifold,
    random_function_params,
    rescale,
    spectral_cutoff,
    spike_steps,
)
from sgtheory.errors import ConfigError

SMALL = dict(nb_classes=4, nb_units=12, nb_steps=40, nb_samples=60, seed=3)


def steps_of(x: torch.Tensor) -> np.ndarray:
    """(N, T, U) rasters with one spike per unit -> (N, U) spike step indices."""
    return x.argmax(dim=1).numpy()


def test_same_seed_same_data_other_seed_other_data():
    x1, y1 = make_randman(**SMALL)
    x2, y2 = make_randman(**SMALL)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x3, _ = make_randman(**{**SMALL, "seed": 4})
    assert not torch.equal(x1, x3)


def test_shapes_dtypes_and_balanced_labels():
    x, y = make_randman(**SMALL)
    assert x.shape == (4 * 60, 40, 12) and x.dtype == torch.float32
    assert y.shape == (240,) and y.dtype == torch.int64
    assert torch.equal(torch.bincount(y), torch.full((4,), 60))
    assert set(torch.unique(x).tolist()) <= {0.0, 1.0}


def test_one_spike_per_unit_and_sample():
    x, _ = make_randman(**SMALL)
    assert torch.all(x.sum(dim=1) == 1)


def test_two_spikes_per_unit_except_collisions():
    x, _ = make_randman(**{**SMALL, "nb_spikes": 2})
    counts = x.sum(dim=1)
    assert set(torch.unique(counts).tolist()) <= {1.0, 2.0}
    assert (counts == 2).float().mean() > 0.8  # collisions in a 20-step window are rare


@pytest.mark.parametrize("nb_steps,step_frac", [(40, 0.5), (17, 0.3), (10, 1.0)])
def test_spikes_lie_in_first_step_frac_and_fill_it(nb_steps, step_frac):
    x, y = make_randman(**{**SMALL, "nb_steps": nb_steps, "step_frac": step_frac})
    steps = steps_of(x)
    last = int(nb_steps * step_frac)  # v = 1.0 lands here (dropped if it is nb_steps)
    assert steps.max() <= min(last, nb_steps - 1)
    # values are min/max rescaled per class and unit: each class starts the window at step 0
    # and reaches its end (last, or last - 1 where the float32 range is below 2; with
    # step_frac 1 the maximum's spike at step nb_steps is dropped)
    for c in range(4):
        s = steps[y.numpy() == c]
        assert np.all(s.min(axis=0) == 0)
        if last < nb_steps:
            assert np.all(s.max(axis=0) >= last - 1)


def test_step_mapping_by_hand():
    """int(nb_steps * step_frac * v) of the float32 rescale (y - min) / (max - min + 1e-7).

    Range 3: 3 + 1e-7 rounds to 3 in float32 (half an ulp is 1.2e-7), so v = 0, 0.5, 1 and
    the steps are 0, 25, 50. Range 1.5: 1.5 + 1e-7 rounds up to 1.5 + 2^-23, v_max =
    1.5 / (1.5 + 2^-23) rounds to 1 - 2^-24, 50 v_max = 49.999997: step 49. A constant
    unit maps to step 0. With step_frac 1, v = 1 is step 100 = nb_steps: outside the input.
    """
    y = np.array([[0.0, 0.0, 7.0], [1.5, 0.75, 7.0], [3.0, 1.5, 7.0]])
    v = rescale(y)
    assert v.dtype == np.float32
    assert v[2, 0] == 1.0 and v[2, 1] == np.float32(1 - 2**-24)
    np.testing.assert_array_equal(spike_steps(v, 100, 0.5), [[0, 0, 0], [25, 24, 0], [50, 49, 0]])
    assert spike_steps(v, 100, 1.0)[2, 0] == 100
    x, _ = make_randman(**{**SMALL, "nb_steps": 10, "step_frac": 1.0})
    assert x.shape[1] == 10 and x.sum(dim=1).min() >= 0  # step 10 events are dropped
    assert (x.sum(dim=1) == 0).any()  # ... which leaves the largest value's unit silent


def test_default_data_reaches_step_50_like_the_original():
    """With the defaults' window of 50 steps the class maxima land on step 50 (v = 1.0)."""
    x, y = make_randman(**{**SMALL, "nb_steps": 100, "step_frac": 0.5, "nb_samples": 200})
    steps = steps_of(x)
    assert steps.max() == 50
    for c in range(4):  # per class and unit the maximum is at 50, or 49 for float32 ranges < 2
        assert set(np.unique(steps[y.numpy() == c].max(axis=0))) <= {49, 50}


def test_class_data_does_not_depend_on_other_classes():
    x2, _ = make_randman(**{**SMALL, "nb_classes": 2, "shuffle": False})
    x4, y4 = make_randman(**{**SMALL, "nb_classes": 4, "shuffle": False})
    assert torch.equal(x2, x4[:120]) and torch.equal(y4[:60], torch.zeros(60, dtype=torch.int64))


def test_spectral_cutoff():
    """K = min(ceil(prec^(-1/alpha)), 1000) with prec = 1e-3, as randman sets it."""
    assert spectral_cutoff(2.0) == 32  # 1e-3^(-1/2) = 31.6 -> 32
    assert spectral_cutoff(1.0, precision=0.1) == 10
    assert spectral_cutoff(3.0) == 10  # 1e-3^(-1/3) = 10 (up to round-off) -> 10
    assert spectral_cutoff(0.5) == 1000  # 1e6 terms would be needed: capped
    assert spectral_cutoff(1e-6) == 1000  # no overflow for tiny alpha


def test_parameters_uniform_and_no_constant_term():
    rng = np.random.default_rng(1)
    a, b, c = random_function_params(rng, nb_units=200, dim_manifold=2, nb_terms=50)
    assert a.shape == b.shape == c.shape == (200, 2, 50)
    assert np.all(a[:, :, 0] == 0)  # the k = 0 (constant) amplitude is zero without a bias
    for p in (a[:, :, 1:], b, c):  # U[0, 1): mean 1/2, variance 1/12 (n ~ 2e4: 5 sigma)
        assert np.all((p >= 0) & (p < 1))
        assert abs(p.mean() - 0.5) < 5 * math.sqrt(1 / 12 / p.size)
        assert abs(p.var() - 1 / 12) < 5 * math.sqrt(1 / 180 / p.size)
    a, _, _ = random_function_params(np.random.default_rng(1), 200, 2, 50, use_bias=True)
    assert np.all(a[:, :, 0] > 0)


def _randman_formula(x, a, b, c, alpha):
    """The randman embedding written out in float64: prod_j sum_k a s_k sin(2 pi (k b x + c))."""
    nb_units, dims, nb_terms = a.shape
    k = np.arange(nb_terms, dtype=np.float64)
    s = 1.0 / ((k + 1.0) ** alpha + 1.0)
    want = np.ones((x.shape[0], nb_units))
    for u in range(nb_units):
        for j in range(dims):
            arg = 2 * np.pi * (np.outer(x[:, j], k * b[u, j]) + c[u, j])
            want[:, u] *= (a[u, j] * s * np.sin(arg)).sum(axis=1)
    return want


@pytest.mark.parametrize("alpha,nb_terms,dims", [(0.5, 1000, 1), (0.7, 300, 2), (2.0, 32, 3)])
def test_random_manifold_matches_direct_formula(alpha, nb_terms, dims):
    rng = np.random.default_rng(0)
    a, b, c = random_function_params(rng, nb_units=4, dim_manifold=dims, nb_terms=nb_terms)
    x = rng.random((300, dims))
    got = eval_random_manifold(x, a, b, c, alpha)
    np.testing.assert_allclose(got, _randman_formula(x, a, b, c, alpha), rtol=0, atol=1e-6)
    # the old (k+1)^-alpha weighting differs by far more than this tolerance
    k = np.arange(nb_terms)
    s_old = (k + 1.0) ** -alpha / (1.0 / ((k + 1.0) ** alpha + 1.0))
    assert np.abs(_randman_formula(x, a * s_old, b, c, alpha) - got).max() > 1e-4


def test_spectrum_follows_the_weight_law():
    """Power per frequency of generated functions ~ s_k^2 = ((k+1)^alpha + 1)^-2.

    With b = 1 every term has integer frequency k, so the FFT of f on N = 512 grid points has
    |F_k| = N/2 a_k s_k. Averaged over 1000 functions, E[a^2] = 1/3 makes the power
    N^2/12 s_k^2 (relative noise sqrt(4/5)/sqrt(1000) = 2.8 % for one k, less in the wider
    log-spaced bands). The fit of a constant times the law must hold within 10 % in every
    band; (k+1)^(-2 alpha) misses by a factor up to 2.9 at low k and fails.
    """
    alpha, nb_terms, n = 0.5, 100, 256
    rng = np.random.default_rng(5)
    a, b, c = random_function_params(rng, nb_units=1000, dim_manifold=1, nb_terms=nb_terms)
    b[:] = 1.0
    x = (np.arange(n) / n)[:, None]
    f = eval_random_manifold(x, a, b, c, alpha)  # (n, functions)
    power = (np.abs(np.fft.rfft(f, axis=0)) ** 2).mean(axis=1)[:nb_terms]
    assert power[0] < 1e-12 * power[1]  # no constant term
    k = np.arange(1, nb_terms)
    bands = np.unique(np.geomspace(1, nb_terms, 12).astype(int))
    for law in ("randman", "power"):
        w2 = (
            (1.0 / ((k + 1.0) ** alpha + 1.0)) ** 2
            if law == "randman"
            else (k + 1.0) ** (-2 * alpha)
        )
        ratio = power[1:] / w2
        per_band = np.array([ratio[lo - 1 : hi - 1].mean() for lo, hi in zip(bands, bands[1:])])
        scale = np.exp(np.log(per_band).mean())
        misfit = np.abs(np.log(per_band / scale)).max()
        if law == "randman":
            assert misfit < 0.1, misfit
            assert abs(scale / (n**2 / 12) - 1) < 0.1  # the absolute level as well
        else:
            assert misfit > 0.3, misfit


@pytest.mark.slow
def test_default_task_is_as_hard_as_the_original():
    """1-nearest-neighbour accuracy on the spike steps of the default task (test vs train).

    The original generator (randman + stork, 3 seeds) gives 0.821; the same measure on this
    generator gives 0.812 / 0.833 / 0.816 for seeds 1 / 2 / 3, and 0.897 / 0.907 / 0.885 with
    the spectral weight (k+1)^-alpha instead of randman's 1 / ((k+1)^alpha + 1).
    """
    x, y = make_randman()  # paper defaults: 15 classes x 1000 samples, 100 steps, 20 units
    assert x.shape == (15000, 100, 20)
    parts = split_dataset(x.argmax(dim=1).float(), y)
    (xtr, ytr), (xte, yte) = parts["train"], parts["test"]
    accuracy = (ytr[torch.cdist(xte, xtr).argmin(1)] == yte).float().mean().item()
    assert 0.79 < accuracy < 0.86, accuracy


def test_split_is_consecutive_blocks_of_int_sizes():
    """As stork's split_dataset(shuffle=False): sizes int(f N), in order, remainder unused."""
    x = torch.arange(15.0).reshape(15, 1, 1)
    y = torch.arange(15)
    parts = split_dataset(x, y, (0.8, 0.1, 0.1))  # int(12.0), int(1.5), int(1.5)
    assert [parts[k][1].tolist() for k in ("train", "valid", "test")] == [
        list(range(12)),
        [12],
        [13],
    ]
    parts = split_dataset(torch.zeros(15000, 1), torch.arange(15000))
    assert [len(parts[k][1]) for k in ("train", "valid", "test")] == [12000, 1500, 1500]
    assert parts["test"][1][0] == 13500


def test_split_dataset_sizes_disjoint_and_seeded():
    x = torch.arange(100.0).reshape(100, 1, 1)
    y = torch.arange(100)
    parts = split_dataset(x, y, seed=5)
    assert [len(parts[k][1]) for k in ("train", "valid", "test")] == [80, 10, 10]
    ids = torch.cat([parts[k][1] for k in ("train", "valid", "test")])
    assert torch.equal(ids.sort().values, y)
    for k in parts:
        assert torch.equal(parts[k][0].flatten().long(), parts[k][1])
    again = split_dataset(x, y, seed=5)
    assert all(torch.equal(parts[k][1], again[k][1]) for k in parts)
    other = split_dataset(x, y, seed=6)
    assert not torch.equal(parts["train"][1], other["train"][1])


@pytest.mark.parametrize(
    "kwargs,setting",
    [
        ({"nb_units": 0}, "dataset.nb_units=0"),
        ({"nb_classes": 2.5}, "dataset.nb_classes=2.5"),
        ({"step_frac": 1.5}, "dataset.step_frac=1.5"),
        ({"step_frac": 0}, "dataset.step_frac=0"),
        ({"alpha": -1}, "dataset.alpha=-1"),
        ({"seed": -1}, "dataset.seed=-1"),
        ({"nb_spikes": 100000}, "dataset.nb_spikes=100000"),
    ],
)
def test_bad_settings_are_named(kwargs, setting):
    with pytest.raises(ConfigError, match=setting):
        make_randman(**{**SMALL, **kwargs})


@pytest.mark.parametrize(
    "fractions", [(0.8, 0.1), (0.8, 0.1, 0.2), (0.0, 0.5, 0.5), (1.2, -0.1, -0.1)]
)
def test_bad_fractions(fractions):
    x, y = torch.zeros(10, 1, 1), torch.zeros(10, dtype=torch.int64)
    with pytest.raises(ConfigError, match="dataset.split"):
        split_dataset(x, y, fractions)


def test_same_set_repeats_one_sample():
    x, _ = make_randman(**SMALL)
    rep = same_set(x, index=7, repeats=5)
    assert rep.shape == (5, 40, 12)
    assert all(torch.equal(r, x[7]) for r in rep)
    rep[0].zero_()  # a real copy: x is untouched
    assert x[7].sum() == 12
    with pytest.raises(ConfigError, match="same_set.index"):
        same_set(x, index=10_000)


def test_long_generation_shows_progress_and_huge_is_refused_with_estimate(monkeypatch, capsys):
    import sgtheory.data.randman as randman

    monkeypatch.setattr(randman, "PROGRESS_AFTER_S", 0.0)
    make_randman(**SMALL)
    assert "Randman" in capsys.readouterr().err  # the bar, on stderr
    make_randman(**SMALL, progress=False)
    assert capsys.readouterr().err == ""
    # 15 x 1e5 x 1000 x 20 x 1000 terms = 3e13, 600 times the bound: refused before any work
    with pytest.raises(ConfigError, match=r"would evaluate 3\.0e\+13 terms \(about 208 h"):
        make_randman(nb_spikes=100_000)
