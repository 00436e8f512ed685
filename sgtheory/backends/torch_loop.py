"""The LIF scan as per-step torch operations with a hand-written adjoint: any device, dtype,
recurrent convolution and source of draws.

The forward runs the loop without an autograd graph; the backward runs the adjoint
(time-reversed) recursion by hand. Internally time-major (T, B, ...) so that each step's
slice is contiguous. The state, outputs and adjoints live in buffers allocated before the
loops, which most per-step operations write into; the loops still allocate small per-step
temporaries (the escape noise's firing points, the recurrent convolution and its
transpose, the surrogate derivative). Stochastic spikes compare x = mem - threshold with
the firing points escape.prob_inverse(u) of the scan's uniforms (``backends.draws``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sgtheory import random
from sgtheory.backends import draws as fast_draws
from sgtheory.backends.conv import algos as conv_algos
from sgtheory.backends.conv.chunked import conv1d_weight_grad
from sgtheory.lif import LIFParams
from sgtheory.spikes import SpikeFn

NAME = "torch"
TAKES_INPUT_DELAY = False
REQUIRES = "nothing: it runs every scan"


def usable(
    cur: torch.Tensor, rec_weight: torch.Tensor | None, spike_fn: SpikeFn, params: LIFParams
) -> bool:
    """Always True: the loop runs any scan."""
    return True


class _RecurrentConv:
    """The recurrent convolution of the loop, once per step on that step's boolean spikes,
    by the algorithm that `conv_algos` measured fastest for the per-step shape (on CPU the
    sparse one usually: a step's spikes are mostly zeros)."""

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


class _Points:
    """The firing points escape.prob_inverse(u) of a scan's draws, step by step, made
    STEPS steps at a time (on the CPU by the C kernels, four steps per Philox call); the
    inverse is elementwise, so a block gives each step's own numbers."""

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
            u = fast_draws.uniform(self.draws, start, stop, self.shape, self.device)
            points = fast_draws.firing_points(self.escape, u.to(self.dtype).contiguous())
            self.buffer = list(points.unbind(0))[::-1]
        self.next_step += 1
        return self.buffer.pop()


def forward(
    cur: torch.Tensor,
    rec_weight: torch.Tensor | None,
    escape,
    draws: random.Draws | None,
    params: LIFParams,
    input_delay: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, None]:
    """(fired, mem, syn or None, None) by per-step torch operations on preallocated buffers;
    stochastic spikes from `draws` (random.Draws of the scan's steps)."""
    assert input_delay == 0, "the torch loop takes the current already delayed"
    cur = cur.contiguous()
    nb_steps = cur.shape[0]
    a_syn, a_mem, threshold = params.a_syn, params.a_mem, params.threshold
    full, delay = params.reset == "full", params.rec_delay
    fired = torch.empty(cur.shape, dtype=torch.bool, device=cur.device)
    mem_all = torch.empty((nb_steps + 1, *cur.shape[1:]), dtype=cur.dtype, device=cur.device)
    mem_all[0] = 0.0
    syn_all = torch.zeros_like(cur) if params.diff_reset else None
    syn = torch.zeros_like(cur[0])
    step_escape = escape.deterministic
    points = None if step_escape else _Points(escape, draws, cur)
    leak_scratch = None if full else torch.empty_like(syn)
    rec_conv = None if rec_weight is None else _RecurrentConv(rec_weight, cur.shape[1:], nb_steps)
    for t in range(nb_steps):
        mem, new_mem = mem_all[t], mem_all[t + 1]
        if syn_all is not None:
            syn_all[t] = syn
        if step_escape:
            torch.gt(mem, threshold, out=fired[t])
        else:  # escape.sample: a spike iff x > prob_inverse(u)
            torch.gt(mem - threshold, points.next(), out=fired[t])
        if full:
            torch.lerp(syn, mem, a_mem, out=new_mem).masked_fill_(fired[t], 0.0)
        else:
            torch.mul(mem, a_mem, out=leak_scratch).masked_fill_(fired[t], 0.0)
            torch.add(leak_scratch, syn, alpha=1.0 - a_mem, out=new_mem)
        syn.mul_(a_syn).add_(cur[t])
        src = t + 1 - delay  # the step whose spikes arrive now
        if rec_weight is not None and src >= 0:
            syn.add_(rec_conv(fired[src]))
    return fired, mem_all[:nb_steps], syn_all, None


def backward(
    fired: torch.Tensor,
    mem_all: torch.Tensor,
    syn_all: torch.Tensor | None,
    rec_weight: torch.Tensor | None,
    grad_spikes: torch.Tensor,
    surrogate,
    params: LIFParams,
    input_delay: int = 0,
    need_rec_grad: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(dL/dcur of every step, dL/drec_weight or None) by the adjoint recursion, step by
    step backwards in time."""
    a_syn, a_mem, b_mem = params.a_syn, params.a_mem, 1.0 - params.a_mem
    full, delay, threshold = params.reset == "full", params.rec_delay, params.threshold
    nb_steps = fired.shape[0]
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
        if params.diff_reset:
            pre = a_mem * mem_all[t] + b_mem * syn_all[t] if full else a_mem * mem_all[t]
            g_total.addcmul_(lam_mem, pre, value=-1.0)
        spikes_t.copy_(fired[t])
        torch.mul(lam_mem, spikes_t, out=through)
        torch.sub(lam_mem, through, out=through)  # lam_mem (1 - S[t])
        # dL/dsyn[t] = b_mem (through if full else lam_mem) + a_syn dL/dsyn[t+1]
        torch.add(through if full else lam_mem, lam_syn, alpha=a_syn / b_mem, out=grad_cur[t]).mul_(
            b_mem
        )
        # dL/dmem[t] = a_mem through + dL/dS[t] sg[t]
        sg = surrogate.derivative(mem_all[t] - threshold, spikes_t)  # in cache, per step
        torch.addcmul(through.mul_(a_mem), g_total, sg, out=lam_mem)
    grad_rec = None
    if rec_weight is not None and need_rec_grad:
        grad_rec = _rec_weight_grad(fired, grad_cur, rec_weight, delay)
    return grad_cur[1:], grad_rec


def _rec_weight_grad(
    fired: torch.Tensor, grad_syn: torch.Tensor, rec_weight: torch.Tensor, delay: int
) -> torch.Tensor:
    """dL/dW of the recurrent convolution: S[t] (t < T + 1 - delay) against
    dL/dsyn[t + delay] (`grad_syn` holds dL/dsyn[0..T])."""
    nb_steps = fired.shape[0]
    if delay > nb_steps:  # no spike arrives within the scan
        return torch.zeros_like(rec_weight)
    flat = (nb_steps + 1 - delay) * fired.shape[1]
    return conv1d_weight_grad(
        fired[: nb_steps + 1 - delay].reshape(flat, *fired.shape[2:]),
        rec_weight.shape,
        grad_syn[delay:].reshape(flat, *fired.shape[2:]),
        1,
        rec_weight.shape[-1] // 2,
    )
