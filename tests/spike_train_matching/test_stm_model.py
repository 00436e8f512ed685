"""The model (core LIF scan) and the learning rule against direct loop implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import write_png

from sgtheory import random
from sgtheory.errors import ConfigError
from sgtheory.lif import lif_scan_reference
from sgtheory.spikes import SpikeFn, make_escape, make_surrogate
from stm import data, learning, model

DT, TAU_M, TAU_S, EPS0, THR = 1e-3, 10e-3, 5e-3, 0.2, 1.0


def _net(nb_steps: int, reset_mode: bool = False, dtype=torch.float64) -> model.Net:
    kernels = model.make_kernels(nb_steps, DT, TAU_M, TAU_S, EPS0, dtype)
    return model.Net(DT, TAU_M, TAU_S, THR, EPS0, reset_mode, kernels)


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
    trial = model.Trial(torch.tensor(mem_h), torch.tensor(spk_h), None, torch.tensor(spk_o))
    xbar_i = model.filt(net.kernels.membrane, torch.tensor(x))
    for name in ("superspike", "sigmoid", "multilayerspiker"):
        surrogate = make_surrogate(name, beta=10.0)
        dw_ih, dw_ho = learning.weight_updates(
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
        # averaged over trials and batch, as the paper's code does
        np.testing.assert_allclose(dw_ho.numpy(), ref_ho / (R * B), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(dw_ih.numpy(), ref_ih / (R * B), rtol=1e-10, atol=1e-12)


def _direct_layer(inp, w, thr_noise, reset_mode):
    """The STM layer of the paper's code, written out in float64: spike iff mem - THR > noise.

    inp (T, R, B, N_pre), thr_noise (T, R, B, N) the escape noise's inverse of each uniform
    (0 for the step); returns (mem, spikes) shaped (T, R, B, N).
    """
    a_m, a_s = math.exp(-DT / TAU_M), math.exp(-DT / TAU_S)
    mem = np.zeros(thr_noise.shape[1:])
    syn = np.zeros(thr_noise.shape[1:])
    mems, spks = [], []
    for t in range(thr_noise.shape[0]):
        s = (mem - THR > thr_noise[t]).astype(float)
        mems.append(mem.copy())
        spks.append(s)
        if reset_mode:
            mem = (a_m * mem + (1 - a_m) * syn) * (1 - s)
        else:
            mem = a_m * mem * (1 - s) + (1 - a_m) * syn
        syn = a_s * syn + inp[t] @ w
    return np.array(mems), np.array(spks)


def _problem(T=40, R=3, B=2, NI=6, NH=5, NO=4, seed=5):
    rng = np.random.default_rng(seed)
    x = (rng.random((T, B, NI)) < 0.3).astype(float)
    w_ih = rng.normal(0.8, 1.5, (NI, NH))
    w_ho = rng.normal(0.8, 1.5, (NH, NO))
    return x, w_ih, w_ho, R


@pytest.mark.parametrize("reset_mode", [False, True])
@pytest.mark.parametrize("escape", ["step", "sigmoid", "exponential", "superspike"])
def test_forward_matches_direct_lif(reset_mode, escape):
    """float64: the network run by the core scan equals the written-out model, spike by spike.

    Each scan (hidden, then output) takes one key from the same seeded generator; the
    uniforms are that key's counter-based draws by the definition in `sgtheory.random`;
    u < F(x) is taken as x > F^-1(u).
    """
    x, w_ih, w_ho, R = _problem()
    T, B = x.shape[:2]
    net = _net(T, reset_mode)
    esc_h = make_escape(escape, beta=10.0, delta_u=0.133)
    esc_o = make_escape(escape, beta=100.0, delta_u=0.013)
    sg = make_surrogate("superspike")
    gen = torch.Generator().manual_seed(11)
    spike_h, spike_o = SpikeFn(esc_h, sg, gen), SpikeFn(esc_o, sg, gen)
    xt, wi, wo = (torch.tensor(a) for a in (x, w_ih, w_ho))
    trial = model.forward(net, xt, wi, wo, spike_h, spike_o, R)

    keys = torch.Generator().manual_seed(11)  # each scan draws one key from the generator

    def noise(esc, n):
        if esc.deterministic:
            return np.zeros((T, R, B, n))
        key = random.key_from(keys)
        u = random.uniform_reference(key, 0, 0, T, (R, B, n)).to(torch.float64)
        return esc.prob_inverse(u).numpy()

    inp = np.broadcast_to(x[:, None], (T, R, B, x.shape[2]))
    mem_h, spk_h = _direct_layer(inp, w_ih, noise(esc_h, w_ih.shape[1]), reset_mode)
    mem_o, spk_o = _direct_layer(spk_h, w_ho, noise(esc_o, w_ho.shape[1]), reset_mode)
    assert 0 < spk_h.mean() < 0.9 and 0 < spk_o.mean() < 0.9
    np.testing.assert_allclose(trial.mem_h.numpy(), mem_h, atol=1e-10)
    np.testing.assert_array_equal(trial.spk_h.numpy(), spk_h)
    np.testing.assert_allclose(trial.mem_o.numpy(), mem_o, atol=1e-10)
    np.testing.assert_array_equal(trial.spk_o.numpy(), spk_o)
    if escape != "step":  # the trials differ by their noise only
        assert not torch.equal(trial.spk_h[:, 0], trial.spk_h[:, 1])


@pytest.mark.parametrize("reset_mode", [False, True])
@pytest.mark.parametrize("escape", ["step", "sigmoid"])
def test_stm_network_and_core_reference_scan_give_identical_spikes(reset_mode, escape):
    """float32 (the fused kernels where built): the STM forward pass and the core library's
    plain per-step reference scan, layer after layer, give the same spikes from the same
    weights, input and generator seed."""
    x, w_ih, w_ho, R = _problem(T=60, R=4, B=1, NI=30, NH=20, NO=10, seed=2)
    T = x.shape[0]
    net = _net(T, reset_mode, torch.float32)
    xt, wi, wo = (torch.tensor(a, dtype=torch.float32) for a in (x, w_ih, w_ho))

    def spike_fns(seed):
        gen = torch.Generator().manual_seed(seed)
        sg = make_surrogate("sigmoid")
        h = SpikeFn(make_escape(escape, beta=10.0), sg, gen)
        return h, SpikeFn(make_escape(escape, beta=100.0), sg, gen)

    trial = model.forward(net, xt, wi, wo, *spike_fns(4), R)
    ref_h, ref_o = spike_fns(4)
    reset = "full" if reset_mode else "leak"
    cur_h = (xt @ wi).unsqueeze(1).expand(-1, R, -1, -1)
    args = (net.a_syn, net.a_mem, THR, reset)
    spk_h, mem_h = lif_scan_reference(cur_h, ref_h, *args, time_major=True)
    spk_o, mem_o = lif_scan_reference(spk_h @ wo, ref_o, *args, time_major=True)
    assert 0.01 < float(spk_h.mean()) < 0.9 and float(spk_o.mean()) > 0.01
    assert torch.equal(trial.spk_h, spk_h) and torch.equal(trial.spk_o, spk_o)
    torch.testing.assert_close(trial.mem_h, mem_h, rtol=0, atol=1e-5)
    torch.testing.assert_close(trial.mem_o, mem_o, rtol=0, atol=1e-5)


def test_van_rossum_distance():
    T = 60
    net = _net(T)
    z = torch.zeros(T, 1, 1, dtype=torch.float64)
    z[10] = 1.0
    assert model.losses(net, z, (z.unsqueeze(1) > 0))[0] == 0.0
    spk = torch.zeros(T, 1, 1, 1, dtype=torch.bool)
    spk[20] = True
    vrd, l2 = model.losses(net, z, spk)
    hand = 0.5 * sum((_eps(t - 10) - _eps(t - 20)) ** 2 for t in range(T))
    assert vrd == pytest.approx(hand, rel=1e-12)
    assert l2 == pytest.approx(1.0)  # 1/2 (1 + 1)


def test_target_image_maps_to_raster(tmp_path):
    rows, cols = 7, 11  # neurons x time steps
    path = tmp_path / "t.png"
    pixels = write_png(path, rows, cols)
    raster = data.load_target(path, 0.4, cols, rows)
    assert raster.shape == (cols, rows)
    for t in range(cols):
        for n in range(rows):
            assert raster[t, n] == (pixels[n, t] < 0.4)
    with pytest.raises(ConfigError, match="rows"):
        data.load_target(path, 0.4, cols, rows + 1)
    with pytest.raises(ConfigError, match="does not exist"):
        data.load_target(tmp_path / "nope.png", 0.4, cols, rows)


def test_weights_init_std():
    gen = torch.Generator().manual_seed(0)
    w = data.init_weights(400, 300, 1.0, 50.0, TAU_M, TAU_S, gen)
    eps_hat = TAU_S**2 / (2 * (TAU_S + TAU_M))
    assert float(w.std()) == pytest.approx(1 / math.sqrt(400 * 50 * eps_hat), rel=0.02)
    assert abs(float(w.mean())) < 0.01


def test_eps_kernel_at_equal_time_constants_is_the_closed_form_limit():
    """tau_mem == tau_syn: eps0 (t / tau) exp(-t / tau), the limit of the membrane's
    response to a unit synaptic jump, tau_s / (tau_m - tau_s) (e^{-t/tau_m} - e^{-t/tau_s})."""
    T, tau = 80, 8e-3
    eps = model.eps_kernel(T, DT, tau, tau, EPS0)
    t = np.arange(T) * DT
    np.testing.assert_allclose(eps, EPS0 * t / tau * np.exp(-t / tau), rtol=1e-12, atol=0)
    assert eps.max() > 0.3 * EPS0  # not the vanishing difference form
    for rel in (1e-3, 1e-5):  # the difference form, normalised, converges to it
        ts = tau * (1 - rel)
        normalised = ts / (tau - ts) * (np.exp(-t / tau) - np.exp(-t / ts))
        np.testing.assert_allclose(EPS0 * normalised, eps, rtol=0, atol=3 * rel * EPS0)
    # the defaults (10 ms, 5 ms): the normalisation is 1, the difference form itself
    t_s = np.arange(T) * DT
    np.testing.assert_allclose(
        model.eps_kernel(T, DT, TAU_M, TAU_S, EPS0),
        EPS0 * TAU_S / (TAU_M - TAU_S) * (np.exp(-t_s / TAU_M) - np.exp(-t_s / TAU_S)),
    )


def test_model_membrane_kernel_at_equal_time_constants_has_the_limit_shape():
    """The simulated membrane response (small dt) to one input spike is (t / tau) e^{-t/tau}
    one step late (the input enters syn at the next step): the shape eps takes at equality."""
    dt, tau, T = 1e-5, 5e-3, 3000
    mem = model.membrane_kernel(T, dt, tau, tau)
    t = (np.arange(T) - 1).clip(0) * dt
    np.testing.assert_allclose(mem, t / tau * np.exp(-t / tau), rtol=0, atol=2e-3)


def test_van_rossum_distance_does_not_vanish_at_equal_time_constants():
    T = 60
    kernels = model.make_kernels(T, DT, TAU_M, TAU_M, EPS0, torch.float64)
    net = model.Net(DT, TAU_M, TAU_M, THR, EPS0, False, kernels)
    z = torch.zeros(T, 1, 1, dtype=torch.float64)
    z[10] = 1.0
    spk = torch.zeros(T, 1, 1, 1, dtype=torch.float64)
    spk[20] = 1.0
    e = model.eps_kernel(T, DT, TAU_M, TAU_M, EPS0)
    hand = 0.5 * sum(
        ((e[t - 10] if t >= 10 else 0) - (e[t - 20] if t >= 20 else 0)) ** 2 for t in range(T)
    )
    vrd = model.losses(net, z, spk)[0]
    assert vrd > 0.01 and vrd == pytest.approx(hand, rel=1e-12)


# the paper's spike-train-matching code: (escape noise class, surrogate class) per method
PAPER_PAIRS = {
    "superspike": ("Step", "SuperSpikeSurrogate"),
    "stochasticsuperspike": ("SigmoidEscape", "SigmoidSurrogate"),  # its "sigmoidspike"
    "multilayerspiker": ("SigmoidEscape", "MultilayerSpikerSurrogate"),
}


@pytest.mark.parametrize("name", sorted(PAPER_PAIRS))
def test_methods_come_from_the_core_table_with_the_papers_pairs(name):
    """Each method config names a METHODS entry and its sigm variant; the defaults give the
    pairs of the paper's code; validation runs in the other mode."""
    from omegaconf import OmegaConf

    from sgtheory.spikes import method_pair
    from stm.checks import CONFIG_DIR
    from stm.methods import Params, make_modes

    cfg = OmegaConf.load(CONFIG_DIR / "method" / f"{name}.yaml")
    assert set(cfg) - {"defaults"} == {"name", "sigm", "nb_trials"}  # the schema, the name
    p = Params(10.0, 100.0, 2 / 3, 0.133, 0.013)
    train, valid = make_modes(cfg.name, cfg.sigm, "exponential", p, torch.Generator())
    escape, surrogate = PAPER_PAIRS[name]
    assert type(train.spike_h.escape).__name__ == escape
    assert type(train.spike_h.surrogate).__name__ == surrogate
    assert (train.spike_h.escape.name, train.spike_h.surrogate.name) == method_pair(
        cfg.name, cfg.sigm
    )
    if escape == "SigmoidEscape":
        assert (train.spike_h.escape.beta, train.spike_o.escape.beta) == (10.0, 100.0)
    assert valid.spike_h.escape.name == ("step" if train.stochastic else "exponential")
    assert valid.stochastic != train.stochastic
