"""Seconds per SHD training step: the original code (stork) and this project, side by side.

One training step (forward pass, loss with the activity penalty, backward pass, optimiser
step) of the paper's SHD network (strided convolutions 16/32/64, kernels 21/7/7, strides
10/3/3, recurrent convolutions of kernel 5, 349 steps of 2 ms, 700 inputs, 20 classes) is
timed in one process for

* stork: the network built by the original repository's own `set_up_model`
  (Classification/experiments/deep_convSNN.py of fmi-basel/surrogate-gradient-theory) from
  its own Hydra config (config_stork, dataset=SHD, method=<method>), with the stork library
  (fmi-basel/stork, branch SG_theory); its step is the body of stork's
  `RecurrentSpikingModel.train_epoch` for one batch (`forward_pass`, `get_total_loss`,
  `zero_grad`, `backward`, `step`, `apply_constraints`);
* project: the network as this project's experiment builds it
  (`bench_classification.build`), its step as `convsnn.training.train_epoch` takes it
  (loss + activity penalty, backward, optimiser step, the finiteness check).

Neither the original repository nor stork is part of this project: both are imported at
run time from the paths given with --original and --stork (the Python running this script
needs the original's dependencies: torch, hydra-core, omegaconf, wandb, matplotlib,
seaborn, colorcet). The networks must agree in neuron shapes and in the shapes of their
weights (checked; the script stops otherwise); their first-step losses are printed, not
compared (the initial weights are drawn differently).

Both get the same input: random spikes (batch, 349 steps, 700 units) at the experiment's
rate nu * dt and random labels over the 20 classes. Each network lives in a worker process
of its own, run as each code runs by itself: the project's with its allocator settings
(`sgtheory.backends.allocator`: freed memory kept, huge pages), stork's with glibc's
defaults (`--stork-allocator project` gives stork the project's settings too, to show what
they are worth to it). This script sends each worker one step at a time: for each method
and thread count, one warm-up step of each, then `reps` rounds of (project step, stork
step), interleaved so that a load that comes and goes on a shared machine slows both alike;
the table gives the median seconds per step of each and their ratio stork / project. Steps
go on training (each updates the weights), as in a run.

    /path/to/venv/bin/python benchmarks/shd_vs_stork.py \\
        --original /path/to/surrogate-gradient-theory --stork /path/to/stork --quick --threads 1
    /path/to/venv/bin/python benchmarks/shd_vs_stork.py \\
        --original /path/to/surrogate-gradient-theory --stork /path/to/stork \\
        --json benchmarks/results/shd_vs_stork/shd_vs_stork.json \\
        --txt benchmarks/results/shd_vs_stork/shd_vs_stork.txt
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import importlib
import io
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from sgtheory.backends.allocator import restart_with_huge_pages  # light: no torch

METHODS = ("superspike", "stochasticsuperspike")
ORIGINAL_SCRIPT = Path("Classification") / "experiments" / "deep_convSNN.py"


def fail(message: str) -> None:
    """Print `error: message` on one line and exit with status 1."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--original", required=True, metavar="PATH", help="surrogate-gradient-theory checkout")
    add("--stork", required=True, metavar="PATH", help="stork checkout (holds stork/)")
    add("--threads", type=int, nargs="+", default=[1, 2], help="torch threads (default 1 2)")
    add("--reps", type=int, default=None, help="timed rounds after 1 warm-up (default 3)")
    add("--batch", type=int, default=None, help="batch size (default 400)")
    add("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    add("--json", metavar="PATH", help="write the results to PATH as JSON (atomically)")
    add("--txt", metavar="PATH", help="write the printed table to PATH (atomically)")
    add("--quick", action="store_true", help="smoke run: batch 50, 1 timed round")
    add(
        "--stork-allocator",
        choices=["glibc", "project"],
        default="glibc",
        help="stork's worker with glibc's defaults (default) or the project's settings",
    )
    add("--worker", choices=["project", "stork"], help=argparse.SUPPRESS)  # internal
    add("--method", choices=list(METHODS), help=argparse.SUPPRESS)  # the worker's
    args = parser.parse_args(argv)
    args.batch = args.batch if args.batch is not None else (50 if args.quick else 400)
    args.reps = args.reps if args.reps is not None else (1 if args.quick else 3)
    for name in ("batch", "reps"):
        if getattr(args, name) < 1:
            fail(f"--{name}={getattr(args, name)} is not valid; give a whole number >= 1")
    for t in args.threads:
        if t < 1:
            fail(f"--threads={t} is not valid; give whole numbers >= 1")
    original, stork = Path(args.original).resolve(), Path(args.stork).resolve()
    if not (original / ORIGINAL_SCRIPT).is_file():
        fail(
            f"--original={args.original} is not a surrogate-gradient-theory checkout "
            f"(no {ORIGINAL_SCRIPT} there)"
        )
    if not (stork / "stork" / "__init__.py").is_file():
        fail(f"--stork={args.stork} is not a stork checkout (no stork/__init__.py there)")
    args.original, args.stork = original, stork
    return args


def import_original(original: Path, stork_path: Path) -> tuple[Any, Any]:
    """(the original's deep_convSNN module, stork), imported from the given checkouts,
    which the stork worker finds on its PYTHONPATH (`Worker`)."""
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:
        stork = importlib.import_module("stork")
        module = importlib.import_module(ORIGINAL_SCRIPT.stem)
    except ImportError as err:
        fail(f"--original/--stork: importing the original code failed: {err}")
    if not Path(stork.__file__).resolve().is_relative_to(stork_path):
        fail(f"--stork={stork_path}: stork was imported from {stork.__file__} instead")
    return module, stork


def original_config(original: Path, method: str, batch: int) -> Any:
    """The original's Hydra config for SHD and `method` at `batch`, with its nb_steps set
    as its main() sets it (duration / time_step, truncated)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    config_dir = original / ORIGINAL_SCRIPT.parent / "config_stork"
    overrides = ["dataset=SHD", f"method={method}", f"batch_size={batch}", "device=cpu"]
    with warnings.catch_warnings():  # its defaults list lacks `_self_`: Hydra warns
        warnings.simplefilter("ignore", UserWarning)
        with initialize_config_dir(config_dir=str(config_dir), version_base=None):
            cfg = compose("config", [*overrides, "using_wandb=False", "plot=none"])
    with open_dict(cfg):
        cfg.dataset.nb_steps = int(cfg.dataset.duration / cfg.dataset.time_step)
    return cfg


def build_original(module: Any, cfg: Any) -> Any:
    """The original's model from its `set_up_model` (torch seeded with cfg.seed first, as
    its main() does); its printed chatter is dropped."""
    import torch

    torch.manual_seed(cfg.seed)
    with contextlib.redirect_stdout(io.StringIO()):
        model, _ = module.set_up_model(cfg, torch.device("cpu"), torch.float)
    return model


def original_step(model: Any, x: Any, y: Any) -> tuple[float, float]:
    """One training step of the stork model as its train_epoch runs one batch; returns
    (task loss, regulariser loss)."""
    model.train(True)
    output = model.forward_pass(x, cur_batch_size=len(x))
    total_loss = model.get_total_loss(output, y)
    losses = (model.out_loss.item(), model.reg_loss.item())
    model.optimizer_instance.zero_grad()
    total_loss.backward()
    model.optimizer_instance.step()
    model.apply_constraints()
    return losses


class ProjectNet:
    """This project's SHD network, optimiser, loss and penalty as its experiment builds them."""

    def __init__(self, method: str, batch: int) -> None:
        import bench_classification as bench

        from convsnn.training import regularizers

        self.cfg = bench.compose_config("shd", method)
        self.net, self.opt, self.lossf, self.x, self.y = bench.build(
            "shd", method, batch, "cpu", "float32"
        )
        self.regs = regularizers(self.cfg)

    def step(self) -> tuple[float, float]:
        """One training step as convsnn.training.train_epoch runs one batch; returns (task
        loss, penalty)."""
        from convsnn.training import check_step
        from sgtheory.regularizers import total_penalty

        out, counts = self.net(self.x, counts=True)
        task = self.lossf(out, self.y)
        penalty = total_penalty(self.regs, counts, counted=True) if self.regs else 0.0 * task
        loss = task + penalty
        del counts
        losses = (float(task.detach()), float(penalty.detach()))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        check_step(self.net, self.opt, "in the benchmark step", "the benchmark")
        return losses


def parameter_shapes(module: Any) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every parameter of `module`."""
    return [(name, tuple(p.shape)) for name, p in module.named_parameters()]


def compare_networks(model: Any, cfg: Any, project: ProjectNet) -> dict:
    """Layer and parameter shapes of both networks; exits if they differ."""
    from convsnn.model import network_shape

    geo = network_shape(project.cfg)
    mine = [(int(f), int(n)) for f, n in zip(project.cfg.dataset.nb_filters, geo.lengths[1:])]
    theirs = [tuple(int(s) for s in g.shape) for g in model.groups[1:-1]]
    ours, orig = parameter_shapes(project.net), parameter_shapes(model)
    sizes = (geo.nb_steps, geo.nb_units, geo.nb_classes)
    orig_sizes = (
        int(cfg.dataset.nb_steps),
        int(cfg.dataset.nb_inputs),
        int(cfg.dataset.nb_classes),
    )
    info = {
        "steps_units_classes": {"project": sizes, "original": orig_sizes},
        "hidden_shapes": {"project": mine, "original": theirs},
        "parameters": {"project": ours, "original": orig},
        "parameter_count": {
            "project": sum(_numel(s) for _, s in ours),
            "original": sum(_numel(s) for _, s in orig),
        },
    }
    agree = (
        sizes == orig_sizes
        and [tuple(m) for m in mine] == theirs
        and sorted(s for _, s in ours) == sorted(s for _, s in orig)
    )
    if not agree:
        fail(f"the networks differ: {json.dumps(info)}")
    return info


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def network_lines(info: dict) -> list[str]:
    """The two networks' shapes and parameters, side by side."""
    sizes = info["steps_units_classes"]
    lines = [
        f"  steps/inputs/classes: project {sizes['project']}, original {sizes['original']}",
        f"  hidden (filters, positions): project {info['hidden_shapes']['project']}, "
        f"original {info['hidden_shapes']['original']}",
    ]
    ours, orig = info["parameters"]["project"], info["parameters"]["original"]
    width = max(len(n) for n, _ in ours)
    for (n_a, s_a), (n_b, s_b) in zip(ours, orig, strict=True):
        lines.append(f"  {n_a:{width}s} {s_a!s:15s} | original {n_b:14s} {s_b}")
    count = info["parameter_count"]
    lines.append(f"  parameters: project {count['project']}, original {count['original']}")
    return lines


def settings_line(cfg: Any, project_cfg: Any) -> str:
    """The settings of both configs that shape the step (they should agree)."""
    reg = project_cfg.regularizer.upper_l2
    ours = (
        f"tau_mem {project_cfg.tau_mem}, tau_syn {project_cfg.tau_syn}, beta "
        f"{project_cfg.beta}, dt {project_cfg.dataset.dt}, nu {project_cfg.dataset.nu}, "
        f"{project_cfg.optimizer} lr {project_cfg.method.lr}, {project_cfg.loss_type}, "
        f"upper L2 {reg.strength}/{reg.threshold}"
    )
    theirs = (
        f"tau_mem {cfg.tau_mem}, tau_syn {cfg.tau_syn}, beta {cfg.beta}, dt "
        f"{cfg.dataset.dt}, nu {cfg.dataset.nu}, {cfg.optimizer} lr {cfg.method.lr}, "
        f"{cfg.loss_type}, upper L2 {cfg.regularizer.upperBoundL2Strength}/"
        f"{cfg.regularizer.upperBoundL2Threshold}"
    )
    return f"  settings: project {ours}\n            original {theirs}"


def write_atomic(path: str, text: str) -> None:
    """Write `text` to `path` (its folder made if missing): a temporary file, then rename."""
    import bench_classification as bench

    Path(path).resolve().parent.mkdir(parents=True, exist_ok=True)
    bench.write_atomic(path, text)


def timed(step: Any) -> tuple[float, tuple[float, float]]:
    """(seconds, losses) of one call of `step`."""
    start = time.perf_counter()
    losses = step()
    return time.perf_counter() - start, losses


HEADER = (
    f"{'method':21s} {'threads':>7s} {'project s/step':>14s} {'stork s/step':>12s} "
    f"{'stork/project':>13s}"
)


def worker(args: argparse.Namespace) -> None:
    """One network in this process: report its setup as one JSON line, then answer each
    line `<threads>` on stdin with one JSON line {seconds, losses} of a training step."""
    import torch

    from sgtheory.backends.allocator import retain_freed_memory

    kept = args.worker == "project" or args.stork_allocator == "project"
    kept = retain_freed_memory() if kept else False
    project = ProjectNet(args.method, args.batch)  # the inputs of both; its net if project
    hello = {"freed_memory_kept": kept, "glibc_tunables": os.environ.get("GLIBC_TUNABLES", "")}
    if args.worker == "project":
        step = project.step
    else:
        module, _ = import_original(args.original, args.stork)
        cfg = original_config(args.original, args.method, args.batch)
        model = build_original(module, cfg)
        hello["info"] = compare_networks(model, cfg, project)
        hello["settings"] = settings_line(cfg, project.cfg)
        x = project.x.reshape(project.x.shape[0], project.x.shape[1], -1)  # (B, T, 700)
        step = functools.partial(original_step, model, x, project.y)
        del project.net, project.opt
    print(json.dumps(hello), flush=True)
    for line in sys.stdin:
        torch.set_num_threads(int(line))
        seconds, losses = timed(step)
        print(json.dumps({"seconds": seconds, "losses": losses}), flush=True)


class Worker:
    """A worker process of this script (see `worker`), its environment chosen here."""

    def __init__(self, args: argparse.Namespace, side: str, method: str) -> None:
        env = dict(os.environ)
        if side == "stork" and args.stork_allocator == "glibc":  # as it runs by itself
            tunables = env.get("GLIBC_TUNABLES", "").split(":")
            env["GLIBC_TUNABLES"] = ":".join(t for t in tunables if "hugetlb" not in t)
        env["SGTHEORY_HUGEPAGES"] = "0"  # the parent's environment already decided
        if side == "stork":  # the original code and stork, from their checkouts
            paths = [str(args.stork), str(args.original / ORIGINAL_SCRIPT.parent)]
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [*paths, env.get("PYTHONPATH")]))
        argv = [sys.executable, __file__, "--original", str(args.original)]
        argv += ["--stork", str(args.stork), "--batch", str(args.batch)]
        argv += ["--stork-allocator", args.stork_allocator, "--worker", side]
        argv += ["--method", method]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self.hello = self._answer()

    def _answer(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            fail(f"a worker stopped (exit status {self.proc.wait()}); see its messages above")
        return json.loads(line)

    def step(self, threads: int) -> tuple[float, tuple[float, float]]:
        """(seconds, losses) of one training step at `threads` threads."""
        self.proc.stdin.write(f"{threads}\n")
        self.proc.stdin.flush()
        answer = self._answer()
        return answer["seconds"], tuple(answer["losses"])

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    import torch

    from sgtheory.backends.conv.algos import cpu_model

    machine = {
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "stork_allocator": args.stork_allocator,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "loadavg_start": os.getloadavg(),
        "original": str(args.original),
        "stork": str(args.stork),
    }
    stork_memory = {
        "glibc": "glibc's default allocator settings",
        "project": "the project's allocator settings too",
    }[args.stork_allocator]
    lines = [
        f"machine: {machine['cpu']}; torch CPU capability {machine['cpu_capability']}; "
        f"threads {' '.join(map(str, args.threads))}; torch {machine['torch']}; "
        f"{machine['date']}",
        f"SHD network, batch {args.batch}, float32 on the CPU; one worker process per network: "
        f"the project's with its allocator settings (GLIBC_TUNABLES="
        f"{machine['glibc_tunables'] or '(unset)'}, freed memory kept), stork's with "
        f"{stork_memory}; median of {args.reps} interleaved steps (project, then stork) after "
        f"1 warm-up step of each; load average at start "
        f"{', '.join(f'{v:.1f}' for v in machine['loadavg_start'])}",
    ]
    print("\n".join(lines), flush=True)
    report: dict = {"machine": machine, "batch": args.batch, "reps": args.reps}
    report.update(networks={}, rows=[])
    table = [HEADER]
    for method in args.methods:
        time_method(args, method, lines, table, report)
    print("\n".join(loss_lines(report)), flush=True)


def time_method(
    args: argparse.Namespace, method: str, lines: list, table: list, report: dict
) -> None:
    """Both networks of `method` in their workers, timed at every thread count; appends to
    `lines`, `table` and `report` and writes the files after each row."""
    workers = {side: Worker(args, side, method) for side in ("project", "stork")}
    info, hello = workers["stork"].hello["info"], workers["stork"].hello
    report["workers"] = {side: w.hello.get("glibc_tunables") for side, w in workers.items()}
    first: dict = {}
    block = [f"{method}:", *network_lines(info), hello["settings"]]
    lines += block
    print("\n".join([*block, HEADER]), flush=True)
    for threads in args.threads:
        times: dict = {"project": [], "stork": []}
        losses: dict = {"project": [], "stork": []}
        for rep in range(args.reps + 1):  # the first: warm-up
            for name, w in workers.items():
                seconds, loss = w.step(threads)
                first.setdefault(name, loss)
                losses[name].append(loss)
                if rep > 0:
                    times[name].append(seconds)
        medians = {k: statistics.median(v) for k, v in times.items()}
        row = {"method": method, "threads": threads}
        row.update(project_s_per_step=medians["project"], stork_s_per_step=medians["stork"])
        row.update(stork_over_project=medians["stork"] / medians["project"])
        row.update(project_times=times["project"], stork_times=times["stork"])
        row.update(project_losses=losses["project"], stork_losses=losses["stork"])
        report["rows"].append(row)
        table.append(
            f"{method:21s} {threads:7d} {medians['project']:14.3f} "
            f"{medians['stork']:12.3f} {row['stork_over_project']:12.1f}x"
        )
        print(table[-1], flush=True)
        report["machine"]["loadavg_end"] = os.getloadavg()
        report["networks"][method] = {**info, "first_step_losses": first}
        if args.json:
            write_atomic(args.json, json.dumps(report, indent=1) + "\n")
        if args.txt:
            write_atomic(args.txt, "\n".join(lines + ["", *table, *loss_lines(report)]) + "\n")
    for w in workers.values():
        w.close()


def loss_lines(report: dict) -> list[str]:
    """The first-step losses (task, penalty) of both networks for every method."""
    lines = ["first-step losses (task, penalty), different initial weights:"]
    for method, info in report["networks"].items():
        f = info["first_step_losses"]
        lines.append(
            f"  {method:21s} project {f['project'][0]:.4f}, {f['project'][1]:.4f}; "
            f"stork {f['stork'][0]:.4f}, {f['stork'][1]:.4f}"
        )
    return lines


if __name__ == "__main__":
    restart_with_huge_pages()  # as the experiments run (SGTHEORY_HUGEPAGES=0: without)
    main()
