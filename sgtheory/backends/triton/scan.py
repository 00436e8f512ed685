"""The LIF scan on CUDA in Triton kernels: one launch per layer and direction.

On a GPU, the torch loop (``backends.torch_loop``) costs a handful of kernel launches per
time step, forward and adjoint, for every layer. The kernels of ``kernels.py`` loop over
time inside one launch instead, with the neurons spread over program instances; a layer
with a recurrent convolution runs one sample per program and computes the convolution of
each step inside the kernel.

Where they run (`usable`; the dispatch, ``sgtheory.scan``, takes them first where they do):
float32 currents on CUDA with Triton installed and ``SGTHEORY_TRITON`` not 0, for every
escape noise with a `kernel_form` drawing from a stream or generator, every surrogate (its
`kernel_form`, see spikes.KERNEL_FORMULAS), reset and ``diff_reset``, with or without a
recurrent convolution (``rec_delay`` up to the scan's steps; one sample's channels x
positions, padded to powers of two, at most MAX_BLOCK). CUDA without Triton: the torch
loop, after one warning. Only under Triton's interpreter (``TRITON_INTERPRET=1``, slow; for
tests) do these kernels run on CPU tensors.

Stochastic escape noise: the forward kernels draw each neuron-step's uniform themselves,
by Philox4x32-10 as ``sgtheory.random`` defines it (the numbers of the torch loop and the C
scan, on every device), and turn it into its firing point inside the loop: one launch per
layer and direction, stochastic or not.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
import warnings
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from sgtheory import random
from sgtheory.backends import base
from sgtheory.backends.conv.chunked import conv1d_weight_grad
from sgtheory.lif import LIFParams
from sgtheory.spikes import (
    ESC_STEP,
    SG_EXPONENTIAL,
    SG_GIVEN,
    SG_SIGMOID,
    SG_SPIKE,
    SG_SUPERSPIKE,
    SpikeFn,
)

ENV = "SGTHEORY_TRITON"
NAME = "triton"
TAKES_INPUT_DELAY = False
KERNELS = Path(__file__).with_name("kernels.py")
BLOCK = 512  # neurons per program of the kernels without recurrence
MAX_BLOCK = 8192  # padded channels x positions of one sample in the recurrent kernels
_FALSE = ("0", "false", "off", "no")
REQUIRES = (
    "a float32 current on CUDA (any device under TRITON_INTERPRET=1), triton installed, "
    f"{ENV} not 0, a recurrent block of at most {MAX_BLOCK} padded channels x positions "
    "and rec_delay up to the steps, and draws the kernels make (deterministic, or a "
    "Stream or torch.Generator with an escape noise that has a kernel_form)"
)
# formulas of spikes.KERNEL_FORMULAS that the kernels evaluate (kernels._surrogate);
# for any other, the derivative is computed beforehand by torch (spikes.SG_GIVEN)
INLINE_FORMULAS = (SG_SUPERSPIKE, SG_SPIKE, SG_SIGMOID, SG_EXPONENTIAL)

_lock = threading.Lock()
_state: dict = {"triton": None, "tried": False, "modules": {}}


def enabled() -> bool:
    """False when the user turned the kernels off with SGTHEORY_TRITON=0."""
    return os.environ.get(ENV, "1").strip().lower() not in _FALSE


def interpreting() -> bool:
    """Whether Triton's interpreter runs kernels (TRITON_INTERPRET=1): then on any device."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def _import_triton() -> ModuleType:
    import triton

    return triton


def triton_module() -> ModuleType | None:
    """triton if it imports (tried once), else None."""
    with _lock:
        if not _state["tried"]:
            _state["tried"] = True
            try:
                _state["triton"] = _import_triton()
            except ImportError:
                _state["triton"] = None
        return _state["triton"]


def available(device_type: str) -> bool:
    """Whether the kernels can run on `device_type`: CUDA (compiled) or any under the
    interpreter. CPU without the interpreter: False, without importing triton or warning;
    CUDA without triton: False after one warning per process."""
    if not enabled() or (device_type != "cuda" and not interpreting()):
        return False
    if triton_module() is not None:
        return True
    if device_type == "cuda" and not _state.get("warned"):
        _state["warned"] = True
        warnings.warn(
            "sgtheory: triton is not installed, so the LIF scan on CUDA runs as the slower "
            f"torch loop (pip install triton; {ENV}=0 silences this)",
            RuntimeWarning,
            stacklevel=4,
        )
    return False


def describe(device_type: str = "cuda") -> str:
    """Which scan runs on `device_type` in float32, in words (for benchmarks and logs)."""
    if not enabled():
        return f"torch loop ({ENV}=0)"
    if device_type != "cuda" and not interpreting():
        return f"not used on {device_type}"
    module = triton_module()
    if module is None:
        return "torch loop (triton not installed)"
    return f"Triton {module.__version__} kernels" + (" (interpreter)" if interpreting() else "")


def usable(
    cur: torch.Tensor, rec_weight: torch.Tensor | None, spike_fn: SpikeFn, params: LIFParams
) -> bool:
    """Whether the kernels run this scan (see REQUIRES)."""
    return base.kernels_draw(spike_fn) and runs(cur, rec_weight, params.rec_delay)


def runs(cur: torch.Tensor, rec_weight: torch.Tensor | None = None, rec_delay: int = 1) -> bool:
    """Whether the kernels take time-major `cur` (T, B, ...) with `rec_weight`: device,
    dtype, shapes and availability."""
    if cur.dtype != torch.float32 or cur.dim() < 2 or cur.numel() == 0:
        return False
    if rec_weight is not None:
        if rec_weight.dtype != torch.float32 or cur.dim() != 4 or rec_delay > cur.shape[0]:
            return False
        if _pow2(cur.shape[2]) * _pow2(cur.shape[3]) > MAX_BLOCK:
            return False
    return available(cur.device.type)


def _pow2(n: int) -> int:
    """The padded block size of a dimension of n: a power of two, at least 16 (tl.dot)."""
    return max(16, 1 << (n - 1).bit_length())


def kernels(interpret: bool) -> ModuleType:
    """kernels.py loaded in one mode (compiled or interpreted), once per mode.

    Triton fixes a kernel's mode when it is decorated, from TRITON_INTERPRET; each mode
    executes the file into its own module with that variable set for the duration.
    """
    key = "interpreted" if interpret else "compiled"
    with _lock:
        if key not in _state["modules"]:
            name = f"sgtheory._triton_kernels_{key}"
            spec = importlib.util.spec_from_file_location(name, KERNELS)
            module = importlib.util.module_from_spec(spec)
            previous = os.environ.get("TRITON_INTERPRET")
            os.environ["TRITON_INTERPRET"] = "1" if interpret else "0"
            try:
                sys.modules[name] = module
                spec.loader.exec_module(module)
            finally:
                if previous is None:
                    del os.environ["TRITON_INTERPRET"]
                else:
                    os.environ["TRITON_INTERPRET"] = previous
            _state["modules"][key] = module
        return _state["modules"][key]


def _launch(kernel, grid: tuple, device: torch.device, *args, **meta) -> None:
    """kernel[grid](*args, **meta) in the mode at hand, on `device` (fp fusion off)."""
    if interpreting():
        getattr(kernels(True), kernel)[grid](*args, **meta)
        return
    with torch.cuda.device(device):
        getattr(kernels(False), kernel)[grid](*args, **meta, enable_fp_fusion=False)


WORD_BIAS = 1 << 32  # added to every key word and step, so that Triton types them as int64


def key_arguments(escape, draws: random.Draws | None) -> tuple:
    """(seed_lo, seed_hi, stream_lo, stream_hi, first_step, p, q) of the kernels: the words
    plus WORD_BIAS (one argument type whatever their values), the escape rule's parameters."""
    rule, p, q = escape.kernel_form()
    words = (0, 0, 0, 0, 0) if rule == ESC_STEP else (*draws.kernel_words(), draws.first_step)
    return (*(w + WORD_BIAS for w in words), float(p), float(q))


def _rec_meta(cur: torch.Tensor, rec_weight: torch.Tensor, rec_delay: int) -> dict:
    channels, length = cur.shape[2], cur.shape[3]
    bc, bl = _pow2(channels), _pow2(length)
    return dict(K=rec_weight.shape[-1], DELAY=rec_delay, BC=bc, BL=bl, num_warps=_warps(bc * bl))


def _warps(elements: int) -> int:
    return 2 if elements <= 512 else 4 if elements <= 2048 else 8


def forward(
    cur: Tensor,
    rec_weight: Tensor | None,
    escape,
    draws: random.Draws | None,
    params: LIFParams,
    input_delay: int = 0,
) -> tuple[Tensor, Tensor, Tensor | None, None]:
    """(fired bool, mem, syn or None, None) of the scan of time-major `cur`, as the torch
    loop's; a stochastic `escape` (its `kernel_form()`) draws the uniforms of `draws` in the
    kernel."""
    assert input_delay == 0, "the Triton kernels take the current already delayed"
    a_syn, a_mem, threshold = params.a_syn, params.a_mem, params.threshold
    cur = cur.contiguous()
    nb_steps, row = cur.shape[0], cur[0].numel()
    mem = torch.empty_like(cur)
    fired = torch.empty(cur.shape, dtype=torch.uint8, device=cur.device)
    syn = torch.empty_like(cur) if params.diff_reset else None
    a32 = float(torch.tensor(a_mem, dtype=torch.float32))  # as torch's lerp holds it
    lerp_small = abs(a32) < 0.5
    args = (cur, mem, fired, syn)
    flags = dict(
        ESCAPE=escape.kernel_form()[0],
        RESET_FULL=params.reset == "full",
        LERP_SMALL=lerp_small,
        KEEP_SYN=syn is not None,
    )
    coeffs = (a_syn, a_mem, 1.0 - a_mem, a32 if lerp_small else a32 - 1.0, threshold)
    coeffs += key_arguments(escape, draws)
    if rec_weight is None:
        grid = (-(-row // BLOCK),)
        meta = dict(flags, BLOCK=BLOCK, num_warps=4)
        _launch("lif_forward_flat", grid, cur.device, *args, nb_steps, row, *coeffs, **meta)
    else:
        weight = rec_weight.detach().contiguous()
        shape = (nb_steps, row, cur.shape[2], cur.shape[3])
        meta = dict(flags, **_rec_meta(cur, weight, params.rec_delay))
        _launch(
            "lif_forward_rec", (cur.shape[1],), cur.device, *args, weight, *shape, *coeffs, **meta
        )
    return fired.view(torch.bool), mem, syn, None


def backward(
    fired: Tensor,
    mem: Tensor,
    syn: Tensor | None,
    rec_weight: Tensor | None,
    grad_spikes: Tensor,
    surrogate,
    params: LIFParams,
    input_delay: int = 0,
    need_rec_grad: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """(dL/dI of every step, dL/drec_weight or None) by the adjoint recursion in the kernels.

    The surrogate derivative comes from its `kernel_form()`: evaluated in the kernel, or
    (spikes.SG_GIVEN) computed here beforehand by `surrogate.derivative`.
    """
    a_syn, a_mem, threshold = params.a_syn, params.a_mem, params.threshold
    rec_delay = params.rec_delay
    nb_steps, row = fired.shape[0], fired[0].numel()
    grad_spikes, mem = grad_spikes.contiguous(), mem.contiguous()
    form, p, q = surrogate.kernel_form()
    sg = None
    if form not in INLINE_FORMULAS:
        form = SG_GIVEN
        sg = surrogate.derivative(mem - threshold, fired.to(mem.dtype)).contiguous()
    grad_syn = torch.empty((nb_steps + 1, *mem.shape[1:]), dtype=mem.dtype, device=mem.device)
    b_mem = 1.0 - a_mem
    args = (fired.contiguous().view(torch.uint8), mem, syn, sg, grad_spikes, grad_syn)
    coeffs = (a_mem, b_mem, a_syn / b_mem, threshold, float(p), float(q))
    flags = dict(FORM=form, RESET_FULL=params.reset == "full", DIFF=params.diff_reset)
    if rec_weight is None:
        grid = (-(-row // BLOCK),)
        meta = dict(flags, BLOCK=BLOCK, num_warps=4)
        _launch("lif_backward_flat", grid, mem.device, *args, nb_steps, row, *coeffs, **meta)
        return grad_syn[1:], None
    weight = rec_weight.detach().contiguous()
    shape = (nb_steps, row, mem.shape[2], mem.shape[3])
    meta = dict(flags, **_rec_meta(mem, weight, rec_delay))
    _launch("lif_backward_rec", (mem.shape[1],), mem.device, *args, weight, *shape, *coeffs, **meta)
    grad_cur = grad_syn[1:]  # dL/dI[t] = dL/dsyn[t + 1]
    grad_rec = _rec_weight_grad(fired, grad_cur, rec_weight, rec_delay) if need_rec_grad else None
    return grad_cur, grad_rec


def _rec_weight_grad(fired, grad_cur, rec_weight, rec_delay: int) -> torch.Tensor:
    """dL/dW of the recurrent convolution: spikes S[t] against dL/dsyn[t + rec_delay]."""
    spikes, grads = fired[: fired.shape[0] + 1 - rec_delay], grad_cur[rec_delay - 1 :]
    flat = spikes.shape[0] * spikes.shape[1]
    return conv1d_weight_grad(
        spikes.reshape(flat, *spikes.shape[2:]),
        rec_weight.shape,
        grads.reshape(flat, *spikes.shape[2:]),
        1,
        rec_weight.shape[-1] // 2,
    )
