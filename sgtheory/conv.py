"""1-D convolution over very large batches, computed in cache-sized chunks.

A layer's feedforward convolution runs once over batch x time samples (e.g. 400 x 350 =
140,000). oneDNN is several times slower on one such call than on the same work split into
chunks of a few hundred samples (measured on 2 CPU cores: 2-4x for the SHD-shaped layers),
so forward and backward both walk over chunks. Results equal `F.conv1d` up to float
rounding. A binary input (spikes) is kept for the backward pass as booleans, a quarter of
the memory of float32.

Under `torch.autocast` with a lower-precision dtype (bfloat16), the convolution and its
backward run in that dtype, and the weight gradient is summed over chunks in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CHUNK = 512


def conv1d_weight_grad(
    x: torch.Tensor, weight_shape, grad_out: torch.Tensor, stride: int, padding: int
) -> torch.Tensor:
    """dL/dweight of conv1d(x, weight) given dL/doutput, summed over chunks of the batch.

    `x` may be boolean (spikes); each chunk is converted to grad_out's dtype on the fly.
    """
    grad_w = None
    chunk = CHUNK if x.device.type == "cpu" else x.shape[0]
    weight = torch.empty(weight_shape, dtype=grad_out.dtype, device=x.device)  # shape only
    for i in range(0, x.shape[0], chunk):
        _, gw, _ = torch.ops.aten.convolution_backward(
            grad_out[i : i + chunk],
            x[i : i + chunk].to(grad_out.dtype),
            weight,
            None,
            [stride],
            [padding],
            [1],
            False,
            [0],
            1,
            [False, True, False],
        )
        grad_w = gw if grad_w is None else grad_w.add_(gw)
    return grad_w


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The lower-precision dtype of an active autocast region on `device_type`, else None."""
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


class _ChunkedConv1d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, stride, padding, binary):
        low = _autocast_dtype(x.device.type)
        if low is not None:  # compute in the autocast dtype; autograd casts the grads back
            weight = weight.to(low)
            x = x if x.dtype == torch.bool else x.to(low)
        if x.device.type != "cpu" or x.shape[0] <= CHUNK:
            out = F.conv1d(x, weight, stride=stride, padding=padding)
        else:
            first = F.conv1d(x[:CHUNK], weight, stride=stride, padding=padding)
            out = torch.empty((x.shape[0], *first.shape[1:]), dtype=first.dtype, device=x.device)
            out[:CHUNK] = first
            for i in range(CHUNK, x.shape[0], CHUNK):
                out[i : i + CHUNK] = F.conv1d(
                    x[i : i + CHUNK], weight, stride=stride, padding=padding
                )
        if binary is None:
            binary = x.dtype != torch.bool and bool(x.eq(0).logical_or_(x.eq(1)).all())
        ctx.save_for_backward(x.to(torch.bool) if binary else x, weight)
        ctx.stride, ctx.padding = stride, padding
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_out = grad_out.contiguous()
        chunk = CHUNK if x.device.type == "cpu" else x.shape[0]
        grad_x = torch.empty(x.shape, dtype=weight.dtype, device=x.device) if need_x else None
        # summed in float32 when the convolution ran in a lower precision
        low = weight.dtype in (torch.bfloat16, torch.float16)
        acc = torch.float32 if low else weight.dtype
        grad_w = torch.zeros_like(weight, dtype=acc) if need_w else None
        for i in range(0, x.shape[0], chunk):
            gx, gw, _ = torch.ops.aten.convolution_backward(
                grad_out[i : i + chunk],
                x[i : i + chunk].to(weight.dtype),
                weight,
                None,
                [ctx.stride],
                [ctx.padding],
                [1],
                False,
                [0],
                1,
                [need_x, need_w, False],
            )
            if need_x:
                grad_x[i : i + chunk] = gx
            if need_w:
                grad_w += gw
        return grad_x, grad_w, None, None, None


def conv1d_chunked(
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: int = 1,
    padding: int = 0,
    binary: bool | None = None,
) -> torch.Tensor:
    """`F.conv1d(x, weight, stride=stride, padding=padding)` (no bias), in chunks on CPU.

    `binary` says whether x holds only 0 and 1 (spikes), which are then saved as booleans;
    None checks it (one pass over x). Pass True only when x is sure to be binary.
    """
    return _ChunkedConv1d.apply(x, weight, int(stride), int(padding), binary)
