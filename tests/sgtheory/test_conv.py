"""Chunked convolution equals torch's conv1d, values and gradients, binary or not."""

import pytest
import torch
import torch.nn.functional as F

from sgtheory.conv import CHUNK, conv1d_chunked, conv1d_weight_grad


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


def test_bf16_autocast_convolution_rounds_inputs_and_keeps_float32_gradients():
    """Under autocast, the chunked convolution equals float32 convolution of the bfloat16-
    rounded inputs up to bfloat16 output rounding, and its gradients come back float32."""
    gen = torch.Generator().manual_seed(2)
    x = (torch.rand(CHUNK + 9, 8, 12, generator=gen) < 0.3).float().requires_grad_()
    w = torch.randn(6, 8, 5, generator=gen).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv1d_chunked(x, w, 1, 0, True)
    assert y.dtype == torch.bfloat16
    rounded = F.conv1d(x.detach(), w.detach().bfloat16().float())
    torch.testing.assert_close(y.float(), rounded, rtol=2**-7, atol=1e-6)
    grad_out = torch.randn(y.shape, generator=gen)
    y.float().backward(grad_out)
    assert x.grad.dtype == w.grad.dtype == torch.float32
    xr, wr = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    F.conv1d(xr, wr).backward(grad_out)
    for got, exact in ((x.grad, xr.grad), (w.grad, wr.grad)):  # bf16 operands: ~3 digits
        assert (got - exact).abs().max() <= 2e-2 * exact.abs().max()
