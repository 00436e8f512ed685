"""The C kernels' torch wrappers: the LIF scan and its adjoint, Philox draws, the logit.

On CPU, the per-step torch operations of the torch loop each pass over a small tensor, so
on networks such as the Randman one the scan costs more in per-operation overhead and
memory traffic than in arithmetic. ``csrc/lif_scan.c`` runs a block of neurons through all
steps with its state in registers (built and loaded by `build`). The kernels index a
step's neurons in storage order, so a scan runs in place on any layout in which every time
step is one contiguous block (e.g. channels-last conv currents), and every array it makes
takes its current's layout (`time_major_dense`). Stochastic escape noise draws its uniforms
inside the loop, by Philox4x32-10 as ``sgtheory.random`` defines them (each neuron's
logical index found from the layout once per block of neurons).

A recurrent convolution (conv layers, current (T, B, channels, positions)) runs inside the
same loop, one sample per block: each step's spikes add their current event by event
(work proportional to the spikes), and the adjoint adds the transposed convolution of
dL/dsyn as one small product per step, the weight gradient again event by event.

`forward` and `backward` are this backend's scan interface (``backends.base``);
`philox_uniform` and `logit_points` give the torch loop the same numbers as
``random.uniform_reference`` and ``spikes.logit_f32``, faster.
"""

from __future__ import annotations

import math

import torch

from sgtheory import random
from sgtheory.backends import base
from sgtheory.backends.native import build
from sgtheory.lif import LIFParams
from sgtheory.spikes import ESC_STEP, SG_GIVEN, SG_SPIKE, SG_SUPERSPIKE, SpikeFn

NAME = "native"
TAKES_INPUT_DELAY = True  # step t may read cur[t - input_delay] (no shifted copy)
REQUIRES = (
    "a float32 CPU current (with a recurrent weight: (time, batch, channels, positions)), "
    f"the C kernels built (a C compiler, {build.ENV} not 0) and draws the kernels make "
    "(deterministic, or a Stream or torch.Generator with an escape noise that has a "
    "kernel_form)"
)
# formulas of spikes.KERNEL_FORMULAS that the C backward evaluates inside its loop; for the
# others (they involve exp) torch's vectorised kernels compute the derivative beforehand
INLINE_FORMULAS = (SG_SUPERSPIKE, SG_SPIKE)
# forward's lazy logit decides a spike from an estimate of logit(u) within 0.0597 where
# the potential is more than this (in logit units) away from it: the rest compute the point
LAZY_MARGIN = 0.07


def usable(
    cur: torch.Tensor, rec_weight: torch.Tensor | None, spike_fn: SpikeFn, params: LIFParams
) -> bool:
    """Whether the C kernels run this scan (see REQUIRES)."""
    if rec_weight is not None and (cur.dim() != 4 or rec_weight.dtype != torch.float32):
        return False
    return build.runs(cur) and base.kernels_draw(spike_fn)


def time_major_dense(t: torch.Tensor) -> torch.Tensor:
    """`t` (time, ...) itself if each time step fills one contiguous block of its storage,
    its neurons in any order (e.g. channels-last conv currents); else a contiguous copy.
    The kernels index neuron j of step s at s * row + j of the storage: every array of one
    scan shares the layout of its current (`torch.empty_like` keeps it)."""
    if t.is_contiguous() or t.dim() < 2:
        return t.contiguous()
    step = t[0]
    order = sorted(range(step.dim()), key=lambda d: -step.stride(d))
    dense = step.permute(order).is_contiguous() and t.stride(0) == step.numel()
    return t if dense else t.contiguous()


def element_layout(step: torch.Tensor) -> torch.Tensor:
    """int64 [ndim, (size, logical stride) per dim in storage order, outermost first] of a
    dense step: how the kernel finds the logical (C-contiguous) index of the neuron at each
    storage position, the draws' element index."""
    shape, strides = step.shape, step.stride()
    logical = [math.prod(shape[d + 1 :]) for d in range(len(shape))]
    dims = sorted(range(len(shape)), key=lambda d: (-strides[d], d))
    entries = [len(dims)] + [v for d in dims for v in (shape[d], logical[d])]
    return torch.tensor(entries, dtype=torch.int64)


def sample_major(t: torch.Tensor) -> torch.Tensor:
    """`time_major_dense(t)` of a recurrent layer's (T, B, C, P) tensor whose steps also
    hold each sample as one block, channels or positions innermost (standard or
    channels-last); else a contiguous copy."""
    t = time_major_dense(t)
    _, batch, channels, positions = t.shape
    blocks = batch == 1 or t.stride(1) == channels * positions
    inner = t.stride()[2:] in ((positions, 1), (1, channels))
    return t if blocks and inner else t.contiguous()


def recurrence(cur: torch.Tensor, rec_weight: torch.Tensor, delay: int) -> torch.Tensor:
    """The C code's rec = [channels, positions, taps, delay, stride_c, stride_p] of a
    sample-major current (`sample_major`); a delay beyond the steps, whose spikes arrive
    after the scan, as nb_steps + 1 (the same scan, a ring of that many steps at most)."""
    channels, positions, taps = cur.shape[2], cur.shape[3], rec_weight.shape[-1]
    delay = min(delay, cur.shape[0] + 1)
    values = [channels, positions, taps, delay, cur.stride(2), cur.stride(3)]
    return torch.tensor(values, dtype=torch.int64)


def _key(draws: random.Draws) -> torch.Tensor:
    """The draws' four 32-bit words (random.Draws.kernel_words) as the C code's uint32."""
    signed = [w - (1 << 32) if w >= 1 << 31 else w for w in draws.kernel_words()]
    return torch.tensor(signed, dtype=torch.int32)


def _like(t: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
    """`t` with the strides of `layout` (itself if it has them already; else a copy)."""
    return t if t.stride() == layout.stride() else torch.empty_like(layout, dtype=t.dtype).copy_(t)


def _ptr_of(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def _run(fn, ranges: list[tuple[int, int]], pointers: tuple, shape: tuple, tail: tuple) -> list:
    """fn(*pointers, *shape, begin, end, *tail) for each range, in parallel if several."""
    return build.parallel(fn, [(*pointers, *shape, lo, hi, *tail) for lo, hi in ranges])


def _check(codes: list[int]) -> None:
    """Raise MemoryError where a kernel could not allocate its scratch memory."""
    if any(code != 0 for code in codes):
        raise MemoryError("the C scan could not allocate its scratch memory")


def forward(
    cur: torch.Tensor,
    rec_weight: torch.Tensor | None,
    escape,
    draws: random.Draws | None,
    params: LIFParams,
    input_delay: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(fired, mem, syn or None, spikes) of LIF neurons driven by time-major `cur` (see the
    C file); `fired` is boolean, `spikes` the same as float32 0 / 1.

    A stochastic `escape` (its `kernel_form()`, spikes.ESCAPE_FORMULAS) draws the uniforms
    of `draws` (`random.Draws` of the scan's steps) inside the loop, each neuron by its
    logical index whatever cur's layout; sigmoid escape noise finds its firing points
    lazily (only potentials near one compute the logarithm; see the C file). With
    `input_delay`, step t receives cur[t - input_delay] (0 before), as
    `lif.delay_in_time` would shift it, without the copy.
    """
    cur = time_major_dense(cur) if rec_weight is None else sample_major(cur)
    nb_steps, row = cur.shape[0], cur[0].numel()
    mem = torch.empty_like(cur)  # every buffer in cur's layout
    fired = torch.empty_like(cur, dtype=torch.bool)
    syn = torch.empty_like(cur) if params.diff_reset else None
    spikes = torch.empty_like(cur)
    rule, p, q = escape.kernel_form()
    if rule != ESC_STEP and (draws is None or draws.given is not None):
        raise ValueError("a stochastic scan needs counter-based draws (random.Draws of a key)")
    key = _key(draws) if rule != ESC_STEP else torch.zeros(4, dtype=torch.int32)
    first = draws.first_step if rule != ESC_STEP else 0
    layout = element_layout(cur[0])
    pointers = (cur.data_ptr(), int(rule), float(p), float(q), key.data_ptr(), int(first))
    pointers += (layout.data_ptr(), LAZY_MARGIN, mem.data_ptr(), fired.data_ptr())
    pointers += (_ptr_of(syn), spikes.data_ptr())
    a_syn, a_mem = params.a_syn, params.a_mem
    full = params.reset == "full"
    tail = (a_syn, a_mem, 1.0 - a_mem, params.threshold, int(full), int(input_delay))
    block, rec = build.BLOCK, None
    if rec_weight is not None:  # w_events[c, k, o] = W[o, c, k]
        rec = recurrence(cur, rec_weight, params.rec_delay)
        w_events = rec_weight.detach().permute(1, 2, 0).contiguous()
        tail += (w_events.data_ptr(), rec.data_ptr())
        block = cur[0, 0].numel()
    else:
        tail += (None, None)
    ranges = build.ranges(row, nb_steps, block)
    _check(_run(build.library().lif_forward, ranges, pointers, (nb_steps, row), tail))
    return fired, mem, syn, spikes


def backward(
    fired: torch.Tensor,
    mem: torch.Tensor,
    syn: torch.Tensor | None,
    rec_weight: torch.Tensor | None,
    grad_spikes: torch.Tensor,
    surrogate,
    params: LIFParams,
    input_delay: int = 0,
    need_rec_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(dL/dcur of every step, dL/drec_weight or None) from dL/dS, by the adjoint recursion
    (see the C file); `input_delay` as in `forward`.

    The surrogate derivative at mem - threshold is evaluated inside the loop where the
    surrogate's `kernel_form()` is one of INLINE_FORMULAS, else by `surrogate.derivative`
    beforehand (spikes.SG_GIVEN).
    """
    a_syn, a_mem, threshold = params.a_syn, params.a_mem, params.threshold
    full = params.reset == "full"
    pre = None
    if params.diff_reset:  # the potential that the reset removes, as in the torch loop
        pre = a_mem * mem + (1.0 - a_mem) * syn if full else a_mem * mem
    # as the forward left it; every other array in its layout
    mem = time_major_dense(mem) if rec_weight is None else sample_major(mem)
    nb_steps, row = mem.shape[0], mem[0].numel()
    fired, grad_spikes = _like(fired, mem), _like(grad_spikes, mem)
    if pre is not None:
        pre = _like(pre, mem)
    kind, p, q = surrogate.kernel_form()
    sg = None
    if kind not in INLINE_FORMULAS:
        kind = SG_GIVEN
        sg = _like(surrogate.derivative(mem - threshold, fired.to(mem.dtype)), mem)
    grad_cur = torch.empty_like(mem)
    pointers = (
        fired.data_ptr(),
        mem.data_ptr(),
        _ptr_of(sg),
        grad_spikes.data_ptr(),
        _ptr_of(pre),
        grad_cur.data_ptr(),
    )
    b_mem = 1.0 - a_mem
    tail = (a_syn / b_mem, a_mem, b_mem, threshold, int(full), kind, float(p), float(q))
    tail += (int(input_delay),)
    if rec_weight is None:
        ranges = build.ranges(row, nb_steps)
        tail += (None, None, None)
        _check(_run(build.library().lif_backward, ranges, pointers, (nb_steps, row), tail))
        return grad_cur, None
    args = (*pointers, nb_steps, row)
    grad_rec = _recurrent_backward(args, tail, mem, rec_weight, params.rec_delay)
    return grad_cur, grad_rec if need_rec_grad else None


def _recurrent_backward(
    args: tuple, tail: tuple, mem: torch.Tensor, rec_weight: torch.Tensor, delay: int
) -> torch.Tensor:
    """Run lif_backward(*args, begin, end, *tail, recurrence) over ranges of whole samples;
    returns dL/drec_weight, summed from one [c, k, o] accumulator per range."""
    rec = recurrence(mem, rec_weight, delay)
    w_adjoint = rec_weight.detach().permute(2, 0, 1).contiguous()  # [k, o, c] = W[o, c, k]
    ranges = build.ranges(mem[0].numel(), mem.shape[0], mem[0, 0].numel())
    channels, taps = rec_weight.shape[0], rec_weight.shape[2]
    grad_w = torch.zeros((len(ranges), channels, taps, channels))
    rec_args = (w_adjoint.data_ptr(), rec.data_ptr())
    calls = [
        (*args, lo, hi, *tail, *rec_args, g.data_ptr())
        for (lo, hi), g in zip(ranges, grad_w, strict=True)
    ]
    _check(build.parallel(build.library().lif_backward, calls))
    return grad_w.sum(0).permute(2, 0, 1)


def philox_uniform(
    seed: int, stream: int, first_step: int, nb_steps: int, shape: tuple
) -> torch.Tensor | None:
    """`random.uniform_reference`'s numbers (nb_steps, *shape), float32 on the CPU, by the C
    kernel (four steps per Philox call, vectorised), spread over torch's threads when
    large; None where the kernels are not built."""
    lib = build.library()
    if lib is None:
        return None
    numel = math.prod(shape)
    out = torch.empty((nb_steps, numel), dtype=torch.float32)
    if numel == 0 or nb_steps == 0:
        return out.view(nb_steps, *shape)
    key = _key(random.Draws(seed, stream, first_step))
    workers = max(1, min(torch.get_num_threads(), numel * nb_steps // build.MIN_PARALLEL))
    per = math.ceil(math.ceil(numel / workers) / build.BLOCK) * build.BLOCK  # whole blocks
    calls = [
        (key.data_ptr(), first_step, nb_steps, numel, lo, min(numel, lo + per), out.data_ptr())
        for lo in range(0, numel, per)
    ]
    build.parallel(lib.philox_uniform, calls)
    return out.view(nb_steps, *shape)


def logit_points(u: torch.Tensor, beta: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """logit(u) / beta of contiguous CPU float32 `u` by the C kernel (the operations of
    spikes.logit_f32, within 2 ulp of the exact value for every draw; see the C file), into
    `out` if given (may be u itself), spread over torch's threads when large. Elementwise:
    the same numbers however `u` is split, so a block of steps gives each step's own."""
    if out is None:
        out = torch.empty_like(u)
    if not (u.is_contiguous() and out.is_contiguous() and out.shape == u.shape):
        raise ValueError("logit_points needs contiguous u and out of the same shape")
    n = u.numel()
    if n == 0:
        return out
    workers = max(1, min(torch.get_num_threads(), n // build.MIN_PARALLEL))
    per = -(-n // workers)
    calls = [(u.data_ptr(), out.data_ptr(), lo, min(n, lo + per), beta) for lo in range(0, n, per)]
    build.parallel(build.library().logit_points, calls)
    return out
