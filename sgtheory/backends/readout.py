"""The readout's scan as one matrix product: no per-step operations (nor kernel launches).

The readout (`lif.readout_reference`) is linear and time-invariant, so its output over T
steps is one (T x T) matrix K times the currents, plus the decay of its initial potential.
Equal to the step-by-step recursion up to float rounding (summation order).
"""

from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=16)
def _readout_filter(steps, a_syn, a_mem, initial_mem, after_update, dtype, device):
    """(K, offset) with output[t] = sum_i K[t, i] I[i] + offset[t]. K's entries are the
    impulse response, run by the recursion of `lif.readout_reference` in float64, then
    rounded once."""
    shift = 1 if after_update else 0  # the output at step t is mem[t + shift]
    response, mem, syn = [], 0.0, 0.0  # mem[m] after a unit current at step 0
    for m in range(steps + shift):
        response.append(mem)
        mem, syn = a_mem * mem + (1 - a_mem) * syn, a_syn * syn + (1.0 if m == 0 else 0.0)
    lag = torch.arange(steps).view(-1, 1) + shift - torch.arange(steps).view(1, -1)
    table = torch.tensor(response, dtype=torch.float64)
    kernel = torch.where(lag >= 0, table[lag.clamp(min=0)], 0.0)
    offset = initial_mem * a_mem ** (torch.arange(steps, dtype=torch.float64) + shift)
    return kernel.to(device, dtype), offset.to(device, dtype).view(-1, 1)


class _ReadoutScan(torch.autograd.Function):
    """The readout over time-major (T, ...) currents as one product with K (and K^T for the
    gradient)."""

    @staticmethod
    def forward(ctx, cur, a_syn, a_mem, initial_mem, after_update):
        key = (cur.shape[0], a_syn, a_mem, initial_mem, after_update, cur.dtype, cur.device)
        kernel, offset = _readout_filter(*key)
        ctx.kernel = kernel
        flat = cur.reshape(cur.shape[0], -1)
        return torch.addmm(offset, kernel, flat).view(cur.shape)

    @staticmethod
    def backward(ctx, grad):
        flat = grad.reshape(grad.shape[0], -1)
        return (ctx.kernel.t() @ flat).view(grad.shape), None, None, None, None


def readout_scan(
    current: torch.Tensor,
    a_syn: float,
    a_mem: float,
    time_major: bool = False,
    initial_mem: float = 0.0,
    after_update: bool = False,
) -> torch.Tensor:
    """`lif.readout_reference` (same arguments) as one matrix product, in the current's
    precision (outside autocast)."""
    cur = current if time_major else current.transpose(0, 1)
    with torch.autocast(cur.device.type, enabled=False):
        args = (float(a_syn), float(a_mem), float(initial_mem), bool(after_update))
        out = _ReadoutScan.apply(cur, *args)
    return out if time_major else out.transpose(0, 1)
