"""Triton kernels of the LIF scan: forward and adjoint, one launch per layer and direction.

Not imported directly: ``sgtheory.triton_scan`` loads this file once per mode (compiled for
CUDA, or run by Triton's interpreter under TRITON_INTERPRET=1) into a module of its own, so
the mode does not depend on when triton was first imported. For the same reason the kernels
use only Triton's builtins, none of its @jit library functions (such as tl.zeros), which
are fixed in the mode of triton's own import. Each program instance runs its neurons
through all time steps with their state in registers.

Arrays are time-major (nb_steps, row), float32, contiguous; `fired` is uint8. The arithmetic
follows the torch loop of ``neurons._LIFScan`` operation by operation (fused multiply-adds
exactly where torch's lerp and add-with-alpha kernels have them; launched with fp fusion
off), so both give the same spikes. The recurrent kernels run one sample per program: the
recurrent convolution of a step reads back the spikes (or adjoints) that the program wrote
to global memory before a barrier, and multiplies them by each kernel tap of the weight.
"""

from __future__ import annotations

import triton
import triton.language as tl

from sgtheory import spikes

# the surrogate formulas of spikes.KERNEL_FORMULAS (compile-time constants of the kernels)
SG_SUPERSPIKE = tl.constexpr(spikes.SG_SUPERSPIKE)
SG_SPIKE = tl.constexpr(spikes.SG_SPIKE)
SG_SIGMOID = tl.constexpr(spikes.SG_SIGMOID)
SG_EXPONENTIAL = tl.constexpr(spikes.SG_EXPONENTIAL)


@triton.jit
def _spike(mem, spike_at, off, mask, threshold, STOCHASTIC: tl.constexpr):
    """The spike of each neuron: above its firing point (escape noise) or the threshold."""
    if STOCHASTIC:
        fire = (mem - threshold) > tl.load(spike_at + off, mask=mask, other=0.0)
    else:
        fire = mem > threshold
    return fire


@triton.jit
def _next_mem(mem, syn, fire, a_mem, b_mem, lerp_w, RESET_FULL: tl.constexpr,
              LERP_SMALL: tl.constexpr):  # fmt: skip
    """mem[t+1]: torch.lerp(syn, mem, a_mem) or a_mem mem + b_mem syn, zero where reset.

    lerp_w: a_mem if LERP_SMALL (|a_mem| < 0.5) else a_mem - 1, both in float32."""
    if RESET_FULL:
        if LERP_SMALL:
            nxt = tl.fma(mem - syn, lerp_w, syn)
        else:
            nxt = tl.fma(mem - syn, lerp_w, mem)
        nxt = tl.where(fire, 0.0, nxt)
    else:
        nxt = tl.fma(syn, b_mem, tl.where(fire, 0.0, mem * a_mem))
    return nxt


@triton.jit
def _surrogate(x, spike, sg, off, mask, p, q, FORM: tl.constexpr):
    """The surrogate derivative at x by formula FORM of spikes.KERNEL_FORMULAS, else read."""
    if FORM == SG_SUPERSPIKE:
        y = p * tl.abs(x) + 1.0
        d = 1.0 / (y * y)
    elif FORM == SG_SPIKE:
        d = spike
    elif FORM == SG_SIGMOID:
        px = p * x
        d = q * (1.0 / (1.0 + tl.exp(-px))) * (1.0 / (1.0 + tl.exp(px)))
    elif FORM == SG_EXPONENTIAL:
        d = tl.minimum(p * tl.exp(x / q), 1.0) / q
    else:
        d = tl.load(sg + off, mask=mask, other=0.0)
    return d


@triton.jit
def _adjoint_step(
    lam_mem, lam_syn, g, mem, syn, fire, a_mem, b_mem, ratio, d,
    RESET_FULL: tl.constexpr, DIFF: tl.constexpr,
):  # fmt: skip
    """(dL/dmem[t], dL/dsyn[t]) from dL/dmem[t+1], dL/dsyn[t+1] and dL/dS[t] = g."""
    if DIFF:  # the potential that the reset removes
        if RESET_FULL:
            g = g - lam_mem * (a_mem * mem + b_mem * syn)
        else:
            g = g - lam_mem * (a_mem * mem)
    through = lam_mem - lam_mem * fire
    if RESET_FULL:
        g_syn = tl.fma(lam_syn, ratio, through) * b_mem
    else:
        g_syn = tl.fma(lam_syn, ratio, lam_mem) * b_mem
    return through * a_mem + g * d, g_syn


@triton.jit
def lif_forward_flat(
    cur, spike_at, mem_out, fired, syn_out, nb_steps, row, a_syn, a_mem, b_mem, lerp_w,
    threshold,
    STOCHASTIC: tl.constexpr, RESET_FULL: tl.constexpr, LERP_SMALL: tl.constexpr,
    KEEP_SYN: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Forward without recurrence: BLOCK neurons per program, all steps."""
    n = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = n < row
    mem = tl.full([BLOCK], 0.0, tl.float32)
    syn = tl.full([BLOCK], 0.0, tl.float32)
    base = tl.full([], 0, tl.int64)  # t row, in 64 bits
    for _ in range(nb_steps):
        off = base + n
        fire = _spike(mem, spike_at, off, mask, threshold, STOCHASTIC)
        tl.store(mem_out + off, mem, mask=mask)
        tl.store(fired + off, fire.to(tl.uint8), mask=mask)
        if KEEP_SYN:
            tl.store(syn_out + off, syn, mask=mask)
        mem = _next_mem(mem, syn, fire, a_mem, b_mem, lerp_w, RESET_FULL, LERP_SMALL)
        syn = syn * a_syn + tl.load(cur + off, mask=mask, other=0.0)
        base += row


@triton.jit
def lif_backward_flat(
    fired, mem_in, syn_in, sg, grad_spikes, grad_syn, nb_steps, row, a_mem, b_mem, ratio,
    threshold, p, q, FORM: tl.constexpr, RESET_FULL: tl.constexpr, DIFF: tl.constexpr,
    BLOCK: tl.constexpr,
):  # fmt: skip
    """Adjoint without recurrence, time-reversed: grad_syn (nb_steps + 1, row) gets dL/dsyn[t]
    in slot t (slot nb_steps: 0), so dL/dI[t] is slot t + 1."""
    n = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = n < row
    lam_mem = tl.full([BLOCK], 0.0, tl.float32)  # dL/dmem[t+1]
    lam_syn = tl.full([BLOCK], 0.0, tl.float32)  # dL/dsyn[t+1]
    base = (tl.full([], 0, tl.int64) + nb_steps) * row  # t row, in 64 bits
    tl.store(grad_syn + base + n, lam_syn, mask=mask)
    for _ in range(nb_steps):
        base -= row
        off = base + n
        g = tl.load(grad_spikes + off, mask=mask, other=0.0)
        mem = tl.load(mem_in + off, mask=mask, other=0.0)
        syn = mem  # read only with diff_reset and full reset
        if DIFF and RESET_FULL:
            syn = tl.load(syn_in + off, mask=mask, other=0.0)
        fire = tl.load(fired + off, mask=mask, other=0).to(tl.float32)
        d = _surrogate(mem - threshold, fire, sg, off, mask, p, q, FORM)
        lam_mem, lam_syn = _adjoint_step(
            lam_mem, lam_syn, g, mem, syn, fire, a_mem, b_mem, ratio, d, RESET_FULL, DIFF
        )
        tl.store(grad_syn + off, lam_syn, mask=mask)


@triton.jit
def _rec_layout(b, C, L, K: tl.constexpr, TRANSPOSE: tl.constexpr, BC: tl.constexpr,
                BL: tl.constexpr):  # fmt: skip
    """Offsets of sample b's rows of a step, and of the weight taps (computed once)."""
    rows = tl.arange(0, BC)[:, None]
    cols = tl.arange(0, BC)[None, :]
    if TRANSPOSE:  # weight[cols = out channel, rows = in channel, k]
        w_off = cols * (C * K) + rows * K
    else:  # weight[rows = out channel, cols = in channel, k]
        w_off = rows * (C * K) + cols * K
    return b * C * L + rows * L, rows < C, w_off, (rows < C) & (cols < C)


@triton.jit
def _recurrent_input(src, weight, base, valid, layout, L, K: tl.constexpr,
                     TRANSPOSE: tl.constexpr, BC: tl.constexpr, BL: tl.constexpr):  # fmt: skip
    """conv1d (or, TRANSPOSE, conv_transpose1d) of one sample of the step of src at offset
    `base` with the (C, C, K) weight, padding K // 2: (BC, BL); zero unless `valid`."""
    sample_rows, rows_ok, w_off, w_ok = layout
    start = src + base + sample_rows
    rows_ok = rows_ok & valid
    pos0 = tl.arange(0, BL)[None, :]
    acc = tl.full([BC, BL], 0.0, tl.float32)
    for k in tl.static_range(K):
        if TRANSPOSE:
            pos = pos0 - (k - K // 2)
        else:
            pos = pos0 + (k - K // 2)
        ok = rows_ok & (pos >= 0) & (pos < L)
        x = tl.load(start + pos, mask=ok, other=0, volatile=True).to(tl.float32)
        w = tl.load(weight + w_off + k, mask=w_ok, other=0.0)
        acc = tl.dot(w, x, acc, input_precision="ieee")
    return acc


@triton.jit
def lif_forward_rec(
    cur, spike_at, mem_out, fired, syn_out, weight, nb_steps, row, C, L, a_syn, a_mem, b_mem,
    lerp_w, threshold, STOCHASTIC: tl.constexpr, RESET_FULL: tl.constexpr, LERP_SMALL: tl.constexpr,
    KEEP_SYN: tl.constexpr, K: tl.constexpr, DELAY: tl.constexpr, BC: tl.constexpr,
    BL: tl.constexpr,
):  # fmt: skip
    """Forward with a recurrent convolution: one sample (C, L) per program, all steps.

    syn[t+1] = a_syn syn[t] + I[t] + conv(S[t + 1 - DELAY]) (spikes act DELAY steps later).
    """
    b = tl.program_id(0)
    c = tl.arange(0, BC)[:, None]
    l = tl.arange(0, BL)[None, :]
    mask = (c < C) & (l < L)
    n = b * C * L + c * L + l
    mem = tl.full([BC, BL], 0.0, tl.float32)
    syn = tl.full([BC, BL], 0.0, tl.float32)
    layout = _rec_layout(b, C, L, K, False, BC, BL)
    base = tl.full([], 0, tl.int64)  # t row, in 64 bits
    for t in range(nb_steps):
        off = base + n
        fire = _spike(mem, spike_at, off, mask, threshold, STOCHASTIC)
        tl.store(mem_out + off, mem, mask=mask)
        tl.store(fired + off, fire.to(tl.uint8), mask=mask)
        if KEEP_SYN:
            tl.store(syn_out + off, syn, mask=mask)
        tl.debug_barrier()  # this step's spikes are in memory for the whole program
        source = base - (DELAY - 1) * row  # S[t + 1 - DELAY]
        rec = _recurrent_input(fired, weight, source, t >= DELAY - 1, layout, L, K, False, BC, BL)
        mem = _next_mem(mem, syn, fire, a_mem, b_mem, lerp_w, RESET_FULL, LERP_SMALL)
        syn = syn * a_syn + tl.load(cur + off, mask=mask, other=0.0) + rec
        base += row


@triton.jit
def lif_backward_rec(
    fired, mem_in, syn_in, sg, grad_spikes, grad_syn, weight, nb_steps, row, C, L, a_mem,
    b_mem, ratio, threshold, p, q, FORM: tl.constexpr, RESET_FULL: tl.constexpr,
    DIFF: tl.constexpr, K: tl.constexpr, DELAY: tl.constexpr, BC: tl.constexpr,
    BL: tl.constexpr,
):  # fmt: skip
    """Adjoint with the recurrent convolution, one sample per program, time-reversed.

    dL/dS[t] gains conv_transpose(dL/dsyn[t + DELAY]), read back from grad_syn (slots as
    in lif_backward_flat).
    """
    b = tl.program_id(0)
    c = tl.arange(0, BC)[:, None]
    l = tl.arange(0, BL)[None, :]
    mask = (c < C) & (l < L)
    n = b * C * L + c * L + l
    lam_mem = tl.full([BC, BL], 0.0, tl.float32)
    lam_syn = tl.full([BC, BL], 0.0, tl.float32)
    layout = _rec_layout(b, C, L, K, True, BC, BL)
    base = (tl.full([], 0, tl.int64) + nb_steps) * row  # t row, in 64 bits
    tl.store(grad_syn + base + n, lam_syn, mask=mask)
    tl.debug_barrier()
    for i in range(nb_steps):  # t = nb_steps - 1 - i
        base -= row
        off = base + n
        g = tl.load(grad_spikes + off, mask=mask, other=0.0)
        source = base + DELAY * row  # dL/dsyn[t + DELAY], if t + DELAY <= nb_steps
        valid = i >= DELAY - 1
        g = g + _recurrent_input(grad_syn, weight, source, valid, layout, L, K, True, BC, BL)
        mem = tl.load(mem_in + off, mask=mask, other=0.0)
        syn = mem  # read only with diff_reset and full reset
        if DIFF and RESET_FULL:
            syn = tl.load(syn_in + off, mask=mask, other=0.0)
        fire = tl.load(fired + off, mask=mask, other=0).to(tl.float32)
        d = _surrogate(mem - threshold, fire, sg, off, mask, p, q, FORM)
        lam_mem, lam_syn = _adjoint_step(
            lam_mem, lam_syn, g, mem, syn, fire, a_mem, b_mem, ratio, d, RESET_FULL, DIFF
        )
        tl.store(grad_syn + off, lam_syn, mask=mask)
        tl.debug_barrier()  # dL/dsyn[t] is in memory for the whole program
