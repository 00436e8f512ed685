"""The measured choice of algorithm for a 1-D convolution and its two gradients.

A layer's feedforward convolution runs over all batch x time samples at once (e.g. 40,000
for the Randman network), with few channels and positions per sample. Which algorithm is
fastest for such shapes depends on the CPU: on an AVX2 machine oneDNN's convolution
backward took 2-3x the time of a matrix product of the same FLOPs, on an AVX-512 one much
less. So every operation (``forward``, ``input_grad``, ``weight_grad``) of every layer shape
and memory layout is timed once per machine with each candidate of `sgtheory.backends.conv.sparse`
(oneDNN, unfold, banded, on channels-last data positions, and in float32 sparse), and the
fastest is kept on disk. All of them equal ``F.conv1d`` and its gradients up to float
rounding (tested).

Sparse inputs. The forward and the weight gradient read the layer's input, which is spikes:
mostly zeros. `sparse` adds only the nonzero inputs' weights, so its time grows with the
input's density, unlike the others'. It is timed at two densities (SPARSE_DENSITIES: 2 %,
about a Randman layer's spikes, and 10 %), the dense algorithms at the first; the density
at which the straight line through sparse's two times meets the fastest dense algorithm's
time (at most 10 %) is its limit. It is chosen if it wins at 2 %, and then runs on inputs
up to its limit; a denser input runs the fastest dense algorithm. The cache keeps the
choice, the fastest dense algorithm and the limit (`Choice`).

Layout: on CPU, a convolutional layer without a recurrent connection keeps its currents and
spikes channels-last (storage (time, batch, positions, channels); `use_channels_last`), so
that the next convolution reads each receptive field in place. ``SGTHEORY_CHANNELS_LAST=0``
keeps every activation in the standard layout instead (same results up to rounding).

The cache lies in ``SGTHEORY_CACHE`` (as the fused kernels, default ``~/.cache/sgtheory``),
one file per key: CPU model and flags, torch version and CPU capability,
``ONEDNN_MAX_CPU_ISA``, threads, dtype, layout, operation, shape, and the candidates (an
entry measured among fewer algorithms is measured again). The choice is kept even if
it was measured while other processes kept the CPU busy (the entry records the load
average): a run resumed later must round as the run it continues. Delete the folder
``conv_algos`` there to measure again. ``SGTHEORY_CONV_ALGO`` forces a choice: ``auto``
(default), one algorithm for every operation (``onednn``), or per operation
(``forward=banded,weight_grad=unfold``); `force` does the same from Python. A forced
``positions`` on standard-layout data runs with copies into and out of channels-last; a
forced ``sparse`` serves the forward and the weight gradient (the input gradient stays
measured) on inputs up to SPARSE_MAX_DENSITY.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from functools import lru_cache, partial
from pathlib import Path

import torch

from sgtheory.backends.conv.sparse import (
    ALGOS,
    CHUNK,
    FUNCTIONS,
    SPARSE_MAX_DENSITY,
    is_channels_last,
    sparse_usable,
    to_layout,
)

__all__ = ["ALGOS", "CHUNK", "FUNCTIONS", "OPS", "Geometry", "choose", "forward"]
__all__ += ["input_grad", "weight_grad", "use_channels_last", "is_channels_last", "to_layout"]

OPS = ("forward", "input_grad", "weight_grad")
ENV = "SGTHEORY_CONV_ALGO"
LAYOUT_ENV = "SGTHEORY_CHANNELS_LAST"
BANDED_MAX_WASTE = 3.0  # dense-matrix FLOPs / convolution FLOPs up to which banded is tried
BANDED_MAX_BYTES = 32 << 20  # largest dense matrix tried
MEASURE_SAMPLES = 8192  # samples of the timed calls (fewer if the batch has fewer)
MIN_MEASURED = 4096  # below this many samples a call runs oneDNN, unmeasured
MEASURE_BYTES = 16 << 20  # inputs + outputs of the timed calls, at most (512 samples at least)
MEASURE_REPS = 5  # interleaved rounds; the minimum of each candidate counts
# densities of the timed inputs: every algorithm at the first (spikes of a Randman layer),
# `sparse` at the second too, to find the density up to which it is faster (module docstring)
SPARSE_DENSITIES = (0.02, SPARSE_MAX_DENSITY)


@dataclass(frozen=True)
class Choice:
    """The algorithm for an operation; for `sparse`, the fastest dense algorithm that runs
    inputs denser than `max_density` (the measured crossover)."""

    algo: str
    dense: str
    max_density: float = 0.0


_forced: dict[str, str] = {}
_memo: dict[str, Choice] = {}


@dataclass(frozen=True)
class Geometry:
    """Shape of a 1-D convolution: (samples, cin, lin) * (cout, cin, k) -> (samples, cout, lout)."""

    cin: int
    lin: int
    cout: int
    k: int
    stride: int
    padding: int

    @property
    def lout(self) -> int:
        return (self.lin + 2 * self.padding - self.k) // self.stride + 1

    @staticmethod
    def of(x_shape, w_shape, stride: int, padding: int) -> Geometry:
        return Geometry(int(x_shape[1]), int(x_shape[2]), *map(int, w_shape[::2]), stride, padding)

    def flops(self, samples: int) -> float:
        """Multiply-adds x 2 of one of the three operations (each costs the same)."""
        return 2.0 * samples * self.cout * self.cin * self.k * self.lout

    def banded_waste(self) -> float:
        """FLOPs of the dense (banded) matrix product / FLOPs of the convolution."""
        return self.lin / self.k


def candidates(
    geo: Geometry, dtype: torch.dtype, channels_last: bool = False, op: str | None = None
) -> tuple[str, ...]:
    """Algorithms worth timing for this shape and layout (banded only where its matrix is
    small, positions only on channels-last data, where it needs no copies, sparse in
    float32 where its C kernels are built); with `op`, only those that implement it."""
    size = geo.cin * geo.lin * geo.cout * geo.lout * torch.finfo(dtype).bits // 8
    banded = geo.banded_waste() <= BANDED_MAX_WASTE and size <= BANDED_MAX_BYTES
    out = ("onednn", "unfold") + (("banded",) if banded else ())
    out += ("positions",) if channels_last else ()
    out += ("sparse",) if sparse_usable(torch.device("cpu"), dtype) else ()
    return tuple(a for a in out if op is None or (op, a) in FUNCTIONS)


def forced_choice(algo: str, channels_last: bool) -> Choice:
    """A forced algorithm; a forced `sparse` runs inputs up to SPARSE_MAX_DENSITY and denser
    ones by `positions` (channels-last) or `onednn`."""
    return Choice(algo, "positions" if channels_last else "onednn", SPARSE_MAX_DENSITY)


def use_channels_last(device: torch.device) -> bool:
    """Whether layers without recurrence keep their activations channels-last on `device`:
    on CPU unless SGTHEORY_CHANNELS_LAST is 0 / false / off (module docstring)."""
    off = os.environ.get(LAYOUT_ENV, "1").strip().lower() in ("0", "false", "off", "no")
    return device.type == "cpu" and not off


def force(setting: str | None) -> None:
    """Force algorithms like SGTHEORY_CONV_ALGO does (None or "auto": measure and cache)."""
    _forced.clear()
    _forced.update(_parse(setting or "auto", "force"))


def _parse(setting: str, name: str) -> dict[str, str]:
    setting = setting.strip().lower()
    if setting in ("", "auto"):
        return {}
    if "=" not in setting:
        pairs = [(op, setting) for op in OPS]
    else:
        pairs = [tuple(p.strip() for p in part.split("=", 1)) for part in setting.split(",")]
    for op, algo in pairs:
        if op not in OPS or algo not in ALGOS or ("=" in setting and (op, algo) not in FUNCTIONS):
            raise ValueError(
                f"{name}={setting!r} is not valid; choose auto, one of {', '.join(ALGOS)}, or "
                f"<operation>=<algorithm> pairs joined by commas (operations: {', '.join(OPS)};"
                f" sparse serves forward and weight_grad only)"
            )
    # one algorithm for all: the operations it implements (sparse: not input_grad)
    return {op: algo for op, algo in pairs if (op, algo) in FUNCTIONS}


def forced(op: str) -> str | None:
    """The algorithm forced for `op` by `force` or else by SGTHEORY_CONV_ALGO, or None."""
    if _forced:
        return _forced.get(op)
    return _parse(os.environ.get(ENV, "auto"), ENV).get(op)


# --- public operations: run the chosen algorithm --------------------------------------------


def forward(
    x: torch.Tensor, w: torch.Tensor, geo: Geometry, channels_last: bool = False
) -> torch.Tensor:
    """conv1d(x, w) (no bias) of (samples, cin, lin) x in either layout, returned in the
    layout `channels_last` asks for; x may be boolean (spikes).

    Runs in w's dtype: an active autocast region has been applied by the caller.
    """
    chosen = choice("forward", geo, x.shape[0], w.dtype, x.device, channels_last)
    with torch.autocast(x.device.type, enabled=False):
        return run("forward", chosen, x, w, geo, channels_last)


def input_grad(
    g: torch.Tensor, w: torch.Tensor, geo: Geometry, channels_last: bool = False
) -> torch.Tensor:
    """dL/dx (samples, cin, lin), in the asked layout, from dL/doutput `g` (samples, cout,
    lout) in either layout."""
    if not (channels_last and is_channels_last(g)):
        g = g.contiguous()
    algo = choose("input_grad", geo, g.shape[0], w.dtype, g.device, channels_last)
    return FUNCTIONS["input_grad", algo](g, w, geo, channels_last)


def weight_grad(
    x: torch.Tensor, g: torch.Tensor, geo: Geometry, channels_last: bool = False
) -> torch.Tensor:
    """dL/dw (cout, cin, k) from inputs x and dL/doutput g, summed over samples;
    `channels_last`: the layout of x and g (either works; the other costs a copy).

    In a lower precision (bfloat16 under autocast), the gradient is computed in float32
    from the rounded operands (exactly representable): every product is exact and the sum
    over samples float32 on every CPU. (torch's own bfloat16 convolution rounds partial
    sums to bfloat16, per chunk of samples with oneDNN, per sample on CPUs without native
    bfloat16 such as AVX2 ones: there the weight gradient was off by several percent.)
    """
    if not (channels_last and is_channels_last(g)):
        g = g.contiguous()
    if g.dtype in (torch.bfloat16, torch.float16):
        g = g.float()
    chosen = choice("weight_grad", geo, g.shape[0], g.dtype, g.device, channels_last)
    return run("weight_grad", chosen, x, g, geo, channels_last)


def run(op: str, chosen: Choice, a, b, geo: Geometry, channels_last: bool) -> torch.Tensor:
    """`op` on (a, b) by the chosen algorithm (sparse with its fallback and limit)."""
    if chosen.algo == "sparse":
        limits = {"fallback": chosen.dense, "max_density": chosen.max_density}
        return FUNCTIONS[op, "sparse"](a, b, geo, channels_last, **limits)
    return FUNCTIONS[op, chosen.algo](a, b, geo, channels_last)


# --- choice: forced, cached on disk, or measured ------------------------------------------


def machine_key() -> dict:
    """What an algorithm's speed depends on besides the shape: CPU, ISA, torch, threads."""
    return {
        "cpu": cpu_model(),
        "cpu_flags": hashlib.sha256(_cpu_flags().encode()).hexdigest()[:12],
        "torch": torch.__version__,
        "capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
        "threads": torch.get_num_threads(),
    }


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or platform.processor())."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    import platform

    return platform.processor() or "unknown CPU"


def _cpu_flags() -> str:
    return next((ln for ln in _cpuinfo().splitlines() if ln.startswith("flags")), "")


@lru_cache(maxsize=1)
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cache_dir() -> Path:
    """Folder of the cached choices: SGTHEORY_CACHE (else ~/.cache/sgtheory) / conv_algos."""
    root = os.environ.get("SGTHEORY_CACHE", Path.home() / ".cache" / "sgtheory")
    return Path(root) / "conv_algos"


def _samples(n: int, geo: Geometry) -> int:
    """Samples of the timed calls: MEASURE_SAMPLES, fewer if the batch has fewer (rounded up
    to a power of two, so that batches of similar size share one entry) or if the timed
    inputs and outputs would exceed MEASURE_BYTES (they are made while the training step
    holds its activations, so they add to its peak memory)."""
    per_sample = 4 * (geo.cin * geo.lin + geo.cout * geo.lout)
    cap = 1 << max(9, (MEASURE_BYTES // per_sample).bit_length() - 1)
    return min(MEASURE_SAMPLES, cap, 1 << max(0, int(n - 1).bit_length()))


def choose(
    op: str,
    geo: Geometry,
    n: int,
    dtype: torch.dtype,
    device: torch.device,
    channels_last: bool = False,
) -> str:
    """The algorithm for `op` on this shape and layout: forced, else cached, else measured
    and cached."""
    return choice(op, geo, n, dtype, device, channels_last).algo


def choice(
    op: str,
    geo: Geometry,
    n: int,
    dtype: torch.dtype,
    device: torch.device,
    channels_last: bool = False,
    calls: int = 1,
) -> Choice:
    """The `Choice` for `op` (see `choose`) on `n` samples per call; `calls`: how often it
    runs on such inputs (a recurrent convolution: once per time step), so that a small
    per-call batch is still measured when all calls together are large."""
    if device.type != "cpu":
        return Choice("onednn", "onednn")  # torch's convolution (cuDNN on CUDA)
    algo = forced(op)
    if algo is not None:
        return forced_choice(algo, channels_last)
    if n * calls < MIN_MEASURED:
        return Choice("onednn", "onednn")  # too small to pay for measuring (tests' runs)
    key = {
        **machine_key(),
        "op": op,
        "dtype": str(dtype),
        "samples": _samples(n, geo),
        "layout": "channels_last" if channels_last else "standard",
        **asdict(geo),
        "candidates": list(candidates(geo, dtype, channels_last, op)),
    }
    text = json.dumps(key, sort_keys=True)
    if text not in _memo:
        _memo[text] = _load_or_measure(key, text)
    return _memo[text]


def _cached(path: Path, key: dict) -> Choice | None:
    """The `Choice` stored in `path` for `key`, or None."""
    try:
        entry = json.loads(path.read_text())
        if not isinstance(entry, dict) or entry.get("key") != key:
            return None
        choice = Choice(entry["choice"], entry["dense_choice"], entry["sparse_max_density"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    ok = choice.algo in ALGOS and choice.dense in ALGOS and choice.dense != "sparse"
    ok = ok and isinstance(choice.max_density, (int, float)) and 0 <= choice.max_density <= 1
    return choice if ok else None


def _fastest(times: dict[str, float]) -> Choice:
    """The `Choice` from measured `times` (`measure`): the fastest dense algorithm, or
    sparse if faster at SPARSE_DENSITIES[0], up to the density where the line through its
    two times meets the dense one's (at most SPARSE_DENSITIES[1])."""
    dense = {a: t for a, t in times.items() if a in ALGOS and a != "sparse"}
    best = min(dense, key=dense.get)
    low, high = SPARSE_DENSITIES
    if "sparse" not in times or times["sparse"] >= dense[best]:
        return Choice(best, best)
    slope = (times[f"sparse@{high}"] - times["sparse"]) / (high - low)  # seconds per density
    limit = high if slope <= 0 else min(high, low + (dense[best] - times["sparse"]) / slope)
    return Choice("sparse", best, round(limit, 4))


def _load_or_measure(key: dict, text: str) -> Choice:
    path = cache_dir() / f"{hashlib.sha256(text.encode()).hexdigest()[:20]}.json"
    cached = _cached(path, key)
    if cached is not None:
        return cached
    dtype = getattr(torch, key["dtype"].removeprefix("torch."))
    geo = Geometry(*(key[f] for f in ("cin", "lin", "cout", "k", "stride", "padding")))
    times = measure(key["op"], geo, key["samples"], dtype, key["layout"] == "channels_last")
    choice = _fastest(times)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    entry = {"key": key, "seconds": times, "choice": choice.algo, "dense_choice": choice.dense}
    entry.update(sparse_max_density=choice.max_density, loadavg=load)
    try:  # the first process to finish measuring wins; the others adopt its choice
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(entry, indent=1, sort_keys=True))
        try:
            os.link(tmp, path)  # atomic, and fails if the file is there
        finally:
            tmp.unlink()
    except FileExistsError:
        return _cached(path, key) or choice
    except OSError:  # a read-only cache: measure again next time
        pass
    return choice


def measure(
    op: str, geo: Geometry, samples: int, dtype: torch.dtype, channels_last: bool = False
) -> dict[str, float]:
    """Seconds of `op` by each candidate on random data in the given layout, inputs spikes of
    density SPARSE_DENSITIES[0], and by sparse also at SPARSE_DENSITIES[1] (key
    "sparse@<density>"): the minimum of MEASURE_REPS interleaved rounds after one warm-up
    call each."""
    gen = torch.Generator().manual_seed(0)
    u = torch.rand(samples, geo.cin, geo.lin, generator=gen)
    low, high = SPARSE_DENSITIES
    x, x_high = (u < low).to(dtype), (u < high).to(dtype)
    w = torch.randn(geo.cout, geo.cin, geo.k, generator=gen).to(dtype)
    g = torch.randn(samples, geo.cout, geo.lout, generator=gen).to(dtype)
    x, x_high, g = (to_layout(t, channels_last) for t in (x, x_high, g))
    inputs = {"forward": (x, w), "input_grad": (g, w), "weight_grad": (x, g)}
    calls = {}  # name -> (function, its arguments); sparse never gives up while timed
    for algo in candidates(geo, dtype, channels_last, op):
        fn = FUNCTIONS[op, algo]
        if algo != "sparse":
            calls[algo] = partial(fn, *inputs[op], geo, channels_last)
            continue
        calls[algo] = partial(fn, *inputs[op], geo, channels_last, max_density=1.0)
        high_inputs = (x_high, inputs[op][1])
        calls[f"sparse@{high}"] = partial(fn, *high_inputs, geo, channels_last, max_density=1.0)
    best = dict.fromkeys(calls, float("inf"))
    with torch.autocast("cpu", enabled=False):
        for call in calls.values():
            call()
        for _ in range(MEASURE_REPS):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                best[name] = min(best[name], time.perf_counter() - start)
    return best
