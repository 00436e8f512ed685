"""LIF dynamics: PSP of one input spike vs closed form, both reset orders by hand, and the
fast scan's hand-written adjoint vs plain autograd."""

import dataclasses
import math

import pytest
import torch

from sgtheory import lif
from sgtheory.errors import ConfigError
from sgtheory.layers import ConvLIFLayer, DenseLIFLayer, Readout, conv_output_length
from sgtheory.lif import LIFParams, decay, lif_scan_reference
from sgtheory.scan import lif_scan, readout_scan
from sgtheory.spikes import spike_fn_for_method

DT, TAU_MEM, TAU_SYN = 1e-3, 20e-3, 5e-3


def test_psp_of_one_input_spike_matches_two_exponential_closed_form():
    steps = 300
    current = torch.zeros(1, steps, 1, dtype=torch.float64)
    current[0, 0, 0] = 1.0
    a_m, a_s = math.exp(-DT / TAU_MEM), math.exp(-DT / TAU_SYN)
    spike = spike_fn_for_method("superspike")
    _, mem = lif_scan(current, spike, a_s, a_m, threshold=1e9)
    n = torch.arange(steps, dtype=torch.float64)
    # discrete two-exponential kernel: (1-a_m)/(a_m-a_s) (a_m^(n-1) - a_s^(n-1)), n >= 1
    expected = (1 - a_m) / (a_m - a_s) * (a_m ** (n - 1) - a_s ** (n - 1))
    expected[0] = 0.0
    torch.testing.assert_close(mem[0, :, 0], expected, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(readout_scan(current, a_s, a_m), mem)


def test_psp_tends_to_continuous_kernel_as_dt_shrinks():
    dt, steps = 1e-5, 10000
    current = torch.zeros(1, steps, 1, dtype=torch.float64)
    current[0, 0, 0] = 1.0
    mem = readout_scan(current, math.exp(-dt / TAU_SYN), math.exp(-dt / TAU_MEM))[0, :, 0]
    t = torch.arange(steps, dtype=torch.float64) * dt
    # continuous: tau_s/(tau_m - tau_s) (e^{-t/tau_m} - e^{-t/tau_s}) for a unit charge
    continuous = TAU_SYN / (TAU_MEM - TAU_SYN) * (torch.exp(-t / TAU_MEM) - torch.exp(-t / TAU_SYN))
    assert (mem - continuous).abs().max() < 0.005 * continuous.max()


@pytest.mark.parametrize("reset", ["full", "leak"])
def test_reset_semantics_by_hand(reset):
    a_s, a_m = 0.5, 0.8
    current = torch.tensor([[[3.0], [0.5], [0.0], [2.0], [0.0], [0.0]]], dtype=torch.float64)
    spikes, mem = lif_scan(current, spike_fn_for_method("superspike"), a_s, a_m, reset=reset)
    u, i_syn, s_list, u_list = 0.0, 0.0, [], []
    for t in range(6):  # the update written out by hand
        u_list.append(u)
        s = 1.0 if u - 1.0 > 0 else 0.0
        s_list.append(s)
        if reset == "full":
            u = (a_m * u + (1 - a_m) * i_syn) * (1 - s)
        else:
            u = a_m * u * (1 - s) + (1 - a_m) * i_syn
        i_syn = a_s * i_syn + current[0, t, 0].item()
    assert spikes[0, :, 0].tolist() == s_list
    torch.testing.assert_close(mem[0, :, 0], torch.tensor(u_list, dtype=torch.float64))
    assert sum(s_list) >= 1


@pytest.mark.parametrize("method", ["superspike", "stochasticsuperspike", "multilayerspiker"])
@pytest.mark.parametrize("reset", ["full", "leak"])
@pytest.mark.parametrize("diff_reset", [False, True])
@pytest.mark.parametrize("recurrent", [False, True])
def test_fast_scan_equals_plain_autograd(method, reset, diff_reset, recurrent):
    torch.manual_seed(0)
    current = (torch.randn(3, 40, 4, 7, dtype=torch.float64) * 0.5 + 0.3).requires_grad_()
    w_rec = torch.randn(4, 4, 5, dtype=torch.float64).mul(0.3) if recurrent else None
    if recurrent:
        w_rec.requires_grad_()
    weights = torch.randn(3, 40, 4, 7, dtype=torch.float64)
    results = []
    for scan in (lif_scan, lif_scan_reference):
        spike = spike_fn_for_method(method, generator=torch.Generator().manual_seed(3))
        spikes, mem = scan(current, spike, 0.8, 0.9, 1.0, reset, diff_reset, w_rec)
        inputs = [current] + ([w_rec] if recurrent else [])
        grads = torch.autograd.grad((spikes * weights).sum(), inputs)
        results.append((spikes, mem, grads))
    (s1, m1, g1), (s2, m2, g2) = results
    assert 0 < s1.mean() < 0.5
    assert torch.equal(s1, s2)
    torch.testing.assert_close(m1, m2)
    for a, b in zip(g1, g2, strict=True):
        assert a.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_layers_fast_and_reference_give_same_output_and_gradients():
    torch.manual_seed(1)
    layer = ConvLIFLayer(
        2,
        3,
        3,
        spike_fn_for_method("superspike"),
        stride=2,
        padding=1,
        recurrent_kernel=3,
        tau_mem=0.02,
        tau_syn=0.01,
        dt=0.002,
    )
    dense = DenseLIFLayer(
        3 * 5, 4, spike_fn_for_method("superspike"), tau_mem=0.02, tau_syn=0.01, dt=0.002
    )
    readout = Readout(4, 2, 0.2, 0.01, 0.002)
    for p in [layer.weight, layer.rec_weight, dense.weight, readout.weight]:
        torch.nn.init.normal_(p, 0.0, 1.5)
    x = (torch.rand(2, 30, 2, 10) < 0.3).float()
    outs = []
    for reference in (False, True):
        s = layer(x, reference=reference)
        out = readout(dense(s, reference=reference))
        grads = torch.autograd.grad(out.square().sum(), [layer.weight, layer.rec_weight])
        outs.append((s, out, grads))
    assert torch.equal(outs[0][0], outs[1][0])
    torch.testing.assert_close(outs[0][1], outs[1][1])
    for a, b in zip(outs[0][2], outs[1][2], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_bad_settings_are_clear_errors():
    with pytest.raises(ConfigError, match="tau"):
        decay(-0.01, 1e-3)
    with pytest.raises(ConfigError, match="kernel_size=11"):
        conv_output_length(8, 11)
    with pytest.raises(ConfigError, match="reset"):
        lif_scan(torch.zeros(1, 2, 3), spike_fn_for_method("superspike"), 0.5, 0.5, reset="soft")


def test_lif_params_from_time_constants_are_the_decays_and_refuse_bad_values():
    params = LIFParams.from_time_constants(TAU_MEM, TAU_SYN, DT, threshold=0.5, rec_delay=2)
    assert params.a_mem == math.exp(-DT / TAU_MEM) and params.a_syn == math.exp(-DT / TAU_SYN)
    assert (params.threshold, params.reset, params.diff_reset, params.rec_delay) == (
        0.5,
        "full",
        False,
        2,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.threshold = 1.0
    with pytest.raises(ConfigError, match=r"^reset='soft' is not valid; choose one of: full"):
        LIFParams(0.5, 0.5, reset="soft")
    for delay in (0, 1.0, True):
        with pytest.raises(ConfigError, match=rf"^rec_delay={delay!r} is not valid"):
            LIFParams(0.5, 0.5, rec_delay=delay)
    with pytest.raises(ConfigError, match="tau=-0.01"):
        LIFParams.from_time_constants(-0.01, TAU_SYN, DT)


def test_reference_by_params_is_the_scan_by_values():
    """`reference(current, spike, LIFParams(...))` and `lif_scan_reference` with the same
    values one by one: the same spikes and potentials, batch- or time-major."""
    cur = torch.randn(2, 30, 5, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.4
    spike = spike_fn_for_method("superspike")
    by_values = lif_scan_reference(cur, spike, 0.8, 0.9, 0.7, "leak", True)
    params = LIFParams(0.8, 0.9, 0.7, "leak", True)
    batch_major = lif.reference(cur, spike, params)
    time_major = lif.reference(cur.transpose(0, 1), spike, params, None, True)
    for spikes, mem in (batch_major, [t.transpose(0, 1) for t in time_major]):
        assert torch.equal(spikes, by_values[0]) and torch.equal(mem, by_values[1])
    assert 0.05 < by_values[0].mean() < 0.6


def small_network(method: str):
    """Two conv LIF layers (the first recurrent) and a readout, seeded."""
    from sgtheory.layers import SpikingNetwork

    torch.manual_seed(2)
    hidden = [
        ConvLIFLayer(
            1,
            4,
            5,
            spike_fn_for_method(method, generator=torch.Generator().manual_seed(1)),
            stride=2,
            recurrent_kernel=3,
            tau_mem=0.02,
            tau_syn=0.01,
            dt=0.002,
        ),
        ConvLIFLayer(
            4,
            6,
            3,
            spike_fn_for_method(method, generator=torch.Generator().manual_seed(2)),
            tau_mem=0.02,
            tau_syn=0.01,
            dt=0.002,
        ),
    ]
    for layer in hidden:
        torch.nn.init.normal_(layer.weight, 0.0, 2.0)
        if layer.rec_weight is not None:
            torch.nn.init.normal_(layer.rec_weight, 0.0, 0.5)
    readout = Readout(6 * 4, 3, 0.2, 0.01, 0.002)
    torch.nn.init.normal_(readout.weight, 0.0, 0.5)
    return SpikingNetwork(hidden, readout)


@pytest.mark.parametrize("method", ["superspike", "stochasticsuperspike"])
def test_network_time_major_fast_path_equals_per_step_baseline(method):
    def build():
        return small_network(method)

    x = (torch.rand(3, 25, 1, 15, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    results = []
    for reference in (False, True):
        net = build()
        out, spikes = net(x, reference=reference)
        loss = out.max(dim=1).values.logsumexp(-1).sum() + sum(s.sum() for s in spikes) * 0.01
        loss.backward()
        results.append((out, spikes, [p.grad for p in net.parameters()]))
    (o1, s1, g1), (o2, s2, g2) = results
    assert all(0 < s.mean() < 0.6 for s in s1)
    for a, b in zip(s1, s2, strict=True):
        assert torch.equal(a, b)
    torch.testing.assert_close(o1, o2)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_bf16_network_keeps_dynamics_and_gradients_in_float32():
    from sgtheory.layers import SpikingNetwork

    def network(autocast):
        torch.manual_seed(4)
        conv = ConvLIFLayer(
            1, 6, 5, spike_fn_for_method("superspike"), tau_mem=0.02, tau_syn=0.01, dt=0.002
        )
        readout = Readout(6 * 16, 3, 0.2, 0.01, 0.002)
        torch.nn.init.normal_(conv.weight, 0.0, 2.0)
        torch.nn.init.normal_(readout.weight, 0.0, 0.5)
        return SpikingNetwork([conv], readout, autocast=autocast)

    x = (torch.rand(8, 40, 1, 20, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    results = []
    for autocast in (None, torch.bfloat16):
        net = network(autocast)
        out, spikes = net(x)
        out.square().mean().backward()
        assert out.dtype == spikes[0].dtype == torch.float32
        assert all(p.grad.dtype == torch.float32 for p in net.parameters())
        results.append((out.detach(), [p.grad for p in net.parameters()]))
    (out32, g32), (out16, g16) = results
    assert (out16 - out32).abs().max() <= 0.05 * out32.abs().max()  # bf16 currents
    for a, b in zip(g32, g16, strict=True):
        cos = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)
        assert cos > 0.8


@pytest.mark.parametrize("after_update", [False, True])
@pytest.mark.parametrize("time_major", [False, True])
def test_fast_readout_scan_equals_the_plain_one_and_its_adjoint_is_exact(after_update, time_major):
    """The fast readout (one product with the filter matrix) against the plain per-step
    autograd one: the same potentials and input gradients up to float64 rounding, and
    torch.autograd.gradcheck (finite differences) on its own."""
    gen = torch.Generator().manual_seed(4)
    current = torch.randn(7, 30, 3, generator=gen, dtype=torch.float64)
    if time_major:
        current = current.transpose(0, 1).contiguous()
    weights = torch.randn(current.shape, generator=gen, dtype=torch.float64)
    results = []
    for fast in (False, True):
        cur = current.clone().requires_grad_()
        mem = readout_scan(cur, 0.8, 0.9, time_major, -1e-3, after_update, fast=fast)
        (grad,) = torch.autograd.grad((mem * weights).sum(), [cur])
        results.append((mem, grad))
    (plain_mem, plain_grad), (fast_mem, fast_grad) = results
    torch.testing.assert_close(fast_mem, plain_mem, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(fast_grad, plain_grad, rtol=1e-12, atol=1e-14)
    cur = current[:4, :5].clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda c: readout_scan(c, 0.8, 0.9, time_major, -1e-3, after_update, fast=True), (cur,)
    )


@pytest.mark.parametrize("method", ["superspike", "stochasticsuperspike"])
def test_network_counts_mode_gives_the_counts_penalty_and_gradients_of_the_spikes(method):
    """counts=True (what training runs, to free each layer's spike trains early) returns
    exactly sum_over_time of the spikes, and the same regulariser penalty and gradients."""
    from sgtheory.regularizers import ActivityRegularizer, sum_over_time, total_penalty

    regs = [ActivityRegularizer("upper", 2, 0.1, 1.0), ActivityRegularizer("lower", 1, 0.05, 2.0)]
    x = (torch.rand(3, 25, 1, 15, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    results = []
    for counts in (False, True):
        net = small_network(method)
        out, layers = net(x, counts=counts)
        penalty = total_penalty(regs, layers, counted=counts)
        (out.square().mean() + penalty).backward()
        summed = layers if counts else [sum_over_time(s) for s in layers]
        results.append((out, summed, penalty, [p.grad for p in net.parameters()]))
    (o1, c1, p1, g1), (o2, c2, p2, g2) = results
    assert p1 > 0 and all(c.sum() > 0 for c in c1)
    assert torch.equal(o1, o2) and torch.equal(p1, p2)
    assert all(torch.equal(a, b) for a, b in zip(c1, c2, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(g1, g2, strict=True))
