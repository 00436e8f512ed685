"""LIF dynamics with synaptic current, run over all time steps (a "scan").

With x = mem - threshold, spikes S[t] = spike(x[t]) and R[t] = S[t] (detached unless
``diff_reset``), the two reset orders are

* ``reset="full"`` (default, as in stork):
  mem[t+1] = (a_mem mem[t] + (1 - a_mem) syn[t]) (1 - R[t])
* ``reset="leak"`` (the spike-train-matching model):
  mem[t+1] = a_mem mem[t] (1 - R[t]) + (1 - a_mem) syn[t]

and always syn[t+1] = a_syn syn[t] + I[t] + rec(S[t + 1 - rec_delay]), with a = exp(-dt / tau),
mem[0] = syn[0] = 0. ``rec`` is an optional recurrent 1-D convolution (stride 1,
size-preserving); with ``rec_delay=1`` (default) a spike enters the synaptic current of the
next step, with ``rec_delay=2`` one step later (as in stork, where every connection
delivers its output at the next step; spikes before step 0 count as 0).

``lif_scan`` is the fast path: one custom autograd function that runs the loop without an
autograd graph and computes the adjoint (time-reversed) recursion by hand. On CPU in float32
without recurrence, both loops run in the fused C kernels of ``backends.native.fused`` (same
operations, same spikes); on CUDA in float32, with or without recurrence, in the Triton
kernels of ``backends.triton.scan`` (which says when they apply; ``SGTHEORY_TRITON=0`` turns
them off); otherwise as per-step torch operations on preallocated buffers.
``lif_scan_reference`` is the same model written plainly with autograd, one step at a time:
the baseline of the benchmarks and the oracle of the tests.

Stochastic escape noise: a scan takes one draw of all its steps from the spike operation's
stream (`SpikeFn.take`), and step t of every path compares with the uniforms of that draw's
step t (``sgtheory.random``): the kernels draw them inside their loops, the torch loop and
the reference through `random.Draws.uniform`, so all give the same spikes.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

from sgtheory import random
from sgtheory.backends.conv import algos as conv_algos
from sgtheory.backends.conv.chunked import conv1d_weight_grad
from sgtheory.backends.native import fused
from sgtheory.backends.triton import scan as triton_scan
from sgtheory.errors import ConfigError, check_choice, check_positive
from sgtheory.spikes import SpikeFn

RESETS = ("full", "leak")


def decay(tau: float, dt: float) -> float:
    """exp(-dt / tau): the per-step decay factor of a time constant tau (seconds)."""
    check_positive("tau", tau)
    check_positive("dt", dt)
    return math.exp(-dt / tau)


def _rec_conv(spikes: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return F.conv1d(spikes, weight, padding=weight.shape[-1] // 2)


class _RecurrentConv:
    """The recurrent convolution of the torch loop, once per step on that step's boolean
    spikes, by the algorithm that `conv_algos` measured fastest for the per-step shape (on
    CPU the sparse one usually: a step's spikes are mostly zeros)."""

    def __init__(self, weight: torch.Tensor, step_shape: torch.Size, nb_steps: int):
        batch, channels, positions = step_shape
        k = weight.shape[-1]
        self.weight = weight
        self.geo = conv_algos.Geometry(channels, positions, weight.shape[0], k, 1, k // 2)
        self.choice = conv_algos.choice(
            "forward", self.geo, batch, weight.dtype, weight.device, calls=nb_steps
        )

    def __call__(self, fired: torch.Tensor) -> torch.Tensor:
        return conv_algos.run("forward", self.choice, fired, self.weight, self.geo, False)


def _check_rec(weight: torch.Tensor | None, shape: torch.Size, rec_delay: int = 1) -> None:
    if isinstance(rec_delay, bool) or not isinstance(rec_delay, int) or rec_delay < 1:
        raise ConfigError(
            f"rec_delay={rec_delay!r} is not valid; it must be an integer >= 1 (steps from a "
            "spike to the synaptic current it enters; 1 = the next step)"
        )
    if weight is None:
        return
    if len(shape) != 4 or weight.dim() != 3 or weight.shape[-1] % 2 != 1:
        raise ValueError(
            "a recurrent convolution needs input shaped (batch, time, channels, length) and an "
            f"odd kernel; got input {tuple(shape)} and weight {tuple(weight.shape)}"
        )


def delay_in_time(x: torch.Tensor, steps: int, time_dim: int) -> torch.Tensor:
    """`x` shifted later by `steps` along `time_dim`: out[t] = x[t - steps], 0 for t < steps."""
    if steps == 0:
        return x
    if steps < 0:
        raise ConfigError(f"input_delay={steps!r} is not valid; it must be >= 0")
    return _Delay.apply(x, steps, time_dim)


class _Delay(torch.autograd.Function):
    """The shift of `delay_in_time` with a backward that writes the input's gradient once
    (shifted back, zero where the steps fell off the end), instead of zero-filling a whole
    tensor and copying into it as the backward of a slice does."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, steps: int, time_dim: int) -> torch.Tensor:
        ctx.steps, ctx.time_dim = steps, time_dim
        length = x.shape[time_dim]
        kept = max(length - steps, 0)
        out = torch.empty_like(x)  # in x's layout (e.g. channels-last spikes)
        out.narrow(time_dim, 0, length - kept).zero_()
        out.narrow(time_dim, length - kept, kept).copy_(x.narrow(time_dim, 0, kept))
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        steps, time_dim = ctx.steps, ctx.time_dim
        length = grad.shape[time_dim]
        kept = max(length - steps, 0)
        out = torch.empty_like(grad)
        out.narrow(time_dim, 0, kept).copy_(grad.narrow(time_dim, length - kept, kept))
        out.narrow(time_dim, kept, length - kept).zero_()
        return out, None, None


def _kernels_draw(spike_fn: SpikeFn) -> bool:
    """Whether the compiled kernels can make this spike operation's draws: deterministic, or
    an escape noise with a kernel rule (spikes.ESCAPE_FORMULAS) drawing from a stream or
    generator (explicit uniforms, `random.GivenUniforms`, run as the torch loop)."""
    if spike_fn.deterministic:
        return True
    return hasattr(spike_fn.escape, "kernel_form") and not isinstance(
        spike_fn.generator, random.GivenUniforms
    )


def _runs_fused(
    cur: torch.Tensor, rec_weight: torch.Tensor | None, rec_delay: int, spike_fn: SpikeFn
) -> bool:
    """Whether `_LIFScan` runs `cur` by the fused C kernels (not Triton, no recurrence)."""
    if rec_weight is not None or not fused.usable(cur) or not _kernels_draw(spike_fn):
        return False
    return not _runs_triton(cur, rec_weight, rec_delay, spike_fn)


def _runs_triton(
    cur: torch.Tensor, rec_weight: torch.Tensor | None, rec_delay: int, spike_fn: SpikeFn
) -> bool:
    """Whether `_LIFScan` runs `cur` by the Triton kernels."""
    return _kernels_draw(spike_fn) and triton_scan.usable(cur, rec_weight, rec_delay)


class _Points:
    """The firing points escape.prob_inverse(u) of a scan's draws, step by step, made
    STEPS steps at a time (`random.Draws.uniform`: on the CPU by the C kernel, four steps
    per Philox call); the inverse is elementwise, so a block gives each step's own numbers."""

    STEPS = 16  # steps drawn at once: a few MB even for an SHD-shaped layer

    def __init__(self, escape, draws: random.Draws, cur: torch.Tensor):
        self.escape, self.draws = escape, draws
        self.shape, self.dtype, self.device = tuple(cur.shape[1:]), cur.dtype, cur.device
        self.nb_steps, self.next_step = cur.shape[0], 0
        self.buffer: list[torch.Tensor] = []

    def next(self) -> torch.Tensor:
        """The next step's firing points."""
        if not self.buffer:
            start = self.next_step
            stop = min(self.nb_steps, start + self.STEPS)
            u = self.draws.uniform(start, stop, self.shape, self.device).to(self.dtype)
            self.buffer = list(self.escape.prob_inverse(u.contiguous()).unbind(0))[::-1]
        self.next_step += 1
        return self.buffer.pop()


class _LIFScan(torch.autograd.Function):
    """Forward without a graph, backward by the adjoint recursion (time-reversed).

    Internally time-major (T, B, ...) so that each step's slice is contiguous. The state,
    outputs and adjoints live in buffers allocated before the loops, which most per-step
    operations write into; the loops still allocate small per-step temporaries (the escape
    noise's draw, the recurrent convolution and its transpose, the surrogate derivative).
    """

    @staticmethod
    def forward(
        ctx,
        cur,
        rec_weight,
        spike_fn,
        a_syn,
        a_mem,
        threshold,
        reset,
        diff_reset,
        rec_delay,
        input_delay=0,
    ):
        ctx.set_materialize_grads(False)  # mem has no gradient: spare zero-filling one
        ctx.triton = _runs_triton(cur, rec_weight, rec_delay, spike_fn)  # CUDA: Triton
        ctx.fused = _runs_fused(cur, rec_weight, rec_delay, spike_fn)
        draws = spike_fn.take(cur.shape[0])  # this scan's steps of the stream (None: no draws)
        if draws is not None and cur[0].numel() > random.MAX_ELEMENTS:
            raise ValueError(
                f"a step of {cur[0].numel()} neurons exceeds the {random.MAX_ELEMENTS} elements "
                "that a draw's counter numbers; split the batch"
            )
        # (T, B, ...); the fused kernels take any layout in which every step is one block
        cur = fused.time_major_dense(cur) if ctx.fused else cur.contiguous()
        ctx.input_delay = input_delay  # only the fused kernels take one (see lif_scan)
        assert input_delay == 0 or ctx.fused
        spikes = None  # float spikes, where the kernel writes them itself
        if ctx.triton:
            fired, mem_all, syn_all = triton_scan.forward(
                cur, rec_weight, spike_fn.escape, draws, a_syn, a_mem, threshold, reset,
                diff_reset, rec_delay,
            )  # fmt: skip
        elif ctx.fused:
            mem_all, fired, syn_all, spikes = fused.lif_forward(
                cur, spike_fn.escape, draws, a_syn, a_mem, threshold, reset == "full",
                diff_reset, input_delay,
            )  # fmt: skip
        else:
            fired, mem_all, syn_all = _LIFScan.run_loop(
                cur, rec_weight, spike_fn.escape, draws, a_syn, a_mem, threshold, reset,
                diff_reset, rec_delay,
            )  # fmt: skip
        ctx.save_for_backward(fired, mem_all, syn_all, rec_weight)  # bool: 1/4 the memory
        ctx.spike_fn, ctx.a_syn, ctx.a_mem = spike_fn, a_syn, a_mem
        ctx.threshold, ctx.reset, ctx.diff_reset = threshold, reset, diff_reset
        ctx.rec_delay = rec_delay
        ctx.mark_non_differentiable(mem_all)
        return fired.to(cur.dtype) if spikes is None else spikes, mem_all

    @staticmethod
    def run_loop(
        cur, rec_weight, escape, draws, a_syn, a_mem, threshold, reset, diff_reset, rec_delay=1
    ):
        """(fired, mem, syn or None) by per-step torch operations on preallocated buffers;
        stochastic spikes from `draws` (random.Draws of the scan's steps)."""
        nb_steps = cur.shape[0]
        fired = torch.empty(cur.shape, dtype=torch.bool, device=cur.device)
        mem_all = torch.empty((nb_steps + 1, *cur.shape[1:]), dtype=cur.dtype, device=cur.device)
        mem_all[0] = 0.0
        syn_all = torch.zeros_like(cur) if diff_reset else None
        syn = torch.zeros_like(cur[0])
        step_escape = escape.deterministic
        points = None if step_escape else _Points(escape, draws, cur)
        leak_scratch = None if reset == "full" else torch.empty_like(syn)
        rec_conv = (
            None if rec_weight is None else _RecurrentConv(rec_weight, cur.shape[1:], nb_steps)
        )
        for t in range(nb_steps):
            mem, new_mem = mem_all[t], mem_all[t + 1]
            if syn_all is not None:
                syn_all[t] = syn
            if step_escape:
                torch.gt(mem, threshold, out=fired[t])
            else:  # escape.sample: a spike iff x > prob_inverse(u)
                torch.gt(mem - threshold, points.next(), out=fired[t])
            if reset == "full":
                torch.lerp(syn, mem, a_mem, out=new_mem).masked_fill_(fired[t], 0.0)
            else:
                torch.mul(mem, a_mem, out=leak_scratch).masked_fill_(fired[t], 0.0)
                torch.add(leak_scratch, syn, alpha=1.0 - a_mem, out=new_mem)
            syn.mul_(a_syn).add_(cur[t])
            src = t + 1 - rec_delay  # the step whose spikes arrive now
            if rec_weight is not None and src >= 0:
                syn.add_(rec_conv(fired[src]))
        return fired, mem_all[:nb_steps], syn_all

    @staticmethod
    def backward_fused(ctx, grad_spikes):
        fired, mem_all, syn_all, _ = ctx.saved_tensors
        a_mem = ctx.a_mem
        full = ctx.reset == "full"
        pre = None
        if ctx.diff_reset:  # the potential that the reset removes, as in the torch loop
            pre = a_mem * mem_all + (1.0 - a_mem) * syn_all if full else a_mem * mem_all
        grad_cur = fused.lif_backward(
            fired,
            mem_all,
            grad_spikes,
            pre,
            ctx.spike_fn.surrogate,
            ctx.a_syn,
            a_mem,
            ctx.threshold,
            full,
            ctx.input_delay,
        )
        return grad_cur, None, None, None, None, None, None, None, None, None

    @staticmethod
    def backward_triton(ctx, grad_spikes):
        fired, mem_all, syn_all, rec_weight = ctx.saved_tensors
        grad_cur, grad_rec = triton_scan.backward(
            fired,
            mem_all,
            syn_all,
            rec_weight,
            grad_spikes,
            ctx.spike_fn.surrogate,
            ctx.a_syn,
            ctx.a_mem,
            ctx.threshold,
            ctx.reset,
            ctx.diff_reset,
            ctx.rec_delay,
            ctx.needs_input_grad[1],
        )
        return grad_cur, grad_rec, None, None, None, None, None, None, None, None

    @staticmethod
    def backward(ctx, grad_spikes, grad_mem):
        if grad_spikes is None:  # the spikes did not reach the loss
            grad_spikes = torch.zeros_like(ctx.saved_tensors[1])
        if ctx.triton:
            return _LIFScan.backward_triton(ctx, grad_spikes)
        if ctx.fused:
            return _LIFScan.backward_fused(ctx, grad_spikes)
        fired, mem_all, syn_all, rec_weight = ctx.saved_tensors
        a_syn, a_mem, b_mem = ctx.a_syn, ctx.a_mem, 1.0 - ctx.a_mem
        full, delay = ctx.reset == "full", ctx.rec_delay
        nb_steps = fired.shape[0]
        surrogate, threshold = ctx.spike_fn.surrogate, ctx.threshold
        g_s = grad_spikes.contiguous()
        # slot k holds dL/dsyn[k]; dL/dI[t] = dL/dsyn[t+1]; slot nb_steps: dL/dsyn[T] = 0
        grad_cur = torch.empty(
            (nb_steps + 1, *fired.shape[1:]), dtype=mem_all.dtype, device=mem_all.device
        )
        grad_cur[nb_steps] = 0.0
        lam_mem = torch.zeros_like(mem_all[0])  # dL/dmem[t+1]
        spikes_t = torch.empty_like(lam_mem)
        through = torch.empty_like(lam_mem)
        g_total = torch.empty_like(lam_mem)
        for t in range(nb_steps - 1, -1, -1):
            lam_syn = grad_cur[t + 1]
            g_total.copy_(g_s[t])
            if rec_weight is not None and t + delay <= nb_steps:  # S[t] enters syn[t+delay]
                g_total += F.conv_transpose1d(
                    grad_cur[t + delay], rec_weight, padding=rec_weight.shape[-1] // 2
                )
            if ctx.diff_reset:
                pre = a_mem * mem_all[t] + b_mem * syn_all[t] if full else a_mem * mem_all[t]
                g_total.addcmul_(lam_mem, pre, value=-1.0)
            spikes_t.copy_(fired[t])
            torch.mul(lam_mem, spikes_t, out=through)
            torch.sub(lam_mem, through, out=through)  # lam_mem (1 - S[t])
            # dL/dsyn[t] = b_mem (through if full else lam_mem) + a_syn dL/dsyn[t+1]
            torch.add(
                through if full else lam_mem, lam_syn, alpha=a_syn / b_mem, out=grad_cur[t]
            ).mul_(b_mem)
            # dL/dmem[t] = a_mem through + dL/dS[t] sg[t]
            sg = surrogate.derivative(mem_all[t] - threshold, spikes_t)  # in cache, per step
            torch.addcmul(through.mul_(a_mem), g_total, sg, out=lam_mem)
        grad_rec = None
        if rec_weight is not None and ctx.needs_input_grad[1] and delay <= nb_steps:
            # S[t] (t < T + 1 - delay) meets dL/dsyn[t + delay]
            flat = (nb_steps + 1 - delay) * fired.shape[1]
            grad_rec = conv1d_weight_grad(
                fired[: nb_steps + 1 - delay].reshape(flat, *fired.shape[2:]),
                rec_weight.shape,
                grad_cur[delay:].reshape(flat, *fired.shape[2:]),
                1,
                rec_weight.shape[-1] // 2,
            )
        elif rec_weight is not None and ctx.needs_input_grad[1]:
            grad_rec = torch.zeros_like(rec_weight)
        return grad_cur[1:], grad_rec, None, None, None, None, None, None, None, None


def lif_scan(
    current: torch.Tensor,
    spike_fn: SpikeFn,
    a_syn: float,
    a_mem: float,
    threshold: float = 1.0,
    reset: str = "full",
    diff_reset: bool = False,
    rec_weight: torch.Tensor | None = None,
    time_major: bool = False,
    rec_delay: int = 1,
    input_delay: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run LIF neurons driven by `current` (batch, time, ...); return (spikes, mem).

    `mem` is the membrane potential from which each step's spike was drawn (no gradient).
    `rec_weight` (channels, channels, odd kernel) adds a recurrent convolution of the
    spikes; then `current` must be shaped (batch, time, channels, length). The spikes of
    step t enter the synaptic current syn[t + rec_delay] (module docstring).
    With `time_major`, input and outputs are (time, batch, ...) instead, which spares the
    transposes between layers (the scan runs time-major internally). `input_delay` makes
    the current arrive that many steps late (`delay_in_time`); the fused C kernels read it
    late instead of shifting a copy.
    """
    check_choice("reset", reset, RESETS)
    _check_rec(rec_weight, current.shape, rec_delay)
    if not time_major:
        spikes, mem = lif_scan(
            current.transpose(0, 1),
            spike_fn,
            a_syn,
            a_mem,
            threshold,
            reset,
            diff_reset,
            rec_weight,
            time_major=True,
            rec_delay=rec_delay,
            input_delay=input_delay,
        )
        return spikes.transpose(0, 1), mem.transpose(0, 1)
    if input_delay and not _runs_fused(current, rec_weight, rec_delay, spike_fn):
        current, input_delay = delay_in_time(current, input_delay, 0), 0
    with torch.autocast(current.device.type, enabled=False):  # dynamics in full precision
        return _LIFScan.apply(
            current,
            rec_weight,
            spike_fn,
            float(a_syn),
            float(a_mem),
            float(threshold),
            reset,
            bool(diff_reset),
            int(rec_delay),
            int(input_delay),
        )


def lif_scan_reference(
    current: torch.Tensor,
    spike_fn: SpikeFn,
    a_syn: float,
    a_mem: float,
    threshold: float = 1.0,
    reset: str = "full",
    diff_reset: bool = False,
    rec_weight: torch.Tensor | None = None,
    time_major: bool = False,
    rec_delay: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same model as `lif_scan`, one step at a time through autograd (slow, plain)."""
    check_choice("reset", reset, RESETS)
    _check_rec(rec_weight, current.shape, rec_delay)
    if time_major:
        spikes, mem = lif_scan_reference(
            current.transpose(0, 1),
            spike_fn,
            a_syn,
            a_mem,
            threshold,
            reset,
            diff_reset,
            rec_weight,
            rec_delay=rec_delay,
        )
        return spikes.transpose(0, 1), mem.transpose(0, 1)
    steps = current.unbind(1)
    mem = torch.zeros_like(steps[0])
    syn = torch.zeros_like(steps[0])
    spikes, mems = [], []
    # one draw for the whole scan, step t from its step t, as the fast scan draws
    draws = spike_fn.take(len(steps)) if isinstance(spike_fn, SpikeFn) else None
    for t, cur_t in enumerate(steps):
        mems.append(mem.detach())
        s = spike_fn(mem - threshold) if draws is None else spike_fn(mem - threshold, draws, t)
        spikes.append(s)
        r = s if diff_reset else s.detach()
        if reset == "full":
            mem = (a_mem * mem + (1 - a_mem) * syn) * (1 - r)
        else:
            mem = a_mem * mem * (1 - r) + (1 - a_mem) * syn
        syn = a_syn * syn + cur_t
        if rec_weight is not None and len(spikes) >= rec_delay:
            syn = syn + _rec_conv(spikes[len(spikes) - rec_delay], rec_weight)
    return torch.stack(spikes, dim=1), torch.stack(mems, dim=1)


def readout_scan(
    current: torch.Tensor,
    a_syn: float,
    a_mem: float,
    time_major: bool = False,
    initial_mem: float = 0.0,
    after_update: bool = False,
    fast: bool = False,
) -> torch.Tensor:
    """Non-spiking leaky integrator: the LIF dynamics without spikes or reset.

    Returns mem (batch, time, ...) with mem[t+1] = a_mem mem[t] + (1 - a_mem) syn[t],
    syn[t+1] = a_syn syn[t] + I[t], mem[0] = `initial_mem`, syn[0] = 0; the output at step
    t is mem[t], or mem[t+1] with `after_update` (stork reports the potential after its
    update and starts it at -1e-3). With `time_major`, input and output are
    (time, batch, ...). `fast`: the whole scan as one matrix product with the readout's
    filter matrix (`_ReadoutScan`; equal up to rounding); otherwise plain autograd, step by
    step (the reference).
    """
    cur = current if time_major else current.transpose(0, 1)
    if fast:
        with torch.autocast(cur.device.type, enabled=False):  # in the current's precision
            args = (float(a_syn), float(a_mem), float(initial_mem), bool(after_update))
            out = _ReadoutScan.apply(cur, *args)
        return out if time_major else out.transpose(0, 1)
    steps = cur.unbind(0)
    mem = torch.full_like(steps[0], float(initial_mem))
    syn = torch.zeros_like(steps[0])
    out = []
    for cur_t in steps:  # unbind: its backward stacks, where indexing would zero-fill T times
        if not after_update:
            out.append(mem)
        mem = a_mem * mem + (1 - a_mem) * syn
        syn = a_syn * syn + cur_t
        if after_update:
            out.append(mem)
    return torch.stack(out, dim=0 if time_major else 1)


@lru_cache(maxsize=16)
def _readout_filter(steps, a_syn, a_mem, initial_mem, after_update, dtype, device):
    """(K, offset) with output[t] = sum_i K[t, i] I[i] + offset[t]: the readout is linear and
    time-invariant, so its scan is one (T x T) matrix product. K's entries are its impulse
    response, run by the recursion of `readout_scan` in float64, then rounded once."""
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
    """`readout_scan` over time-major (T, ...) currents as one matrix product with the
    filter matrix K of `_readout_filter` (and K^T for the gradient): no per-step operations,
    so also no per-step kernel launches on a GPU. Equal to the step-by-step recursion up to
    float rounding (summation order)."""

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
