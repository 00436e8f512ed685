"""The vectorised model and learning rule against direct loop implementations (float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import write_png

from sgtheory.errors import ConfigError
from sgtheory.spikes import make_escape, make_surrogate
from stm import core

DT, TAU_M, TAU_S, EPS0, THR = 1e-3, 10e-3, 5e-3, 0.2, 1.0


def _net(nb_steps: int, reset_mode: bool = False) -> core.Net:
    kernels = core.make_kernels(nb_steps, DT, TAU_M, TAU_S, EPS0, torch.float64)
    return core.Net(DT, TAU_M, TAU_S, THR, EPS0, reset_mode, kernels)


def _lif_no_reset(spikes: np.ndarray) -> np.ndarray:
    """Membrane caused by `spikes` (T, ...) with unit weight, by the model's recursion."""
    a_m, a_s = math.exp(-DT / TAU_M), math.exp(-DT / TAU_S)
    mem = np.zeros_like(spikes, dtype=float)
    syn = np.zeros(spikes.shape[1:])
    m = np.zeros(spikes.shape[1:])
    for t in range(spikes.shape[0]):
        mem[t] = m
        m = a_m * m + (1 - a_m) * syn
        syn = a_s * syn + spikes[t]
    return mem


def _eps(k: int) -> float:
    return EPS0 * (math.exp(-k * DT / TAU_M) - math.exp(-k * DT / TAU_S)) if k >= 0 else 0.0


def test_weight_updates_match_direct_formulas():
    rng = np.random.default_rng(3)
    T, R, B, NI, NH, NO = 13, 3, 2, 4, 5, 3
    lr_h, lr_o, du = 0.7, 0.3, 0.013
    x = (rng.random((T, B, NI)) < 0.3).astype(float)
    z = (rng.random((T, B, NO)) < 0.3).astype(float)
    spk_h = rng.random((T, R, B, NH)) < 0.3
    spk_o = rng.random((T, R, B, NO)) < 0.3
    mem_h = rng.normal(1.0, 0.5, (T, R, B, NH))
    w_ho = rng.normal(0, 1, (NH, NO))
    net = _net(T)
    trial = core.Trial(torch.tensor(mem_h), torch.tensor(spk_h), None, torch.tensor(spk_o))
    xbar_i = core.filt(net.kernels.membrane, torch.tensor(x))
    for name in ("superspike", "sigmoid", "multilayerspiker"):
        surrogate = make_surrogate(name, beta=10.0)
        dw_ih, dw_ho = core.weight_updates(
            net, xbar_i, torch.tensor(z), torch.tensor(w_ho), trial, surrogate, du, lr_h, lr_o
        )
        # direct implementation: loops over trials, batch, neurons and time
        xb_i = _lif_no_reset(x)
        xb_h = _lif_no_reset(spk_h.astype(float))
        sg = surrogate.derivative(torch.tensor(mem_h - THR), torch.tensor(spk_h, dtype=float))
        sg = sg.numpy()
        ref_ho = np.zeros((NH, NO))
        ref_ih = np.zeros((NI, NH))
        for r in range(R):
            for b in range(B):
                delta = (z[:, b] - spk_o[:, r, b]) / du  # (T, NO)
                for h in range(NH):
                    for o in range(NO):
                        ref_ho[h, o] += lr_o * sum(delta[t, o] * xb_h[t, r, b, h] for t in range(T))
                    for i in range(NI):
                        trace = [
                            sum(_eps(t - s) * sg[s, r, b, h] * xb_i[s, b, i] for s in range(t + 1))
                            for t in range(T)
                        ]
                        ref_ih[i, h] += lr_h * sum(
                            w_ho[h, o] * sum(delta[t, o] * trace[t] for t in range(T))
                            for o in range(NO)
                        )
        np.testing.assert_allclose(dw_ho.numpy(), ref_ho / R, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(dw_ih.numpy(), ref_ih / R, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reset_mode", [False, True])
def test_forward_matches_direct_lif(reset_mode):
    rng = np.random.default_rng(5)
    T, B, NI, NH, NO = 40, 2, 6, 5, 4
    x = (rng.random((T, B, NI)) < 0.3).astype(float)
    w_ih = rng.normal(0.8, 1.5, (NI, NH))
    w_ho = rng.normal(0.8, 1.5, (NH, NO))
    net = _net(T, reset_mode)
    step = make_escape("step")
    drive_x = core.filt(net.kernels.drive, torch.tensor(x))
    trial = core.forward(
        net, drive_x, torch.tensor(w_ih), torch.tensor(w_ho), step, step, 1, torch.Generator()
    )
    a_m, a_s = math.exp(-DT / TAU_M), math.exp(-DT / TAU_S)

    def layer(inp, w):
        mem, syn = np.zeros((B, w.shape[1])), np.zeros((B, w.shape[1]))
        mems, spks = [], []
        for t in range(T):
            s = (mem - THR > 0).astype(float)
            mems.append(mem.copy())
            spks.append(s)
            if reset_mode:
                mem = (a_m * mem + (1 - a_m) * syn) * (1 - s)
            else:
                mem = a_m * mem * (1 - s) + (1 - a_m) * syn
            syn = a_s * syn + inp[t] @ w
        return np.array(mems), np.array(spks)

    mem_h, spk_h = layer(x, w_ih)
    mem_o, spk_o = layer(spk_h, w_ho)
    assert spk_h.sum() > 0 and spk_o.sum() > 0
    np.testing.assert_allclose(trial.mem_h[:, 0].numpy(), mem_h, atol=1e-10)
    np.testing.assert_array_equal(trial.spk_h[:, 0].numpy(), spk_h > 0)
    np.testing.assert_allclose(trial.mem_o[:, 0].numpy(), mem_o, atol=1e-10)
    np.testing.assert_array_equal(trial.spk_o[:, 0].numpy(), spk_o > 0)


@pytest.mark.parametrize("name", ["sigmoid", "exponential", "superspike"])
def test_noisy_threshold_is_the_escape_noise(name):
    """Spike iff x > F^-1(u) is the same event as u < F(x) (F the sgtheory escape noise)."""
    escape = make_escape(name, beta=10.0, p0=2 / 3, delta_u=0.133)
    gen = torch.Generator().manual_seed(0)
    offsets = core.escape_offsets(escape, (20000,), gen, torch.float64)
    u = torch.rand((20000,), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.linspace(-0.5, 0.5, 20000, dtype=torch.float64)
    by_offset = x > offsets
    by_prob = u < escape.prob(x)
    assert (by_offset != by_prob).sum() <= 2  # only float rounding at the boundary
    # and the spike probability at fixed x is F(x)
    for value in (-0.1, 0.0, 0.05):
        p = (value > offsets).double().mean()
        assert abs(p - escape.prob(torch.tensor(value))) < 0.015


def test_van_rossum_distance():
    T = 60
    net = _net(T)
    z = torch.zeros(T, 1, 1, dtype=torch.float64)
    z[10] = 1.0
    assert core.losses(net, z, (z.unsqueeze(1) > 0))[0] == 0.0
    spk = torch.zeros(T, 1, 1, 1, dtype=torch.bool)
    spk[20] = True
    vrd, l2 = core.losses(net, z, spk)
    hand = 0.5 * sum((_eps(t - 10) - _eps(t - 20)) ** 2 for t in range(T))
    assert vrd == pytest.approx(hand, rel=1e-12)
    assert l2 == pytest.approx(1.0)  # 1/2 (1 + 1)


def test_target_image_maps_to_raster(tmp_path):
    rows, cols = 7, 11  # neurons x time steps
    path = tmp_path / "t.png"
    pixels = write_png(path, rows, cols)
    raster = core.load_target(path, 0.4, cols, rows)
    assert raster.shape == (cols, rows)
    for t in range(cols):
        for n in range(rows):
            assert raster[t, n] == (pixels[n, t] < 0.4)
    with pytest.raises(ConfigError, match="rows"):
        core.load_target(path, 0.4, cols, rows + 1)
    with pytest.raises(ConfigError, match="does not exist"):
        core.load_target(tmp_path / "nope.png", 0.4, cols, rows)


def test_weights_init_std():
    gen = torch.Generator().manual_seed(0)
    w = core.init_weights(400, 300, 1.0, 50.0, TAU_M, TAU_S, gen)
    eps_hat = TAU_S**2 / (2 * (TAU_S + TAU_M))
    assert float(w.std()) == pytest.approx(1 / math.sqrt(400 * 50 * eps_hat), rel=0.02)
    assert abs(float(w.mean())) < 0.01
