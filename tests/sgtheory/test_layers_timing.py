"""Connection delays, checked against step numbers worked out by hand.

Model (sgtheory.lif): syn[t+1] = a_s syn[t] + I[t] + rec(S[t + 1 - rec_delay]),
mem[t+1] = a_m mem[t] + (1 - a_m) syn[t] (reset aside), S[t] = spike(mem[t]).
A layer with `input_delay=d` gets I[t] = W x[t - d]. With one input spike at step t0 and a
weight large enough that one step of synaptic current lifts the membrane above threshold:
syn is first non-zero at t0 + 1 + d, mem and the spike at t0 + 2 + d. Each layer adds
2 + d steps. A spike at step s enters syn[s + rec_delay] and mem[s + rec_delay + 1].
Readout: its potential departs from its start at step s + 2 + d (input spike at s) when
reported before the update, one step earlier after it (mem[t+1] reported at t).
"""

import math

import pytest
import torch

from sgtheory.backends.native import build
from sgtheory.errors import ConfigError
from sgtheory.layers import ConvLIFLayer, DenseLIFLayer, Readout, SpikingNetwork, delay_in_time
from sgtheory.lif import lif_scan_reference
from sgtheory.scan import lif_scan, readout_scan
from sgtheory.spikes import spike_fn_for_method

DT, TAU_MEM, TAU_SYN, TAU_RO = 0.002, 0.02, 0.01, 0.2
LIF = dict(tau_mem=TAU_MEM, tau_syn=TAU_SYN, dt=DT)
A_MEM, A_SYN = math.exp(-DT / TAU_MEM), math.exp(-DT / TAU_SYN)
T, T0 = 30, 4


def first(x: torch.Tensor) -> int:
    """First step (dim 0) at which x is non-zero anywhere."""
    return int(torch.nonzero(x.reshape(x.shape[0], -1).abs().sum(1))[0, 0])


def one_spike(shape=(1,)) -> torch.Tensor:
    x = torch.zeros(1, T, *shape, dtype=torch.float64)
    x[0, T0].view(-1)[0] = 1.0
    return x


def syn_from_mem(mem: torch.Tensor) -> torch.Tensor:
    """syn[t] = (mem[t+1] - a_m mem[t]) / (1 - a_m), valid while the neuron has not fired."""
    return (mem[1:] - A_MEM * mem[:-1]) / (1 - A_MEM)


@pytest.mark.parametrize("delay", [0, 1])
def test_dense_chain_spike_and_readout_steps_by_hand(delay):
    torch.manual_seed(0)
    layers = [
        DenseLIFLayer(1, 1, spike_fn_for_method("superspike"), input_delay=delay, **LIF)
        for _ in range(2)
    ]
    for layer in layers:
        layer.double()
        torch.nn.init.constant_(layer.weight, 30.0)  # (1 - a_m) 30 = 2.9 > threshold 1
        layer.record_mem = True
    readout = Readout(1, 1, TAU_RO, TAU_SYN, DT, input_delay=delay).double()
    torch.nn.init.constant_(readout.weight, 1.0)
    s1 = layers[0](one_spike())
    s2 = layers[1](s1)
    out = readout(s2)
    syn1 = syn_from_mem(layers[0].last_mem[0])
    assert first(syn1) == T0 + 1 + delay
    assert first(layers[0].last_mem[0]) == T0 + 2 + delay
    assert first(s1[0]) == T0 + 2 + delay
    assert first(layers[1].last_mem[0]) == T0 + 2 * (2 + delay)
    assert first(s2[0]) == T0 + 2 * (2 + delay)
    assert first(out[0]) == T0 + 2 * (2 + delay) + 2 + delay


@pytest.mark.parametrize("delay", [0, 1])
def test_recurrent_input_arrives_rec_delay_steps_after_the_spike(delay):
    # channel 0 is driven by the input; channel 1 only by channel 0's recurrent weight,
    # too weak to fire: its synaptic current shows when the recurrent input arrives
    layer = ConvLIFLayer(
        1,
        2,
        1,
        spike_fn_for_method("superspike"),
        recurrent_kernel=1,
        input_delay=delay,
        rec_delay=1 + delay,
        **LIF,
    ).double()
    with torch.no_grad():
        layer.weight.zero_()[0, 0, 0] = 30.0
        layer.rec_weight.zero_()[1, 0, 0] = 0.5
    layer.record_mem = True
    spikes = layer(one_spike((1, 1)))
    fired = first(spikes[0, :, 0])
    assert fired == T0 + 2 + delay
    mem1 = layer.last_mem[0, :, 1, 0]
    assert spikes[0, :, 1].sum() == 0
    assert first(syn_from_mem(mem1)) == fired + 1 + delay  # 2 steps after the spike, or 3
    assert first(mem1) == fired + 2 + delay


def test_readout_reported_after_its_update_starts_at_its_initial_value():
    current = torch.zeros(1, 12, 2, dtype=torch.float64)
    current[0, 5, 0] = 1.0
    a_m, a_s = math.exp(-DT / TAU_RO), A_SYN
    after = readout_scan(current, a_s, a_m, initial_mem=-1e-3, after_update=True)[0]
    before = readout_scan(current, a_s, a_m)[0]
    steps = torch.arange(12, dtype=torch.float64)
    # no input on unit 1: a pure decay of the start value, reported after each update
    torch.testing.assert_close(after[:, 1], -1e-3 * a_m ** (steps + 1), rtol=1e-12, atol=0)
    assert before[:, 1].abs().max() == 0
    # unit 0: input at step 5 -> syn[6] = 1, mem[7] = 1 - a_m (+ the decayed start value)
    assert first(before[:, :1]) == 7
    assert after[6, 0].item() == pytest.approx(-1e-3 * a_m**7 + (1 - a_m), rel=1e-12)
    assert after[5, 0].item() == pytest.approx(-1e-3 * a_m**6, rel=1e-12)


@pytest.mark.parametrize("steps", [1, 2, 9])
@pytest.mark.parametrize("time_dim", [0, 1])
def test_delay_in_time_gradient_shifts_back(steps, time_dim):
    """Its hand-written backward: dL/dx[t] = dL/dout[t + steps], 0 where that falls off."""
    x = torch.randn(5, 6, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: delay_in_time(x, steps, time_dim), (x,))
    grad = torch.randn(5, 6, 3, dtype=torch.float64)
    (got,) = torch.autograd.grad(delay_in_time(x, steps, time_dim), x, grad)
    length, kept = x.shape[time_dim], max(x.shape[time_dim] - steps, 0)
    assert torch.equal(got.narrow(time_dim, 0, kept), grad.narrow(time_dim, length - kept, kept))
    assert got.narrow(time_dim, kept, length - kept).abs().sum() == 0


def test_delay_in_time_shifts_and_fills_with_zeros():
    x = torch.arange(1.0, 7.0).reshape(1, 6, 1)
    assert delay_in_time(x, 1, 1).flatten().tolist() == [0, 1, 2, 3, 4, 5]
    assert delay_in_time(x, 0, 1) is x
    assert delay_in_time(x.transpose(0, 1), 2, 0).flatten().tolist() == [0, 0, 1, 2, 3, 4]
    assert delay_in_time(x, 9, 1).abs().sum() == 0
    with pytest.raises(ConfigError, match="input_delay"):
        DenseLIFLayer(1, 1, spike_fn_for_method("superspike"), input_delay=-1, **LIF)
    with pytest.raises(ConfigError, match="rec_delay"):
        lif_scan(
            torch.zeros(1, 3, 2, 4),
            spike_fn_for_method("superspike"),
            0.5,
            0.5,
            rec_weight=torch.zeros(2, 2, 3),
            rec_delay=0,
        )


def _network(method: str, delay: int) -> SpikingNetwork:
    torch.manual_seed(2)
    gens = [torch.Generator().manual_seed(k) for k in (1, 2, 3)]
    hidden = [
        ConvLIFLayer(
            1,
            4,
            5,
            spike_fn_for_method(method, generator=gens[0]),
            stride=2,
            recurrent_kernel=3,
            input_delay=delay,
            rec_delay=1 + delay,
            **LIF,
        ),
        ConvLIFLayer(
            4, 6, 3, spike_fn_for_method(method, generator=gens[1]), input_delay=delay, **LIF
        ),  # no recurrence: the fused kernels' case, channels-last on CPU
        ConvLIFLayer(
            6, 5, 3, spike_fn_for_method(method, generator=gens[2]), input_delay=delay, **LIF
        ),  # channels-last input and output
    ]
    for layer, scale in zip(hidden, (2.0, 2.0, 6.0), strict=True):
        torch.nn.init.normal_(layer.weight, 0.0, scale)
        if layer.rec_weight is not None:
            torch.nn.init.normal_(layer.rec_weight, 0.0, 0.5)
    readout = Readout(
        5 * 2,
        3,
        TAU_RO,
        TAU_SYN,
        DT,
        input_delay=delay,
        initial_mem=-1e-3 * delay,
        after_update=bool(delay),
    )
    torch.nn.init.normal_(readout.weight, 0.0, 0.5)
    return SpikingNetwork(hidden, readout)


@pytest.mark.parametrize("method", ["superspike", "stochasticsuperspike"])
@pytest.mark.parametrize("delay", [0, 1])
def test_fused_loop_and_reference_agree_with_delays(monkeypatch, method, delay):
    """Fused (channels-last conv activations, or all standard), torch loop and plain
    autograd: the same spikes, outputs and gradients up to rounding."""
    x = (torch.rand(3, 40, 1, 15, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    # (fused, reference, channels-last): fused, fused standard, torch loop, plain autograd
    paths = [("1", False, "1"), ("1", False, "0"), ("0", False, "1"), ("0", True, "1")]
    if build.compiler() is None:
        paths = paths[2:]
    results = []
    for env, reference, layout in paths:
        monkeypatch.setenv("SGTHEORY_FUSED", env)
        monkeypatch.setenv("SGTHEORY_CHANNELS_LAST", layout)
        net = _network(method, delay)
        out, spikes = net(x, reference=reference)
        loss = out.max(dim=1).values.logsumexp(-1).sum() + sum(s.sum() for s in spikes) * 0.01
        loss.backward()
        results.append((out, spikes, [p.grad for p in net.parameters()]))
    o1, s1, g1 = results[0]
    assert all(0.02 < s.mean() < 0.6 for s in s1)
    for o2, s2, g2 in results[1:]:
        for a, b in zip(s1, s2, strict=True):
            assert torch.equal(a, b)
        torch.testing.assert_close(o1, o2)
        for a, b in zip(g1, g2, strict=True):
            assert b.abs().max() > 0
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rec_delay", [2, 3])
@pytest.mark.parametrize("method", ["superspike", "stochasticsuperspike"])
@pytest.mark.parametrize("diff_reset", [False, True])
def test_adjoint_with_longer_recurrent_delay_equals_plain_autograd(rec_delay, method, diff_reset):
    torch.manual_seed(0)
    current = (torch.randn(3, 40, 4, 7, dtype=torch.float64) * 0.5 + 0.3).requires_grad_()
    w_rec = torch.randn(4, 4, 5, dtype=torch.float64).mul(0.3).requires_grad_()
    weights = torch.randn(3, 40, 4, 7, dtype=torch.float64)
    results = []
    for scan in (lif_scan, lif_scan_reference):
        spike = spike_fn_for_method(method, generator=torch.Generator().manual_seed(3))
        spikes, mem = scan(
            current, spike, 0.8, 0.9, 1.0, "full", diff_reset, w_rec, rec_delay=rec_delay
        )
        grads = torch.autograd.grad((spikes * weights).sum(), [current, w_rec])
        results.append((spikes, mem, grads))
    (s1, m1, g1), (s2, m2, g2) = results
    assert 0 < s1.mean() < 0.5
    assert torch.equal(s1, s2)
    torch.testing.assert_close(m1, m2)
    for a, b in zip(g1, g2, strict=True):
        assert a.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    # and the delay changes the dynamics (else the test could not tell the settings apart)
    spike = spike_fn_for_method(method, generator=torch.Generator().manual_seed(3))
    s_one, _ = lif_scan(current, spike, 0.8, 0.9, 1.0, "full", diff_reset, w_rec)
    assert not torch.equal(s_one, s1)
