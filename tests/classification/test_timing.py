"""`connection_delay`: the experiment's networks fire at the steps worked out by hand.

With one input spike at step T0 and all weights large and positive, every neuron that sees
the spike fires as soon as one step of synaptic current reaches it. A connection delivers
its input at the same step (connection_delay=false) or at the next one (true, stork's
order), so layer k first fires at T0 + k (2 + d), d = 0 or 1; the readout, reported before
its update (false) or after it (true), departs from its start 2 steps after the last
layer's first spike either way. A recurrent spike reaches the membrane 2 (false) or 3 (true)
steps after the spike.
"""

from __future__ import annotations

import math

import pytest
import torch

T0 = 5


def _build(cfg):
    from convsnn.checks import check
    from convsnn.model import build_network, network_shape, spike_fns
    from convsnn.seeds import generator, layer_generators

    check(cfg)
    geo = network_shape(cfg)
    gens = layer_generators(cfg.seed, "train_spikes", len(cfg.dataset.nb_filters))
    fns = spike_fns(cfg, cfg.method.name, gens)
    return build_network(cfg, geo, fns, generator(cfg.seed, "init")), geo


def _first(x: torch.Tensor) -> int:
    """First step (dim 0) at which x is non-zero anywhere."""
    return int(torch.nonzero(x.reshape(x.shape[0], -1).abs().sum(1))[0, 0])


@pytest.mark.parametrize("delay", [False, True])
def test_randman_network_layers_and_readout_fire_at_the_stated_steps(compose, delay):
    cfg = compose(f"connection_delay={str(delay).lower()}")
    net, geo = _build(cfg)
    with torch.no_grad():
        for layer in net.hidden:
            layer.weight.fill_(30.0)  # (1 - a_m) 30 = 2.9 > threshold 1
        net.readout.weight.fill_(1.0)
    x = torch.zeros(1, geo.nb_steps, 1, geo.nb_units)
    x[0, T0, 0, 10] = 1.0  # unit 10 lies in every first-layer position's receptive field
    out, spikes = net(x)
    d = int(delay)
    for k, s in enumerate(spikes, start=1):
        assert _first(s[0]) == T0 + k * (2 + d)
        assert s[0, T0 + k * (2 + d)].all()  # every neuron of the layer sees the spike
    depart = T0 + 3 * (2 + d) + 2
    a_ro = math.exp(-float(cfg.dataset.dt) / (geo.nb_steps * float(cfg.dataset.dt)))
    steps = torch.arange(depart, dtype=torch.float64)
    start = -1e-3 * a_ro ** (steps + 1) if delay else torch.zeros(depart, dtype=torch.float64)
    # before the departure: the start value, decaying (stork: -1e-3, reported after the update)
    torch.testing.assert_close(
        out[0, :depart].double(), start[:, None].expand(-1, geo.nb_classes), rtol=1e-6, atol=0
    )
    assert (out[0, depart] - start[-1] * a_ro).abs().min() > 1.0


@pytest.mark.parametrize("delay", [False, True])
def test_shd_recurrent_input_reaches_the_membrane_two_or_three_steps_after_the_spike(
    compose, delay
):
    cfg = compose("dataset=shd", f"connection_delay={str(delay).lower()}")
    net, geo = _build(cfg)
    first = net.hidden[0]
    with torch.no_grad():
        first.weight.zero_()[0].fill_(30.0)  # only filter 0 is driven by the input
        first.rec_weight.zero_()[1, 0, :] = 0.01  # filter 0 -> filter 1, far below threshold
    first.record_mem = True
    x = torch.zeros(1, geo.nb_steps, 1, geo.nb_units)
    x[0, T0, 0, 350] = 1.0  # kernel 21, stride 10: positions 33, 34, 35 see unit 350
    _, spikes = net(x)
    d = int(delay)
    fired = spikes[0][0, :, 0]
    assert _first(fired) == T0 + 2 + d
    assert torch.nonzero(fired[T0 + 2 + d]).flatten().tolist() == [33, 34, 35]
    probe = first.last_mem[0, :, 1]  # filter 1: recurrent input only, never fires
    assert spikes[0][0, :, 1].sum() == 0
    assert _first(probe) == T0 + 2 + d + 2 + d  # the spike's step + 2, or + 3
    # rec kernel 5, padding 2: positions 31..37 hear positions 33..35
    assert torch.nonzero(probe[T0 + 4 + 2 * d]).flatten().tolist() == list(range(31, 38))


def test_shd_runs_the_original_step_count_and_readout_time_constant(compose):
    from convsnn.checks import check
    from convsnn.model import network_shape, readout_tau

    cfg = compose("dataset=shd")
    assert cfg.connection_delay is True
    check(cfg)
    geo = network_shape(cfg)
    assert geo.nb_steps == int(0.7 / 2e-3) == 349  # 0.7 / 2e-3 = 349.99999999999994
    assert readout_tau(cfg, geo) == 0.7
    randman = compose()
    assert readout_tau(randman, network_shape(randman)) == pytest.approx(0.2, rel=1e-15)


def test_checkpoints_from_before_the_setting_resume_only_as_undelayed():
    from convsnn.experiment import ADDED_KEYS, RESUMABLE_KEYS
    from sgruns.folder import changed_settings

    old = {"seed": 1, "precision": "float32", "nb_epochs": 10}  # written before the setting
    assert (
        changed_settings(old, {**old, "connection_delay": False}, RESUMABLE_KEYS, ADDED_KEYS) == []
    )
    changed = changed_settings(old, {**old, "connection_delay": True}, RESUMABLE_KEYS, ADDED_KEYS)
    assert changed == [("connection_delay", False, True)]


def test_connection_delay_must_be_a_bool(refused):
    message = refused("connection_delay=1")
    assert message.startswith("connection_delay=1 is not valid; it must be true or false")


def test_randman_delayed_network_is_the_undelayed_one_shifted_in_time(compose):
    # deterministic and feedforward: with the same weights, delaying every connection by one
    # step shifts layer k by k steps and the readout input by 4; the readout is reported one
    # step later (after its update) and carries the decaying start value -1e-3 a^(t+1)
    x = (torch.rand(6, 100, 1, 20, generator=torch.Generator().manual_seed(0)) < 0.05).float()
    runs = {}
    for delay in ("true", "false"):
        net, geo = _build(compose(f"connection_delay={delay}"))
        with torch.no_grad():
            runs[delay] = net(x)
    (out_d, s_d), (out_u, s_u) = runs["true"], runs["false"]
    for k in range(1, 4):
        assert s_u[k - 1].sum() > 0
        assert s_d[k - 1][:, :k].sum() == 0
        assert torch.equal(s_d[k - 1][:, k:], s_u[k - 1][:, :-k])
    a_ro = math.exp(-0.002 / 0.2)
    steps = torch.arange(97, dtype=torch.float64)
    start = (-1e-3 * a_ro ** (steps + 4))[None, :, None]
    torch.testing.assert_close(
        out_d[:, 3:].double(), out_u[:, :-3].double() + start, rtol=0, atol=2e-6
    )
