"""Randman: spike-latency classification data on smooth random manifolds (Zenke & Vogels 2021).

Construction (that of the `randman` package with stork's `make_tempo_randman`, the generator of
the paper's Randman task):

* Each class owns `nb_spikes` random manifolds of dimension D = `dim_manifold` embedded in
  `nb_units` dimensions. Embedding coordinate u of a manifold is the product over manifold
  dimensions j of a random function
  f_uj(x) = sum_{k=0}^{K-1} a_ujk s_k sin(2 pi (k b_ujk x + c_ujk)),
  with spectral weight s_k = 1 / ((k+1)^alpha + 1), a, b, c ~ U[0, 1) and a_uj0 = 0 (no constant
  term) unless a bias is asked for. K = min(ceil(precision^(-1/alpha)), max_terms).
* A class draws its samples x ~ U[0, 1)^D once; all its manifolds are evaluated at these x.
* Each (class, manifold, unit) coordinate y is rescaled over the class's samples to
  v = (y - min) / (max - min + 1e-7), in float32 like the original, so that v reaches 1.0 for
  the largest sample whenever the float32 range is at least 2.
* Spike step = int(nb_steps * (step_frac * v)): values v = 1.0 land on step
  nb_steps * step_frac (step 50 for the defaults); a step >= nb_steps is dropped.
* The samples of all classes are shuffled once; `split_dataset` then cuts consecutive blocks
  without shuffling again.

Seeding is this project's own (the original draws from numpy's and torch's global generators),
so the same seed gives other samples than the original's: class `c`, manifold `s` draws its
parameters from `default_rng((seed, 0, c, s))`, class `c` its manifold coordinates from
`default_rng((seed, 1, c))`, so a class's data does not depend on how many other classes are
made. The final shuffle uses `default_rng((seed, 2))`.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import torch

from sgtheory.errors import ConfigError, check_positive

PRECISION = 1e-3  # `prec` of randman: sets the frequency cutoff K
MAX_TERMS = 1000  # cap on the number of Fourier terms per random function
RESCALE_EPS = 1e-7  # added to each unit's range before dividing (as the original does)
# Generation is refused above this many evaluated Fourier terms: about 170 times the paper's
# defaults (3e8 terms, ~7 s on one busy core), about 20 minutes.
MAX_TERM_EVALUATIONS = 5e10
PROGRESS_AFTER_S = 10.0  # show a progress bar when generation is estimated to take longer
SECONDS_PER_TERM = 2.5e-8  # cost of one term on one core, for the estimate


def _check_seed(seed: int, setting: str = "dataset.seed") -> int:
    """Seeds feed numpy's SeedSequence, which takes non-negative integers."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"{setting}={seed!r} is not valid; it must be a non-negative integer")
    return int(seed)


def spectral_cutoff(alpha: float, precision: float = PRECISION, max_terms: int = MAX_TERMS) -> int:
    """Number of Fourier terms K = min(ceil(precision^(-1/alpha)), max_terms), as in randman."""
    check_positive("dataset.alpha", alpha)
    check_positive("randman precision", precision)
    check_positive("randman max_terms", max_terms, integer=True)
    exponent = -1.0 / float(alpha)
    if exponent * math.log(float(precision)) > math.log(max_terms):
        return int(max_terms)  # also avoids overflow of precision**exponent for tiny alpha
    return int(min(math.ceil(float(precision) ** exponent), int(max_terms)))


def spectral_weights(alpha: float, nb_terms: int) -> np.ndarray:
    """s_k = 1 / ((k+1)^alpha + 1) for k = 0..nb_terms-1 (float64)."""
    k = np.arange(int(nb_terms), dtype=np.float64)
    return 1.0 / ((k + 1.0) ** float(alpha) + 1.0)


def random_function_params(
    rng: np.random.Generator,
    nb_units: int,
    dim_manifold: int,
    nb_terms: int,
    use_bias: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw a, b, c ~ U[0, 1), each shaped (nb_units, dim_manifold, nb_terms); a[..., 0] = 0.

    Drawn as one (units, dims, 3, terms) block, the layout of randman's parameters, so unit
    u's function does not change when more units are requested. The constant (k = 0) term's
    amplitude is zero unless `use_bias`.
    """
    p = rng.random((nb_units, dim_manifold, 3, nb_terms))
    if not use_bias:
        p[:, :, 0, 0] = 0.0
    return p[:, :, 0], p[:, :, 1], p[:, :, 2]


def eval_random_manifold(
    x: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray, alpha: float
) -> np.ndarray:
    """Embedding of manifold points x (samples, dims) -> (samples, units), float64.

    Coordinate u is prod_j f_uj(x_j) with
    f_uj(x) = sum_k a_ujk s_k sin(2 pi (k b_ujk x + c_ujk)), s_k = 1 / ((k+1)^alpha + 1).
    The phase is formed in float64 and reduced to [-1/2, 1/2); the sine is taken in float32
    (float64 sines are ~25x slower here) and corrected to first order for the rounding of
    its argument, and the weighted sum is accumulated in float64: ~1e-7 absolute error.
    """
    x = np.asarray(x, dtype=np.float64)
    nb_units, dims, nb_terms = a.shape
    if x.ndim != 2 or x.shape[1] != dims:
        raise ValueError(f"x must be shaped (samples, {dims}); got {x.shape}")
    k = np.arange(nb_terms, dtype=np.float64)
    weight = spectral_weights(alpha, nb_terms)
    out = np.ones((x.shape[0], nb_units), dtype=np.float64)
    arg = np.empty((x.shape[0], nb_terms), dtype=np.float64)  # buffers reused across units
    whole = np.empty_like(arg)
    arg32 = np.empty(arg.shape, dtype=np.float32)
    sine = np.empty(arg.shape, dtype=np.float32)
    cosine = np.empty(arg.shape, dtype=np.float32)
    for u in range(nb_units):
        for j in range(dims):
            np.multiply.outer(x[:, j], k * b[u, j], out=arg)
            arg += c[u, j]
            np.rint(arg, out=whole)
            arg -= whole  # phase mod 1, in [-1/2, 1/2]
            arg *= 2.0 * np.pi
            arg32[...] = arg
            np.sin(arg32, out=sine)
            np.cos(arg32, out=cosine)
            arg -= arg32  # rounding error of the float32 argument (< 2e-7)
            cosine *= arg  # first-order correction: sin(t + d) = sin t + d cos t
            sine += cosine
            out[:, u] *= sine @ (a[u, j] * weight)
    return out


def rescale(y: np.ndarray, eps: float = RESCALE_EPS) -> np.ndarray:
    """Per column (y - min) / (max - min + eps), computed in float32 as the original does.

    In float32, max - min + 1e-7 rounds back to max - min when the range is >= 2, so the
    largest value maps to exactly 1.0; for smaller ranges it maps just below 1.
    """
    y = np.asarray(y, dtype=np.float32)
    lo, hi = y.min(axis=0), y.max(axis=0)
    return (y - lo) / (hi - lo + np.float32(eps))


def spike_steps(v: np.ndarray, nb_steps: int, step_frac: float) -> np.ndarray:
    """Step of a rescaled value v in [0, 1]: int(nb_steps * (step_frac * v)), as the original.

    Computed in float64 from the float32 v; v = 1.0 gives step nb_steps * step_frac
    (truncated), e.g. 50 for 100 steps and step_frac 0.5.
    """
    scaled = float(nb_steps) * (float(step_frac) * np.asarray(v, dtype=np.float64))
    return scaled.astype(np.int64)


def _check_sizes(
    nb_classes: int, nb_units: int, nb_steps: int, nb_samples: int, nb_spikes: int, dims: int
) -> None:
    """Every size a positive integer, named by the user's setting."""
    for name, value in [
        ("dataset.nb_classes", nb_classes),
        ("dataset.nb_units", nb_units),
        ("dataset.nb_steps", nb_steps),
        ("dataset.nb_samples", nb_samples),
        ("dataset.nb_spikes", nb_spikes),
        ("dataset.dim_manifold", dims),
    ]:
        check_positive(name, value, integer=True)


def _check_shape(alpha: float, step_frac: float) -> None:
    """Smoothness alpha positive; spike window step_frac in (0, 1]."""
    check_positive("dataset.alpha", alpha)
    check_positive("dataset.step_frac", step_frac)
    if step_frac > 1:
        raise ConfigError(f"dataset.step_frac={step_frac!r} is not valid; it must be in (0, 1]")


def _check_work(
    work: float,
    nb_classes: int,
    nb_samples: int,
    nb_units: int,
    nb_spikes: int,
    dims: int,
    nb_terms: int,
    alpha: float,
) -> None:
    """Refuse generation above MAX_TERM_EVALUATIONS Fourier terms, with the time estimate."""
    if work <= MAX_TERM_EVALUATIONS:
        return
    hours = work * SECONDS_PER_TERM / 3600
    took = f"{hours:.3g} h" if hours >= 2 else f"{hours * 60:.0f} min"
    raise ConfigError(
        f"dataset.nb_spikes={nb_spikes} is not valid with dataset.nb_classes={nb_classes}, "
        f"nb_samples={nb_samples}, nb_units={nb_units}, dim_manifold={dims} and "
        f"{nb_terms} Fourier terms (alpha={alpha}): generating would evaluate {work:.1e} "
        f"terms (about {took} on one core); at most {MAX_TERM_EVALUATIONS:.0e} "
        "are allowed: use fewer spikes, samples, classes or units"
    )


def _progress_bar(work: float, total: int):
    """A tqdm bar over the manifolds when generation is estimated to exceed PROGRESS_AFTER_S."""
    if work * SECONDS_PER_TERM <= PROGRESS_AFTER_S:
        return None
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=f"Randman ({work * SECONDS_PER_TERM / 60:.0f} min estimated)",
        unit="manifold",
        file=sys.stderr,
    )


def _places(n: int, seed: int, shuffle: bool) -> np.ndarray:
    """Row of each generated sample after the seeded shuffle, so that sample i of class c is
    written straight to its place (no second copy of the raster)."""
    order = np.random.default_rng((seed, 2)).permutation(n) if shuffle else np.arange(n)
    place = np.empty(n, dtype=np.int64)
    place[order] = np.arange(n)
    return place


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
    use_bias: bool = False,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Randman spike rasters: (nb_classes*nb_samples, nb_steps, nb_units) float32, labels int64.

    Each unit fires `nb_spikes` times per sample (fewer when two of its spikes fall into the
    same step, the raster being binary, or when a spike falls at or after `nb_steps`, which
    happens only for step_frac = 1). `shuffle` mixes the classes (seeded); else class-ordered.
    Generation estimated to take longer than PROGRESS_AFTER_S shows a progress bar on stderr
    (if `progress`); more than MAX_TERM_EVALUATIONS terms are refused. The paper's defaults
    use dt = 2 ms, i.e. 0.2 s per sample.
    """
    _check_sizes(nb_classes, nb_units, nb_steps, nb_samples, nb_spikes, dim_manifold)
    _check_shape(alpha, step_frac)
    seed = _check_seed(seed)
    nb_classes, nb_units, nb_steps = int(nb_classes), int(nb_units), int(nb_steps)
    nb_samples, nb_spikes, dim_manifold = int(nb_samples), int(nb_spikes), int(dim_manifold)
    nb_terms = spectral_cutoff(alpha)
    work = float(nb_classes) * nb_spikes * nb_samples * nb_units * dim_manifold * nb_terms
    _check_work(work, nb_classes, nb_samples, nb_units, nb_spikes, dim_manifold, nb_terms, alpha)

    n = nb_classes * nb_samples
    place = _places(n, seed, shuffle)
    spikes = np.zeros((n, nb_steps, nb_units), dtype=np.float32)
    labels = np.empty(n, dtype=np.int64)
    unit_idx = np.broadcast_to(np.arange(nb_units)[None, :], (nb_samples, nb_units))
    bar = _progress_bar(work, nb_classes * nb_spikes) if progress else None
    try:
        for cls in range(nb_classes):
            rows = place[cls * nb_samples : (cls + 1) * nb_samples]
            labels[rows] = cls
            row_idx = np.broadcast_to(rows[:, None], (nb_samples, nb_units))
            x = np.random.default_rng((seed, 1, cls)).random((nb_samples, dim_manifold))
            for spike in range(nb_spikes):
                rng = np.random.default_rng((seed, 0, cls, spike))
                a, b, c = random_function_params(rng, nb_units, dim_manifold, nb_terms, use_bias)
                steps = spike_steps(
                    rescale(eval_random_manifold(x, a, b, c, alpha)), nb_steps, step_frac
                )
                keep = steps < nb_steps  # dropped like events beyond the input window
                spikes[row_idx[keep], steps[keep], unit_idx[keep]] = 1.0
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return torch.from_numpy(spikes), torch.from_numpy(labels)


def split_sizes(n: int, fractions: tuple[float, ...]) -> list[int]:
    """Block sizes int(f_i / sum(f) * n), as stork's `split_dataset`; the remainder is unused."""
    f = np.asarray(fractions, dtype=np.float64)
    f = f / f.sum()
    return [int(fi * n) for fi in f]


def split_dataset(
    x: torch.Tensor,
    y: torch.Tensor,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int | None = None,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Cut (x, y) into consecutive train / valid / test blocks: dict(train=(x, y), ...).

    Block sizes are int(fraction * N) (see `split_sizes`), taken in order; samples left over
    by the rounding are in no block. Randman data comes shuffled from `make_randman`, so it is
    not shuffled again (seed None), as in the original; with a seed the samples are first
    permuted by `default_rng(seed)`. Works for dense and sparse COO x (split along dim 0).
    """
    fractions = tuple(fractions)
    if len(fractions) != 3 or any(
        isinstance(f, bool) or not isinstance(f, (int, float)) or not math.isfinite(f) or f < 0
        for f in fractions
    ):
        raise ConfigError(
            f"dataset.split={list(fractions)!r} is not valid; give three non-negative numbers "
            "(train, valid, test) that sum to 1"
        )
    if abs(sum(fractions) - 1.0) > 1e-6 or fractions[0] <= 0:
        raise ConfigError(
            f"dataset.split={list(fractions)!r} is not valid; they must sum to 1 with train > 0"
        )
    n = int(y.shape[0])
    if x.shape[0] != n:
        raise ValueError(f"x has {x.shape[0]} samples but y has {n}")
    n_train, n_valid, n_test = split_sizes(n, fractions)
    if n_train <= 0:
        raise ConfigError(
            f"dataset.split={list(fractions)!r} leaves no training samples out of {n}"
        )
    if seed is None:
        order = torch.arange(n)
    else:
        order = torch.from_numpy(np.random.default_rng(_check_seed(seed)).permutation(n))
    parts = {
        "train": order[:n_train],
        "valid": order[n_train : n_train + n_valid],
        "test": order[n_train + n_valid : n_train + n_valid + n_test],
    }
    return {k: (x.index_select(0, idx), y.index_select(0, idx)) for k, idx in parts.items()}
