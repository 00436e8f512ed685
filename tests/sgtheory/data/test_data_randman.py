"""Randman: determinism, shapes, spike counts and timing window, the formula, separability."""

import math

import numpy as np
import pytest
import torch

from sgtheory.data import make_randman, same_set, split_dataset
from sgtheory.data.randman import eval_random_manifold, random_function_params, spectral_cutoff
from sgtheory.errors import ConfigError

SMALL = dict(nb_classes=4, nb_units=12, nb_steps=40, nb_samples=60, seed=3)


def spike_steps(x: torch.Tensor) -> np.ndarray:
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
    steps = spike_steps(x)
    assert steps.max() < step_frac * nb_steps
    # values are min/max rescaled per class and unit: each class uses both ends of the window
    last = math.ceil(step_frac * nb_steps) - 1
    for c in range(4):
        s = steps[y.numpy() == c]
        assert np.all(s.min(axis=0) == 0) and np.all(s.max(axis=0) == last)


def test_class_data_does_not_depend_on_other_classes():
    x2, _ = make_randman(**{**SMALL, "nb_classes": 2, "shuffle": False})
    x4, y4 = make_randman(**{**SMALL, "nb_classes": 4, "shuffle": False})
    assert torch.equal(x2, x4[:120]) and torch.equal(y4[:60], torch.zeros(60, dtype=torch.int64))


def test_spectral_cutoff():
    assert spectral_cutoff(2.0) == 31  # 31^-2 = 1.04e-3 kept, 32^-2 = 9.8e-4 dropped
    assert spectral_cutoff(1.0, precision=0.1) == 10
    assert spectral_cutoff(0.5) == 1000  # 1e6 terms would be needed: capped


def test_random_manifold_matches_direct_formula():
    rng = np.random.default_rng(0)
    alpha, nb_terms = 0.7, 50
    a, b, c = random_function_params(rng, nb_units=3, dim_manifold=2, nb_terms=nb_terms)
    x = rng.random((5, 2))
    got = eval_random_manifold(x, a, b, c, alpha)
    want = np.ones((5, 3))
    for n in range(5):
        for u in range(3):
            for j in range(2):
                f = 0.0
                for k in range(nb_terms):
                    f += (
                        a[u, j, k]
                        / (k + 1) ** alpha
                        * math.sin(2 * math.pi * (k * x[n, j] * b[u, j, k] + c[u, j, k]))
                    )
                want[n, u] *= f
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_default_classes_are_distinguishable():
    x, y = make_randman()  # paper defaults: 15 classes x 1000 samples, 100 steps, 20 units
    assert x.shape == (15000, 100, 20)
    parts = split_dataset(x.argmax(dim=1).float(), y, seed=0)
    (xtr, ytr), (xte, yte) = parts["train"], parts["test"]
    means = torch.stack([xtr[ytr == c].mean(0) for c in range(15)])
    pred = torch.cdist(xte, means).argmin(1)
    accuracy = (pred == yte).float().mean().item()
    assert accuracy > 3 / 15, accuracy  # chance is 1/15


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
        ({"nb_units": 0}, "randman.nb_units"),
        ({"nb_classes": 2.5}, "randman.nb_classes"),
        ({"step_frac": 1.5}, "randman.step_frac"),
        ({"step_frac": 0}, "randman.step_frac"),
        ({"alpha": -1}, "randman.alpha"),
        ({"seed": -1}, "seed"),
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
    with pytest.raises(ConfigError, match="fractions"):
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
