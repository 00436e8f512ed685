"""How the cost of one training step grows with its size: batch, time steps and channels.

For the Randman and the SHD-shaped network of the Classification experiment, deterministic
(superspike) and stochastic (stochasticsuperspike), one training step (forward, loss,
backward, optimiser step; `bench_classification.one`, fast path) is timed at the default
size (batch 400, the time steps and channels of the experiment's dataset config) and with one
factor changed at a time: batch 100/200/400/800/1600, 100/350/1000 time steps, and every
layer's channels (`dataset.nb_filters`) at 1x/2x/4x. Each configuration runs in a fresh
subprocess, so that its peak memory (ru_maxrss) is its own; each timed step follows a float32
matrix product whose rate is reported beside it, so that a load that comes and goes on a
shared machine shows.

Per row: seconds per step (median after one warm-up step), seconds per sample-step (step time
/ (batch x time steps)), its ratio to the default size's (1.0 where the cost grows with the
samples and steps and nothing else), peak memory, the float32 product rate, the step's FLOPs
and its ratio to the FLOP bound, and the CPU model, torch CPU capability and threads. A
configuration whose estimated memory (`convsnn.memory.memory_needed`, plus a margin for the
process) exceeds the memory available when it would start is skipped with that reason.

Writes scaling.json and scaling.md (atomically, after every row, so an interrupted run keeps
what it measured) and scaling.png (log-log: step time and peak memory against work =
sample-steps x channel factor) into --out.

    python3 benchmarks/bench_scaling.py --quick --out /tmp/scaling_quick
    python3 benchmarks/bench_scaling.py --threads 2 --out benchmarks/results/scaling_cpu
    python3 benchmarks/bench_scaling.py --networks shd --factors batch --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

# run as a script, so its own folder is first on sys.path
import bench_classification as bc

FACTORS = ("batch", "steps", "channels")
SIZES = {"batch": (100, 200, 400, 800, 1600), "steps": (100, 350, 1000), "channels": (1, 2, 4)}
DEFAULT_BATCH = 400
# --quick: tiny sizes that only check that everything runs (3 hidden layers need 12 steps)
QUICK_SIZES = {"batch": (2, 4, 8), "steps": (16, 24), "channels": (1, 2)}
QUICK_DEFAULT = {"batch": 4, "steps": 16}
MEMORY_MARGIN = 1 << 30  # bytes for the interpreter, torch and the allocator's slack
NAMES = {"randman": "Randman", "shd": "SHD-shaped"}  # time steps vary: not in the name
MARKERS = {"default": "*", "batch": "o", "steps": "s", "channels": "^"}


def default_size(network: str, quick: bool) -> dict:
    """Batch, time steps and channel factor of the default configuration of `network`."""
    if quick:
        return {**QUICK_DEFAULT, "channels": 1}
    steps = int(bc.dataset_config(network).nb_steps)
    return {"batch": DEFAULT_BATCH, "steps": steps, "channels": 1}


def configurations(
    networks: list[str], methods: list[str], factors: list[str], quick: bool
) -> list[dict]:
    """The default size of each network and method, then one factor changed at a time."""
    sizes = QUICK_SIZES if quick else SIZES
    configs = []
    for network in networks:
        base = default_size(network, quick)
        for method in methods:
            configs.append({"network": network, "method": method, "varied": "default", **base})
            for factor in factors:
                for value in sizes[factor]:
                    if value != base[factor]:
                        conf = {"network": network, "method": method, "varied": factor}
                        configs.append({**conf, **base, factor: value})
    return configs


def overrides(conf: dict) -> list[str]:
    """Hydra overrides that give the experiment's config the sizes of `conf`."""
    filters = [int(f) * conf["channels"] for f in bc.dataset_config(conf["network"]).nb_filters]
    return [
        f"batch_size={conf['batch']}",
        f"dataset.nb_steps={conf['steps']}",
        f"dataset.nb_filters=[{','.join(map(str, filters))}]",
    ]


def memory_estimate(conf: dict) -> int:
    """Bytes one training step of `conf` is expected to need at most, from the sizes alone."""
    from convsnn.checks import check
    from convsnn.memory import memory_needed
    from convsnn.model import network_shape

    cfg = bc.compose_config(conf["network"], conf["method"], "float32", overrides(conf))
    check(cfg)
    return memory_needed(cfg, network_shape(cfg))["network"] + MEMORY_MARGIN


def child(spec: dict) -> dict:
    """Time one configuration in this process (the subprocess side of `run_child`)."""
    result = bc.one(
        spec["network"],
        spec["method"],
        "fast",
        spec["repeats"],
        spec["batch"],
        spec["threads"],
        overrides=overrides(spec),
    )
    info = bc.machine("cpu", spec["threads"])
    keys = ("cpu", "cpu_capability", "onednn_max_cpu_isa", "amx", "threads")
    return {**result, "machine": {k: info[k] for k in keys}}


def run_child(conf: dict, repeats: int, threads: int) -> dict:
    """Run `child` for `conf` in a fresh Python process; a RuntimeError if it fails."""
    spec = json.dumps({**conf, "repeats": repeats, "threads": threads})
    proc = subprocess.run([sys.executable, __file__, "--one", spec], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip()[-3000:] or f"exit status {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(conf: dict, repeats: int, threads: int, default: dict | None) -> dict:
    """One row: `conf` skipped (memory, invalid sizes), failed, or measured."""
    from convsnn.memory import available_memory
    from sgtheory.errors import ConfigError

    row = {**conf, "sample_steps": conf["batch"] * conf["steps"]}
    row["work"] = row["sample_steps"] * conf["channels"]
    try:
        need = memory_estimate(conf)
    except ConfigError as err:
        return {**row, "skipped": str(err)}
    row["estimated_mb"] = need / 2**20
    free = available_memory()
    if free is not None and need > free:
        reason = f"needs about {need / 2**30:.1f} GiB (estimate), {free / 2**30:.1f} GiB available"
        return {**row, "skipped": reason}
    try:
        run = run_child(conf, repeats, threads)
    except RuntimeError as err:
        return {**row, "error": str(err)}
    lim = bc.limits(run)
    row.update(
        s_per_step=lim["s_per_step"],
        s_per_sample_step=lim["s_per_step"] / row["sample_steps"],
        peak_mb=run["peak_mb"],
        matmul_gflops=lim["matmul_gflops"],
        gflop_per_step=lim["gflop_per_step"],
        bound_ratio=lim["bound_ratio"],
        machine=run["machine"],
        times=run["times"],
        matmul_rates=run["matmul_rates"],
        losses=run["losses"],
    )
    if default is not None and "s_per_sample_step" in default:
        row["vs_default"] = row["s_per_sample_step"] / default["s_per_sample_step"]
    return row


def cpu_text(machine: dict) -> str:
    """CPU model, torch CPU capability (and oneDNN's cap) and threads, for one table cell."""
    isa = machine["cpu_capability"]
    if machine.get("onednn_max_cpu_isa"):
        isa += f"/oneDNN {machine['onednn_max_cpu_isa']}"
    return f"{machine['cpu']} ({isa}{', AMX' if machine['amx'] else ''}, {machine['threads']} thr)"


TABLE_HEAD = (
    "| network | method | varied | batch | steps | channels | work | s/step | µs/sample-step "
    "| vs default | peak MB (est.) | mm GF/s | GFLOP | step/bound | CPU (ISA, threads) |\n"
    "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
)


def table_row(row: dict) -> str:
    """One markdown table line of a row (measured, skipped or failed)."""
    cells = [NAMES[row["network"]], row["method"], row["varied"]]
    cells += [str(row["batch"]), str(row["steps"]), f"{row['channels']}x", f"{row['work']:,}"]
    if "s_per_step" not in row:
        why = row.get("skipped") or "FAILED: " + row.get("error", "").splitlines()[-1]
        why = why.replace("|", "/")
        return "| " + " | ".join(cells) + f" | {'skipped: ' if 'skipped' in row else ''}{why} |"
    ratio = f"{row['vs_default']:.2f}" if "vs_default" in row else "-"
    est = f" ({row['estimated_mb']:.0f})" if "estimated_mb" in row else ""
    cells += [
        f"{row['s_per_step']:.4g}",
        f"{row['s_per_sample_step'] * 1e6:.4g}",
        ratio,
        f"{row['peak_mb']:.0f}{est}",
        f"{row['matmul_gflops']:.0f}",
        f"{row['gflop_per_step']:.3g}",
        f"{row['bound_ratio']:.2f}x",
        cpu_text(row["machine"]),
    ]
    return "| " + " | ".join(cells) + " |"


def markdown(report: dict) -> str:
    """The markdown file: what was measured, on which machine, and the table."""
    info = report["machine"]
    load = ", ".join(f"{v:.1f}" for v in info["loadavg_start"])
    lines = [
        "# Cost of one training step against its size",
        "",
        f"Machine: {bc.machine_line(info)}; torch {info['torch']}; load average at start {load}.",
        f"{bc.cpu_switches()}.",
        "",
        f"One training step (forward, loss, backward, optimiser step), median of "
        f"{report['repeats'] - 1 if report['repeats'] > 1 else 1} step(s) after one warm-up, "
        f"each after one {bc.MATMUL_SIZE}^2 float32 matmul (mm GF/s); every configuration in "
        "a fresh process. work = batch x time steps x channel factor; vs default = seconds "
        "per sample-step / the default size's; peak MB = ru_maxrss (estimate from the sizes "
        "in brackets); step/bound = step time / (GFLOP / mm rate).",
        "",
        TABLE_HEAD,
        *(table_row(row) for row in report["rows"]),
        "",
    ]
    return "\n".join(lines)


def figure(report: dict, path: Path) -> None:
    """Log-log figure of step time and peak memory against work, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.5))
    rows = [r for r in report["rows"] if "s_per_step" in r]
    pairs = list(dict.fromkeys((r["network"], r["method"]) for r in rows))
    for index, (network, method) in enumerate(pairs):
        color = f"C{index}"
        mine = [r for r in rows if (r["network"], r["method"]) == (network, method)]
        for varied, marker in MARKERS.items():
            pts = sorted((r for r in mine if r["varied"] == varied), key=lambda r: r["work"])
            if pts:
                work = [r["work"] for r in pts]
                ax_t.plot(work, [r["s_per_step"] for r in pts], marker, color=color, ms=7)
                ax_m.plot(work, [r["peak_mb"] for r in pts], marker, color=color, ms=7)
        base = next((r for r in mine if r["varied"] == "default"), None)
        label = f"{NAMES[network]}, {method}"
        if base is not None:  # proportional growth through the default size
            span = [min(r["work"] for r in mine), max(r["work"] for r in mine)]
            line = [base["s_per_step"] * w / base["work"] for w in span]
            ax_t.plot(span, line, ":", color=color, label=label)
        ax_m.plot([], [], "-", color=color, label=label)
    for varied, marker in MARKERS.items():
        ax_m.plot([], [], marker, color="gray", label=f"varied: {varied}")
    ax_t.set_ylabel("seconds per training step")
    ax_t.set_title("step time (dotted: proportional to work)", fontsize=10)
    ax_m.set_ylabel("peak memory (MB, ru_maxrss)")
    ax_m.set_title("peak memory", fontsize=10)
    plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
    for ax in (ax_t, ax_m):
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):  # ticks at 1, 2, 5 x powers of ten, plain numbers
            axis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("work (sample-steps x channel factor)")
        ax.grid(True, which="both", alpha=0.3)
    ax_m.legend(fontsize=7, loc="upper left")
    fig.suptitle(bc.machine_line(report["machine"]), fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def check_list(setting: str, values: list[str], allowed: tuple[str, ...]) -> list[str]:
    """`values` if each is allowed; otherwise the one-line error, exit status 1."""
    for value in values:
        if value not in allowed:
            sys.exit(f"error: {setting}={value} is not valid; choose from {', '.join(allowed)}")
    return list(dict.fromkeys(values))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--networks", nargs="+", default=list(bc.NETWORKS), help="randman and/or shd")
    add("--methods", nargs="+", default=list(bc.METHODS), help=" and/or ".join(bc.METHODS))
    add("--factors", nargs="+", default=list(FACTORS), help="axes to vary: batch steps channels")
    add("--repeats", type=int, default=3, help="steps per configuration, the first a warm-up")
    add("--threads", type=int, default=None, help="torch CPU threads (default: usable cores)")
    add("--out", default=str(bc.REPO / "benchmarks" / "results" / "scaling_cpu"), help="folder")
    add("--quick", action="store_true", help="tiny sizes, 2 steps each: checks that it runs")
    add("--one", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return args
    args.networks = check_list("--networks", args.networks, tuple(bc.NETWORKS))
    args.methods = check_list("--methods", args.methods, bc.METHODS)
    args.factors = check_list("--factors", args.factors, FACTORS)
    if args.repeats < 1:
        sys.exit(f"error: --repeats={args.repeats} is not valid; give a whole number >= 1")
    if args.threads is not None and args.threads < 1:
        sys.exit(f"error: --threads={args.threads} is not valid; give a whole number >= 1")
    if args.threads is None:
        from sgtheory.backends.threads import default_threads

        args.threads = default_threads()
    if args.quick and "--repeats" not in sys.argv:
        args.repeats = 2
    return args


def main() -> None:
    args = parse_args()
    if args.one:
        print(json.dumps(child(json.loads(args.one))))
        return
    from tqdm import tqdm

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": bc.machine("cpu", args.threads),
        "quick": args.quick,
        "repeats": args.repeats,
        "peak_memory": "ru_maxrss of the configuration's own process",
        "rows": [],
    }
    configs = configurations(args.networks, args.methods, args.factors, args.quick)
    defaults: dict = {}
    bar = tqdm(configs, desc="configurations", unit="config")
    for conf in bar:
        bar.set_postfix_str(f"{conf['network']}/{conf['method']}/{conf['varied']}")
        key = (conf["network"], conf["method"])
        row = measure(conf, args.repeats, args.threads, defaults.get(key))
        if conf["varied"] == "default":
            defaults[key] = row
            if "s_per_sample_step" in row:
                row["vs_default"] = 1.0
        report["rows"].append(row)
        report["machine"]["loadavg_end"] = os.getloadavg()
        tqdm.write(table_row(row))
        bc.write_atomic(str(out / "scaling.json"), json.dumps(report, indent=1) + "\n")
        bc.write_atomic(str(out / "scaling.md"), markdown(report))
    figure(report, out / "scaling.png")
    print(f"wrote {out / 'scaling.json'}, {out / 'scaling.md'}, {out / 'scaling.png'}")
    failed = [r for r in report["rows"] if "error" in r]
    if failed:
        sys.exit(f"error: {len(failed)} configuration(s) failed (see the table)")


if __name__ == "__main__":
    bc.restart_with_huge_pages()  # as the experiments run (SGTHEORY_HUGEPAGES=0: without)
    main()
