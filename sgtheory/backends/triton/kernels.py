"""Triton kernels of the LIF scan: forward and adjoint, one launch per layer and direction.

Not imported directly: ``sgtheory.backends.triton.scan`` loads this file once per mode (compiled for
CUDA, or run by Triton's interpreter under TRITON_INTERPRET=1) into a module of its own, so
the mode does not depend on when triton was first imported. For the same reason the kernels
use only Triton's builtins, none of its @jit library functions (such as tl.zeros), which
are fixed in the mode of triton's own import. Each program instance runs its neurons
through all time steps with their state in registers.

Stochastic escape noise draws inside the forward kernels: each neuron-step computes
Philox4x32-10 of its counter (element, step >> 2, stream) under the key (seed) with uint32
products and XORs, keeps the word of lane step & 3 and turns it into the firing point of
its escape noise by the operations of ``spikes.log_f32`` / ``logit_f32`` (divisions
correctly rounded, `div_rn`): the numbers of ``sgtheory.random``, the spikes of the torch
loop and the C scan.

Arrays are time-major (nb_steps, row), float32, contiguous; `fired` is uint8. The arithmetic
follows the torch loop of ``backends.torch_loop`` operation by operation (fused multiply-adds
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
# the escape-noise rules of spikes.ESCAPE_FORMULAS
ESC_STEP = tl.constexpr(spikes.ESC_STEP)
ESC_SIGMOID = tl.constexpr(spikes.ESC_SIGMOID)
ESC_EXPONENTIAL = tl.constexpr(spikes.ESC_EXPONENTIAL)
NEG_INF = tl.constexpr(float("-inf"))
WORD_BIAS = tl.constexpr(1 << 32)  # added to each key word by the caller (an int64 argument)


@triton.jit
def _philox_lane(elem, group, lane, k0, k1, s0, s1):
    """Word `lane` (0..3) of Philox4x32-10 at counter (elem, group, s0, s1), key (k0, k1);
    all uint32 (elem a tensor, the rest scalars)."""
    x0 = elem
    x1 = elem * 0 + group
    x2 = elem * 0 + s0
    x3 = elem * 0 + s1
    m0 = tl.full([], 0xD2511F53, tl.uint32)
    m1 = tl.full([], 0xCD9E8D57, tl.uint32)
    w0 = tl.full([], 0x9E3779B9, tl.uint32)
    w1 = tl.full([], 0xBB67AE85, tl.uint32)
    for _ in tl.static_range(10):
        hi0, lo0 = tl.umulhi(x0, m0), x0 * m0
        hi1, lo1 = tl.umulhi(x2, m1), x2 * m1
        x0, x1, x2, x3 = hi1 ^ x1 ^ k0, lo1, hi0 ^ x3 ^ k1, lo0
        k0 = k0 + w0
        k1 = k1 + w1
    return tl.where(lane == 0, x0, tl.where(lane == 1, x1, tl.where(lane == 2, x2, x3)))


@triton.jit
def _atanh_log(e, s):
    """e ln2 + 2 atanh(s), as spikes._atanh_log."""
    z = s * s
    r = z * (0.666666687 + z * (0.400000006 + z * (0.285714298 + z * 0.222222224)))
    return e * 0.693145752 + (2.0 * s + (s * r + e * 1.42860677e-06))


@triton.jit
def _mantissa(bits):
    """m in [1, 2) of the float32 with these uint32 bits."""
    return ((bits & 0x7FFFFF) | 0x3F800000).to(tl.float32, bitcast=True)


@triton.jit
def _log(v):
    """log(v) of float32 v (0 or positive normal), as spikes.log_f32."""
    b = v.to(tl.uint32, bitcast=True)
    m = _mantissa(b)
    big = m > 1.41421354
    m = tl.where(big, m * 0.5, m)
    e = ((b >> 23).to(tl.int32).to(tl.float32) - 127.0) + big.to(tl.float32)
    out = _atanh_log(e, tl.math.div_rn(m - 1.0, m + 1.0))
    return tl.where(v == 0.0, NEG_INF, out)


@triton.jit
def _logit(u):
    """log(u / (1 - u)) of a draw u, as spikes.logit_f32."""
    bu = u.to(tl.uint32, bitcast=True)
    bw = (1.0 - u).to(tl.uint32, bitcast=True)
    m1 = _mantissa(bu)
    m2 = _mantissa(bw)
    up = (m1 > 1.41421354 * m2).to(tl.float32)
    down = (m2 > 1.41421354 * m1).to(tl.float32)
    e1 = (bu >> 23).to(tl.int32).to(tl.float32)
    e2 = (bw >> 23).to(tl.int32).to(tl.float32)
    e = (e1 - e2) + (up - down)
    m2 = m2 + up * m2
    m1 = m1 + down * m1
    out = _atanh_log(e, tl.math.div_rn(m1 - m2, m1 + m2))
    return tl.where(u == 0.0, NEG_INF, out)


@triton.jit
def _word(arg):
    """A uint32 key word from its kernel argument (the word plus WORD_BIAS)."""
    return (arg - WORD_BIAS).to(tl.uint32)


@triton.jit
def _spike(mem, threshold, elem, step, k0, k1, s0, s1, p, q, ESCAPE: tl.constexpr):
    """The spike of each neuron: mem above the threshold (ESC_STEP), or mem - threshold
    above the firing point of its draw u(seed, stream, step, elem) (sgtheory.random);
    (k0, k1) the seed's words, (s0, s1) the stream's, uint32."""
    if ESCAPE == ESC_STEP:
        fire = mem > threshold
    else:
        group = (step >> 2).to(tl.uint32)
        word = _philox_lane(elem, group, step & 3, k0, k1, s0, s1)
        u = (word >> 8).to(tl.int32).to(tl.float32) * (1.0 / 16777216.0)
        if ESCAPE == ESC_SIGMOID:
            point = tl.math.div_rn(_logit(u), u * 0.0 + p)
        elif ESCAPE == ESC_EXPONENTIAL:
            point = _log(tl.math.div_rn(u, u * 0.0 + p)) * q
        else:  # ESC_SUPERSPIKE: v / (p (1 - |v|)), v = 2 u - 1
            v = 2.0 * u - 1.0
            point = tl.math.div_rn(v, p * (1.0 - tl.abs(v)))
        fire = (mem - threshold) > point
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
    cur, mem_out, fired, syn_out, nb_steps, row, a_syn, a_mem, b_mem, lerp_w, threshold,
    seed_lo, seed_hi, stream_lo, stream_hi, first_step, p, q,
    ESCAPE: tl.constexpr, RESET_FULL: tl.constexpr, LERP_SMALL: tl.constexpr,
    KEEP_SYN: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Forward without recurrence: BLOCK neurons per program, all steps; the draws of
    steps first_step.. (minus WORD_BIAS, as the key words)."""
    n = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = n < row
    elem = n.to(tl.uint32)  # the neuron's logical index in its step
    k0, k1, s0, s1 = _word(seed_lo), _word(seed_hi), _word(stream_lo), _word(stream_hi)
    step = first_step - WORD_BIAS
    mem = tl.full([BLOCK], 0.0, tl.float32)
    syn = tl.full([BLOCK], 0.0, tl.float32)
    base = tl.full([], 0, tl.int64)  # t row, in 64 bits
    for _ in range(nb_steps):
        off = base + n
        fire = _spike(mem, threshold, elem, step, k0, k1, s0, s1, p, q, ESCAPE)
        step += 1
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
    cur, mem_out, fired, syn_out, weight, nb_steps, row, C, L, a_syn, a_mem, b_mem,
    lerp_w, threshold, seed_lo, seed_hi, stream_lo, stream_hi, first_step, p, q,
    ESCAPE: tl.constexpr, RESET_FULL: tl.constexpr, LERP_SMALL: tl.constexpr,
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
    elem = n.to(tl.uint32)  # the neuron's logical index in its step
    k0, k1, s0, s1 = _word(seed_lo), _word(seed_hi), _word(stream_lo), _word(stream_hi)
    mem = tl.full([BC, BL], 0.0, tl.float32)
    syn = tl.full([BC, BL], 0.0, tl.float32)
    layout = _rec_layout(b, C, L, K, False, BC, BL)
    base = tl.full([], 0, tl.int64)  # t row, in 64 bits
    for t in range(nb_steps):
        off = base + n
        step = first_step - WORD_BIAS + t
        fire = _spike(mem, threshold, elem, step, k0, k1, s0, s1, p, q, ESCAPE)
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
