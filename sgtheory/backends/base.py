"""The scan interface that every LIF backend implements, and the autograd function that
runs any of them.

A scan backend is a module with

* ``NAME`` (its value of the backend setting), ``REQUIRES`` (in words, what it needs),
  ``TAKES_INPUT_DELAY`` (whether its forward can read the current `input_delay` steps late);
* ``usable(cur, rec_weight, spike_fn, params) -> bool``: whether it can run this scan;
* ``forward(cur, rec_weight, escape, draws, params, input_delay)`` ->
  ``(fired, mem, syn, spikes)``: the spikes as booleans, the potential each was drawn from,
  the synaptic current of every step (kept only with ``params.diff_reset``, else None) and
  the spikes as floats where the backend writes them itself (else None);
* ``backward(fired, mem, syn, rec_weight, grad_spikes, surrogate, params, input_delay,
  need_rec_grad)`` -> ``(dL/dcur, dL/drec_weight or None)``: the adjoint recursion.

All tensors are time-major (time, batch, ...); `params` is a `lif.LIFParams`, `draws` the
scan's `random.Draws` (None when the escape noise is deterministic). Every backend gives
the spikes of the reference recursion (`lif.lif_scan_reference`) bitwise and its gradients
up to float rounding.
"""

from __future__ import annotations

from types import ModuleType

import torch

from sgtheory import random
from sgtheory.lif import LIFParams
from sgtheory.spikes import SpikeFn


def kernels_draw(spike_fn: SpikeFn) -> bool:
    """Whether compiled kernels can make this spike operation's draws: deterministic, or an
    escape noise with a kernel rule (spikes.ESCAPE_FORMULAS) drawing from a stream or
    generator (explicit uniforms, `random.GivenUniforms`, run as the torch loop)."""
    if spike_fn.deterministic:
        return True
    return hasattr(spike_fn.escape, "kernel_form") and not isinstance(
        spike_fn.generator, random.GivenUniforms
    )


class ScanFunction(torch.autograd.Function):
    """One scan by a backend: its forward without an autograd graph, its adjoint as the
    backward. The scan draws its uniforms once, all its steps, from the spike operation's
    stream (`SpikeFn.take`)."""

    @staticmethod
    def forward(
        ctx,
        cur: torch.Tensor,
        rec_weight: torch.Tensor | None,
        backend: ModuleType,
        spike_fn: SpikeFn,
        params: LIFParams,
        input_delay: int,
    ):
        ctx.set_materialize_grads(False)  # mem has no gradient: spare zero-filling one
        draws = spike_fn.take(cur.shape[0])  # this scan's steps of the stream (None: no draws)
        if draws is not None and cur[0].numel() > random.MAX_ELEMENTS:
            raise ValueError(
                f"a step of {cur[0].numel()} neurons exceeds the {random.MAX_ELEMENTS} elements "
                "that a draw's counter numbers; split the batch"
            )
        fired, mem, syn, spikes = backend.forward(
            cur, rec_weight, spike_fn.escape, draws, params, input_delay
        )
        ctx.save_for_backward(fired, mem, syn, rec_weight)  # bool: 1/4 the memory
        ctx.backend, ctx.surrogate, ctx.params = backend, spike_fn.surrogate, params
        ctx.input_delay = input_delay
        ctx.mark_non_differentiable(mem)
        return fired.to(cur.dtype) if spikes is None else spikes, mem

    @staticmethod
    def backward(ctx, grad_spikes, grad_mem):
        fired, mem, syn, rec_weight = ctx.saved_tensors
        if grad_spikes is None:  # the spikes did not reach the loss
            grad_spikes = torch.zeros_like(mem)
        grad_cur, grad_rec = ctx.backend.backward(
            fired,
            mem,
            syn,
            rec_weight,
            grad_spikes,
            ctx.surrogate,
            ctx.params,
            ctx.input_delay,
            ctx.needs_input_grad[1],
        )
        return grad_cur, grad_rec, None, None, None, None
