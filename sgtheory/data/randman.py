"""Randman: spike-latency classification data on smooth random manifolds (Zenke & Vogels 2021).

Each class owns `nb_spikes` random manifolds of dimension `dim_manifold` embedded in `nb_units`
dimensions. A sample is one point drawn uniformly on the class's manifold; each embedding
coordinate, rescaled to [0, 1], sets the time of one spike of one unit. Everything is generated
locally from the seed, so the same seed always gives the same data.

Seeding: class `c`, spike `s` draws its manifold from `default_rng((seed, 0, c, s))` and class
`c` draws its manifold coordinates from `default_rng((seed, 1, c))`, so a class's data does not
depend on how many other classes are made. The final shuffle uses `default_rng((seed, 2))`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import ConfigError, check_positive

PRECISION = 1e-3  # smallest spectral weight (k+1)^-alpha kept in the random functions
MAX_TERMS = 1000  # cap on the number of Fourier terms per random function


def _check_seed(seed: int) -> int:
    """Seeds feed numpy's SeedSequence, which takes non-negative integers."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed={seed!r} is not valid; it must be a non-negative integer")
    return int(seed)


def spectral_cutoff(alpha: float, precision: float = PRECISION, max_terms: int = MAX_TERMS) -> int:
    """Number of terms K: all k with (k+1)^-alpha >= precision, at most `max_terms`."""
    check_positive("randman.alpha", alpha)
    check_positive("randman.precision", precision)
    check_positive("randman.max_terms", max_terms, integer=True)
    # (k+1)^-alpha >= precision  <=>  k+1 <= precision^(-1/alpha); tiny slack for round-off.
    bound = math.log(1.0 / precision) / alpha
    if bound > math.log(max_terms):
        return int(max_terms)
    return max(1, int(math.floor(math.exp(bound) * (1 + 1e-12))))


def random_function_params(
    rng: np.random.Generator, nb_units: int, dim_manifold: int, nb_terms: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw a, b, c ~ U[0, 1), each shaped (nb_units, dim_manifold, nb_terms).

    Drawn as one (units, dims, 3, terms) block so unit u's function does not change when more
    units are requested.
    """
    p = rng.random((nb_units, dim_manifold, 3, nb_terms))
    return p[:, :, 0], p[:, :, 1], p[:, :, 2]


def eval_random_manifold(
    x: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray, alpha: float
) -> np.ndarray:
    """Embedding of manifold points x (samples, dims) -> (samples, units).

    Coordinate u is prod_j f_uj(x_j) with
    f_uj(x) = sum_k a_ujk (k+1)^-alpha sin(2 pi (k b_ujk x + c_ujk)), k = 0..K-1.
    The phase (up to ~K cycles) is formed in float64 and reduced mod 1; only then are the sine
    and the weighted sum done in float32 (~1e-6 relative error, several times faster than
    float64 sines), so precision is not lost to large sine arguments.
    """
    x = np.asarray(x, dtype=np.float64)
    nb_units, dims, nb_terms = a.shape
    if x.ndim != 2 or x.shape[1] != dims:
        raise ValueError(f"x must be shaped (samples, {dims}); got {x.shape}")
    k = np.arange(nb_terms, dtype=np.float64)
    weight = (k + 1.0) ** (-float(alpha))
    out = np.ones((x.shape[0], nb_units), dtype=np.float64)
    phase = np.empty((x.shape[0], nb_terms), dtype=np.float64)  # buffers reused across units
    whole = np.empty_like(phase)
    sine = np.empty(phase.shape, dtype=np.float32)
    two_pi = np.float32(2.0 * np.pi)
    for u in range(nb_units):
        for j in range(dims):
            np.multiply.outer(x[:, j], k * b[u, j], out=phase)
            phase += c[u, j]
            np.floor(phase, out=whole)
            phase -= whole  # phase mod 1, in [0, 1)
            sine[...] = phase
            sine *= two_pi
            np.sin(sine, out=sine)
            out[:, u] *= sine @ (a[u, j] * weight).astype(np.float32)
    return out


def _rescale(y: np.ndarray) -> np.ndarray:
    """Min/max rescale each column to [0, 1]; a constant column maps to 0."""
    lo, hi = y.min(axis=0), y.max(axis=0)
    span = hi - lo
    safe = np.where(span > 0, span, 1.0)
    return np.where(span > 0, (y - lo) / safe, 0.0)


def make_randman(
    nb_classes: int = 15,
    nb_units: int = 20,
    nb_steps: int = 100,
    step_frac: float = 0.5,
    nb_samples: int = 1000,
    nb_spikes: int = 1,
    alpha: float = 0.5,
    dim_manifold: int = 1,
    seed: int = 1,
    shuffle: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Randman spike rasters: (nb_classes*nb_samples, nb_steps, nb_units) float32, labels int64.

    Each unit fires `nb_spikes` times per sample (fewer only when two of its spikes fall into
    the same step; the raster is binary). Values are rescaled per class and unit by min/max
    over that class's samples (as in the original generator): exact, cheap, and every unit uses
    the whole window; a dense grid would need >1e4 points per dimension for K=1000 terms.
    Spike step = floor(value * step_frac * nb_steps), clipped so that every spike lies in the
    first step_frac of the steps. `shuffle` mixes the classes (seeded); else class-ordered.
    The paper's defaults use dt = 2 ms, i.e. 0.2 s per sample.
    """
    for name, value in [
        ("randman.nb_classes", nb_classes),
        ("randman.nb_units", nb_units),
        ("randman.nb_steps", nb_steps),
        ("randman.nb_samples", nb_samples),
        ("randman.nb_spikes", nb_spikes),
        ("randman.dim_manifold", dim_manifold),
    ]:
        check_positive(name, value, integer=True)
    check_positive("randman.alpha", alpha)
    check_positive("randman.step_frac", step_frac)
    if step_frac > 1:
        raise ConfigError(f"randman.step_frac={step_frac!r} is not valid; it must be in (0, 1]")
    seed = _check_seed(seed)
    nb_classes, nb_units, nb_steps = int(nb_classes), int(nb_units), int(nb_steps)
    nb_samples, nb_spikes, dim_manifold = int(nb_samples), int(nb_spikes), int(dim_manifold)

    nb_terms = spectral_cutoff(alpha)
    window = step_frac * nb_steps
    last_step = max(0, math.ceil(window - 1e-9) - 1)  # last step inside the first step_frac
    raster = np.zeros((nb_classes, nb_samples, nb_steps, nb_units), dtype=np.float32)
    sample_idx = np.arange(nb_samples)[:, None]
    unit_idx = np.arange(nb_units)[None, :]
    for cls in range(nb_classes):
        x = np.random.default_rng((seed, 1, cls)).random((nb_samples, dim_manifold))
        for spike in range(nb_spikes):
            rng = np.random.default_rng((seed, 0, cls, spike))
            a, b, c = random_function_params(rng, nb_units, dim_manifold, nb_terms)
            value = _rescale(eval_random_manifold(x, a, b, c, alpha))
            steps = np.clip(np.floor(value * window).astype(np.int64), 0, last_step)
            raster[cls, sample_idx, steps, unit_idx] = 1.0
    spikes = raster.reshape(nb_classes * nb_samples, nb_steps, nb_units)
    labels = np.repeat(np.arange(nb_classes, dtype=np.int64), nb_samples)
    if shuffle:
        order = np.random.default_rng((seed, 2)).permutation(len(labels))
        spikes, labels = spikes[order], labels[order]
    return torch.from_numpy(np.ascontiguousarray(spikes)), torch.from_numpy(labels)


def split_dataset(
    x: torch.Tensor,
    y: torch.Tensor,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 1,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Shuffle (seeded) and split into dict(train=(x, y), valid=(x, y), test=(x, y)).

    Valid and test get round(fraction * N) samples; train gets the rest. Works for dense and
    sparse COO x (split along dim 0).
    """
    fractions = tuple(fractions)
    if len(fractions) != 3 or any(
        isinstance(f, bool) or not isinstance(f, (int, float)) or not math.isfinite(f) or f < 0
        for f in fractions
    ):
        raise ConfigError(
            f"fractions={fractions!r} is not valid; give three non-negative numbers "
            "(train, valid, test) that sum to 1"
        )
    if abs(sum(fractions) - 1.0) > 1e-6 or fractions[0] <= 0:
        raise ConfigError(
            f"fractions={fractions!r} is not valid; they must sum to 1 with train > 0"
        )
    seed = _check_seed(seed)
    n = int(y.shape[0])
    if x.shape[0] != n:
        raise ValueError(f"x has {x.shape[0]} samples but y has {n}")
    n_valid, n_test = round(fractions[1] * n), round(fractions[2] * n)
    n_train = n - n_valid - n_test
    if n_train <= 0:
        raise ConfigError(f"fractions={fractions!r} leave no training samples out of {n}")
    order = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    parts = {
        "train": order[:n_train],
        "valid": order[n_train : n_train + n_valid],
        "test": order[n_train + n_valid :],
    }
    return {k: (x.index_select(0, idx), y.index_select(0, idx)) for k, idx in parts.items()}
