"""Chunked convolution equals torch's conv1d, values and gradients, binary or not."""

import pytest
import torch
import torch.nn.functional as F

from sgtheory.backends.conv.algos import ALGOS
from sgtheory.backends.conv.chunked import CHUNK, conv1d_chunked, conv1d_weight_grad


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("stride,padding", [(1, 0), (3, 2)])
def test_chunked_conv1d_equals_conv1d(binary, stride, padding):
    gen = torch.Generator().manual_seed(0)
    n = 2 * CHUNK + 37  # several chunks and a ragged last one
    x = torch.rand(n, 3, 20, generator=gen, dtype=torch.float64)
    if binary:
        x = (x < 0.2).double()
    w = torch.randn(4, 3, 5, generator=gen, dtype=torch.float64)
    grad_out = None
    results = []
    for conv in (conv1d_chunked, lambda a, b, s, p: F.conv1d(a, b, stride=s, padding=p)):
        xi, wi = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = conv(xi, wi, stride, padding)
        if grad_out is None:
            grad_out = torch.randn(y.shape, generator=gen, dtype=torch.float64)
        y.backward(grad_out)
        results.append((y, xi.grad, wi.grad))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b)
    gw = conv1d_weight_grad(x.bool() if binary else x, w.shape, grad_out, stride, padding)
    torch.testing.assert_close(gw, results[1][2])


def _bf16_conv_and_grads(x, w, grad_out):
    """Chunked convolution under bfloat16 autocast, backward with grad_out; (y, dx, dw)."""
    xi, wi = x.clone().requires_grad_(), w.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv1d_chunked(xi, wi, 1, 0, True)
    y.float().backward(grad_out)
    return y, xi.grad, wi.grad


def test_bf16_autocast_convolution_rounds_inputs_and_keeps_float32_gradients():
    """Under autocast, the chunked convolution equals float32 convolution of the bfloat16-
    rounded inputs up to bfloat16 output rounding, and its gradients come back float32."""
    gen = torch.Generator().manual_seed(2)
    x = (torch.rand(CHUNK + 9, 8, 12, generator=gen) < 0.3).float()
    w = torch.randn(6, 8, 5, generator=gen)
    grad_out = torch.randn(CHUNK + 9, 6, 8, generator=gen)
    y, gx, gw = _bf16_conv_and_grads(x, w, grad_out)
    assert y.dtype == torch.bfloat16
    rounded = F.conv1d(x, w.bfloat16().float())
    torch.testing.assert_close(y.float(), rounded, rtol=2**-7, atol=1e-6)
    assert gx.dtype == gw.dtype == torch.float32
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    F.conv1d(xr, wr).backward(grad_out)
    for got, exact in ((gx, xr.grad), (gw, wr.grad)):  # bf16 operands: ~3 digits
        assert (got - exact).abs().max() <= 2e-2 * exact.abs().max()


@pytest.mark.parametrize("algo", ALGOS)
def test_bf16_weight_gradient_is_summed_in_float32(monkeypatch, algo):
    """The weight gradient under bfloat16 autocast is the float32 sum of the products of the
    bfloat16-rounded operands, with every algorithm, on CPUs with and without native
    bfloat16: equal to the exact (float64) sum up to float32 rounding. torch's bfloat16
    convolution backward misses this by far (bfloat16 partial sums; 4.16 of 91 on AVX2)."""
    monkeypatch.setenv("SGTHEORY_CONV_ALGO", algo)
    gen = torch.Generator().manual_seed(2)
    n = 3 * CHUNK + 9
    x = (torch.rand(n, 8, 12, generator=gen) < 0.3).double()
    w = torch.randn(6, 8, 5, generator=gen)
    grad_out = torch.randn(n, 6, 8, generator=gen)
    _, _, gw = _bf16_conv_and_grads(x.float(), w, grad_out)
    g = grad_out.bfloat16().double()  # autograd hands the backward the rounded gradient
    exact = conv1d_weight_grad(x, w.shape, g, 1, 0)  # float64
    torch.testing.assert_close(gw.double(), exact, rtol=1e-5, atol=1e-5 * exact.abs().max())


@pytest.mark.parametrize("limit", [0, 1 << 26])
def test_binary_input_is_saved_as_booleans_only_above_the_size_limit(monkeypatch, limit):
    """Spikes up to FLOAT_SAVE_BYTES are kept as they are, bigger ones as booleans; the
    gradients are the same either way."""
    from sgtheory.backends.conv import chunked as conv

    monkeypatch.setattr(conv, "FLOAT_SAVE_BYTES", limit)
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(600, 3, 12, generator=gen) < 0.3).double()
    w = torch.randn(4, 3, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append(t.dtype) or t, lambda t: t
    ):
        out = conv1d_chunked(x, w, 1, 0, binary=True)
    assert saved[0] == (torch.bool if limit == 0 else torch.float64)
    grad_out = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    out.backward(grad_out)
    wr = w.detach().clone().requires_grad_()
    F.conv1d(x, wr).backward(grad_out)
    torch.testing.assert_close(w.grad, wr.grad)
