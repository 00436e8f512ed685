"""Seconds per training step of the Classification networks against the machine's own limit.

For the Randman network (conv 32/64/128) and the SHD-shaped network (strided conv 16/32/64
with recurrent convolutions), both built from the experiment's dataset configs
(Classification/experiments/config_stork/dataset/*.yaml, whose time steps the table's network
names show), each with a deterministic (superspike) and a stochastic (stochasticsuperspike)
method, one training step at batch 400 (forward, loss, backward, optimiser step) is timed
with

* fast: the core layers as the experiment uses them, and
* reference: `reference=True` (one convolution per time step, neuron update through
  autograd), from the same initial weights, inputs and spike generators; the first step's
  loss of both must agree.

Every row states the machine (CPU model, torch's CPU capability, AMX, threads), the step's
FLOPs counted from the layer shapes (convolutions: forward, input gradient where the input
needs one, weight gradient; recurrent convolutions of every step; the readout's products),
and the machine's float32 matrix-product rate, measured in the same process right before
each timed step (a 2048 x 2048 product). The ratio `step time / FLOP bound` (bound = FLOPs /
matmul rate) is the median over steps of each step paired with the product timed just
before it, so that a load that comes and goes on a shared machine slows both alike.
Under --precision bf16 the bfloat16 product rate is measured too and its ratio printed; on a
CPU with AMX (cpuinfo flag amx_bf16) that is where bfloat16 can pay off.

Each configuration runs in a fresh subprocess so that its peak memory is its own (ru_maxrss
on CPU, `torch.cuda.max_memory_allocated()` on CUDA). CPU switches: SGTHEORY_FUSED,
SGTHEORY_MALLOPT, SGTHEORY_CONV_ALGO, SGTHEORY_CHANNELS_LAST (see sgtheory); emulate an
AVX2 CPU on an AVX-512 one with ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2.

    python3 benchmarks/bench_classification.py --quick --networks randman
    python3 benchmarks/bench_classification.py --json out.json --txt out.txt
    python3 benchmarks/bench_classification.py --device cuda --json bench_cuda.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from sgtheory.backends.allocator import restart_with_huge_pages  # light: no torch

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "Classification" / "experiments" / "config_stork"


def dataset_config(network: str):
    """The experiment's dataset config of `network` (its YAML file, read with omegaconf)."""
    from omegaconf import OmegaConf

    return OmegaConf.load(CONFIG_DIR / "dataset" / f"{network}.yaml")


def network_label(network: str) -> str:
    """The network's name in the table, with the time steps of the experiment's config."""
    steps = int(dataset_config(network).nb_steps)
    if network == "shd":
        return f"SHD-shaped ({steps} steps, recurrent)"
    return f"Randman ({steps} steps)"


NETWORKS = {name: network_label(name) for name in ("randman", "shd")}
METHODS = ("superspike", "stochasticsuperspike")
MATMUL_SIZE = 2048


def peak_label(device: str) -> str:
    """Which peak memory is reported on `device`."""
    return "peak MB (GPU allocated)" if device.startswith("cuda") else "peak MB (RSS)"


def cpu_switches() -> str:
    """The CPU speed switches of sgtheory as this benchmark's children will see them."""
    from sgtheory.backends.native import build as fused

    kernels = "on" if fused.library() is not None else "off (SGTHEORY_FUSED=0 or no compiler)"
    kept = os.environ.get("SGTHEORY_MALLOPT", "1").strip().lower() not in ("0", "false", "off")
    memory = "kept for reuse" if kept else "returned to the OS (SGTHEORY_MALLOPT=0)"
    conv = os.environ.get("SGTHEORY_CONV_ALGO", "auto") or "auto"
    import torch

    from sgtheory.backends.conv.algos import use_channels_last

    layout = "channels-last" if use_channels_last(torch.device("cpu")) else "standard"
    huge = "glibc.malloc.hugetlb" in os.environ.get("GLIBC_TUNABLES", "")
    pages = "on huge pages" if huge else "on 4 KiB pages (SGTHEORY_HUGEPAGES=0 or unavailable)"
    return (
        f"fused LIF kernels {kernels}, freed memory {memory}, large blocks {pages}, "
        f"conv algorithms {conv}, {layout} conv activations"
    )


def machine(device: str, threads: int | None) -> dict:
    """The machine of this run: CPU model, torch CPU capability, AMX, threads, load."""
    import torch

    from sgtheory.backends.conv.algos import cpu_model

    flags = next(
        (ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")),
        "",
    ).split()
    info = {
        "device": device,
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA") or None,
        "amx": "amx_bf16" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "threads": threads,
        "cores_usable": len(os.sched_getaffinity(0)),
        "loadavg_start": os.getloadavg(),
    }
    if device.startswith("cuda"):
        from sgtheory.backends.triton import scan as triton_scan

        info["device_name"] = torch.cuda.get_device_name(device)
        info["cudnn_allow_tf32"] = bool(torch.backends.cudnn.allow_tf32)
        info["cuda"], info["driver"] = torch.version.cuda, nvidia_driver()
        info["lif_scan"] = triton_scan.describe("cuda")  # Triton kernels (version) or loop
    return info


def nvidia_driver() -> str | None:
    """The NVIDIA driver version as nvidia-smi reports it (None without nvidia-smi)."""
    try:
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
        out = subprocess.run(query, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].strip() if out.strip() else None


def machine_line(info: dict) -> str:
    isa = info["cpu_capability"]
    if info["onednn_max_cpu_isa"]:
        isa += f" (ONEDNN_MAX_CPU_ISA={info['onednn_max_cpu_isa']})"
    amx = "AMX" if info["amx"] else "no AMX"
    where = f"{info['cpu']}, torch CPU capability {isa}, {amx}"
    if info["device"].startswith("cuda"):
        gpu = f"{info['device_name']} (driver {info['driver']}, CUDA {info['cuda']}; {where})"
        return f"{gpu}, torch {info['torch']}, LIF scan: {info['lif_scan']}"
    return f"{where}, {info['threads']} threads of {info['cores_usable']} usable cores"


def matmul_rate(dtype_name: str = "float32", device: str = "cpu") -> float:
    """FLOP/s of one MATMUL_SIZE square matrix product in `dtype_name` (fixed inputs)."""
    import torch

    dtype = getattr(torch, dtype_name)
    key = (dtype_name, device)
    if key not in _MATMUL_INPUTS:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(MATMUL_SIZE, MATMUL_SIZE, generator=gen).to(device, dtype)
        _MATMUL_INPUTS[key] = (a, a.t().contiguous(), torch.empty_like(a))
        torch.mm(*_MATMUL_INPUTS[key][:2], out=_MATMUL_INPUTS[key][2])  # warm-up
    a, b, out = _MATMUL_INPUTS[key]
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    torch.mm(a, b, out=out)
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    return 2.0 * MATMUL_SIZE**3 / (time.perf_counter() - start)


_MATMUL_INPUTS: dict = {}


def step_flops(net, x_shape) -> dict:
    """FLOPs of one training step of `net` on inputs shaped (batch, steps, channels, units).

    Per feedforward convolution over N = batch x steps samples: 2 N cout cin k lout for the
    forward, the weight gradient, and the input gradient unless it is the first layer; the
    same three for every recurrent convolution (run once per step on batch samples); the
    readout's product, its input and weight gradients: 3 x 2 N n_in n_out.
    """
    from sgtheory.backends.conv.algos import Geometry

    samples, cin, lin = x_shape[0] * x_shape[1], x_shape[2], x_shape[3]
    counts = {"conv": 0.0, "recurrent_conv": 0.0, "readout": 0.0}
    for index, layer in enumerate(net.hidden):
        geo = Geometry.of((samples, cin, lin), layer.weight.shape, layer.stride, layer.padding)
        counts["conv"] += (3 if index > 0 else 2) * geo.flops(samples)
        if layer.rec_weight is not None:  # size-preserving: lout positions in and out
            k_rec = layer.rec_weight.shape[-1]
            counts["recurrent_conv"] += 3 * 2.0 * samples * geo.cout**2 * k_rec * geo.lout
        cin, lin = geo.cout, geo.lout
    counts["readout"] = 3 * 2.0 * samples * net.readout.weight.numel()
    counts["total"] = sum(counts.values())
    return counts


def compose_config(
    network: str, method: str, precision: str = "float32", overrides: Sequence[str] = ()
):
    """The experiment's config for `network` and `method`, with Hydra `overrides` on top."""
    from hydra import compose, initialize_config_dir

    from convsnn.schema import register

    register()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        chosen = [f"dataset={network}", f"method={method}", f"precision={precision}"]
        return compose("config", [*chosen, *overrides])


def build(
    network: str,
    method: str,
    batch: int,
    device: str,
    precision: str,
    overrides: Sequence[str] = (),
):
    """(net, optimiser, loss function, inputs, labels) as the experiment builds them;
    `overrides` (Hydra syntax, e.g. "dataset.nb_steps=100") change the sizes."""
    import torch

    from convsnn.checks import check
    from convsnn.model import build_network, network_shape, spike_fns
    from convsnn.seeds import generator, layer_generators
    from sgtheory.losses import loss_fn
    from sgtheory.optim import make_optimizer

    cfg = compose_config(network, method, precision, overrides)
    check(cfg)
    geo = network_shape(cfg)
    nb_layers = len(cfg.dataset.nb_filters)
    gens = layer_generators(cfg.seed, "train_spikes", nb_layers, device=device)
    fns = spike_fns(cfg, method, gens)
    # initial weights drawn on the CPU (as the experiment does), so both devices start alike
    net = build_network(cfg, geo, fns, generator(cfg.seed, "init")).to(device)
    opt = make_optimizer(cfg.optimizer, net.parameters(), cfg.method.lr)
    gen = generator(cfg.seed, "shuffle")
    rate = float(cfg.dataset.nu) * float(cfg.dataset.dt)
    x = (torch.rand(batch, geo.nb_steps, 1, geo.nb_units, generator=gen) < rate).float()
    y = torch.randint(0, geo.nb_classes, (batch,), generator=gen)
    return net, opt, loss_fn(cfg.loss_type), x.to(device), y.to(device)


def one(
    network: str,
    method: str,
    impl: str,
    reps: int,
    batch: int,
    threads: int,
    device: str = "cpu",
    precision: str = "float32",
    overrides: Sequence[str] = (),
) -> dict:
    """Time `reps` training steps of one configuration in this process on `device`, each
    right after one float32 matrix product (and one bfloat16 product under bf16);
    `overrides` as for `build`."""
    import torch

    from sgtheory.backends.allocator import retain_freed_memory
    from sgtheory.backends.conv import algos as conv_algos

    torch.set_num_threads(threads)  # matters on CPU only
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    else:
        retain_freed_memory()  # as the experiments do (sgtheory.backends.allocator)
    net, opt, lossf, x, y = build(network, method, batch, device, precision, overrides)
    reference = impl == "reference"
    rec = {"times": [], "losses": [], "matmul_rates": [], "bf16_matmul_rates": []}
    for rep in range(reps):
        rec["matmul_rates"].append(matmul_rate("float32", device))
        if precision == "bf16":
            rec["bf16_matmul_rates"].append(matmul_rate("bfloat16", device))
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        out, counts = net(x, reference=reference, counts=True)[:2]  # as training runs it
        if rep == 0:  # what the sparse convolution's speed depends on (in the warm-up step)
            means = [float(c.float().mean()) / x.shape[1] for c in counts]  # x: (B, T, ...)
            rec["spike_densities"] = [round(m, 5) for m in [float(x.float().mean()), *means]]
        del counts
        loss = lossf(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize(device)
        rec["times"].append(time.perf_counter() - start)
        rec["losses"].append(float(loss.detach()))
    if cuda:
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    choices = [
        {**json.loads(k), "choice": v.algo, "dense": v.dense, "sparse_max_density": v.max_density}
        for k, v in conv_algos._memo.items()
    ]
    fields = ("op", "dtype", "cin", "lin", "cout", "k", "stride", "choice", "dense")
    fields += ("sparse_max_density",)
    choices = [{f: c[f] for f in fields} for c in choices]
    return {**rec, "peak_mb": peak_mb, "flops": step_flops(net, x.shape), "conv_algos": choices}


def run_child(args: argparse.Namespace, network: str, method: str, impl: str, reps: int) -> dict:
    cmd = [sys.executable, __file__, "--one", network, method, impl, "--reps", str(reps)]
    cmd += ["--batch", str(args.batch), "--threads", str(args.threads)]
    cmd += ["--device", args.device, "--precision", args.precision]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{network}/{method}/{impl} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def after_warmup(values: list[float]) -> list[float]:
    """All but the first (warm-up) step when there are several."""
    return values[1:] if len(values) > 1 else values


def limits(run: dict) -> dict:
    """Step time, matmul rate, achieved rate and step / FLOP-bound ratios of one child run."""
    flops = run["flops"]["total"]
    times, rates = after_warmup(run["times"]), after_warmup(run["matmul_rates"])
    ratios = [t * r / flops for t, r in zip(times, rates, strict=True)]
    out = {
        "s_per_step": statistics.median(times),
        "gflop_per_step": flops / 1e9,
        "matmul_gflops": statistics.median(rates) / 1e9,
        "achieved_gflops": flops / statistics.median(times) / 1e9,
        "bound_ratio": statistics.median(ratios),
        "bound_ratio_min": min(ratios),
    }
    if run["bf16_matmul_rates"]:
        bf = after_warmup(run["bf16_matmul_rates"])
        out["bf16_matmul_gflops"] = statistics.median(bf) / 1e9
        out["bf16_bound_ratio"] = statistics.median(
            [t * r / flops for t, r in zip(times, bf, strict=True)]
        )
    return out


def write_atomic(path: str, text: str) -> None:
    """Write `text` to `path`: a temporary file in the same folder, then os.replace."""
    path = os.path.abspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


HEADER = (
    f"{'network':34s} {'method':21s} {'s/step':>7s} {'GFLOP':>6s} {'mm GF/s':>7s} "
    f"{'got GF/s':>8s} {'step/bound':>10s} {'(min)':>6s} {'peak MB':>7s} {'ref s/step':>10s} "
    f"{'speed-up':>8s} loss match"
)


def row_text(network: str, method: str, entry: dict) -> str:
    """One table line of a measured configuration."""
    if "s_per_step" not in entry:
        return f"{NETWORKS[network]:34s} {method:21s} FAILED"
    text = (
        f"{NETWORKS[network]:34s} {method:21s} {entry['s_per_step']:7.3f} "
        f"{entry['gflop_per_step']:6.1f} {entry['matmul_gflops']:7.1f} "
        f"{entry['achieved_gflops']:8.1f} {entry['bound_ratio']:9.2f}x "
        f"{entry['bound_ratio_min']:5.2f}x {entry['peak_mb']:7.0f} "
    )
    if "ref_s_per_step" in entry:
        text += f"{entry['ref_s_per_step']:10.3f} {entry['speed_up']:7.1f}x {entry['match']}"
    else:
        text += f"{'-':>10s} {'-':>8s} {entry.get('match', '-')}"
    if "bf16_bound_ratio" in entry:
        text += f"  [bf16 mm {entry['bf16_matmul_gflops']:.0f} GF/s, "
        text += f"step/bf16 bound {entry['bf16_bound_ratio']:.2f}x]"
    if entry.get("spike_densities"):  # input, then each hidden layer's spikes: sparse's speed
        text += "  [spike density " + "/".join(f"{d:.3f}" for d in entry["spike_densities"]) + "]"
    return text


def measure_row(args, network: str, method: str, reps: tuple[int, int], tol: float) -> dict:
    """Fast run (and reference run unless --no-reference) of one configuration, as a row."""
    entry: dict = {"network": network, "method": method}
    try:
        fast = run_child(args, network, method, "fast", reps[0])
    except RuntimeError as err:  # record it and go on with the other configurations
        print(str(err)[-2000:], file=sys.stderr, flush=True)
        return {**entry, "error": str(err)}
    entry.update(limits(fast), peak_mb=fast["peak_mb"], flops=fast["flops"])
    entry.update(times=fast["times"], losses=fast["losses"], conv_algos=fast["conv_algos"])
    entry.update(spike_densities=fast.get("spike_densities"))
    entry.update(matmul_rates=fast["matmul_rates"], bf16_matmul_rates=fast["bf16_matmul_rates"])
    if args.no_reference:
        return entry
    try:
        ref = run_child(args, network, method, "reference", reps[1])
    except RuntimeError as err:
        print(str(err)[-2000:], file=sys.stderr, flush=True)
        return {**entry, "error": str(err), "match": "reference FAILED"}
    a, b = fast["losses"][0], ref["losses"][0]
    ok = abs(a - b) <= tol * max(1.0, abs(b))
    t_ref = statistics.median(after_warmup(ref["times"]))
    entry.update(
        ref_s_per_step=t_ref,
        ref_peak_mb=ref["peak_mb"],
        ref_times=ref["times"],
        ref_losses=ref["losses"],
        speed_up=t_ref / entry["s_per_step"],
        loss_match=ok,
        match=f"{'yes' if ok else 'NO'} ({a:.6f} vs {b:.6f})",
    )
    return entry


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="1 reference step, 3 fast steps")
    add("--reps", type=int, default=None, help="fast steps (default 7; the first is warm-up)")
    add("--ref-reps", type=int, default=None, help="reference steps (default 3)")
    add("--batch", type=int, default=400)
    add("--threads", type=int, default=None, help="torch CPU threads (default: usable cores)")
    add("--device", default="cpu", help="cpu (default), cuda or cuda:<index>")
    add(
        "--precision",
        default="float32",
        choices=["float32", "bf16"],
        help="bf16: convolutions and weight products in bfloat16 (precision=bf16)",
    )
    add("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    add("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    add("--no-reference", action="store_true", help="time the fast path only (no loss check)")
    add("--json", metavar="PATH", help="also write all rows to PATH as JSON (atomically)")
    add("--txt", metavar="PATH", help="also write the printed table to PATH (atomically)")
    add("--one", nargs=3, metavar=("NETWORK", "METHOD", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device != "cpu" and args.device != "cuda" and not args.device.startswith("cuda:"):
        parser.error(f"--device={args.device!r} is not valid; choose cpu, cuda or cuda:<index>")
    if args.threads is None:
        from sgtheory.backends.threads import default_threads

        args.threads = default_threads()
    return args


def header_lines(args, info: dict, reps: tuple[int, int], tol: float) -> list[str]:
    switches = cpu_switches() if args.device == "cpu" else f"device {args.device}"
    precision = "float32" if args.precision == "float32" else "bf16 (convolutions, products)"
    load = ", ".join(f"{v:.1f}" for v in info["loadavg_start"])
    return [
        f"machine: {machine_line(info)}; torch {info['torch']}; load average at start {load}",
        f"{switches}; batch {args.batch}; {precision}; fast: median of {reps[0] - 1} steps "
        f"after 1 warm-up, each after one {MATMUL_SIZE}^2 float32 matmul (mm GF/s); "
        f"first-step losses of fast and reference must agree to {tol:g} (relative)",
        "GFLOP: convolutions (forward, input and weight gradients) + recurrent convolutions "
        "+ readout, from the shapes; step/bound = step time / (GFLOP / mm rate), median of "
        "steps paired with their own matmul (min also shown)",
        HEADER,
    ]


def main() -> None:
    args = parse_args()
    if args.one:
        result = one(
            *args.one, args.reps or 1, args.batch, args.threads, args.device, args.precision
        )
        print(json.dumps(result))
        return
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            sys.exit(f"error: --device={args.device} was asked for but no CUDA device is there")
    info = machine(args.device, args.threads if args.device == "cpu" else None)
    reps = (args.reps or (3 if args.quick else 7), args.ref_reps or (1 if args.quick else 3))
    # bf16: fast and reference paths round differently and may flip a few spikes
    tol = 1e-4 if args.precision == "float32" else 1e-2
    lines = header_lines(args, info, reps, tol)
    print("\n".join(lines), flush=True)
    report = {
        "machine": info,
        "batch": args.batch,
        "dtype": args.precision,
        "peak_memory": peak_label(args.device),
        "fast_reps": reps[0],
        "ref_reps": None if args.no_reference else reps[1],
        "rows": [],
    }
    for network in args.networks:
        for method in args.methods:
            entry = measure_row(args, network, method, reps, tol)
            report["rows"].append(entry)
            lines.append(row_text(network, method, entry))
            print(lines[-1], flush=True)
            report["machine"]["loadavg_end"] = os.getloadavg()
            if args.json:  # after every row: an interrupted run keeps what it measured
                write_atomic(args.json, json.dumps(report, indent=1) + "\n")
            if args.txt:
                write_atomic(args.txt, "\n".join(lines) + "\n")
    failed = [r for r in report["rows"] if "error" in r]
    mismatched = [r for r in report["rows"] if r.get("loss_match") is False]
    if failed:
        sys.exit(f"error: {len(failed)} configuration(s) failed (see above)")
    if mismatched:
        sys.exit("error: the fast and reference first-step losses differ (see 'loss match')")


if __name__ == "__main__":
    restart_with_huge_pages()  # as the experiments run (SGTHEORY_HUGEPAGES=0: without)
    main()
