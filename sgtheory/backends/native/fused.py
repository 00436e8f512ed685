"""Fused CPU kernels of the LIF scan: one C loop over all time steps instead of torch ops.

On CPU, the per-step torch operations of ``neurons.lif_scan`` each pass over a small
tensor, so on networks such as the Randman one the scan costs more in per-operation
overhead and memory traffic than in arithmetic. The C source ``csrc/lif_scan.c`` runs a
block of neurons through all steps with its state in registers. It is compiled on first use
with the system C compiler (no torch headers, about a second) into a cache folder, loaded
with ctypes, and called on disjoint ranges of neurons from a small thread pool (ctypes
releases the GIL). Where no compiler works, the torch loop runs instead, after one warning.
The kernels index a step's neurons in storage order, so a scan runs in place on any layout
in which every time step is one contiguous block (e.g. channels-last conv currents), and
every array it makes takes its current's layout (`time_major_dense`). Stochastic escape
noise draws its uniforms inside the loop, by Philox4x32-10 as ``sgtheory.random`` defines
them (each neuron's logical index found from the layout once per block of neurons).

Environment: ``SGTHEORY_FUSED=0`` turns the kernels off; ``SGTHEORY_CACHE`` moves the cache
(default ``~/.cache/sgtheory``); ``CC`` picks the compiler; ``SGTHEORY_MARCH`` its
``-march`` (default native; x86-64-v3 under ``ATEN_CPU_CAPABILITY=avx2``).
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from sgtheory import random
from sgtheory.spikes import ESC_STEP, SG_GIVEN, SG_SPIKE, SG_SUPERSPIKE

SOURCE = Path(__file__).with_name("csrc") / "lif_scan.c"
SPARSE_SOURCE = SOURCE.with_name("spike_conv.c")  # sparse-input convolution (conv_kernels)
FLAG_SETS = (
    ["-O3", "-march=native", "-ffp-contract=off"],
    ["-O3", "-ffp-contract=off"],  # compilers or CPUs without -march=native
)
BLOCK = 256  # neurons per register block in the C code; thread ranges are multiples of it
MIN_PARALLEL = 1 << 16  # neuron-steps below which one thread does the whole scan

_lock = threading.Lock()
_state: dict = {"lib": None, "tried": False, "pool": None, "workers": 0}

_i64, _f32, _int, _ptr = ctypes.c_int64, ctypes.c_float, ctypes.c_int, ctypes.c_void_p
_dbl = ctypes.c_double
_SIGNATURES = {
    "lif_forward": [_ptr, _int, _f32, _f32, _ptr, _i64, _ptr, _f32]
    + [_ptr] * 4
    + [_i64] * 4
    + [_f32] * 4
    + [_int, _i64],
    "philox_uniform": [_ptr] + [_i64] * 5 + [_ptr],
    "logit_points": [_ptr] * 2 + [_i64] * 2 + [_f32],
    "lif_backward": [_ptr] * 6 + [_i64] * 4 + [_f32] * 4 + [_int] * 2 + [_f32] * 2 + [_i64],
    "spike_conv_forward": [_ptr] * 3 + [_i64] * 7 + [_int] * 3 + [_i64] * 3 + [_dbl],
    "spike_conv_weight_grad": [_ptr] * 3 + [_i64] * 7 + [_int] * 3 + [_i64] * 3 + [_dbl],
}
_RETURNS = {"spike_conv_forward": _i64, "spike_conv_weight_grad": _i64}
# formulas of spikes.KERNEL_FORMULAS that the C backward evaluates inside its loop; for the
# others (they involve exp) torch's vectorised kernels compute the derivative beforehand
INLINE_FORMULAS = (SG_SUPERSPIKE, SG_SPIKE)


def enabled() -> bool:
    """False when the user turned the fused kernels off with SGTHEORY_FUSED=0."""
    return os.environ.get("SGTHEORY_FUSED", "1").strip().lower() not in ("0", "false", "off", "no")


def cache_dir() -> Path:
    """Folder of the compiled kernels (SGTHEORY_CACHE, else ~/.cache/sgtheory)."""
    return Path(os.environ.get("SGTHEORY_CACHE", Path.home() / ".cache" / "sgtheory"))


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def _cpu_id() -> str:
    """What -march=native depends on: the CPU's model and flags (a shared home folder may
    be seen by different machines)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))]
        return "\n".join(sorted(set(lines)))
    except OSError:
        return platform.processor()


def _march() -> str:
    """-march of the first flag set: SGTHEORY_MARCH if set; x86-64-v3 (AVX2, no AVX-512)
    when ATEN_CPU_CAPABILITY=avx2 makes torch emulate an AVX2 CPU; else native."""
    march = os.environ.get("SGTHEORY_MARCH", "").strip()
    if march:
        return march
    if os.environ.get("ATEN_CPU_CAPABILITY", "").strip().lower() == "avx2":
        return "x86-64-v3"
    return "native"


def _build(compiler: str) -> Path:
    """Compile the sources into the cache (atomically) unless an identical build is there."""
    sources = (SOURCE, SPARSE_SOURCE)
    source = b"\0".join(path.read_bytes() for path in sources)
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    errors = []
    for flags in FLAG_SETS:
        flags = [f"-march={_march()}" if f == "-march=native" else f for f in flags]
        key = hashlib.sha256(
            b"\0".join([source, " ".join(flags).encode(), version.encode(), _cpu_id().encode()])
        ).hexdigest()[:16]
        target = cache_dir() / f"lif_scan_{platform.machine()}_{key}.so"
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        cmd = [compiler, *flags, "-shared", "-fPIC", "-o", tmp, *map(str, sources), "-lm"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode == 0:
            os.replace(tmp, target)
            return target
        os.unlink(tmp)
        errors.append(f"{' '.join(cmd)}:\n{proc.stderr.strip()}")
    raise RuntimeError("\n".join(errors))


def library() -> ctypes.CDLL | None:
    """The compiled kernels, built on first call; None if disabled or not buildable."""
    if not enabled():
        return None
    with _lock:
        if not _state["tried"]:
            _state["tried"] = True
            try:
                compiler = _compiler()
                if compiler is None:
                    raise RuntimeError("no C compiler found (tried $CC, cc, gcc, clang)")
                lib = ctypes.CDLL(str(_build(compiler)))
                for name, argtypes in _SIGNATURES.items():
                    getattr(lib, name).argtypes = argtypes
                    getattr(lib, name).restype = _RETURNS.get(name)
                _state["lib"] = lib
            except (OSError, RuntimeError, subprocess.SubprocessError) as err:
                warnings.warn(
                    f"sgtheory: fused CPU LIF kernels unavailable, using the slower torch loop "
                    f"({err})",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return _state["lib"]


def usable(cur: torch.Tensor) -> bool:
    """Whether the fused kernels can run a scan of `cur` (CPU, float32, kernels built)."""
    return cur.device.type == "cpu" and cur.dtype == torch.float32 and library() is not None


def _ranges(row: int, nb_steps: int) -> list[tuple[int, int]]:
    workers = max(1, torch.get_num_threads())
    if workers == 1 or row * nb_steps < MIN_PARALLEL:
        return [(0, row)]
    blocks = -(-row // BLOCK)
    per = -(-blocks // workers) * BLOCK
    return [(lo, min(row, lo + per)) for lo in range(0, row, per)]


def parallel(fn, calls: list[tuple]) -> list:
    """[fn(*args) for args in calls], the calls spread over the thread pool if several (ctypes
    releases the GIL, so C kernels run in parallel)."""
    if len(calls) == 1:
        return [fn(*calls[0])]
    with _lock:
        # a new pool if none, too small, or inherited through fork (its threads are gone)
        if (
            _state["pool"] is None
            or _state["workers"] < len(calls)
            or _state.get("pid") != os.getpid()
        ):
            _state["pool"] = ThreadPoolExecutor(len(calls), thread_name_prefix="sgtheory")
            _state["workers"], _state["pid"] = len(calls), os.getpid()
        pool = _state["pool"]
    futures = [pool.submit(fn, *args) for args in calls]
    return [future.result() for future in futures]


def _run(fn, ranges: list[tuple[int, int]], pointers: tuple, shape: tuple, tail: tuple) -> None:
    """Call fn(*pointers, *shape, begin, end, *tail) for each range, in parallel if several."""
    parallel(fn, [(*pointers, *shape, lo, hi, *tail) for lo, hi in ranges])


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


def _key(draws: random.Draws) -> torch.Tensor:
    """The draws' four 32-bit words (random.Draws.kernel_words) as the C code's uint32."""
    signed = [w - (1 << 32) if w >= 1 << 31 else w for w in draws.kernel_words()]
    return torch.tensor(signed, dtype=torch.int32)


def _like(t: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
    """`t` with the strides of `layout` (itself if it has them already; else a copy)."""
    return t if t.stride() == layout.stride() else torch.empty_like(layout, dtype=t.dtype).copy_(t)


def _ptr_of(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def lif_forward(
    cur: torch.Tensor,
    escape,
    draws: random.Draws | None,
    a_syn: float,
    a_mem: float,
    threshold: float,
    reset_full: bool,
    keep_syn: bool,
    delay: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(mem, fired, syn or None, spikes) of LIF neurons driven by time-major `cur` (see the
    C file); `fired` is boolean, `spikes` the same as float32 0 / 1.

    A stochastic `escape` (its `kernel_form()`, spikes.ESCAPE_FORMULAS) draws the uniforms
    of `draws` (`random.Draws` of the scan's steps) inside the loop, each neuron by its
    logical index whatever cur's layout; sigmoid escape noise finds its firing points
    lazily (only potentials near one compute the logarithm; see the C file). With `delay`,
    step t receives cur[t - delay] (0 before), as `layers.delay_in_time` would shift it,
    without the copy.
    """
    cur = time_major_dense(cur)
    nb_steps, row = cur.shape[0], cur[0].numel()
    mem = torch.empty_like(cur)  # every buffer in cur's layout
    fired = torch.empty_like(cur, dtype=torch.bool)
    syn = torch.empty_like(cur) if keep_syn else None
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
    tail = (a_syn, a_mem, 1.0 - a_mem, threshold, int(reset_full), int(delay))
    _run(library().lif_forward, _ranges(row, nb_steps), pointers, (nb_steps, row), tail)
    return mem, fired, syn, spikes


def philox_uniform(
    seed: int, stream: int, first_step: int, nb_steps: int, shape: tuple
) -> torch.Tensor | None:
    """`random.uniform_reference`'s numbers (nb_steps, *shape), float32 on the CPU, by the C
    kernel (four steps per Philox call, vectorised), spread over torch's threads when
    large; None where the kernels are not built."""
    if library() is None:
        return None
    numel = math.prod(shape)
    out = torch.empty((nb_steps, numel), dtype=torch.float32)
    if numel == 0 or nb_steps == 0:
        return out.view(nb_steps, *shape)
    key = _key(random.Draws(seed, stream, first_step))
    workers = max(1, min(torch.get_num_threads(), numel * nb_steps // MIN_PARALLEL))
    per = math.ceil(math.ceil(numel / workers) / BLOCK) * BLOCK  # whole blocks per thread
    calls = [
        (key.data_ptr(), first_step, nb_steps, numel, lo, min(numel, lo + per), out.data_ptr())
        for lo in range(0, numel, per)
    ]
    parallel(library().philox_uniform, calls)
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
    workers = max(1, min(torch.get_num_threads(), n // MIN_PARALLEL))
    per = -(-n // workers)
    calls = [(u.data_ptr(), out.data_ptr(), lo, min(n, lo + per), beta) for lo in range(0, n, per)]
    parallel(library().logit_points, calls)
    return out


# lif_forward's lazy logit decides a spike from an estimate of logit(u) within 0.0597 where
# the potential is more than this (in logit units) away from it: the rest compute the point
LAZY_MARGIN = 0.07


def lif_backward(
    fired: torch.Tensor,
    mem: torch.Tensor,
    grad_spikes: torch.Tensor,
    pre: torch.Tensor | None,
    surrogate,
    a_syn: float,
    a_mem: float,
    threshold: float,
    reset_full: bool,
    delay: int = 0,
) -> torch.Tensor:
    """dL/dcur of every step from dL/dS, by the adjoint recursion (see the C file); `delay`
    as in `lif_forward`.

    The surrogate derivative at mem - threshold is evaluated inside the loop where the
    surrogate's `kernel_form()` is one of INLINE_FORMULAS, else by `surrogate.derivative`
    beforehand (spikes.SG_GIVEN).
    """
    mem = time_major_dense(mem)  # as the forward left it; every other array in its layout
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
    tail = (a_syn / b_mem, a_mem, b_mem, threshold, int(reset_full), kind, float(p), float(q))
    tail += (int(delay),)
    _run(library().lif_backward, _ranges(row, nb_steps), pointers, (nb_steps, row), tail)
    return grad_cur
