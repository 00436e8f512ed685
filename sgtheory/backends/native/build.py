"""Building and loading the C kernels: compiler, flags, cache, ctypes, thread pool.

The C sources (``csrc/lif_scan.c``: the LIF scan, its adjoint, the Philox and logit kernels
for the torch loop, with ``draws.h`` (Philox4x32-10, the logit) and ``recurrence.h`` (the
recurrent convolution as events and a tiled product); ``csrc/spike_conv.c``: the
sparse-input convolution) need no torch headers: they are
compiled on first use with the system C compiler (about a second) into a cache folder,
under a name hashed from the sources, flags, compiler version and CPU, and loaded with
ctypes. Where no compiler works, `library` returns None after one warning and the dispatch
runs the torch loop instead. Kernels run on disjoint ranges of neurons or samples from a
small thread pool (ctypes releases the GIL, so the calls run in parallel).

Environment: ``SGTHEORY_FUSED=0`` turns the kernels off; ``SGTHEORY_CACHE`` moves the cache
(default ``~/.cache/sgtheory``); ``CC`` picks the compiler; ``SGTHEORY_MARCH`` its
``-march`` (default native; x86-64-v3 under ``ATEN_CPU_CAPABILITY=avx2``).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

ENV = "SGTHEORY_FUSED"
SOURCE = Path(__file__).with_name("csrc") / "lif_scan.c"
SPARSE_SOURCE = SOURCE.with_name("spike_conv.c")  # sparse-input convolution (conv.sparse)
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
    + [_int, _i64, _ptr, _ptr],
    "philox_uniform": [_ptr] + [_i64] * 5 + [_ptr],
    "logit_points": [_ptr] * 2 + [_i64] * 2 + [_f32],
    "lif_backward": [_ptr] * 6
    + [_i64] * 4
    + [_f32] * 4
    + [_int] * 2
    + [_f32] * 2
    + [_i64]
    + [_ptr] * 3,
    "spike_conv_forward": [_ptr] * 3 + [_i64] * 7 + [_int] * 3 + [_i64] * 3 + [_dbl],
    "spike_conv_weight_grad": [_ptr] * 3 + [_i64] * 7 + [_int] * 3 + [_i64] * 3 + [_dbl],
}
_RETURNS = {
    "spike_conv_forward": _i64,
    "spike_conv_weight_grad": _i64,
    "lif_forward": _int,
    "lif_backward": _int,
}


def enabled() -> bool:
    """False when the user turned the kernels off with SGTHEORY_FUSED=0."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "off", "no")


def cache_dir() -> Path:
    """Folder of the compiled kernels (SGTHEORY_CACHE, else ~/.cache/sgtheory)."""
    return Path(os.environ.get("SGTHEORY_CACHE", Path.home() / ".cache" / "sgtheory"))


def compiler() -> str | None:
    """The C compiler to build with: $CC, else the first of cc, gcc, clang found; or None."""
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


def build(cc: str) -> Path:
    """Compile the sources into the cache (atomically) unless an identical build is there."""
    sources = (SOURCE, SPARSE_SOURCE)
    headers = sorted(SOURCE.parent.glob("*.h"))  # included by the sources
    source = b"\0".join(path.read_bytes() for path in (*sources, *headers))
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
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
        cmd = [cc, *flags, "-shared", "-fPIC", "-o", tmp, *map(str, sources), "-lm"]
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
                cc = compiler()
                if cc is None:
                    raise RuntimeError("no C compiler found (tried $CC, cc, gcc, clang)")
                lib = ctypes.CDLL(str(build(cc)))
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


def runs(t: torch.Tensor) -> bool:
    """Whether the kernels can take `t`: a float32 CPU tensor, and the kernels built."""
    return t.device.type == "cpu" and t.dtype == torch.float32 and library() is not None


def ranges(row: int, nb_steps: int, block: int = BLOCK) -> list[tuple[int, int]]:
    """Disjoint [begin, end) ranges of `row` neurons, one per thread (whole blocks of
    `block` neurons: the C code's register block, or one sample of a recurrent layer), or
    one range when there is one thread or fewer than MIN_PARALLEL neuron-steps."""
    workers = max(1, torch.get_num_threads())
    if workers == 1 or row * nb_steps < MIN_PARALLEL:
        return [(0, row)]
    blocks = -(-row // block)
    per = -(-blocks // workers) * block
    return [(lo, min(row, lo + per)) for lo in range(0, row, per)]


def parallel(fn: Callable, calls: list[tuple]) -> list:
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
