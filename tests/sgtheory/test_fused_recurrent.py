"""Recurrent convolutions inside the native backend's C scan, against the torch loop (the
same recursion with one convolution per step) and plain autograd (`lif.lif_scan_reference`):
every escape noise x reset x rec_delay, both layouts, the input delay, threads, the vector
widths of the adjoint's product (AVX-512, AVX2 and the portable build), and the events."""

import os
import platform
import subprocess
import sys
import textwrap

import pytest
import torch

from sgtheory.backends.native import build
from sgtheory.backends.native import lif as native
from sgtheory.lif import lif_scan_reference
from sgtheory.scan import lif_scan
from sgtheory.spikes import ESCAPE_NOISES, SURROGATES, SpikeFn, make_escape, make_surrogate

pytestmark = pytest.mark.skipif(build.compiler() is None, reason="no C compiler here")


@pytest.fixture(autouse=True)
def cpu_backends(monkeypatch):
    """The C kernels on, Triton's interpreter off (it would take CPU scans first)."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("SGTHEORY_BACKEND", raising=False)
    monkeypatch.setenv("SGTHEORY_FUSED", "1")


def inputs(shape, taps, scale=0.4, dyadic=False):
    """(current, loss weights, recurrent weight) of a (batch, time, channels, positions)
    scan; with `dyadic`, current and weights are multiples of 2^-6, so that every sum of
    recurrent weights is exact in float32 whatever its order."""
    gen = torch.Generator().manual_seed(0)
    current = torch.randn(shape, generator=gen) * 0.6 + 0.45
    weights = torch.randn(shape, generator=gen)
    w_rec = torch.randn(shape[2], shape[2], taps, generator=gen) * scale
    if dyadic:
        current, w_rec = (current * 64).round() / 64, (w_rec * 64).round() / 64
    return current, weights, w_rec


def scan(backend, data, escape="sigmoid", surrogate="superspike", reset="full", **kw):
    """(spikes, mem, dL/dcurrent, dL/dW) of one scan by `backend` ('reference': plain
    autograd); `kw`: diff_reset, rec_delay, input_delay, channels_last."""
    current, weights, w_rec = data
    cl = kw.pop("channels_last", False)
    x = current.transpose(0, 1)  # time-major
    if cl:  # channels innermost in each step, as conv layers leave their current on CPU
        x = x.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)
    x, w = x.clone().requires_grad_(), w_rec.clone().requires_grad_()
    spike = SpikeFn(
        make_escape(escape), make_surrogate(surrogate), torch.Generator().manual_seed(3)
    )
    args = (x, spike, 0.8, 0.9, 1.0, reset, kw.pop("diff_reset", False), w)
    if backend == "reference":
        delay = kw.pop("input_delay", 0)
        if delay:
            args = (torch.cat([torch.zeros_like(x[:delay]), x[:-delay]]), *args[1:])
        spikes, mem = lif_scan_reference(*args, time_major=True, **kw)
    else:
        spikes, mem = lif_scan(*args, time_major=True, backend=backend, **kw)
    grads = torch.autograd.grad((spikes * weights.transpose(0, 1)).sum(), [x, w])
    return spikes, mem, *grads


def assert_same(fast, other, tol=3e-5):
    """Spikes equal, potentials to float32 rounding, gradients (input and recurrent
    weight) to `tol` of the largest (other float32 summation orders)."""
    assert torch.equal(fast[0], other[0])
    torch.testing.assert_close(fast[1], other[1], rtol=0, atol=1e-5)
    for a, b in zip(fast[2:], other[2:], strict=True):
        scale = b.abs().max()
        assert scale > 0
        assert (a - b).abs().max() <= tol * scale


REC_CASES = [
    (escape, reset, diff_reset, delay)
    for escape in ESCAPE_NOISES
    for reset in ("full", "leak")
    for diff_reset in (False, True)
    for delay in (1, 2, 3)
]


@pytest.mark.parametrize("case", range(len(REC_CASES)))
def test_recurrent_c_scan_equals_torch_loop_and_plain_autograd(case):
    """Every escape noise x reset x diff_reset x rec_delay (the surrogate taken in turn),
    20 channels (a whole vector and a rest) at 13 positions (whole tiles and a rest)."""
    escape, reset, diff_reset, delay = REC_CASES[case]
    surrogate = list(SURROGATES)[case % len(SURROGATES)]
    data = inputs((3, 16, 20, 13), 5, scale=0.15)
    kw = dict(reset=reset, diff_reset=diff_reset, rec_delay=delay)
    fast = scan("native", data, escape, surrogate, **kw)
    assert 0.02 < fast[0].mean() < 0.5
    assert_same(fast, scan("torch", data, escape, surrogate, **kw), tol=1e-5)
    assert_same(fast, scan("reference", data, escape, surrogate, **kw))


@pytest.mark.parametrize("escape", list(ESCAPE_NOISES))
def test_exact_recurrent_sums_give_the_torch_loops_potentials_bitwise(escape):
    """With dyadic weights every recurrent current is exact in any order of its events, so
    the event-driven C scan and the loop's per-step convolution agree to the bit."""
    data = inputs((4, 30, 18, 11), 3, scale=0.2, dyadic=True)
    fast, loop = scan("native", data, escape), scan("torch", data, escape)
    assert fast[0].sum() > 100
    assert torch.equal(fast[0], loop[0]) and torch.equal(fast[1], loop[1])


@pytest.mark.parametrize("escape", ["step", "sigmoid"])
@pytest.mark.parametrize("diff_reset", [False, True])
def test_channels_last_recurrent_scan_runs_in_place_with_the_same_results(escape, diff_reset):
    """Dyadic weights: the events of a step, met in another order in the other layout,
    sum to the same current."""
    data = inputs((3, 14, 20, 9), 5, scale=0.15, dyadic=True)
    standard = scan("native", data, escape, diff_reset=diff_reset)
    last = scan("native", data, escape, diff_reset=diff_reset, channels_last=True)
    assert last[1].stride(2) == 1  # the potentials in the current's own layout: no copy
    assert torch.equal(standard[0], last[0]) and torch.equal(standard[1], last[1])
    for a, b in zip(standard[2:], last[2:], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6 * b.abs().max())


@pytest.mark.parametrize("input_delay", [1, 3])
@pytest.mark.parametrize("rec_delay", [1, 2])
def test_recurrent_scan_reads_a_late_current_as_if_shifted(input_delay, rec_delay):
    data = inputs((3, 15, 17, 7), 3, scale=0.2)
    kw = dict(input_delay=input_delay, rec_delay=rec_delay, diff_reset=True)
    fast = scan("native", data, "exponential", "sigmoid", **kw)
    assert_same(fast, scan("torch", data, "exponential", "sigmoid", **kw), tol=1e-5)
    assert_same(fast, scan("reference", data, "exponential", "sigmoid", **kw))
    assert (fast[2][-input_delay:] == 0).all()  # the last steps' current arrives too late


@pytest.mark.parametrize(
    "channels, positions, taps",
    [(3, 1, 1), (3, 5, 7), (16, 6, 5), (20, 13, 3), (52, 5, 5), (64, 13, 5), (33, 2, 9)],
)
def test_adjoint_product_over_vector_widths_and_tile_rests(channels, positions, taps):
    """Channels of whole vectors (4, 2, 1 of them) and rests, positions of whole tiles and
    rests, kernels wider than the positions: the loop's transposed convolutions."""
    data = inputs((4, 12, channels, positions), taps, scale=0.6 / channels**0.5)
    fast = scan("native", data, "sigmoid", "superspike")
    assert fast[0].sum() >= 5
    assert_same(fast, scan("torch", data, "sigmoid", "superspike"), tol=1e-5)


def test_threads_split_samples_with_the_same_results(monkeypatch):
    data = inputs((8, 40, 20, 13), 5, scale=0.15)  # 2080 neurons x 40 steps: two ranges
    torch.set_num_threads(2)
    assert len(build.ranges(8 * 20 * 13, 40, 20 * 13)) == 2
    two = scan("native", data, "superspike", "sigmoid", diff_reset=True)
    torch.set_num_threads(1)
    try:
        one = scan("native", data, "superspike", "sigmoid", diff_reset=True)
    finally:
        torch.set_num_threads(2)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])
    assert torch.equal(one[2], two[2])  # samples are independent: the same adjoint
    # the weight gradient summed per range, then over ranges: another order
    assert (one[3] - two[3]).abs().max() <= 1e-5 * one[3].abs().max()


def test_spikes_arriving_after_the_scan_and_silent_layers_add_nothing():
    """A rec_delay beyond the steps, or no spike at all: the scan without recurrence, and
    no gradient for the recurrent weight."""
    current, weights, w_rec = inputs((3, 12, 20, 7), 5, scale=0.3)
    alone = scan("native", (current, weights, torch.zeros_like(w_rec)), "sigmoid")
    late = scan("native", (current, weights, w_rec), "sigmoid", rec_delay=40)
    assert torch.equal(alone[0], late[0]) and torch.equal(alone[2], late[2])
    assert (late[3] == 0).all()
    silent = scan("native", (current - 50.0, weights, w_rec), "step")
    assert silent[0].sum() == 0 and (silent[3] == 0).all()


def test_recurrent_c_scan_runs_from_the_layer_with_the_loops_results(monkeypatch):
    """A recurrent conv layer runs its scan in C by default on the CPU (spied), with the
    spikes and gradients of the torch loop forced by SGTHEORY_BACKEND."""
    from sgtheory.layers import ConvLIFLayer
    from sgtheory.spikes import spike_fn_for_method

    calls = []
    forward = native.forward

    def spied(*args, **kwargs):
        calls.append(args[1] is not None)
        return forward(*args, **kwargs)

    monkeypatch.setattr(native, "forward", spied)
    x = (torch.rand(4, 20, 2, 40, generator=torch.Generator().manual_seed(2)) < 0.3).float()
    results = []
    for backend in ("native", "torch"):
        monkeypatch.setenv("SGTHEORY_BACKEND", backend)
        torch.manual_seed(0)
        gen = torch.Generator().manual_seed(5)
        spike = spike_fn_for_method("stochasticsuperspike", generator=gen)
        lif = dict(tau_mem=20e-3, tau_syn=10e-3, dt=1e-3, input_delay=1)
        layer = ConvLIFLayer(2, 16, 5, spike, stride=2, recurrent_kernel=5, **lif)
        torch.nn.init.normal_(layer.weight, 0.0, 0.5)
        torch.nn.init.normal_(layer.rec_weight, 0.0, 0.1)
        out = layer(x)
        out.sum().backward()
        results.append((out, layer.weight.grad, layer.rec_weight.grad))
    assert calls == [True]
    assert 0.02 < results[0][0].mean() < 0.5
    assert torch.equal(results[0][0], results[1][0])
    for a, b in zip(results[0][1:], results[1][1:], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * b.abs().max())


PRODUCT_CHECK = textwrap.dedent(
    """
    import sys, torch
    sys.path.insert(0, {here!r})
    from test_fused_recurrent import inputs, scan, assert_same
    for channels, positions in [(20, 13), (52, 5), (64, 7)]:
        data = inputs((2, 8, channels, positions), 5, scale=0.6 / channels**0.5)
        assert_same(scan("native", data, "step"), scan("torch", data, "step"), tol=1e-5)
    print("ok")
    """
)


@pytest.mark.skipif(platform.machine() != "x86_64", reason="x86-64 levels")
@pytest.mark.parametrize("march", ["x86-64-v3", "x86-64"])
def test_avx2_and_portable_builds_give_the_loops_results(tmp_path, march):
    """The AVX2 tiles (x86-64-v3) and the one-float fallback (x86-64: no AVX), each built
    into a cache of its own in a fresh process."""
    if march == "x86-64-v3" and "avx2" not in open("/proc/cpuinfo").read():
        pytest.skip("this CPU has no AVX2")
    env = {**os.environ, "SGTHEORY_MARCH": march, "SGTHEORY_CACHE": str(tmp_path)}
    env.pop("TRITON_INTERPRET", None)
    code = PRODUCT_CHECK.format(here=os.path.dirname(__file__))
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok"
