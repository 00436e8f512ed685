"""Benchmark the spike-train-matching experiment: time per epoch, start-up, peak memory.

Runs the real command line once per method with the default configuration (into a
temporary folder, wandb offline, `save_spk` on) and prints, for each method, the median
seconds per epoch after 10 warm-up epochs, the start-up time (process start to the first
epoch, imports, Hydra, wandb and set-up included), the total wall time and the peak
resident memory (getrusage maxrss), after a line naming the CPU, its vector ISA and the
load average (other jobs on the machine slow every figure). Not a test. Usage (from anywhere):

    python3 Spike_train_matching/benchmarks/bench_stm.py [--epochs 1500] [--methods ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
METHODS = ("superspike", "stochasticsuperspike", "multilayerspiker")


def bench(method: str, epochs: int, workdir: Path, extra: list[str]) -> dict:
    """Run one method through the CLI and return its timing record from results.json."""
    run_dir = workdir / method
    cmd = [
        sys.executable,
        "run_image_task_1hid.py",
        "--config-name=config",
        f"method={method}",
        f"nb_epochs={epochs}",
        "progress=false",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=EXPERIMENTS, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    res = json.loads((run_dir / "results.json").read_text())
    return {
        "wall_s": wall,
        **res["timing"],
        "vrd_first": res["losses"]["first"]["loss_hist_vRd"],
        "vrd_final": res["losses"]["final"]["loss_hist_vRd"],
    }


def cpu_line() -> str:
    """CPU model, widest vector ISA, cores and load average, for the record."""
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        info = Path("/proc/cpuinfo").read_text()
        model = next(ln.split(":", 1)[1].strip() for ln in info.splitlines() if "model name" in ln)
        flags = set(next(ln for ln in info.splitlines() if ln.startswith("flags")).split())
    except (OSError, StopIteration):
        pass
    isa = next((i for i in ("avx512f", "avx2", "avx", "sse4_2") if i in flags), "?")
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"CPU: {model}, {isa}, {os.cpu_count()} logical cores, load average {load}"


def main() -> None:
    """Parse arguments, run every method, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1500)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    args = parser.parse_args()
    print(cpu_line())
    print(
        f"{'method':22s} {'ms/epoch':>9s} {'start-up s':>10s} {'wall s':>8s} "
        f"{'peak MB':>8s} {'vRd first->final':>18s}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            r = bench(method, args.epochs, Path(tmp), args.overrides)
            print(
                f"{method:22s} {1e3 * r['median_s_per_epoch']:9.1f} {r['startup_s']:10.2f} "
                f"{r['wall_s']:8.1f} {r['peak_rss_mb']:8.0f} "
                f"{r['vrd_first']:8.3f} -> {r['vrd_final']:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
