"""Independent float64 NumPy references for the Sigmoid_network tests.

Nothing here uses `sigmoid_net`: the network and its surrogate gradient are written out by hand
(chain rule, scipy's expit), the paper's plane is drawn with scipy directly, and loop integrals
are plain sums. The module (torch autograd) and these formulas can only agree if both are right.

The paper's closed-circle setup (Gygax & Zenke, arXiv:2404.14964; the original notebook
SGs_are_not_gradients/integrate_closed_circle.ipynb): weights (w, v1, v2, u1, u2) = 0 at the
centre, x = 1, forward beta = 1e4, beta_SG in (1, 5, 20), d1, d2 = rows 0, 1 of
scipy.stats.ortho_group.rvs(5, random_state=124), point(t) = r sin(t) d1 + r cos(t) d2 with
r = 1.8 and t = 2 pi i / N, N = 1500.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from scipy.special import expit
from scipy.stats import ortho_group

X, BETA, RADIUS, SEED, N_PAPER = 1.0, 1e4, 1.8, 124, 1500
BETA_SGS = (1.0, 5.0, 20.0)
# Rounding floor of a loop integral summed over up to 2**20 terms in float64 (pairwise summation:
# about eps * log2(M) * sum |terms| ~ 1e-14 here); differences below it carry no information.
ROUNDING_FLOOR = 1e-12


def d_sigmoid(z: np.ndarray, beta: float) -> np.ndarray:
    """d/dz of 1 / (1 + exp(-beta z))."""
    s = expit(beta * z)
    return beta * s * (1.0 - s)


def sg_field(points: np.ndarray, x: float, beta: float, beta_sg: float) -> np.ndarray:
    """SG of y at `points (n, 5)`: forward sigma_beta, every sigma' replaced by sigma'_beta_sg.

    With beta_sg = beta this is the true gradient. Hand-written chain rule:
    dy/du_i = s_y h_i, dy/dv_i = s_y u_i s_hi g, dy/dw = s_y (u1 s_h1 v1 + u2 s_h2 v2) s_g x,
    where s_* = sigma'_beta_sg at each unit's input.
    """
    w, v1, v2, u1, u2 = points.T
    g = expit(beta * w * x)
    h1, h2 = expit(beta * v1 * g), expit(beta * v2 * g)
    s_y = d_sigmoid(u1 * h1 + u2 * h2, beta_sg)
    s_h1, s_h2 = d_sigmoid(v1 * g, beta_sg), d_sigmoid(v2 * g, beta_sg)
    s_g = d_sigmoid(w * x, beta_sg)
    dw = s_y * (u1 * s_h1 * v1 + u2 * s_h2 * v2) * s_g * x
    return np.stack([dw, s_y * u1 * s_h1 * g, s_y * u2 * s_h2 * g, s_y * h1, s_y * h2], axis=1)


def paper_plane(seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """d1, d2: rows 0 and 1 of the seeded Haar-random orthogonal 5 x 5 matrix."""
    m = ortho_group.rvs(5, random_state=seed)
    return m[0], m[1]


def circle(t: np.ndarray, d1: np.ndarray, d2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points r (sin t d1 + cos t d2) and their exact tangents d/dt."""
    s, c = np.sin(t)[:, None], np.cos(t)[:, None]
    return RADIUS * (s * d1 + c * d2), RADIUS * (c * d1 - s * d2)


def uniform_loop_integral(beta_sg: float, n: int, beta: float = BETA) -> float:
    """Closed-loop integral on n equal steps: for a periodic integrand the trapezoidal rule is
    the plain sum of field . tangent times 2 pi / n."""
    d1, d2 = paper_plane()
    total = 0.0
    for start in range(0, n, 1 << 17):  # chunks bound memory
        t = 2 * np.pi * np.arange(start, min(n, start + (1 << 17))) / n
        points, tangents = circle(t, d1, d2)
        total += float((sg_field(points, X, beta, beta_sg) * tangents).sum())
    return total * 2 * np.pi / n


def converged_loop_integral(beta_sg: float, m: int) -> tuple[float, float]:
    """Loop integral with m >= 4000 equal steps and a bound on its error.

    Error bound: the integrand is 2 pi-periodic and analytic in a strip around the real axis
    (logistic functions and sines of t), so the m-point trapezoidal error falls geometrically,
    e(m) ~ C q**m (Trefethen & Weideman, SIAM Review 56 (2014), Thm 3.2). With
    d0 = |I_m - I_m/2| and d1 = |I_m/2 - I_m/4|, d0 ~ e(m/2) and d1 ~ e(m/4), so d0 <= d1 / 4
    means q**(m/4) <= 1/4, hence e(m) / e(m/2) = q**(m/2) <= 1/16 and
    |I - I_m| <= d0 / 15 <= d0. The regime is checked here; below the rounding floor it holds
    trivially. Returned bound: d0 + ROUNDING_FLOOR.
    """
    assert m >= 4000
    i_m, i_half, i_quarter = (uniform_loop_integral(beta_sg, k) for k in (m, m // 2, m // 4))
    d0, d1 = abs(i_m - i_half), abs(i_half - i_quarter)
    assert d1 < ROUNDING_FLOOR or d0 <= d1 / 4, f"not yet geometric: d0={d0:.3g}, d1={d1:.3g}"
    return i_m, d0 + ROUNDING_FLOOR


def original_estimator(beta_sg: float, n: int = N_PAPER) -> float:
    """The original notebook's running sum at its end: n + 1 points (the first one twice), the SG
    projected on the unit chord between neighbours (one-sided at the first point), summed
    without the step length. Used to check this file's setup against the original's output."""
    d1, d2 = paper_plane()
    t = 2 * np.pi * np.arange(n + 1) / n
    t[-1] = 0.0
    points, _ = circle(t, d1, d2)
    idx = np.arange(n + 1)
    chord = points[np.minimum(idx + 1, n)] - points[idx - 1]  # idx - 1 = -1 is the first point
    chord /= np.linalg.norm(chord, axis=1, keepdims=True)
    return float((sg_field(points, X, BETA, beta_sg) * chord).sum())


@dataclass(frozen=True)
class LoopReference:
    """Independent loop integrals at the paper's plane, keyed like sigmoid_net ('true', 'sg_5')."""

    converged: dict[str, float]  # m equal steps, m in n_points
    bound: dict[str, float]  # |error of converged| <= bound
    at_n_paper: dict[str, float]  # on the paper's 1500 equal steps
    n_points: dict[str, int]
    original_sum: dict[str, float]  # the original notebook's estimator at N = 1500 (SGs only)
    d1: np.ndarray
    d2: np.ndarray


@pytest.fixture(scope="session")
def loop_reference() -> LoopReference:
    """About 3 s: 2**20 points for the true gradient at beta = 1e4, 2**18 for each SG."""
    plan = {"true": (BETA, 1 << 20)}
    plan.update({f"sg_{b:g}": (b, 1 << 18) for b in BETA_SGS})
    converged, bound, at_paper = {}, {}, {}
    for key, (beta_sg, m) in plan.items():
        converged[key], bound[key] = converged_loop_integral(beta_sg, m)
        at_paper[key] = uniform_loop_integral(beta_sg, N_PAPER)
    original = {f"sg_{b:g}": original_estimator(b) for b in BETA_SGS}
    n_points = {k: m for k, (_, m) in plan.items()}
    return LoopReference(converged, bound, at_paper, n_points, original, *paper_plane())


BIAS_SETUP = {"w": 1.0, "v1": 0.05, "v2": 0.1, "u1": 1.0, "u2": -1.0}


def bias_point(**changes: float) -> np.ndarray:
    """The bias notebook's weights (w, v1, v2, u1, u2) with some of them changed."""
    named = {**BIAS_SETUP, **changes}
    return np.array([[named[k] for k in ("w", "v1", "v2", "u1", "u2")]], dtype=np.float64)


def sign_change_of_sg_at_w0(beta: float = 100.0, lo: float = 20.0, hi: float = 80.0) -> float:
    """beta_SG at which the SG dy/dw at w = 0 changes sign, by bisection to 1e-10."""

    def f(b: float) -> float:
        return float(sg_field(bias_point(w=0.0), X, beta, b)[0, 0])

    assert f(lo) < 0 < f(hi)
    while hi - lo > 1e-10:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return 0.5 * (lo + hi)


@pytest.fixture(scope="session")
def bias_reference() -> dict[str, float]:
    """The bias notebook's numbers at w = 0 (forward beta = 100) and at the arrow (beta = 20).

    Keys: 'true_derivative_at_w0', 'sg_at_w0_<b>' for b = 15, 30, 'beta_sg_sign_change',
    'true_at_arrow_v1', 'true_at_arrow_v2', 'sg_at_arrow_<b>_v1' / '_v2' for b = 2, 4.
    """
    at_w0 = bias_point(w=0.0)
    out = {"true_derivative_at_w0": float(sg_field(at_w0, X, 100.0, 100.0)[0, 0])}
    for b in (15.0, 30.0):
        out[f"sg_at_w0_{b:g}"] = float(sg_field(at_w0, X, 100.0, b)[0, 0])
    out["beta_sg_sign_change"] = sign_change_of_sg_at_w0()
    arrow = bias_point(v1=1.7, v2=-1.3)
    for name, b in (("true", 20.0), ("sg_2", 2.0), ("sg_4", 4.0)):  # true: beta_SG = beta
        field = sg_field(arrow, X, 20.0, b)[0]
        out[f"{name}_at_arrow_v1"], out[f"{name}_at_arrow_v2"] = float(field[1]), float(field[2])
    return out
