"""Wall time of a 4-run Spike_train_matching sweep: sequential launcher vs local parallel runs.

    python3 benchmarks/bench_sweep.py [--epochs 150] [--threads 1]

Runs `-m seed=1,2 method=superspike,stochasticsuperspike` twice into a temporary folder: with
Hydra's default (sequential) launcher and with `hydra/launcher=joblib_local` (n_jobs = usable
cores // threads). Prints both wall times and the speed-up; see docs/sweeps.md.
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

from sgruns.sweeps import n_jobs_for, usable_cores

ROOT = Path(__file__).resolve().parents[1]
STM = ROOT / "Spike_train_matching" / "experiments"


def sweep(launcher: str, out: Path, epochs: int, threads: int) -> float:
    """Run the 4-run sweep with `launcher`; return its wall time in seconds."""
    cmd = [
        sys.executable,
        "run_image_task_1hid.py",
        "-m",
        f"hydra/launcher={launcher}",
        f"hydra.sweep.dir={out}",
        "hydra.sweep.subdir=${method.name}_${seed}",
        f"nb_epochs={epochs}",
        f"logging_freq={epochs}",
        f"threads={threads}",
        "save_spk=false",
        "wandb.mode=disabled",
        "progress=false",
        "seed=1,2",
        "method=superspike,stochasticsuperspike",
    ]
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=STM, capture_output=True, text=True, env=dict(os.environ, WANDB_MODE="disabled")
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{launcher} sweep failed:\n{proc.stderr[-3000:]}")
    results = [json.loads(p.read_text()) for p in out.glob("*/results.json")]
    if len(results) != 4:
        sys.exit(f"{launcher} sweep wrote {len(results)} of 4 results")
    train = [r["timing"]["run_time_s"] for r in results]
    print(f"    {launcher}: training time per run {min(train):.1f}-{max(train):.1f} s")
    return wall


def cpu_model() -> str:
    """The CPU's model name (Linux), for the printout."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    """Parse arguments, run both sweeps, print wall times."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=150, help="epochs per run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--repeats", type=int, default=2, help="alternating repeats; min kept")
    args = parser.parse_args()
    cores = usable_cores()
    print(f"CPU: {cpu_model()}")
    print(
        f"4 runs x {args.epochs} epochs, {args.threads} thread(s) per run, {cores} usable "
        f"cores -> joblib_local n_jobs={n_jobs_for(args.threads)}"
    )
    print(f"load average before: {os.getloadavg()[0]:.2f} (other work on the cores slows both)")
    times: dict[str, list[float]] = {"basic": [], "joblib_local": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for launcher in times:
                wall = sweep(launcher, Path(tmp) / f"{launcher}_{rep}", args.epochs, args.threads)
                times[launcher].append(wall)
                print(f"  repeat {rep}: {launcher:12s} {wall:6.1f} s")
    seq, par = min(times["basic"]), min(times["joblib_local"])
    print(f"sequential (default launcher):           {seq:6.1f} s (min of {args.repeats})")
    print(f"parallel (hydra/launcher=joblib_local):  {par:6.1f} s (min of {args.repeats})")
    print(f"speed-up: {seq / par:.2f}x; load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
