"""Behaviour of the five-weight sigmoid network, its true gradient and its surrogate gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import expit

import sigmoid_net as sn

PAPER_BETA = 1e4
PAPER_BETA_SGS = (1.0, 5.0, 20.0)
BIAS_SETUP = {"w": 1.0, "v1": 0.05, "v2": 0.1, "u1": 1.0, "u2": -1.0}


def numpy_output(weights: np.ndarray, x: float, beta: float) -> np.ndarray:
    """Independent NumPy forward pass (scipy's expit), used for finite differences."""
    w, v1, v2, u1, u2 = np.moveaxis(weights, -1, 0)
    g = expit(beta * w * x)
    h1, h2 = expit(beta * v1 * g), expit(beta * v2 * g)
    return expit(beta * (u1 * h1 + u2 * h2))


def central_differences(weights: np.ndarray, x: float, beta: float, eps: float) -> np.ndarray:
    out = np.empty_like(weights)
    for k in range(weights.shape[-1]):
        step = np.zeros(weights.shape[-1])
        step[k] = eps
        out[..., k] = (
            numpy_output(weights + step, x, beta) - numpy_output(weights - step, x, beta)
        ) / (2 * eps)
    return out


def random_weights(n: int, seed: int = 0, scale: float = 1.5) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return scale * (2 * torch.rand(n, 5, generator=gen, dtype=torch.float64) - 1)


@pytest.mark.parametrize("beta", [0.5, 2.0, 5.0])
def test_true_gradient_and_sg_at_beta_match_finite_differences(beta: float) -> None:
    pts = random_weights(200, seed=1)
    fd = central_differences(pts.numpy(), x=0.7, beta=beta, eps=1e-6)
    true = sn.true_gradient(pts, 0.7, beta).numpy()
    sg = sn.surrogate_gradient(pts, 0.7, beta, beta).numpy()
    np.testing.assert_allclose(
        sn.output(pts, 0.7, beta).numpy(), numpy_output(pts.numpy(), 0.7, beta)
    )
    np.testing.assert_allclose(true, fd, atol=1e-7, rtol=1e-6)
    np.testing.assert_allclose(sg, fd, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("beta", [1.0, 20.0, 100.0, PAPER_BETA])
def test_sg_equals_true_gradient_when_beta_sg_equals_beta(beta: float) -> None:
    pts = random_weights(500, seed=2)
    true = sn.true_gradient(pts, 1.0, beta)
    sg = sn.surrogate_gradient(pts, 1.0, beta, beta)
    assert torch.isfinite(true).all()
    assert torch.allclose(sg, true, rtol=0, atol=1e-10 * max(1.0, float(true.abs().max())))


def test_sg_differs_from_true_gradient_when_beta_sg_differs() -> None:
    pts = random_weights(100, seed=3, scale=0.5)
    assert not torch.allclose(
        sn.surrogate_gradient(pts, 1.0, 5.0, 1.0), sn.true_gradient(pts, 1.0, 5.0)
    )


def test_forward_pass_of_sg_is_the_network() -> None:
    pts = random_weights(50, seed=4).requires_grad_(True)
    y_sg = sn.network(pts, 1.0, 7.0, beta_sg=2.0)
    assert torch.equal(y_sg.detach(), sn.output(pts.detach(), 1.0, 7.0))


def test_large_beta_gives_finite_values_on_a_big_grid() -> None:
    grid = torch.linspace(-2, 2, 2000, dtype=torch.float64)
    d1, d2 = sn.paper_directions()
    plane = sn.plane_points(torch.zeros(5, dtype=torch.float64), d1, d2, grid, grid)
    y = sn.output(plane, 1.0, PAPER_BETA)
    assert y.shape == (2000, 2000) and torch.isfinite(y).all()
    sg = sn.surrogate_gradient(plane[::4, ::4], 1.0, PAPER_BETA, 5.0)
    true = sn.true_gradient(plane[::4, ::4], 1.0, PAPER_BETA)
    assert sg.shape == (500, 500, 5) and torch.isfinite(sg).all() and torch.isfinite(true).all()


def test_line_along_a_named_weight_uses_absolute_values() -> None:
    base = sn.weights_from(**BIAS_SETUP)
    line = sn.line_points(base, "w", [-0.2, 0.0, 0.2])
    assert line[:, 0].tolist() == [-0.2, 0.0, 0.2]
    assert (line[:, 1:] == base[1:]).all()


def test_plane_of_two_weights_moves_only_those_weights() -> None:
    base = sn.weights_from(**BIAS_SETUP)
    a = torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64)
    b = torch.tensor([0.5, 1.5], dtype=torch.float64)
    plane = sn.plane_points(base, "v1", "v2", a, b)
    assert plane.shape == (3, 2, 5)
    assert torch.equal(plane[2, 1], sn.weights_from(base, v1=2.0, v2=1.5))
    for name in ("w", "u1", "u2"):
        k = sn.weight_index(name)
        assert (plane[..., k] == base[k]).all()


def test_paper_directions_are_the_seeded_ortho_group_rows_of_the_original(loop_reference) -> None:
    d1, d2 = sn.paper_directions()
    np.testing.assert_array_equal(d1.numpy(), loop_reference.d1)
    np.testing.assert_array_equal(d2.numpy(), loop_reference.d2)
    # as printed (float32) by the original notebook SGs_are_not_gradients/integrate_closed_circle
    printed_d1 = [0.1168134, -0.21802215, -0.8262966, 0.5019748, 0.06384699]
    printed_d2 = [-0.30310827, -0.8068901, 0.36749288, 0.3028789, 0.1739747]
    np.testing.assert_allclose(d1.numpy(), printed_d1, atol=1e-6)
    np.testing.assert_allclose(d2.numpy(), printed_d2, atol=1e-6)
    assert torch.allclose(d1 @ d2, torch.zeros((), dtype=torch.float64), atol=1e-14)
    assert not torch.equal(sn.paper_directions(5)[0], d1)


def test_circle_starts_at_plus_d2_and_moves_towards_plus_d1() -> None:
    d1, d2 = sn.paper_directions()
    base = torch.zeros(5, dtype=torch.float64)
    path = sn.circle_path(base, d1, d2, 1.8, 1500)
    assert torch.allclose(path.points[0], 1.8 * d2, atol=1e-15)
    assert float(path.points[1] @ d1) > 0  # sin(t) > 0 just after the start
    quarter = path.points[375]  # t = pi / 2
    assert torch.allclose(quarter, 1.8 * d1, atol=1e-14)
    # exact tangents agree with a central difference of the points
    h = 2 * np.pi / 1500
    fd = (path.points[2] - path.points[0]) / (2 * h)
    assert torch.allclose(path.tangents[1], fd, rtol=1e-5)


@pytest.mark.parametrize("beta", [3.0, 50.0])
def test_line_integral_of_true_gradient_along_a_line_is_change_of_output(beta: float) -> None:
    start = torch.tensor([0.94, 0.42, -0.08, 0.84, 0.29], dtype=torch.float64)
    end = torch.tensor([0.58, -0.64, -0.3, 0.16, -0.42], dtype=torch.float64)
    path = sn.line_path(start, end, 20001)
    total = sn.line_integral(sn.true_gradient(path.points, 1.0, beta), path)
    change = float(sn.output(end, 1.0, beta) - sn.output(start, 1.0, beta))
    assert abs(change) > 0.05  # the test is not vacuous
    assert abs(float(total) - change) < 1e-5
    running = sn.line_integral(sn.true_gradient(path.points, 1.0, beta), path, cumulative=True)
    y = sn.output(path.points, 1.0, beta)
    assert torch.allclose(running, y - y[0], atol=1e-5)


def _paper_base() -> torch.Tensor:
    return torch.zeros(5, dtype=torch.float64)


def test_reference_reproduces_the_original_code(loop_reference) -> None:
    """The test's independent setup is the paper's: its version of the original notebook's sum
    gives the numbers that the original code (JAX, float32) printed when run from a scratch
    folder, with cumsum(circle_ig[beta_sg])[-1] at N = 1500."""
    original_run = {"sg_1": -5.560434341430664, "sg_5": 48.507041931152344, "sg_20": 198.20767}
    for key, value in original_run.items():
        assert loop_reference.original_sum[key] == pytest.approx(value, rel=2e-6), key


def test_loop_integrals_on_the_papers_path_match_the_independent_sums(loop_reference) -> None:
    d1, d2 = sn.paper_directions()
    path = sn.circle_path(_paper_base(), d1, d2, 1.8, 1500)
    mine = sn.loop_integrals(path, 1.0, PAPER_BETA, PAPER_BETA_SGS)
    for key, value in loop_reference.at_n_paper.items():
        assert mine[key] == pytest.approx(value, rel=1e-11, abs=1e-13), key
    assert abs(mine["true"]) > 0.1  # N = 1500 steps over the switches of the steep network
    for b in PAPER_BETA_SGS:  # the smooth network's gradient closes at any N
        assert abs(mine[f"smooth_{b:g}"]) < 1e-12


def test_converged_loop_integrals_match_the_independent_reference(loop_reference) -> None:
    """The module on equal steps (as many as the reference) and on the adaptive path."""
    d1, d2 = sn.paper_directions()
    base = _paper_base()
    ref, bound = loop_reference.converged, loop_reference.bound
    assert abs(ref["true"]) <= bound["true"] < 1e-5  # the true gradient: no curl
    assert all(abs(ref[f"sg_{b:g}"]) > 0.04 for b in PAPER_BETA_SGS)  # the SGs: curl
    for key, m in loop_reference.n_points.items():
        path = sn.circle_path(base, d1, d2, 1.8, m)
        beta_sg = PAPER_BETA if key == "true" else float(key[3:])
        field = sn.surrogate_gradient(path.points, 1.0, PAPER_BETA, beta_sg)
        assert abs(float(sn.line_integral(field, path)) - ref[key]) <= bound[key] + 1e-12, key
    adaptive = sn.refine_circle(
        base, d1, d2, 1.8, 1500, lambda p: sn.activations(p, 1.0, PAPER_BETA), tol=1e-4
    )
    mine = sn.loop_integrals(adaptive, 1.0, PAPER_BETA, PAPER_BETA_SGS)
    for key, value in ref.items():  # adaptive path: its own error is about 2e-5 at tol 1e-4
        assert abs(mine[key] - value) <= bound[key] + 1e-4, key


def test_the_papers_n_is_not_converged_at_beta_sg_20(loop_reference) -> None:
    gap = loop_reference.converged["sg_20"] - loop_reference.at_n_paper["sg_20"]
    assert gap > 0.3 + loop_reference.bound["sg_20"]
    for b in (1.0, 5.0):
        key = f"sg_{b:g}"
        assert abs(loop_reference.converged[key] - loop_reference.at_n_paper[key]) < 0.005


def test_closed_loop_integral_of_a_smooth_gradient_is_zero() -> None:
    d1, d2 = sn.paper_directions(5)
    base = torch.tensor([0.2, -0.1, 0.3, 0.5, -0.4], dtype=torch.float64)
    path = sn.circle_path(base, d1, d2, 1.0, 400)
    assert abs(float(sn.line_integral(sn.true_gradient(path.points, 1.0, 3.0), path))) < 1e-10
    running = sn.line_integral(sn.true_gradient(path.points, 1.0, 3.0), path, cumulative=True)
    assert running.shape == (401,)


def test_sign_of_sg_and_true_derivative_at_w0_in_bias_setup() -> None:
    """At w = 0 (beta = 100) dy/dw > 0; the SG is < 0 for beta_SG below ~42.45, > 0 above."""
    point = sn.weights_from(**{**BIAS_SETUP, "w": 0.0})
    k = sn.weight_index("w")
    true = float(sn.true_gradient(point, 1.0, 100.0)[k])
    assert true > 0
    for beta_sg in (2.0, 15.0, 30.0, 42.0):
        assert float(sn.surrogate_gradient(point, 1.0, 100.0, beta_sg)[k]) < 0, beta_sg
    for beta_sg in (43.0, 60.0, 100.0):
        assert float(sn.surrogate_gradient(point, 1.0, 100.0, beta_sg)[k]) > 0, beta_sg
    fd = central_differences(point.numpy(), 1.0, 100.0, 1e-7)[k]
    assert abs(fd - true) < 1e-5


def test_bias_numbers_at_w0_and_at_the_arrow_match_the_independent_chain_rule(
    bias_reference,
) -> None:
    point = sn.weights_from(**{**BIAS_SETUP, "w": 0.0})
    k = sn.weight_index("w")
    true = float(sn.true_gradient(point, 1.0, 100.0)[k])
    assert true == pytest.approx(bias_reference["true_derivative_at_w0"], rel=1e-12)
    for b in (15.0, 30.0):
        sg = float(sn.surrogate_gradient(point, 1.0, 100.0, b)[k])
        assert sg == pytest.approx(bias_reference[f"sg_at_w0_{b:g}"], rel=1e-12)
    assert bias_reference["beta_sg_sign_change"] == pytest.approx(42.451, abs=1e-3)
    arrow = sn.weights_from(**{**BIAS_SETUP, "v1": 1.7, "v2": -1.3})
    for name, b in (("sg_2", 2.0), ("sg_4", 4.0)):
        sg = sn.surrogate_gradient(arrow, 1.0, 20.0, b)
        assert float(sg[1]) == pytest.approx(bias_reference[f"{name}_at_arrow_v1"], rel=1e-12)
        assert float(sg[2]) == pytest.approx(bias_reference[f"{name}_at_arrow_v2"], rel=1e-12)


def test_sg_is_a_descent_direction_where_true_gradient_vanishes() -> None:
    point = sn.weights_from(**{**BIAS_SETUP, "v1": 1.7, "v2": -1.3})
    true = sn.true_gradient(point, 1.0, 20.0)
    sg = sn.surrogate_gradient(point, 1.0, 20.0, 2.0)
    assert float(true[1:3].norm()) < 1e-15  # flat in the (v1, v2) plane
    assert float(sg[1:3].norm()) > 1e-2


def test_integrate_grid_field_orders_agree_for_gradient_and_recover_output() -> None:
    base = sn.weights_from(**BIAS_SETUP)
    grid = torch.linspace(-2, 2, 801, dtype=torch.float64)
    plane = sn.plane_points(base, "v1", "v2", grid, grid)
    y = sn.output(plane, 1.0, 3.0)
    g = sn.true_gradient(plane, 1.0, 3.0)
    anchor = (400, 410)
    for order in ("ab", "ba"):
        pot = sn.integrate_grid_field(
            g[..., 1], g[..., 2], grid, grid, anchor, float(y[anchor]), order
        )
        assert torch.allclose(pot, y, atol=1e-5)
    sg = sn.surrogate_gradient(plane, 1.0, 20.0, 2.0)
    ab = sn.integrate_grid_field(sg[..., 1], sg[..., 2], grid, grid, anchor, 0.0, "ab")
    ba = sn.integrate_grid_field(sg[..., 1], sg[..., 2], grid, grid, anchor, 0.0, "ba")
    assert float((ab - ba).abs().max()) > 0.05


def test_minima_and_intervals_helpers() -> None:
    t = torch.linspace(-1, 1, 2001, dtype=torch.float64)
    assert sn.minima_from_derivative(t, 2 * (t - 0.3)) == pytest.approx([0.3], abs=1e-12)
    # f = -(t^2): maxima inside, minima at both ends
    assert sn.minima_from_derivative(t, -2 * t) == pytest.approx([-1.0, 1.0])
    mask = (t > 0.2) & (t < 0.5)
    ((lo, hi),) = sn.intervals_where(t, mask)
    assert lo == pytest.approx(0.201) and hi == pytest.approx(0.499)
    assert sn.opposite_sign_mask(
        torch.tensor([1.0, -1.0, 0.0]), torch.tensor([-1.0, -2.0, 3.0])
    ).tolist() == [True, False, False]


def test_min_max_normalise_and_beta_key() -> None:
    out = sn.min_max_normalise(torch.tensor([2.0, 4.0, 3.0]))
    assert out.tolist() == [0.0, 1.0, 0.5]
    assert sn.min_max_normalise(torch.ones(3)).tolist() == [0.0, 0.0, 0.0]
    assert [sn.beta_key(b) for b in (1.0, 5, 20.0, 1e4)] == ["1", "5", "20", "10000"]


def test_bad_input_raises_value_error_naming_choices() -> None:
    with pytest.raises(ValueError, match="valid choices.*'w'"):
        sn.weight_index("x1")
    with pytest.raises(ValueError, match="not orthonormal"):
        sn.circle_path(
            torch.zeros(5),
            torch.tensor([1.0, 0, 0, 0, 0]),
            torch.tensor([1.0, 1, 0, 0, 0]),
            1.0,
            10,
        )
    with pytest.raises(ValueError, match="last axis must have length 5"):
        sn.output(torch.zeros(3, 4), 1.0, 1.0)
    with pytest.raises(ValueError, match="beta_sg"):
        sn.surrogate_gradient(torch.zeros(5), 1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="two different"):
        sn.plane_points(torch.zeros(5), "v1", "v1", [0.0], [0.0])
    with pytest.raises(ValueError, match="open"):
        sn.loop_integrals(sn.line_path(torch.zeros(5), torch.ones(5), 3), 1.0, 1.0, [1.0])
    with pytest.raises(ValueError, match="order"):
        sn.integrate_grid_field(
            torch.zeros(2, 2), torch.zeros(2, 2), [0, 1], [0, 1], (0, 0), 0.0, "xy"
        )
