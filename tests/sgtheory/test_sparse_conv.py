"""The sparse-input convolution (csrc/spike_conv.c): equal to conv1d for any nonzero values,
and a too dense input runs the dense fallback, however its nonzeros are spread in time."""

import pytest
import torch
import torch.nn.functional as F
from test_conv_algos import GEOMETRIES, _assert_layout  # the same geometries

from sgtheory.backends.conv import algos as conv_algos
from sgtheory.backends.conv import sparse as conv_kernels
from sgtheory.backends.conv.algos import FUNCTIONS, Geometry
from sgtheory.backends.conv.chunked import conv1d_chunked
from sgtheory.backends.native import build

pytestmark = pytest.mark.skipif(build.library() is None, reason="no C compiler")


@pytest.fixture
def fallback_calls(monkeypatch):
    """Route the fallback ("unfold") through a spy: the list of operations it served."""
    calls = []
    for op in ("forward", "weight_grad"):
        real = FUNCTIONS[op, "unfold"]

        def spy(*args, _op=op, _real=real):
            calls.append(_op)
            return _real(*args)

        monkeypatch.setitem(FUNCTIONS, (op, "unfold"), spy)
    return calls


def _reference(x, w, geo, g):
    """conv1d and its weight gradient for output gradient g, in float64."""
    xd, wd = x.double(), w.double().requires_grad_()
    y = F.conv1d(xd, wd, stride=geo.stride, padding=geo.padding)
    y.backward(g.double())
    return y.detach(), wd.grad


def _sparse(x, w, g, geo, channels_last):
    out = FUNCTIONS["forward", "sparse"](x, w, geo, channels_last, fallback="unfold")
    gw = FUNCTIONS["weight_grad", "sparse"](x, g, geo, channels_last, fallback="unfold")
    return out, gw


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", GEOMETRIES)
@pytest.mark.parametrize("values", ["spikes", "bool", "real"])
@pytest.mark.parametrize("layout_in", ["standard", "channels_last"])
def test_sparse_equals_conv1d_on_sparse_inputs(fallback_calls, threads, shape, values, layout_in):
    """Forward and weight gradient against float64 conv1d, for 0/1 spikes (float or bool)
    and real nonzero values; each thread's range sparse enough that the kernel itself runs."""
    geo = Geometry(*shape)
    gen = torch.Generator().manual_seed(sum(shape) + threads)
    n = 1500
    x = (torch.rand(n, geo.cin, geo.lin, generator=gen) < 0.04).float()
    if values == "real":
        x = x * torch.randn(x.shape, generator=gen)
    w = torch.randn(geo.cout, geo.cin, geo.k, generator=gen)
    g = torch.randn(n, geo.cout, geo.lout, generator=gen)
    y, gw = _reference(x, w, geo, g)
    x_in = conv_algos.to_layout(x.bool() if values == "bool" else x, layout_in != "standard")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for channels_last in (False, True):
            g_in = conv_algos.to_layout(g, channels_last)
            out, got_gw = _sparse(x_in, w, g_in, geo, channels_last)
            _assert_layout(out, channels_last)
            torch.testing.assert_close(out.double(), y, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(got_gw.double(), gw, rtol=1e-5, atol=1e-4)
    finally:
        torch.set_num_threads(before)
    assert fallback_calls == []


def test_kernel_returns_the_number_of_nonzeros():
    geo = Geometry(3, 9, 4, 4, 2, 3)
    gen = torch.Generator().manual_seed(5)
    x = (torch.rand(300, 3, 9, generator=gen) < 0.05).float()
    rows = x.reshape(300, -1).contiguous()
    taps = conv_kernels._tap_rows(torch.randn(4, 3, 4, generator=gen)).contiguous()
    out = torch.empty(300, geo.lout * geo.cout)
    shape = (geo.cin, geo.lin, geo.cout, geo.k, geo.stride, geo.padding, geo.lout, 0, 0, 1)
    lib, ptrs = build.library(), (rows.data_ptr(), taps.data_ptr(), out.data_ptr())
    assert lib.spike_conv_forward(*ptrs, *shape, 300, 0, 1, 0.1) == int(x.count_nonzero())
    assert lib.spike_conv_forward(*ptrs, *shape, 300, 0, 1, 0.01) == -1  # 5 % > 1 %: gives up
    # three parts: chunks of 64 samples dealt out in turn (0-63 and 192-255 to part 0, ...)
    span = conv_kernels_define("SPAN")
    for part in range(3):
        mine = [n for n in range(300) if (n // span) % 3 == part]
        assert lib.spike_conv_forward(*ptrs, *shape, 300, part, 3, 0.1) == int(
            x[mine].count_nonzero()
        )


def test_too_dense_input_runs_the_fallback(fallback_calls):
    geo = Geometry(8, 10, 6, 5, 1, 0)
    gen = torch.Generator().manual_seed(2)
    x = (torch.rand(1000, 8, 10, generator=gen) < 3 * conv_kernels.SPARSE_MAX_DENSITY).float()
    w = torch.randn(6, 8, 5, generator=gen)
    g = torch.randn(1000, 6, 6, generator=gen)
    y, gw = _reference(x, w, geo, g)
    out, got_gw = _sparse(x, w, g, geo, False)
    assert fallback_calls == ["forward", "weight_grad"]
    torch.testing.assert_close(out.double(), y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_gw.double(), gw, rtol=1e-5, atol=1e-4)


def test_density_hidden_from_the_probe_still_runs_the_fallback(fallback_calls):
    """Samples 0, 16, 32, ... (the probe's) silent, all others all ones: the probe sees
    nothing, the running count gives up, and the dense fallback returns the right values."""
    geo = Geometry(4, 6, 3, 3, 1, 1)
    n = 640
    x = torch.ones(n, 4, 6)
    x[:: conv_kernels_define("PROBE")] = 0.0  # chunks start at multiples of SPAN
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(3, 4, 3, generator=gen)
    g = torch.randn(n, 3, geo.lout, generator=gen)
    y, gw = _reference(x, w, geo, g)
    out, got_gw = _sparse(x, w, g, geo, False)
    assert fallback_calls == ["forward", "weight_grad"]
    torch.testing.assert_close(out.double(), y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_gw.double(), gw, rtol=1e-5, atol=1e-4)


def conv_kernels_define(name: str) -> int:
    """A constant of the C source (PROBE: every how-many-th sample the kernels count first;
    SPAN: samples per chunk dealt out to the threads)."""
    for line in build.SPARSE_SOURCE.read_text().splitlines():
        if line.startswith(f"#define {name} "):
            return int(line.split()[2])
    raise AssertionError(f"no {name} in spike_conv.c")


def test_forced_sparse_through_autograd_equals_conv1d(monkeypatch):
    """SGTHEORY_CONV_ALGO=sparse in the autograd function (float32 spikes, saved as booleans
    or as floats): output, input gradient (by the measured algorithm) and weight gradient."""
    monkeypatch.setenv(conv_algos.ENV, "sparse")
    conv_algos.force(None)
    gen = torch.Generator().manual_seed(4)
    x = (torch.rand(700, 5, 12, generator=gen) < 0.05).float()
    w = torch.randn(7, 5, 5, generator=gen)
    xd, wd = x.double().requires_grad_(), w.double().requires_grad_()
    y = F.conv1d(xd, wd, stride=2, padding=1)
    grad_out = torch.randn(y.shape, generator=gen)
    y.backward(grad_out.double())
    for channels_last in (False, True):
        xi = conv_algos.to_layout(x, channels_last).detach().requires_grad_()
        wi = w.clone().requires_grad_()
        out = conv1d_chunked(xi, wi, 2, 1, binary=True, channels_last=channels_last)
        out.backward(grad_out)
        torch.testing.assert_close(out.double(), y.detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(xi.grad.double(), xd.grad, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(wi.grad.double(), wd.grad, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("method", ["superspike", "stochasticsuperspike"])
def test_recurrent_layer_by_the_sparse_convolution_equals_the_reference(method, monkeypatch):
    """The torch loop's per-step recurrent convolution by `sparse` (forced; the measured
    choice for an SHD-shaped layer): spikes, potentials and both gradients as the plain
    autograd reference (float32, so up to rounding; the spikes equal)."""
    from sgtheory.lif import lif_scan_reference
    from sgtheory.scan import lif_scan
    from sgtheory.spikes import spike_fn_for_method

    dense_calls = []  # the fallback of a forced sparse on standard-layout data: onednn
    real = FUNCTIONS["forward", "onednn"]
    monkeypatch.setitem(
        FUNCTIONS, ("forward", "onednn"), lambda *a, **k: dense_calls.append(1) or real(*a, **k)
    )
    conv_algos.force("forward=sparse")
    try:
        gen = torch.Generator().manual_seed(0)
        current = torch.randn(64, 60, 6, 9, generator=gen) * 0.5 + 0.15  # (batch, time, c, l)
        current.requires_grad_()
        w_rec = (torch.randn(6, 6, 5, generator=gen) * 0.3).requires_grad_()
        weights = torch.randn(current.shape, generator=gen)
        results = []
        for scan in (lif_scan, lif_scan_reference):
            spike = spike_fn_for_method(method, generator=torch.Generator().manual_seed(3))
            spikes, mem = scan(current, spike, 0.8, 0.9, 1.0, "full", False, w_rec)
            grads = torch.autograd.grad((spikes * weights).sum(), [current, w_rec])
            results.append((spikes, mem, grads))
    finally:
        conv_algos.force(None)
    (s1, m1, g1), (s2, m2, g2) = results
    assert 0.01 < s1.mean() and dense_calls == []  # every step's spikes ran through sparse
    assert torch.equal(s1, s2)
    torch.testing.assert_close(m1, m2, rtol=1e-5, atol=1e-5)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
