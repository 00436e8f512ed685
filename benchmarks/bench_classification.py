"""Seconds per training step and peak memory of the Classification networks, fast vs baseline.

For the Randman network (100 steps, conv 32/64/128) and the SHD-shaped network (350 steps,
strided conv 16/32/64 with recurrent convolutions), each with a deterministic
(superspike) and a stochastic (stochasticsuperspike) method, one training step at batch 400
(forward, loss, backward, optimiser step) is timed with

* fast: the core layers as used by the experiment (feedforward convolution over all time
  steps at once, LIF scan with the hand-written adjoint), and
* reference: `reference=True` (one convolution per time step, neuron update through autograd),

from the same initial weights, inputs and spike generators; the first step's loss must agree.
Every configuration runs in a fresh subprocess so that its peak memory (ru_maxrss) is its own.

    python3 benchmarks/bench_classification.py            # full
    python3 benchmarks/bench_classification.py --quick    # 1 reference repetition, fewer reps
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "Classification"))
sys.path.insert(1, str(REPO))

NETWORKS = {"randman": "Randman (100 steps)", "shd": "SHD-shaped (350 steps, recurrent)"}
METHODS = ("superspike", "stochasticsuperspike")
# the original stork-based code on a comparable 2-core machine (seconds per step)
STORK = {
    ("randman", "superspike"): 0.85,
    ("randman", "stochasticsuperspike"): 1.25,
    ("shd", "superspike"): 13.4,
    ("shd", "stochasticsuperspike"): 15.9,
}


def one(network: str, method: str, impl: str, reps: int, batch: int, threads: int) -> dict:
    """Time `reps` training steps of one configuration in this process."""
    import torch
    from convsnn.model import build_network, spike_fns
    from convsnn.seeds import generator, layer_generators
    from convsnn.settings import validate
    from hydra import compose, initialize_config_dir

    from sgtheory.losses import loss_fn
    from sgtheory.optim import make_optimizer

    torch.set_num_threads(threads)
    config_dir = REPO / "Classification" / "experiments" / "config_stork"
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = compose("config", [f"dataset={network}", f"method={method}"])
    geo = validate(cfg)
    nb_layers = len(cfg.dataset.nb_filters)
    fns = spike_fns(cfg, method, layer_generators(cfg.seed, "train_spikes", nb_layers))
    net = build_network(cfg, geo, fns, generator(cfg.seed, "init"))
    opt = make_optimizer(cfg.optimizer, net.parameters(), cfg.method.lr)
    gen = generator(cfg.seed, "shuffle")
    rate = float(cfg.dataset.nu) * float(cfg.dataset.dt)
    x = (torch.rand(batch, geo.nb_steps, 1, geo.nb_units, generator=gen) < rate).float()
    y = torch.randint(0, geo.nb_classes, (batch,), generator=gen)
    lossf = loss_fn(cfg.loss_type)
    reference = impl == "reference"
    times, losses = [], []
    for _ in range(reps):
        start = time.perf_counter()
        out = net(x, reference=reference)[0]  # drop the spike list, as training does
        loss = lossf(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
        losses.append(float(loss.detach()))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"times": times, "losses": losses, "peak_mb": peak_mb}


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
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{network}/{method}/{impl} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def step_time(times: list[float]) -> float:
    """Median step time, skipping the first (warm-up) step when there are several."""
    return statistics.median(times[1:] if len(times) > 1 else times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 reference step, 3 fast steps")
    parser.add_argument("--reps", type=int, default=None, help="fast steps (default 5)")
    parser.add_argument("--ref-reps", type=int, default=None, help="reference steps (default 3)")
    parser.add_argument("--batch", type=int, default=400)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default all)")
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--no-reference", action="store_true", help="time the fast path only")
    parser.add_argument(
        "--one", nargs=3, metavar=("NETWORK", "METHOD", "IMPL"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.threads is None:
        import os

        args.threads = len(os.sched_getaffinity(0))
    if args.one:
        reps = args.reps or 1
        print(json.dumps(one(*args.one, reps, args.batch, args.threads)))
        return
    fast_reps = args.reps or (3 if args.quick else 5)
    ref_reps = args.ref_reps or (1 if args.quick else 3)
    print(
        f"batch {args.batch}, {args.threads} threads, "
        "float32"
        f"; fast: median of {fast_reps - 1} steps after 1 warm-up; reference: "
        f"{'median of ' + str(ref_reps - 1) + ' after 1 warm-up' if ref_reps > 1 else '1 step'}"
    )
    header = (
        f"{'network':36s} {'method':22s} {'fast s/step':>11s} {'peak MB':>8s} "
        f"{'ref s/step':>10s} {'ref MB':>8s} {'speed-up':>8s} {'vs stork':>8s} loss match"
    )
    print(header)
    for network in args.networks:
        for method in METHODS:
            fast = run_child(args, network, method, "fast", fast_reps)
            t_fast = step_time(fast["times"])
            row = f"{NETWORKS[network]:36s} {method:22s} {t_fast:11.3f} {fast['peak_mb']:8.0f} "
            if args.no_reference:
                row += f"{'-':>10s} {'-':>8s} {'-':>8s}"
                match = "-"
            else:
                ref = run_child(args, network, method, "reference", ref_reps)
                t_ref = step_time(ref["times"])
                a, b = fast["losses"][0], ref["losses"][0]
                ok = abs(a - b) <= 1e-4 * max(1.0, abs(b))
                match = f"{'yes' if ok else 'NO'} ({a:.6f} vs {b:.6f})"
                row += f"{t_ref:10.3f} {ref['peak_mb']:8.0f} {t_ref / t_fast:7.1f}x"
            row += f" {STORK[(network, method)] / t_fast:7.1f}x {match}"
            print(row, flush=True)


if __name__ == "__main__":
    main()
