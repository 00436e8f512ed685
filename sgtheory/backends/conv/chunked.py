"""1-D convolution over very large batches, by the algorithm measured fastest on this machine.

A layer's feedforward convolution runs once over batch x time samples (e.g. 400 x 100 =
40,000 for the Randman network). Its forward, input gradient and weight gradient each run
by the algorithm that `sgtheory.backends.conv.algos` measured fastest for that shape and memory
layout on this CPU (oneDNN over chunks of samples, im2col + matrix product, one dense
banded matrix product, on channels-last data a matrix product per output position, or,
for the forward and the weight gradient of a sparse input such as spikes, a C kernel that
adds only the nonzero inputs' weights), chosen once and cached on disk;
``SGTHEORY_CONV_ALGO`` forces one. Results equal `F.conv1d` up to float rounding. A large
binary input (spikes) is kept for the backward pass as booleans, a quarter of the memory of
float32 (FLOAT_SAVE_BYTES).

Under `torch.autocast` with a lower-precision dtype (bfloat16), the convolution and its
input gradient run in that dtype; the weight gradient is computed in float32 from the
rounded operands (see `conv_algos.weight_grad`) and returned in float32.
"""

from __future__ import annotations

import torch

from sgtheory.backends.conv import algos as conv_algos
from sgtheory.backends.conv.algos import CHUNK, Geometry

__all__ = ["CHUNK", "conv1d_chunked", "conv1d_weight_grad"]

# Binary inputs up to this size are kept for the backward pass as they are (float), larger
# ones as booleans: the weight gradient then needs no conversion pass over a small input
# (a Randman layer's, about 60 MB), while a big one (an SHD layer's, 0.6 GB) costs a
# quarter of the memory.
FLOAT_SAVE_BYTES = 64 << 20


def conv1d_weight_grad(
    x: torch.Tensor, weight_shape, grad_out: torch.Tensor, stride: int, padding: int
) -> torch.Tensor:
    """dL/dweight of conv1d(x, weight) given dL/doutput (x may be boolean spikes)."""
    geo = Geometry.of(x.shape, weight_shape, int(stride), int(padding))
    return conv_algos.weight_grad(x, grad_out, geo)


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The lower-precision dtype of an active autocast region on `device_type`, else None."""
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


class _Conv1d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, stride, padding, binary, channels_last):
        low = _autocast_dtype(x.device.type)
        if low is not None:  # compute in the autocast dtype; autograd casts the grads back
            weight = weight.to(low)
            x = x if x.dtype == torch.bool else x.to(low)
        geo = Geometry.of(x.shape, weight.shape, stride, padding)
        out = conv_algos.forward(x, weight, geo, channels_last)
        if binary is None:
            binary = x.dtype != torch.bool and bool(x.eq(0).logical_or_(x.eq(1)).all())
        small = x.dtype != torch.bool and x.numel() * x.element_size() <= FLOAT_SAVE_BYTES
        ctx.save_for_backward(x.to(torch.bool) if binary and not small else x, weight)
        ctx.geo, ctx.channels_last = geo, channels_last
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            # in the input's layout, as the layer before expects its gradient
            grad_x = conv_algos.input_grad(
                grad_out, weight, ctx.geo, conv_algos.is_channels_last(x)
            )
        if ctx.needs_input_grad[1]:
            grad_w = conv_algos.weight_grad(
                x, grad_out.to(weight.dtype), ctx.geo, ctx.channels_last
            )
        return grad_x, grad_w, None, None, None, None


def conv1d_chunked(
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: int = 1,
    padding: int = 0,
    binary: bool | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """`F.conv1d(x, weight, stride=stride, padding=padding)` (no bias), fast on large batches.

    `binary` says whether x holds only 0 and 1 (spikes), which are then saved as booleans;
    None checks it (one pass over x). Pass True only when x is sure to be binary.
    `channels_last`: return the result stored as (samples, positions, channels) (see
    `sgtheory.backends.conv.algos`); x may come in either layout, and its gradient returns in x's.
    """
    return _Conv1d.apply(x, weight, int(stride), int(padding), binary, bool(channels_last))
