"""Seconds per training step and peak memory of the Classification networks, fast vs baseline.

For the Randman network (100 steps, conv 32/64/128) and the SHD-shaped network (350 steps,
strided conv 16/32/64 with recurrent convolutions), each with a deterministic
(superspike) and a stochastic (stochasticsuperspike) method, one training step at batch 400
(forward, loss, backward, optimiser step) is timed with

* fast: the core layers as used by the experiment (feedforward convolution over all time
  steps at once, LIF scan with the hand-written adjoint; on CPU in float32 the scan of a
  layer without recurrence runs in the fused C kernels of `sgtheory.fused`), and
* reference: `reference=True` (one convolution per time step, neuron update through autograd),

from the same initial weights, inputs and spike generators; the first step's loss must agree.
Every configuration runs in a fresh subprocess so that its peak memory is its own: the
process's peak resident set size (ru_maxrss) on CPU, `torch.cuda.max_memory_allocated()` on
CUDA (network, spike generators, inputs and labels all on the GPU; each step is timed between
`torch.cuda.synchronize()` calls). The STORK column compares with the original stork code's
seconds per step measured on 2 CPU cores, whatever device this run uses. On CPU, both paths
run with freed memory kept for reuse (`sgtheory.allocator`), as the experiments do; set
SGTHEORY_FUSED=0 or SGTHEORY_MALLOPT=0 to time without the kernels or without that.

    python3 benchmarks/bench_classification.py            # full
    python3 benchmarks/bench_classification.py --quick    # 1 reference repetition, fewer reps
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

NETWORKS = {"randman": "Randman (100 steps)", "shd": "SHD-shaped (350 steps, recurrent)"}
METHODS = ("superspike", "stochasticsuperspike")
# the original stork-based code on a comparable 2-core CPU machine (seconds per step)
STORK = {
    ("randman", "superspike"): 0.85,
    ("randman", "stochasticsuperspike"): 1.25,
    ("shd", "superspike"): 13.4,
    ("shd", "stochasticsuperspike"): 15.9,
}


def peak_label(device: str) -> str:
    """Which peak memory is reported on `device`."""
    return "peak MB (GPU allocated)" if device.startswith("cuda") else "peak MB (RSS)"


def cpu_switches() -> str:
    """The two CPU speed switches of sgtheory as this benchmark's children will see them."""
    from sgtheory import fused

    kernels = "on" if fused.library() is not None else "off (SGTHEORY_FUSED=0 or no compiler)"
    kept = os.environ.get("SGTHEORY_MALLOPT", "1").strip().lower() not in ("0", "false", "off")
    memory = "kept for reuse" if kept else "returned to the OS (SGTHEORY_MALLOPT=0)"
    return f"fused LIF kernels {kernels}, freed memory {memory}"


def one(
    network: str,
    method: str,
    impl: str,
    reps: int,
    batch: int,
    threads: int,
    device: str = "cpu",
    precision: str = "float32",
) -> dict:
    """Time `reps` training steps of one configuration in this process on `device`."""
    import torch
    from hydra import compose, initialize_config_dir

    from convsnn.model import build_network, spike_fns
    from convsnn.seeds import generator, layer_generators
    from convsnn.settings import validate
    from sgtheory.allocator import retain_freed_memory
    from sgtheory.losses import loss_fn
    from sgtheory.optim import make_optimizer

    torch.set_num_threads(threads)  # matters on CPU only
    cuda = device.startswith("cuda")
    if not cuda:
        retain_freed_memory()  # as the experiments do (sgtheory.allocator)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    config_dir = REPO / "Classification" / "experiments" / "config_stork"
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = compose(
            "config", [f"dataset={network}", f"method={method}", f"precision={precision}"]
        )
    geo = validate(cfg)
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
    x, y = x.to(device), y.to(device)
    lossf = loss_fn(cfg.loss_type)
    reference = impl == "reference"
    times, losses = [], []
    for _ in range(reps):
        sync()
        start = time.perf_counter()
        out = net(x, reference=reference)[0]  # drop the spike list, as training does
        loss = lossf(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        times.append(time.perf_counter() - start)
        losses.append(float(loss.detach()))
    if cuda:
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"times": times, "losses": losses, "peak_mb": peak_mb, "peak_memory": peak_label(device)}


def run_child(args: argparse.Namespace, network: str, method: str, impl: str, reps: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--one",
        network,
        method,
        impl,
        "--reps",
        str(reps),
        "--batch",
        str(args.batch),
        "--threads",
        str(args.threads),
        "--device",
        args.device,
        "--precision",
        args.precision,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{network}/{method}/{impl} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def step_time(times: list[float]) -> float:
    """Median step time, skipping the first (warm-up) step when there are several."""
    return statistics.median(times[1:] if len(times) > 1 else times)


def write_json_atomic(path: str, data: dict) -> None:
    """Write `data` to `path` as JSON: a temporary file in the same folder, then os.replace."""
    path = os.path.abspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1)
        fh.write("\n")
    os.replace(tmp, path)


def device_info(device: str) -> dict:
    """Device, its name and the torch version (initialises CUDA in this process if asked)."""
    import torch

    info = {"device": device, "torch": torch.__version__}
    if device.startswith("cuda"):
        info["device_name"] = torch.cuda.get_device_name(device)
        info["cudnn_allow_tf32"] = bool(torch.backends.cudnn.allow_tf32)
    else:
        info["device_name"] = "cpu"
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 reference step, 3 fast steps")
    parser.add_argument("--reps", type=int, default=None, help="fast steps (default 5)")
    parser.add_argument("--ref-reps", type=int, default=None, help="reference steps (default 3)")
    parser.add_argument("--batch", type=int, default=400)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default all; CPU only)"
    )
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:<index>")
    parser.add_argument(
        "--precision",
        default="float32",
        choices=["float32", "bf16"],
        help="bf16: convolutions and weight products in bfloat16 (the experiments' precision=bf16)",
    )
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--no-reference", action="store_true", help="time the fast path only")
    parser.add_argument("--json", metavar="PATH", help="also write all rows to PATH as JSON")
    parser.add_argument(
        "--one", nargs=3, metavar=("NETWORK", "METHOD", "IMPL"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.device != "cpu" and args.device != "cuda" and not args.device.startswith("cuda:"):
        parser.error(f"--device={args.device!r} is not valid; choose cpu, cuda or cuda:<index>")
    if args.threads is None:
        args.threads = len(os.sched_getaffinity(0))
    if args.one:
        reps = args.reps or 1
        result = one(*args.one, reps, args.batch, args.threads, args.device, args.precision)
        print(json.dumps(result))
        return
    cuda = args.device.startswith("cuda")
    if cuda:
        import torch

        if not torch.cuda.is_available():
            parser.error(f"--device={args.device} was asked for but no CUDA device is available")
    info = device_info(args.device)
    fast_reps = args.reps or (3 if args.quick else 5)
    ref_reps = args.ref_reps or (1 if args.quick else 3)
    where = (
        f"device {args.device} ({info['device_name']}, cudnn tf32 "
        f"{'on' if info['cudnn_allow_tf32'] else 'off'})"
        if cuda
        else f"device cpu, {args.threads} threads, {cpu_switches()}"
    )
    peak = peak_label(args.device)
    # bf16: fast and reference paths block their convolutions differently, so rounding
    # differs by bfloat16's 3 digits and may flip a few spikes
    tolerance = 1e-4 if args.precision == "float32" else 1e-2
    precision = (
        "float32"
        if args.precision == "float32"
        else "bf16 (convolutions and weight products; dynamics float32)"
    )
    print(
        f"{where}, torch {info['torch']}, batch {args.batch}, "
        f"{precision}, first-step losses must agree to {tolerance:g} (relative)"
        f"; fast: median of {fast_reps - 1} steps after 1 warm-up; reference: "
        f"{'median of ' + str(ref_reps - 1) + ' after 1 warm-up' if ref_reps > 1 else '1 step'}"
        f"; memory: {peak}"
    )
    print(
        "vs stork (CPU 2 cores): the original stork code's s/step on 2 CPU cores / this fast s/step"
    )
    header = (
        f"{'network':36s} {'method':22s} {'fast s/step':>11s} {peak:>23s} "
        f"{'ref s/step':>10s} {'ref ' + peak:>27s} {'speed-up':>8s} "
        f"{'vs stork (CPU 2 cores)':>22s} loss match"
    )
    print(header)
    report = {
        **info,
        "batch": args.batch,
        "threads": args.threads if not cuda else None,
        "dtype": args.precision,
        "peak_memory": peak,
        "fast_reps": fast_reps,
        "ref_reps": None if args.no_reference else ref_reps,
        "stork_note": "stork_cpu2_s_per_step: the original stork code on 2 CPU cores",
        "rows": [],
    }
    all_match, failures = True, []
    for network in args.networks:
        for method in METHODS:
            stork = STORK[(network, method)]
            entry = {"network": network, "method": method, "stork_cpu2_s_per_step": stork}
            try:
                fast = run_child(args, network, method, "fast", fast_reps)
            except RuntimeError as err:  # record it and go on with the other configurations
                failures.append(str(err))
                entry["error"] = str(err)
                print(f"{NETWORKS[network]:36s} {method:22s} FAILED (fast)", flush=True)
                print(str(err)[-2000:], file=sys.stderr, flush=True)
                report["rows"].append(entry)
                if args.json:
                    write_json_atomic(args.json, report)
                continue
            t_fast = step_time(fast["times"])
            entry.update(
                fast_s_per_step=t_fast,
                fast_peak_mb=fast["peak_mb"],
                fast_times=fast["times"],
                fast_losses=fast["losses"],
                vs_stork_cpu2=stork / t_fast,
            )
            row = f"{NETWORKS[network]:36s} {method:22s} {t_fast:11.3f} {fast['peak_mb']:23.0f} "
            ref = None
            if not args.no_reference:
                try:
                    ref = run_child(args, network, method, "reference", ref_reps)
                except RuntimeError as err:
                    failures.append(str(err))
                    entry["error"] = str(err)
                    print(str(err)[-2000:], file=sys.stderr, flush=True)
            if ref is None:
                row += f"{'-':>10s} {'-':>27s} {'-':>8s}"
                match = "-" if args.no_reference else "reference FAILED"
            else:
                t_ref = step_time(ref["times"])
                a, b = fast["losses"][0], ref["losses"][0]
                ok = abs(a - b) <= tolerance * max(1.0, abs(b))
                all_match &= ok
                match = f"{'yes' if ok else 'NO'} ({a:.6f} vs {b:.6f})"
                row += f"{t_ref:10.3f} {ref['peak_mb']:27.0f} {t_ref / t_fast:7.1f}x"
                entry.update(
                    ref_s_per_step=t_ref,
                    ref_peak_mb=ref["peak_mb"],
                    ref_times=ref["times"],
                    ref_losses=ref["losses"],
                    speed_up=t_ref / t_fast,
                    loss_match=ok,
                )
            row += f" {stork / t_fast:21.1f}x {match}"
            print(row, flush=True)
            report["rows"].append(entry)
            if args.json:  # after every row, so that an interrupted run keeps what it measured
                write_json_atomic(args.json, report)
    if args.json:
        report["all_loss_match"] = None if args.no_reference else all_match
        report["nb_failed"] = len(failures)
        write_json_atomic(args.json, report)
    if failures:
        sys.exit(f"error: {len(failures)} configuration(s) failed (see above)")
    if not all_match:
        sys.exit("error: the fast and reference first-step losses differ (see 'loss match')")


if __name__ == "__main__":
    main()
