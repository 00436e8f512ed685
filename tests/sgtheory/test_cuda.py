"""The library on a CUDA device, against independent facts: the plain autograd scan, the same
computation on the CPU, torch's conv1d, and the binomial law of the escape-noise draws.

Skipped where no CUDA device is available. In float32 the scans run in the Triton kernels
of `sgtheory.backends.triton.scan` where triton is installed (the last section tests them directly).
float32 comparisons run with cuDNN's TF32 convolutions switched off (they read only 10
mantissa bits), so that they test the math and not TF32 rounding. The helpers take the
device as an argument, so they can be tried on CPU.
"""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
import torch.nn.functional as F

from sgtheory import random
from sgtheory.backends.conv.chunked import CHUNK, conv1d_chunked, conv1d_weight_grad
from sgtheory.backends.triton import scan as triton_scan
from sgtheory.init import fluctuation_driven_init_, psp_eps_hat, readout_init_
from sgtheory.layers import ConvLIFLayer, Readout, SpikingNetwork
from sgtheory.lif import lif_scan_reference
from sgtheory.losses import loss_fn
from sgtheory.scan import lif_scan
from sgtheory.spikes import (
    ESCAPE_NOISES,
    SURROGATES,
    SigmoidEscape,
    SpikeFn,
    SuperSpikeSurrogate,
    make_escape,
    make_surrogate,
    spike_fn_for_method,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = "cuda"


@pytest.fixture(autouse=True)
def no_tf32(monkeypatch):
    """Full float32 precision in cuDNN convolutions for the duration of a test."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)


def make_generator(device: str, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


# ----------------------------------------------------------------------------- LIF scan


def scan_both(method, reset, recurrent, dtype, device, diff_reset=False):
    """(spikes, mem, grads) of lif_scan and of lif_scan_reference, same inputs and draws."""
    gen = torch.Generator().manual_seed(0)  # inputs drawn on the CPU, then moved
    current = torch.randn(3, 40, 4, 7, generator=gen, dtype=torch.float64) * 0.5 + 0.3
    w_rec = torch.randn(4, 4, 5, generator=gen, dtype=torch.float64) * 0.3
    weights = torch.randn(3, 40, 4, 7, generator=gen, dtype=torch.float64)
    current = current.to(device, dtype).requires_grad_()
    w_rec = w_rec.to(device, dtype).requires_grad_() if recurrent else None
    weights = weights.to(device, dtype)
    results = []
    for scan in (lif_scan, lif_scan_reference):
        spike = spike_fn_for_method(method, generator=make_generator(device, 3))
        spikes, mem = scan(current, spike, 0.8, 0.9, 1.0, reset, diff_reset, w_rec)
        inputs = [current] + ([w_rec] if recurrent else [])
        grads = torch.autograd.grad((spikes * weights).sum(), inputs)
        results.append((spikes, mem, grads))
    return results


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", ["superspike", "stochasticsuperspike", "multilayerspiker"])
@pytest.mark.parametrize("reset", ["full", "leak"])
@pytest.mark.parametrize("diff_reset", [False, True])
@pytest.mark.parametrize("recurrent", [False, True])
def test_fast_scan_equals_plain_autograd_on_cuda(method, reset, recurrent, diff_reset, dtype):
    (s1, m1, g1), (s2, m2, g2) = scan_both(method, reset, recurrent, dtype, CUDA, diff_reset)
    assert s1.device.type == "cuda" and s1.dtype == dtype
    assert 0 < s1.mean() < 0.5
    assert torch.equal(s1, s2)
    torch.testing.assert_close(m1, m2)
    tol = dict(rtol=1e-9, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    for a, b in zip(g1, g2, strict=True):
        assert a.abs().max() > 0
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("reset", ["full", "leak"])
@pytest.mark.parametrize("recurrent", [False, True])
@pytest.mark.parametrize("diff_reset", [False, True])
def test_deterministic_scan_on_cuda_equals_cpu(reset, recurrent, diff_reset):
    on_gpu = scan_both("superspike", reset, recurrent, torch.float64, CUDA, diff_reset)[0]
    on_cpu = scan_both("superspike", reset, recurrent, torch.float64, "cpu", diff_reset)[0]
    (s1, m1, g1), (s2, m2, g2) = on_gpu, on_cpu
    assert 0 < s2.mean() < 0.5
    assert torch.equal(s1.cpu(), s2)
    torch.testing.assert_close(m1.cpu(), m2)
    for a, b in zip(g1, g2, strict=True):
        assert b.abs().max() > 0
        torch.testing.assert_close(a.cpu(), b, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------ the same draws on both devices


def test_draws_on_cuda_equal_the_cpu_draws():
    """The reference's integer operations on the GPU, the C kernel and the reference on
    the CPU: the same uniforms for the same (seed, stream, steps, elements)."""
    on_gpu = random.uniform_reference(2**64 - 5, 2**33 + 1, 3, 9, (4, 257), device=CUDA)
    on_cpu = random.Draws(2**64 - 5, 2**33 + 1, 3).uniform(0, 9, (4, 257))
    assert on_gpu.device.type == CUDA
    assert torch.equal(on_gpu.cpu(), on_cpu)
    assert torch.equal(on_cpu, random.uniform_reference(2**64 - 5, 2**33 + 1, 3, 9, (4, 257)))


@pytest.mark.parametrize("escape", [n for n in ESCAPE_NOISES if n != "step"])
@pytest.mark.parametrize("recurrent", [False, True])
def test_stochastic_scan_on_cuda_equals_cpu_up_to_rounding(escape, recurrent):
    """One stream, float32: the CUDA scan (Triton kernels where installed) and the CPU scan
    (C kernels or the loop) draw the same numbers, so their spikes differ only where a
    potential lies within float32 rounding of its firing point (none at this size)."""
    gen = torch.Generator().manual_seed(0)
    current = torch.randn(3, 40, 4, 7, generator=gen) * 0.5 + 0.3
    w_rec = torch.randn(4, 4, 5, generator=gen) * 0.3 if recurrent else None
    runs = []
    for device in (CUDA, "cpu"):
        spike = SpikeFn(
            make_escape(escape), make_surrogate("superspike"), random.Stream(4, "layer", 0)
        )
        w = None if w_rec is None else w_rec.to(device)
        spikes, mem = lif_scan(current.to(device), spike, 0.8, 0.9, 1.0, "full", False, w)
        runs.append((spikes.cpu(), mem.cpu()))
    (s_gpu, m_gpu), (s_cpu, m_cpu) = runs
    assert 0.02 < s_cpu.mean() < 0.5
    differ = s_gpu != s_cpu
    assert differ.float().mean() < 1e-3
    if differ.any():  # only where rounding can decide: the potentials agree to float32 rounding
        first = int(differ.nonzero()[0, 1])  # the first step at which they part
        torch.testing.assert_close(m_gpu[:, : first + 1], m_cpu[:, : first + 1], atol=1e-5, rtol=0)
    else:
        torch.testing.assert_close(m_gpu, m_cpu, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------- convolution


def conv_both(binary, stride, padding, dtype, device):
    """(y, dx, dw) of conv1d_chunked and of F.conv1d on `device`, and grad_out, dw by hand."""
    gen = torch.Generator().manual_seed(0)
    n = 2 * CHUNK + 37  # several CPU chunks and a ragged last one
    x = torch.rand(n, 3, 20, generator=gen, dtype=torch.float64)
    if binary:
        x = (x < 0.2).double()
    w = torch.randn(4, 3, 5, generator=gen, dtype=torch.float64)
    x, w = x.to(device, dtype), w.to(device, dtype)
    grad_out = None
    results = []
    for conv in (conv1d_chunked, lambda a, b, s, p: F.conv1d(a, b, stride=s, padding=p)):
        xi, wi = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = conv(xi, wi, stride, padding)
        if grad_out is None:
            grad_out = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(device, dtype)
        y.backward(grad_out)
        results.append((y, xi.grad, wi.grad))
    gw = conv1d_weight_grad(x.bool() if binary else x, w.shape, grad_out, stride, padding)
    return results, gw, (x, w, grad_out)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("stride,padding", [(1, 0), (3, 2)])
def test_chunked_conv1d_on_cuda_equals_conv1d(binary, stride, padding, dtype):
    (chunked, plain), gw, (x, w, grad_out) = conv_both(binary, stride, padding, dtype, CUDA)
    assert chunked[0].device.type == "cuda"
    # float32: sums over ~1000 samples in another order (chunks) differ in the last bits
    tol = {} if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    for a, b in zip(chunked, plain, strict=True):
        torch.testing.assert_close(a, b, **tol)
    torch.testing.assert_close(gw, plain[2], **tol)
    if dtype == torch.float64:  # and all of it equals torch's conv1d on the CPU
        xc, wc = x.cpu().requires_grad_(), w.cpu().requires_grad_()
        yc = F.conv1d(xc, wc, stride=stride, padding=padding)
        yc.backward(grad_out.cpu())
        for a, b in zip(chunked, (yc, xc.grad, wc.grad), strict=True):
            torch.testing.assert_close(a.cpu(), b)


# --------------------------------------------------------------------- stochastic spikes


def spike_rates(device, dtype, xs, draws, seed):
    """Spikes of SigmoidEscape(beta=10) at each x in `xs`, `draws` times: (len(xs), draws)."""
    gen = make_generator(device, seed)
    spike = SpikeFn(SigmoidEscape(beta=10.0), SuperSpikeSurrogate(beta=10.0), generator=gen)
    x = torch.tensor(xs, dtype=dtype, device=device)[:, None].expand(len(xs), draws)
    return spike(x.contiguous())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stochastic_spike_rate_on_cuda_is_the_escape_probability(dtype):
    xs, draws = [-0.3, -0.1, 0.0, 0.05, 0.2], 200_000
    spikes = spike_rates(CUDA, dtype, xs, draws, seed=7)
    assert spikes.device.type == "cuda"
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}
    rate = spikes.double().mean(1).cpu()
    for x, r in zip(xs, rate.tolist(), strict=True):
        p = 1.0 / (1.0 + math.exp(-10.0 * x))  # sigmoid(beta x), written out
        p_lib = float(SigmoidEscape(beta=10.0).prob(torch.tensor(x, dtype=torch.float64)))
        assert abs(p_lib - p) < 1e-12
        se = math.sqrt(p * (1 - p) / draws)
        assert abs(r - p) < 5 * se, f"x={x}: rate {r:.5f}, p {p:.5f}, 5 SE {5 * se:.5f}"
    again = spike_rates(CUDA, dtype, xs, draws, seed=7)
    assert torch.equal(spikes, again)  # same seed, same spikes
    other = spike_rates(CUDA, dtype, xs, draws, seed=8)
    assert not torch.equal(spikes, other)


# ------------------------------------------------------------------- whole network


def randman_network(method, device, dtype):
    """The Randman-shaped network (conv 32/64/128 over 20 positions, 15 classes)."""
    gens = [make_generator(device, 10 + i) for i in range(3)]
    init_gen = torch.Generator().manual_seed(1)  # weights drawn on the CPU, then moved
    dt, tau_mem, tau_syn = 0.002, 0.02, 0.01
    eps_hat = psp_eps_hat(tau_mem, tau_syn, dt)
    hidden, in_channels = [], 1
    for filters, kernel, gen in zip((32, 64, 128), (11, 5, 5), gens, strict=True):
        layer = ConvLIFLayer(
            in_channels,
            filters,
            kernel,
            spike_fn_for_method(method, generator=gen),
            tau_mem=tau_mem,
            tau_syn=tau_syn,
            dt=dt,
        )
        fluctuation_driven_init_(layer.weight, 1.0, 25.0, eps_hat, 1.0, init_gen)
        hidden.append(layer)
        in_channels = filters
    readout = Readout(128 * 2, 15, 0.2, tau_syn, dt)
    readout_init_(readout.weight, init_gen)
    return SpikingNetwork(hidden, readout).to(device, dtype)


def network_step(method, device, dtype, batch=8):
    """Loss, hidden spikes and parameter gradients of one forward + backward pass."""
    net = randman_network(method, device, dtype)
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(batch, 100, 1, 20, generator=gen) < 0.05).to(device, dtype)
    y = torch.randint(0, 15, (batch,), generator=gen).to(device)
    out, spikes = net(x)
    loss = loss_fn("mot_ce")(out, y)
    loss.backward()
    return loss.detach(), [s.detach() for s in spikes], [p.grad for p in net.parameters()]


@pytest.mark.parametrize("method", ["superspike", "stochasticsuperspike"])
def test_network_forward_backward_on_cuda_is_finite(method):
    loss, spikes, grads = network_step(method, CUDA, torch.float32)
    assert loss.device.type == "cuda" and torch.isfinite(loss)
    assert all(s.sum() > 0 for s in spikes)
    for g in grads:
        assert g is not None and g.device.type == "cuda"
        assert torch.isfinite(g).all() and g.abs().max() > 0


def test_deterministic_network_on_cuda_equals_cpu():
    l1, s1, g1 = network_step("superspike", CUDA, torch.float64)
    l2, s2, g2 = network_step("superspike", "cpu", torch.float64)
    assert all(s.sum() > 0 for s in s2)
    for a, b in zip(s1, s2, strict=True):
        assert torch.equal(a.cpu(), b)
    torch.testing.assert_close(l1.cpu(), l2, rtol=1e-10, atol=1e-12)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-8, atol=1e-11)


# ------------------------------------------------------------- Triton kernels of the scan

needs_triton = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="triton is not installed"
)


@pytest.fixture
def triton_calls(monkeypatch):
    """Compiled kernels (no interpreter), and counts of the scans that ran through them."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    calls = {"forward": 0, "backward": 0}
    for name in calls:
        original = getattr(triton_scan, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(triton_scan, name, counted)
    return calls


def scan_kernels_loop_plain(monkeypatch, escape, surrogate, reset, diff_reset, shape, rec, delay):
    """(spikes, mem, grads) on CUDA in float32 of the Triton kernels, the torch loop
    (SGTHEORY_TRITON=0) and lif_scan_reference, same inputs and generator seed."""
    gen = torch.Generator().manual_seed(0)
    current = (torch.randn(shape, generator=gen) * 0.6 + 0.45).to(CUDA)
    weights = torch.randn(shape, generator=gen).to(CUDA)
    w_rec = None
    if rec:
        w_rec = (torch.randn(shape[2], shape[2], rec, generator=gen) * 0.4).to(CUDA)
    results = []
    for scan, kernels in ((lif_scan, "1"), (lif_scan, "0"), (lif_scan_reference, "0")):
        monkeypatch.setenv("SGTHEORY_TRITON", kernels)
        inputs = [current.clone().requires_grad_()]
        if w_rec is not None:
            inputs.append(w_rec.clone().requires_grad_())
        spike = SpikeFn(make_escape(escape), make_surrogate(surrogate), make_generator(CUDA, 3))
        rec_weight = inputs[1] if rec else None
        spikes, mem = scan(
            inputs[0], spike, 0.8, 0.9, 1.0, reset, diff_reset, rec_weight, rec_delay=delay
        )
        grads = torch.autograd.grad((spikes * weights).sum(), inputs)
        results.append((spikes, mem, grads))
    return results


def assert_kernels_match(results, tol=1e-5):
    (s1, m1, g1), *others = results
    assert s1.device.type == CUDA and 0.02 < s1.mean() < 0.5
    for s2, m2, g2 in others:
        assert torch.equal(s1, s2)
        torch.testing.assert_close(m1, m2, rtol=0, atol=1e-6)
        for a, b in zip(g1, g2, strict=True):
            assert b.abs().max() > 0
            assert (a - b).abs().max() <= tol * b.abs().max()


FLAT_CASES = [(e, s) for e in ESCAPE_NOISES for s in SURROGATES]
# every escape noise x reset x diff_reset, each (reset, diff_reset) with both delays; the
# interpreter tests (test_triton.py) cover the full product, these the compiled code
REC_CASES = [
    (e, r, d, 1 + (i + j + int(d)) % 2)
    for i, e in enumerate(ESCAPE_NOISES)
    for j, r in enumerate(("full", "leak"))
    for d in (False, True)
]


@needs_triton
@pytest.mark.parametrize("case", range(len(FLAT_CASES)))
def test_triton_kernels_on_cuda_equal_loop_and_plain_autograd(monkeypatch, triton_calls, case):
    """Every escape noise x surrogate; reset and diff_reset taken in turn."""
    escape, surrogate = FLAT_CASES[case]
    reset, diff_reset = ("full", "leak")[case % 2], bool(case // 2 % 2)
    shape = (3, 40, 5, 13)
    results = scan_kernels_loop_plain(
        monkeypatch, escape, surrogate, reset, diff_reset, shape, None, 1
    )
    assert triton_calls == {"forward": 1, "backward": 1}
    assert_kernels_match(results)


@needs_triton
@pytest.mark.parametrize("case", range(len(REC_CASES)))
def test_recurrent_triton_kernels_on_cuda_equal_loop(monkeypatch, triton_calls, case):
    """Every escape noise x reset x diff_reset, delays 1 and 2; the surrogate in turn."""
    escape, reset, diff_reset, delay = REC_CASES[case]
    surrogate = list(SURROGATES)[case % len(SURROGATES)]
    results = scan_kernels_loop_plain(
        monkeypatch, escape, surrogate, reset, diff_reset, (3, 40, 4, 7), 5, delay
    )
    assert triton_calls == {"forward": 1, "backward": 1}
    assert_kernels_match(results)


@needs_triton
@pytest.mark.parametrize("method", ["superspike", "stochasticsuperspike"])
def test_triton_kernels_at_shd_shapes(monkeypatch, triton_calls, method):
    """The first SHD layer's shape (16 channels x 68 positions, recurrent kernel 5): many
    warps per sample. The recurrent sums run in another order than cuDNN's, so a spike may
    flip where a potential lies within rounding of its threshold: nearly all must agree."""
    gen = torch.Generator().manual_seed(0)
    current = (torch.randn(16, 80, 16, 68, generator=gen) * 0.6 + 0.4).to(CUDA)
    w_rec = (torch.randn(16, 16, 5, generator=gen) * 0.1).to(CUDA)
    out = []
    for kernels in ("1", "0"):
        monkeypatch.setenv("SGTHEORY_TRITON", kernels)
        cur, w = current.clone().requires_grad_(), w_rec.clone().requires_grad_()
        spike = spike_fn_for_method(method, generator=make_generator(CUDA, 3))
        spikes, _ = lif_scan(cur, spike, 0.8, 0.9, rec_weight=w)
        grads = torch.autograd.grad(spikes.sum(), [cur, w])
        out.append((spikes, grads))
    assert triton_calls == {"forward": 1, "backward": 1}
    (s1, g1), (s2, g2) = out
    assert 0.02 < s2.mean() < 0.5
    assert (s1 != s2).float().mean() < 1e-4
    if torch.equal(s1, s2):  # gradients are comparable only along the same spikes
        for a, b in zip(g1, g2, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * b.abs().max().item())


@needs_triton
def test_triton_kernels_leave_float64_and_disabled_scans_to_the_loop(monkeypatch, triton_calls):
    cur = torch.randn(2, 10, 3, device=CUDA)
    spike = spike_fn_for_method("superspike")
    assert triton_scan.runs(cur.transpose(0, 1).contiguous())
    lif_scan(cur.double(), spike, 0.8, 0.9)
    monkeypatch.setenv("SGTHEORY_TRITON", "0")
    lif_scan(cur, spike, 0.8, 0.9)
    assert triton_calls["forward"] == 0
