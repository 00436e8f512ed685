"""A five-weight sigmoid network whose true gradient is known, and its surrogate gradient (SG).

The network (Gygax & Zenke, arXiv:2404.14964, Sec. "SGs are not gradients") has one input x and
weights ``(w, v1, v2, u1, u2)``::

    g   = sigma_beta(w x)
    h_i = sigma_beta(v_i g)          i = 1, 2
    y   = sigma_beta(u1 h1 + u2 h2)

with ``sigma_beta(z) = 1 / (1 + exp(-beta z))``.  Its SG keeps ``sigma_beta`` in the forward pass
and replaces every ``sigma_beta'`` in the backward pass by ``beta_SG s (1 - s)`` with
``s = sigma(beta_SG z)``.  Because the network is smooth, the true gradient is available exactly
(autograd), which makes this the smallest place to show that SGs are not gradients of any loss.

Weights are tensors whose last axis has length 5 (order ``WEIGHT_NAMES``); every leading axis is a
batch axis, so whole lines, planes and paths of weight space are evaluated at once.  Everything
runs in float64 and in chunks, so a 2000 x 2000 grid fits in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

WEIGHT_NAMES: tuple[str, ...] = ("w", "v1", "v2", "u1", "u2")
N_WEIGHTS = len(WEIGHT_NAMES)
DTYPE = torch.float64
DEFAULT_CHUNK = 1 << 18  # grid points per autograd pass; bounds peak memory (~100 MB)

ArrayLike = torch.Tensor | np.ndarray | Sequence[float] | float


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _as_tensor(value: ArrayLike, name: str) -> torch.Tensor:
    """Float64 CPU tensor from a tensor, array, list or number."""
    if isinstance(value, torch.Tensor):
        return value.detach().to(dtype=DTYPE, device="cpu")
    try:
        return torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=DTYPE)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}={value!r} is not numeric") from err


def _check_beta(beta: float, name: str = "beta") -> float:
    beta = float(beta)
    if not np.isfinite(beta) or beta <= 0:
        raise ValueError(f"{name}={beta!r} is not valid; it must be a finite number > 0")
    return beta


def _check_weights(weights: ArrayLike, name: str = "weights") -> torch.Tensor:
    out = _as_tensor(weights, name)
    if out.ndim == 0 or out.shape[-1] != N_WEIGHTS:
        raise ValueError(
            f"{name} has shape {tuple(out.shape)}; its last axis must have length {N_WEIGHTS} "
            f"(weights {WEIGHT_NAMES})"
        )
    return out


def weight_index(name: str) -> int:
    """Position of weight `name` in the weight vector (raises ValueError for unknown names)."""
    if name not in WEIGHT_NAMES:
        raise ValueError(f"unknown weight name {name!r}; valid choices are {WEIGHT_NAMES}")
    return WEIGHT_NAMES.index(name)


def unit_direction(name: str) -> torch.Tensor:
    """The unit vector of weight space that moves only weight `name`."""
    out = torch.zeros(N_WEIGHTS, dtype=DTYPE)
    out[weight_index(name)] = 1.0
    return out


def weights_from(base: ArrayLike | None = None, **named: float) -> torch.Tensor:
    """A weight vector: `base` (default all zeros) with the named weights replaced.

    Example: ``weights_from(w=1, v1=0.05, v2=0.1, u1=1, u2=-1)``.
    """
    out = torch.zeros(N_WEIGHTS, dtype=DTYPE) if base is None else _check_weights(base, "base")
    out = out.clone()
    for key, value in named.items():
        out[..., weight_index(key)] = float(value)
    return out


def check_orthonormal(d1: ArrayLike, d2: ArrayLike, atol: float = 1e-8) -> tuple[torch.Tensor, ...]:
    """Return (d1, d2) as float64 tensors if both have unit length and are orthogonal, else raise.

    Line integrals around a circle only measure curl if the circle really lies in a plane with
    the stated radius, hence the strict check.
    """
    a = _check_weights(d1, "d1")
    b = _check_weights(d2, "d2")
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError(f"directions must be single 5-vectors, got shapes {a.shape} and {b.shape}")
    na, nb, dot = float(a.norm()), float(b.norm()), float(a @ b)
    if abs(na - 1) > atol or abs(nb - 1) > atol or abs(dot) > atol:
        raise ValueError(
            f"directions are not orthonormal: |d1|={na:.6g}, |d2|={nb:.6g}, d1.d2={dot:.3g}; "
            f"valid choices are unit vectors with d1.d2 = 0 (tolerance {atol})"
        )
    return a, b


def paper_directions(seed: int = 124) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's plane: rows 0 and 1 (d1, d2) of ``scipy.stats.ortho_group.rvs(5, seed)``.

    A Haar-random orthogonal 5 x 5 matrix drawn with ``random_state=seed``; seed 124 gives the
    plane of the paper's closed-circle figure. Returned as float64 tensors of shape ``(5,)``.
    """
    from scipy.stats import ortho_group  # imported here: only the circle needs scipy

    m = ortho_group.rvs(N_WEIGHTS, random_state=int(seed))
    return torch.as_tensor(m[0], dtype=DTYPE), torch.as_tensor(m[1], dtype=DTYPE)


# --------------------------------------------------------------------------------------------
# Sigmoids and the network
# --------------------------------------------------------------------------------------------


def sigmoid(z: torch.Tensor, beta: float) -> torch.Tensor:
    """sigma_beta(z) = 1 / (1 + exp(-beta z)), via torch.sigmoid so huge beta gives no inf/NaN."""
    return torch.sigmoid(beta * z)


def sigmoid_prime(z: torch.Tensor, beta: float) -> torch.Tensor:
    """d sigma_beta / dz = beta s (1 - s) with s = sigma(beta z); also the SG derivative."""
    s = torch.sigmoid(beta * z)
    return beta * s * (1.0 - s)


class SurrogateSigmoid(torch.autograd.Function):
    """sigma_beta in the forward pass, sigma'_{beta_SG} in the backward pass."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, beta: float, beta_sg: float) -> torch.Tensor:  # noqa: D102
        ctx.save_for_backward(z)
        ctx.beta_sg = beta_sg
        return torch.sigmoid(beta * z)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # noqa: D102
        (z,) = ctx.saved_tensors
        return grad_out * sigmoid_prime(z, ctx.beta_sg), None, None


def network(
    weights: torch.Tensor, x: float = 1.0, beta: float = 1.0, beta_sg: float | None = None
) -> torch.Tensor:
    """Output y for weights of shape ``(..., 5)``; differentiable.

    With ``beta_sg=None`` every nonlinearity is the smooth sigma_beta (autograd gives the true
    gradient); otherwise each is a `SurrogateSigmoid` (autograd gives the SG).
    """
    if beta_sg is None:

        def act(z: torch.Tensor) -> torch.Tensor:
            return sigmoid(z, beta)
    else:

        def act(z: torch.Tensor) -> torch.Tensor:
            return SurrogateSigmoid.apply(z, beta, beta_sg)

    w, v1, v2, u1, u2 = weights.unbind(-1)
    g = act(w * x)
    h1 = act(v1 * g)
    h2 = act(v2 * g)
    return act(u1 * h1 + u2 * h2)


def activations(
    weights: ArrayLike, x: float = 1.0, beta: float = 1.0, chunk: int = DEFAULT_CHUNK
) -> torch.Tensor:
    """All unit outputs (g, h1, h2, y) at every point of ``weights (..., 5)``; ``(..., 4)``.

    Used to place path points where any unit switches, not only the output.
    """
    wts = _check_weights(weights)
    beta = _check_beta(beta)

    def fn(c: torch.Tensor) -> torch.Tensor:
        w, v1, v2, u1, u2 = c.unbind(-1)
        g = sigmoid(w * x, beta)
        h1, h2 = sigmoid(v1 * g, beta), sigmoid(v2 * g, beta)
        return torch.stack([g, h1, h2, sigmoid(u1 * h1 + u2 * h2, beta)], -1)

    with torch.no_grad():
        return _chunked(fn, wts, chunk, (4,))


def _chunked(
    fn: Callable[[torch.Tensor], torch.Tensor], weights: torch.Tensor, chunk: int, trailing: tuple
) -> torch.Tensor:
    """Apply `fn` to flattened chunks of ``weights (..., 5)``; reshape to ``(...,) + trailing``."""
    lead = weights.shape[:-1]
    flat = weights.reshape(-1, N_WEIGHTS)
    out = torch.empty((flat.shape[0],) + trailing, dtype=DTYPE)
    for start in range(0, flat.shape[0], chunk):
        out[start : start + chunk] = fn(flat[start : start + chunk])
    return out.reshape(lead + trailing)


def output(
    weights: ArrayLike, x: float = 1.0, beta: float = 1.0, chunk: int = DEFAULT_CHUNK
) -> torch.Tensor:
    """Network output y at every point of ``weights (..., 5)``; shape ``(...)``."""
    wts = _check_weights(weights)
    beta = _check_beta(beta)
    with torch.no_grad():
        return _chunked(lambda c: network(c, x, beta), wts, chunk, ())


def _grad_of(
    y_fn: Callable[[torch.Tensor], torch.Tensor],
) -> Callable[[torch.Tensor], torch.Tensor]:
    def fn(c: torch.Tensor) -> torch.Tensor:
        c = c.clone().requires_grad_(True)
        # Points are independent, so the gradient of the sum is the per-point gradient.
        (grad,) = torch.autograd.grad(y_fn(c).sum(), c)
        return grad

    return fn


def true_gradient(
    weights: ArrayLike, x: float = 1.0, beta: float = 1.0, chunk: int = DEFAULT_CHUNK
) -> torch.Tensor:
    """dy/d(weights) of the smooth network at every point; shape ``(..., 5)``."""
    wts = _check_weights(weights)
    beta = _check_beta(beta)
    return _chunked(_grad_of(lambda c: network(c, x, beta)), wts, chunk, (N_WEIGHTS,))


def surrogate_gradient(
    weights: ArrayLike,
    x: float = 1.0,
    beta: float = 1.0,
    beta_sg: float = 1.0,
    chunk: int = DEFAULT_CHUNK,
) -> torch.Tensor:
    """The SG of y (forward sigma_beta, backward sigma'_{beta_SG}) at every point; ``(..., 5)``."""
    wts = _check_weights(weights)
    beta = _check_beta(beta)
    beta_sg = _check_beta(beta_sg, "beta_sg")
    return _chunked(_grad_of(lambda c: network(c, x, beta, beta_sg)), wts, chunk, (N_WEIGHTS,))


# --------------------------------------------------------------------------------------------
# Lines, planes and paths in weight space
# --------------------------------------------------------------------------------------------


def line_points(base: ArrayLike, direction: ArrayLike | str, ts: ArrayLike) -> torch.Tensor:
    """Points ``base + t * direction`` for every t; shape ``(len(ts), 5)``.

    `direction` is a 5-vector, or a weight name: then that weight takes the values `ts`
    themselves (not base + t) and every other weight stays at `base`.
    """
    b = _check_weights(base, "base")
    if isinstance(direction, str):
        d = unit_direction(direction)
        b = b * (1 - d)  # the named weight's coordinate is t itself
    else:
        d = _check_weights(direction, "direction")
    t = _as_tensor(ts, "ts").reshape(-1)
    return b + t[:, None] * d


def plane_points(
    base: ArrayLike,
    d1: ArrayLike | str,
    d2: ArrayLike | str,
    a: ArrayLike,
    b: ArrayLike,
) -> torch.Tensor:
    """Grid ``base + a_i d1 + b_j d2``; shape ``(len(a), len(b), 5)`` (matrix 'ij' indexing).

    Directions are 5-vectors (checked orthonormal) or two distinct weight names: then those two
    weights take the values ``a_i`` and ``b_j`` themselves (not base + a_i) and every other weight
    stays at `base`.
    """
    if isinstance(d1, str) or isinstance(d2, str):
        if not (isinstance(d1, str) and isinstance(d2, str)):
            raise ValueError(f"d1={d1!r}, d2={d2!r}: give two weight names or two 5-vectors")
        if d1 == d2:
            raise ValueError(f"d1 and d2 are both {d1!r}; choose two different {WEIGHT_NAMES}")
        e1, e2 = unit_direction(d1), unit_direction(d2)
        bb = _check_weights(base, "base") * (1 - e1 - e2)  # named weights: absolute coordinates
    else:
        e1, e2 = check_orthonormal(d1, d2)
        bb = _check_weights(base, "base")
    ta = _as_tensor(a, "a").reshape(-1)
    tb = _as_tensor(b, "b").reshape(-1)
    return bb + ta[:, None, None] * e1 + tb[None, :, None] * e2


@dataclass(frozen=True)
class Path:
    """A sampled path in weight space: points, tangents dP/dt and parameter t at each point.

    A closed path (``period`` set) joins its last point back to its first, with the final
    parameter step ``t[0] + period - t[-1]``.
    """

    points: torch.Tensor  # (n, 5)
    tangents: torch.Tensor  # (n, 5)
    t: torch.Tensor  # (n,)
    period: float | None = None

    @property
    def closed(self) -> bool:
        """True for a closed loop."""
        return self.period is not None


def line_path(start: ArrayLike, end: ArrayLike, n_points: int) -> Path:
    """Straight path from `start` to `end` with `n_points` points (both ends included)."""
    if int(n_points) < 2:
        raise ValueError(f"n_points={n_points!r} is not valid; a line needs at least 2 points")
    s = _check_weights(start, "start")
    e = _check_weights(end, "end")
    t = torch.linspace(0.0, 1.0, int(n_points), dtype=DTYPE)
    points = s + t[:, None] * (e - s)
    return Path(points, (e - s).expand_as(points).clone(), t)


def circle_path(
    base: ArrayLike,
    d1: ArrayLike,
    d2: ArrayLike,
    radius: float,
    n_points: int | None = None,
    angles: ArrayLike | None = None,
) -> Path:
    """Closed circle ``base + r (sin t d1 + cos t d2)``, the paper's parametrisation.

    Angles are ``t = 2 pi k / n_points`` (k = 0..n-1), or the sorted values in [0, 2 pi) given as
    `angles`; so the path starts at ``base + r d2`` and first moves towards +d1. `d1`, `d2` must
    be orthonormal. Tangents are exact: ``r (cos t d1 - sin t d2)``.
    """
    if (n_points is None) == (angles is None):
        raise ValueError("give exactly one of n_points and angles")
    radius = float(radius)
    if not np.isfinite(radius) or radius <= 0:
        raise ValueError(f"radius={radius!r} is not valid; it must be a finite number > 0")
    if angles is None:
        if int(n_points) < 3:
            raise ValueError(f"n_points={n_points!r} is not valid; a circle needs >= 3 points")
        t = torch.arange(int(n_points), dtype=DTYPE) * (2 * np.pi / int(n_points))
    else:
        t = _as_tensor(angles, "angles").reshape(-1)
        if t.numel() < 3 or bool((t.diff() <= 0).any()) or t[0] < 0 or t[-1] >= 2 * np.pi:
            raise ValueError("angles must be >= 3 strictly increasing values in [0, 2 pi)")
    e1, e2 = check_orthonormal(d1, d2)
    points, tangents = _circle_at(_check_weights(base, "base"), e1, e2, radius, t)
    return Path(points, tangents, t, period=2 * np.pi)


def _circle_at(
    base: torch.Tensor, e1: torch.Tensor, e2: torch.Tensor, radius: float, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Points and tangents of ``base + r (sin t e1 + cos t e2)`` at angles `t`."""
    c, s = torch.cos(t)[:, None], torch.sin(t)[:, None]
    return base + radius * (s * e1 + c * e2), radius * (c * e1 - s * e2)


def refine_circle(
    base: ArrayLike,
    d1: ArrayLike,
    d2: ArrayLike,
    radius: float,
    n_points: int,
    values: Callable[[torch.Tensor], torch.Tensor],
    tol: float = 1e-3,
    min_step: float = 1e-13,
    max_rounds: int = 80,
) -> Path:
    """Circle of `n_points` equal steps, bisected wherever `values` jumps by more than `tol`.

    At beta = 1e4 each unit switches within about 1e-3 rad of the paper's circle (radius 1.8),
    less than its equal step at N = 1500 (4.2e-3 rad), so the trapezoidal rule on equal steps
    needs about 2**20 points before the true gradient's loop integral vanishes. Bisecting each
    segment whose end values (e.g. `activations`) differ by more than `tol`, down to `min_step`
    radians, samples every switch with about a tenth of those points.
    """
    if float(tol) <= 0:
        raise ValueError(f"tol={tol!r} is not valid; it must be > 0")
    e12 = check_orthonormal(d1, d2)
    path = circle_path(base, d1, d2, radius, n_points)
    t, vals = path.t, values(path.points).reshape(len(path.t), -1)
    for _ in range(int(max_rounds)):
        t_next = torch.cat([t[1:], t[:1] + 2 * np.pi])
        jump = (torch.roll(vals, -1, 0) - vals).abs().amax(-1)
        split = (jump > tol) & (t_next - t > min_step)
        if not bool(split.any()):
            break
        mids = torch.remainder(0.5 * (t[split] + t_next[split]), 2 * np.pi)
        new_points, _ = _circle_at(_check_weights(base, "base"), *e12, float(radius), mids)
        t = torch.cat([t, mids])
        vals = torch.cat([vals, values(new_points).reshape(len(mids), -1)])
        order = torch.argsort(t)
        t, vals = t[order], vals[order]
    return circle_path(base, d1, d2, radius, angles=t)


def line_integral(field: ArrayLike, path: Path, cumulative: bool = False) -> torch.Tensor:
    """Integral of a vector field along `path` by the trapezoidal rule on ``field . tangent``.

    `field` holds the field at ``path.points`` (shape ``(n, 5)``). Returns the total (a 0-d
    tensor), or with ``cumulative=True`` the running integral from the first point: length n for
    an open path, n + 1 for a closed one (the last entry is the closed-loop integral).
    """
    f = _check_weights(field, "field")
    if f.shape != path.points.shape:
        raise ValueError(f"field has shape {tuple(f.shape)}; expected {tuple(path.points.shape)}")
    integrand = (f * path.tangents).sum(-1)
    t = path.t
    if path.closed:
        integrand = torch.cat([integrand, integrand[:1]])
        t = torch.cat([t, t[:1] + path.period])
    pieces = 0.5 * (integrand[1:] + integrand[:-1]) * torch.diff(t)
    running = torch.cat([torch.zeros(1, dtype=DTYPE), torch.cumsum(pieces, 0)])
    return running if cumulative else running[-1]


def beta_key(beta: float) -> str:
    """The name of a beta in result keys and JSON: ``1``, ``5``, ``20``, ``10000``."""
    return f"{float(beta):g}"


def running_integrals(
    path: Path, x: float, beta: float, beta_sgs: Sequence[float]
) -> dict[str, torch.Tensor]:
    """Running integrals along `path` of the fields the closed-circle figure compares.

    Keys: ``'true'`` (true gradient of the network at `beta`), and for each b in `beta_sgs`
    ``'sg_<b>'`` (SG, forward `beta`, backward beta_SG = b) and ``'smooth_<b>'`` (true gradient
    of the smooth network with beta = b); plus ``'output'``, the output at `beta` on the path.
    Each has length n + 1 on a closed path (the first point again at the end).
    """
    out = {"true": line_integral(true_gradient(path.points, x, beta), path, cumulative=True)}
    for b in beta_sgs:
        sg = surrogate_gradient(path.points, x, beta, b)
        out[f"sg_{beta_key(b)}"] = line_integral(sg, path, cumulative=True)
        smooth = true_gradient(path.points, x, b)
        out[f"smooth_{beta_key(b)}"] = line_integral(smooth, path, cumulative=True)
    y = output(path.points, x, beta)
    out["output"] = torch.cat([y, y[:1]]) if path.closed else y
    return out


def loop_integrals(
    path: Path, x: float, beta: float, beta_sgs: Sequence[float]
) -> dict[str, float]:
    """Closed-loop integrals on `path`, with the keys of `running_integrals` (less 'output')."""
    if not path.closed:
        raise ValueError("path is open; loop integrals need a closed path (circle_path)")
    running = running_integrals(path, x, beta, beta_sgs)
    return {key: float(v[-1]) for key, v in running.items() if key != "output"}


def uniform_convergence(
    base: ArrayLike,
    d1: ArrayLike,
    d2: ArrayLike,
    radius: float,
    n_points: Sequence[int],
    x: float,
    beta: float,
    beta_sgs: Sequence[float],
) -> list[dict[str, float]]:
    """`loop_integrals` on the circle of equal steps for each number of points in `n_points`.

    Shows how the trapezoidal rule converges in N (one row per N, with key ``'n_points'``).
    """
    rows = []
    for n in n_points:  # seconds in all (about 1.5 million points at the notebook's default)
        path = circle_path(base, d1, d2, radius, int(n))
        rows.append({"n_points": int(n), **loop_integrals(path, x, beta, beta_sgs)})
    return rows


def min_max_normalise(values: ArrayLike) -> torch.Tensor:
    """``(v - min v) / (max v - min v)``, as the paper's figures scale curves; 0 if v is flat."""
    v = _as_tensor(values, "values")
    span = v.max() - v.min()
    return (v - v.min()) / span if float(span) > 0 else torch.zeros_like(v)


# --------------------------------------------------------------------------------------------
# Analysis helpers shared by the notebooks
# --------------------------------------------------------------------------------------------


def cumulative_trapezoid(values: torch.Tensor, t: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Running trapezoidal integral of `values` over the grid `t` along `dim`, starting at 0."""
    values = _as_tensor(values, "values")
    t = _as_tensor(t, "t").reshape(-1)
    v = values.movedim(dim, -1)
    if v.shape[-1] != t.shape[0]:
        raise ValueError(f"values have {v.shape[-1]} points along dim {dim}; t has {t.shape[0]}")
    pieces = 0.5 * (v[..., 1:] + v[..., :-1]) * torch.diff(t)
    out = torch.cat([torch.zeros_like(v[..., :1]), torch.cumsum(pieces, -1)], -1)
    return out.movedim(-1, dim)


def integrate_grid_field(
    field_a: torch.Tensor,
    field_b: torch.Tensor,
    a: ArrayLike,
    b: ArrayLike,
    anchor: tuple[int, int],
    value_at_anchor: float = 0.0,
    order: str = "ab",
) -> torch.Tensor:
    """Potential of a 2-D field on an ``(len(a), len(b))`` grid by integrating along grid lines.

    ``order='ab'`` goes from grid point `anchor` first along a (at fixed b) then along b;
    ``order='ba'`` the other way round. For a gradient field both orders give the function
    itself (up to discretisation); for a non-conservative field (an SG) they differ.
    """
    if order not in ("ab", "ba"):
        raise ValueError(f"order={order!r} is not valid; choose 'ab' or 'ba'")
    fa, fb = _as_tensor(field_a, "field_a"), _as_tensor(field_b, "field_b")
    ta, tb = _as_tensor(a, "a").reshape(-1), _as_tensor(b, "b").reshape(-1)
    if fa.shape != (len(ta), len(tb)) or fb.shape != fa.shape:
        raise ValueError(
            f"fields have shapes {tuple(fa.shape)}, {tuple(fb.shape)}; "
            f"expected ({len(ta)}, {len(tb)})"
        )
    i0, j0 = int(anchor[0]), int(anchor[1])
    if not (0 <= i0 < len(ta) and 0 <= j0 < len(tb)):
        raise ValueError(f"anchor={anchor!r} lies outside the {len(ta)} x {len(tb)} grid")
    ca = cumulative_trapezoid(fa, ta, dim=0)  # ca[i, j] = int_{a_0}^{a_i} fa(., b_j)
    cb = cumulative_trapezoid(fb, tb, dim=1)  # cb[i, j] = int_{b_0}^{b_j} fb(a_i, .)
    if order == "ab":
        first = (ca[:, j0] - ca[i0, j0])[:, None]  # along a at b = b_j0
        second = cb - cb[:, j0 : j0 + 1]  # then along b at each a_i
    else:
        first = (cb[i0, :] - cb[i0, j0])[None, :]  # along b at a = a_i0
        second = ca - ca[i0 : i0 + 1, :]  # then along a at each b_j
    return value_at_anchor + first + second


def minima_from_derivative(t: ArrayLike, derivative: ArrayLike) -> list[float]:
    """Locations of the minima of a 1-D curve from the sign of its derivative.

    Interior minima are where the derivative goes from < 0 to > 0 (exact zeros in between are
    skipped; the location is the linear zero crossing). An end of the interval counts as a
    minimum if the curve rises away from it. Using the derivative, not the curve, means flat
    saturated regions do not produce spurious minima.
    """
    tt = _as_tensor(t, "t").reshape(-1).numpy()
    d = _as_tensor(derivative, "derivative").reshape(-1).numpy()
    if tt.shape != d.shape:
        raise ValueError(f"t has {tt.size} points, derivative {d.size}")
    nz = np.flatnonzero(d != 0)
    if nz.size == 0:
        return []
    out: list[float] = []
    if d[nz[0]] > 0:
        out.append(float(tt[0]))
    for i, j in zip(nz[:-1], nz[1:]):
        if d[i] < 0 < d[j]:
            out.append(float(tt[i] + (tt[j] - tt[i]) * (-d[i]) / (d[j] - d[i])))
    if d[nz[-1]] < 0:
        out.append(float(tt[-1]))
    return out


def opposite_sign_mask(a: ArrayLike, b: ArrayLike) -> torch.Tensor:
    """True where `a` and `b` are both nonzero and have opposite signs."""
    return (_as_tensor(a, "a") * _as_tensor(b, "b")) < 0


def intervals_where(t: ArrayLike, mask: ArrayLike) -> list[tuple[float, float]]:
    """Maximal runs of True in `mask` over the sorted grid `t`, as (first t, last t) pairs."""
    tt = _as_tensor(t, "t").reshape(-1).numpy()
    m = np.asarray(mask, dtype=bool).reshape(-1)
    if tt.shape != m.shape:
        raise ValueError(f"t has {tt.size} points, mask {m.size}")
    edges = np.diff(np.concatenate([[0], m.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    return [(float(tt[i]), float(tt[j])) for i, j in zip(starts, stops)]
