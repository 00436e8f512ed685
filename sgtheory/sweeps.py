"""Hydra multirun sweeps: launcher helpers and `collect`, which turns a sweep folder into tables
and figures of mean and spread over seeds per method (see docs/sweeps.md).

Launcher side: the resolvers `sgt.n_jobs` / `sgt.cpus` used by the launcher presets
(`hydra/launcher=joblib_local|slurm|slurm_local`) and `SweepCallback`, which those presets install
to register the resolvers and to record Hydra's view of each job in `job_status.json`.

Collect side: a run folder is any folder holding `.hydra/` or `results.json`. Runs are grouped by
method name + config name + their command-line overrides minus `seed` and run-control settings
(threads, progress, wandb, ...). Within a group the saved configs are compared; any difference
is reported ("mixed"), never averaged over silently.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = "results.json"
STATUS = "status.json"  # written by the Spike_train_matching runner
JOB_STATUS = "job_status.json"  # written by SweepCallback
SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
# Settings that do not change a run's result: ignored when grouping runs and comparing configs.
RUN_CONTROL = {
    "seed",
    "threads",
    "num_threads",
    "progress",
    "resume",
    "max_chunks",
    "stop_after_epochs",
}
RUN_CONTROL_PREFIXES = ("wandb.", "plotting.", "hydra.", "hydra/")
COMPLETED = "completed"


class CollectError(ValueError):
    """A sweep folder cannot be collected (does not exist, holds no runs, ...)."""


# --------------------------------------------------------------------------- launcher side


def usable_cores() -> int:
    """Cores this process may run on (the CPU affinity mask, e.g. a SLURM or taskset limit)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def n_jobs_for(threads: Any, cores: int | None = None) -> int:
    """Parallel jobs so that jobs x threads per job does not exceed the usable cores."""
    if threads is None or str(threads).lower() in ("none", "null", ""):
        raise ValueError(
            "hydra/launcher=joblib_local needs the torch threads per job: add threads=1 "
            "(Classification) or num_threads=1 (Spike_train_matching) to the command line, or "
            "set hydra.launcher.n_jobs=<N> yourself; threads=null would give every job all cores"
        )
    threads = int(threads)
    if threads < 1:
        raise ValueError(f"threads per job must be >= 1, got {threads}")
    cores = usable_cores() if cores is None else int(cores)
    return max(1, cores // threads)


def cpus_for(threads: Any, default: Any) -> int:
    """CPUs to ask the scheduler for: the job's threads if set, else `default`."""
    if threads is None or str(threads).lower() in ("none", "null", ""):
        return int(default)
    return int(threads)


def register_resolvers() -> None:
    """Register `sgt.n_jobs` and `sgt.cpus` with OmegaConf (idempotent)."""
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("sgt.n_jobs", n_jobs_for, replace=True)
    OmegaConf.register_new_resolver("sgt.cpus", cpus_for, replace=True)


try:  # the resolvers must exist before Hydra instantiates the launcher
    register_resolvers()
except ImportError:  # pragma: no cover - omegaconf is only needed for sweeps
    pass

try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = object  # type: ignore[misc,assignment]


class SweepCallback(_HydraCallback):  # type: ignore[misc,valid-type]
    """Installed by the launcher presets. Importing it registers the resolvers; in each job it
    writes job_status.json (running -> completed/failed, error, wall time, host) in the run
    folder, so a job that raised is recorded even if the script wrote nothing itself."""

    def __init__(self, **kwargs: Any) -> None:
        register_resolvers()
        self._start: float | None = None

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        """Export the repository folders on sys.path (the entry scripts add them) through
        PYTHONPATH, so job processes started by submitit (locally, or by sbatch, which passes
        the environment on) import the same packages, e.g. Classification's convsnn."""
        repo = Path(__file__).resolve().parents[1]
        ours = []
        for entry in sys.path:
            try:
                path = Path(entry or ".").resolve()
            except OSError:  # pragma: no cover
                continue
            if path.is_dir() and (path == repo or repo in path.parents):
                ours.append(str(path))
        old = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(ours + old))

    @staticmethod
    def _path(config: Any) -> Path:
        return Path(str(config.hydra.runtime.output_dir)) / JOB_STATUS

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        self._start = time.time()
        _write_json(
            self._path(config),
            {
                "status": "running",
                "start": self._start,
                "host": os.uname().nodename,
                "pid": os.getpid(),
            },
        )

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        end = time.time()
        failed = getattr(job_return.status, "name", "") == "FAILED"
        record = {
            "status": "failed" if failed else COMPLETED,
            "start": self._start,
            "end": end,
            "wall_s": None if self._start is None else end - self._start,
            "host": os.uname().nodename,
            "pid": os.getpid(),
        }
        if failed:
            err = getattr(job_return, "_return_value", None)
            record["error"] = f"{type(err).__name__}: {err}"
        _write_json(self._path(config), record)


def _write_json(path: Path, obj: Any) -> None:
    from .runs import write_json_atomic

    write_json_atomic(path, obj)


# ----------------------------------------------------------------------------- collect side


@dataclass
class Experiment:
    """How to read one experiment's results.json: scalars, curves and figures."""

    name: str
    metrics: Callable[[dict], dict[str, Any]]
    hyper: Callable[[dict], dict[str, Any]]
    curves: Callable[[Path, dict], dict[str, np.ndarray]]
    figures: Callable[[list[Group], Path], list[Path]]
    key_metrics: tuple[str, ...]


@dataclass
class Run:
    """One run folder (or one expected job with no folder) and what could be read from it."""

    path: Path | None
    overrides: list[str]
    status: str
    config: dict | None = None
    config_name: str | None = None
    results: dict | None = None
    error: str | None = None
    note: str | None = None
    wall_s: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    hyper: dict[str, Any] = field(default_factory=dict)
    curves: dict[str, np.ndarray] = field(default_factory=dict)
    inferred_method: str | None = None

    @property
    def seed(self) -> Any:
        for o in self.overrides:
            key, _, value = o.partition("=")
            if key.lstrip("+~") == "seed":
                return _parse_scalar(value)
        return (self.config or {}).get("seed")

    @property
    def method(self) -> str:
        name = ((self.config or {}).get("method") or {}).get("name")
        if name is None:
            for o in self.overrides:
                key, _, value = o.partition("=")
                if key.lstrip("+~") == "method":
                    return value
            return self.inferred_method or "unknown"
        return str(name)

    @property
    def group_key(self) -> tuple:
        return (self.method, self.config_name or "config", tuple(sorted(group_overrides(self))))


@dataclass
class Group:
    """Runs that differ only in seed (and run-control settings)."""

    key: tuple
    runs: list[Run]
    mixed: list[str] = field(default_factory=list)
    common: frozenset[str] = frozenset()  # overrides every group shares (shown once)

    @property
    def label(self) -> str:
        """Method plus the group's overrides that are not shared by every group of the sweep."""
        method, config_name, overrides = self.key
        extra = [] if config_name == "config" else [f"--config-name={config_name}"]
        extra += [o for o in overrides if o not in self.common]
        return method + (f" [{', '.join(extra)}]" if extra else "")

    @property
    def completed(self) -> list[Run]:
        return [r for r in self.runs if r.status == COMPLETED]


def _parse_scalar(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return text


def _is_run_control(key: str) -> bool:
    key = key.lstrip("+~")
    return key in RUN_CONTROL or key.startswith(RUN_CONTROL_PREFIXES)


def group_overrides(run: Run) -> list[str]:
    """The run's overrides that define its group: minus seed, method and run-control ones."""
    out = []
    for o in run.overrides:
        key = o.partition("=")[0].lstrip("+~")
        if _is_run_control(key) or key == "method":
            continue
        out.append(o.lstrip("+"))
    return out


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {'a.b.c': value}."""
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _read_yaml(path: Path) -> Any:
    import yaml

    with open(path) as fh:
        return yaml.safe_load(fh)


def _read_json(path: Path) -> tuple[Any, str | None]:
    try:
        with open(path) as fh:
            return json.load(fh), None
    except (OSError, ValueError) as exc:
        return None, f"{path.name} unreadable: {type(exc).__name__}: {exc}"


def find_run_dirs(root: Path) -> list[Path]:
    """Every folder under `root` (itself included) holding `.hydra/` or `results.json`."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        if ".hydra" in dirnames or RESULTS in filenames:
            found.append(Path(dirpath))
            dirnames[:] = []  # a run folder holds no further runs
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "wandb")
    return sorted(found)


def _age(path: Path) -> str:
    seconds = max(0.0, time.time() - path.stat().st_mtime)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def load_run(path: Path, exp: Experiment) -> Run:
    """Read one run folder: overrides, config, status, metrics and curves."""
    hydra_dir = path / ".hydra"
    overrides: list[str] = []
    config: dict | None = None
    config_name = None
    problems = []
    if hydra_dir.is_dir():
        try:
            overrides = [str(o) for o in (_read_yaml(hydra_dir / "overrides.yaml") or [])]
        except (OSError, ValueError) as exc:
            problems.append(f".hydra/overrides.yaml unreadable: {exc}")
        try:
            config = _read_yaml(hydra_dir / "config.yaml")
        except (OSError, ValueError) as exc:
            problems.append(f".hydra/config.yaml unreadable: {exc}")
        try:
            hydra_cfg = _read_yaml(hydra_dir / "hydra.yaml") or {}
            config_name = hydra_cfg.get("hydra", {}).get("job", {}).get("config_name")
        except (OSError, ValueError):
            pass
    run = Run(
        path=path, overrides=overrides, status="missing", config=config, config_name=config_name
    )
    job, job_err = (None, None)
    if (path / JOB_STATUS).exists():
        job, job_err = _read_json(path / JOB_STATUS)
        if isinstance(job, dict):
            run.wall_s = job.get("wall_s")
    if (path / RESULTS).exists():
        results, err = _read_json(path / RESULTS)
        if err or not isinstance(results, dict):
            run.status, run.error = "corrupt", err or "results.json is not a JSON object"
        else:
            run.results = results
            run.status = str(results.get("status", "unknown"))
            run.error = results.get("error")
            if run.config is None and isinstance(results.get("config"), dict):
                run.config = results["config"]
    elif (path / STATUS).exists():
        status, err = _read_json(path / STATUS)
        if err or not isinstance(status, dict):
            run.status, run.error = "corrupt", err or "status.json is not a JSON object"
        else:
            run.status = str(status.get("status", "unknown"))
            run.error = status.get("error")
            if run.status == COMPLETED:  # finished but results.json is gone
                run.status, run.note = "missing", "status.json says completed, no results.json"
            elif "epoch" in status:
                run.note = f"epoch {status.get('epoch')}/{status.get('nb_epochs')}"
    elif isinstance(job, dict):
        run.status = str(job.get("status", "missing"))
        run.error = job.get("error")
        if run.status == COMPLETED:
            run.status, run.note = "missing", "job ended but wrote no results.json"
    elif job_err:
        run.status, run.error = "corrupt", job_err
    if run.status == "running":
        newest = max(
            (p for p in (path / RESULTS, path / STATUS, path / JOB_STATUS) if p.exists()),
            key=lambda p: p.stat().st_mtime,
            default=None,
        )
        if newest is not None:
            age = f"last update {_age(newest)} ago"
            run.note = f"{run.note}; {age}" if run.note else age
    if problems:
        run.error = "; ".join(filter(None, [run.error, *problems]))
    if run.config is not None:
        run.hyper = exp.hyper(run.config)
    if run.results is not None and run.status == COMPLETED:
        try:
            run.metrics = exp.metrics(run.results)
            run.curves = exp.curves(path, run.results)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            run.status = "corrupt"
            run.error = f"results.json lacks expected fields: {type(exc).__name__}: {exc}"
        if run.wall_s is None:
            run.wall_s = run.metrics.get("run_time_s")
    return run


def expected_jobs(root: Path) -> list[list[str]]:
    """The jobs each multirun.yaml under `root` asked for (Hydra's own sweep expansion)."""
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser
    except ImportError:  # pragma: no cover
        return []
    jobs: list[list[str]] = []
    for path in sorted(root.rglob("multirun.yaml")):
        try:
            task = _read_yaml(path)["hydra"]["overrides"]["task"]
            parser = OverridesParser.create()
            parsed = parser.parse_overrides(overrides=[str(t) for t in task])
            for batch in BasicSweeper.split_arguments(parsed, None):
                jobs.extend(list(job) for job in batch)
        except Exception as exc:  # noqa: BLE001 - an odd multirun.yaml must not stop collect
            print(f"warning: could not expand {path}: {exc}", file=sys.stderr)
    return jobs


def collect_runs(root: str | Path, exp: Experiment) -> list[Run]:
    """Every run under `root`, plus a 'not started' entry for each expected job with no folder."""
    root = Path(root)
    if not root.exists():
        raise CollectError(f"{root} does not exist")
    if not root.is_dir():
        raise CollectError(f"{root} is not a folder")
    runs = [load_run(p, exp) for p in find_run_dirs(root)]
    seen = {frozenset(r.overrides) for r in runs}
    for job in expected_jobs(root):
        if frozenset(job) not in seen:
            seen.add(frozenset(job))
            runs.append(
                Run(
                    path=None,
                    overrides=job,
                    status="not started",
                    note="in multirun.yaml but no run folder",
                )
            )
    if not runs:
        raise CollectError(
            f"no runs under {root}: a run folder holds .hydra/ or results.json "
            "(give the sweep folder, e.g. Runs/<...>, or a folder above it)"
        )
    return runs


def group_runs(runs: Iterable[Run]) -> list[Group]:
    """Group runs by method, config name and overrides minus seed; flag config differences."""
    runs = list(runs)
    # a job that never started has no config: borrow method and config name from its seeds
    known = {
        tuple(sorted(group_overrides(r))): (r.method, r.config_name)
        for r in runs
        if r.config is not None
    }
    for run in runs:
        if run.config is None and tuple(sorted(group_overrides(run))) in known:
            run.inferred_method, run.config_name = known[tuple(sorted(group_overrides(run)))]
    groups: dict[tuple, Group] = {}
    for run in runs:
        groups.setdefault(run.group_key, Group(run.group_key, [])).runs.append(run)
    for group in groups.values():
        flat = [
            {k: v for k, v in flatten(r.config).items() if not _is_run_control(k)}
            for r in group.runs
            if r.config is not None
        ]
        keys = set().union(*flat) if flat else set()
        group.mixed = sorted(k for k in keys if len({json.dumps(f.get(k)) for f in flat}) > 1)
        group.runs.sort(key=lambda r: (str(r.seed), str(r.path)))
    common = frozenset.intersection(*(frozenset(k[2]) for k in groups)) if groups else frozenset()
    for group in groups.values():
        group.common = common
    return sorted(groups.values(), key=lambda g: g.label)


def stats(values: Iterable[Any]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof=1; nan for n < 2) and count of finite values."""
    xs = [float(v) for v in values if _finite(v)]
    n = len(xs)
    if n == 0:
        return math.nan, math.nan, 0
    mean = float(np.mean(xs))
    std = float(np.std(xs, ddof=1)) if n > 1 else math.nan
    return mean, std, n


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return "n/a" if not math.isfinite(x) else f"{x:.6g}"
    return "" if x is None else str(x)


def write_csv(groups: list[Group], path: Path) -> None:
    """summary.csv: one row per run (also failed, missing and not started ones)."""
    runs = [r for g in groups for r in g.runs]
    metric_cols = list(dict.fromkeys(k for r in runs for k in r.metrics))
    hyper_cols = list(dict.fromkeys(k for r in runs for k in r.hyper))
    cols = [
        "group",
        "method",
        "seed",
        *hyper_cols,
        "overrides",
        "status",
        *metric_cols,
        "wall_time_s",
        "note",
        "error",
        "run_dir",
    ]
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(cols)
        for g in groups:
            for r in g.runs:
                row = {
                    "group": g.label,
                    "method": r.method,
                    "seed": r.seed,
                    "overrides": " ".join(r.overrides),
                    "status": r.status,
                    "wall_time_s": r.wall_s,
                    "note": r.note,
                    "error": r.error,
                    "run_dir": "" if r.path is None else str(r.path),
                    **r.hyper,
                    **r.metrics,
                }
                writer.writerow([_csv_value(row.get(c)) for c in cols])


def _csv_value(v: Any) -> Any:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return v


def problems(groups: list[Group]) -> list[str]:
    """One line per run that is not completed and per group with mixed configs."""
    lines = []
    for g in groups:
        if g.mixed:
            lines.append(f"MIXED group {g.label}: its runs' configs differ in {', '.join(g.mixed)}")
        for r in g.runs:
            if r.status == COMPLETED:
                continue
            where = r.path if r.path is not None else " ".join(r.overrides)
            detail = "; ".join(filter(None, [r.note, r.error]))
            lines.append(f"{r.status.upper()}: {where}" + (f" ({detail})" if detail else ""))
    return lines


def write_markdown(
    groups: list[Group], path: Path, root: Path, exp: Experiment, figures: list[Path]
) -> None:
    """summary.md: per group (method), mean, std and number of seeds of each metric."""
    runs = [r for g in groups for r in g.runs]
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.status] = counts.get(r.status, 0) + 1
    out = [f"# {exp.name} sweep summary", "", f"Sweep folder: `{root}`", ""]
    out.append(
        f"{len(runs)} runs in {len(groups)} groups: "
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        + ". Means and standard deviations (sample, ddof=1) over completed runs; "
        "n = number of seeds with a finite value."
    )
    if groups and groups[0].common:
        shared = " ".join(sorted(groups[0].common))
        out += ["", f"Overrides shared by every group (besides seed): `{shared}`"]
    probs = problems(groups)
    if probs:
        out += ["", "## Problems", ""] + [f"- {p}" for p in probs]
    out += ["", "## Comparison", ""]
    keys = [k for k in exp.key_metrics if any(k in r.metrics for r in runs)]
    out.append("| group | " + " | ".join(keys) + " |")
    out.append("|---|" + "---|" * len(keys))
    for g in groups:
        cells = []
        for k in keys:
            m, s, n = stats(r.metrics.get(k) for r in g.completed)
            cells.append(f"{_fmt(m)} ± {_fmt(s)} (n={n})")
        out.append(f"| {g.label} | " + " | ".join(cells) + " |")
    for g in groups:
        seeds = ", ".join(str(r.seed) for r in g.completed) or "none"
        out += [
            "",
            f"## {g.label}",
            "",
            f"Completed seeds: {seeds} ({len(g.completed)} of {len(g.runs)} runs).",
        ]
        if g.mixed:
            out.append(f"**Warning: runs in this group differ in {', '.join(g.mixed)}.**")
        metric_keys = list(dict.fromkeys(k for r in g.completed for k in r.metrics))
        metric_keys = [
            k for k in metric_keys if any(_finite(r.metrics.get(k)) for r in g.completed)
        ]
        if not metric_keys:
            continue
        out += ["", "| metric | mean | std | n |", "|---|---|---|---|"]
        for k in metric_keys:
            m, s, n = stats(r.metrics.get(k) for r in g.completed)
            out.append(f"| {k} | {_fmt(m)} | {_fmt(s)} | {n} |")
    if figures:
        out += ["", "## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures]
    path.write_text("\n".join(out) + "\n")


# ---------------------------------------------------------------------------- plotting


def _band(ax: Any, curves: list[np.ndarray], label: str, color: Any, **kw: Any) -> None:
    """Mean over seeds with a ±1 std band; curves of unequal length are cut to the shortest."""
    if not curves:
        return
    n = min(len(c) for c in curves)
    arr = np.stack([np.asarray(c[:n], dtype=float) for c in curves])
    x = np.arange(1, n + 1)
    mean = np.nanmean(arr, axis=0)
    ax.plot(x, mean, color=color, label=f"{label} (n={len(curves)})", **kw)
    if len(curves) > 1:
        std = np.nanstd(arr, axis=0, ddof=1)
        ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, lw=0)


def _colors(n: int) -> list[Any]:
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10")
    return [cmap(i % 10) for i in range(n)]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curve_figure(
    groups: list[Group], path: Path, panels: list[tuple[str, str, str | None]], title: str
) -> Path | None:
    """One panel per (curve, y label, dashed 'other' curve): mean ± std over seeds per group."""
    plt = _plt()
    if not any(r.curves for g in groups for r in g.completed):
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (key, ylabel, other) in zip(axes[0], panels):
        for g, color in zip(groups, _colors(len(groups))):
            _band(ax, [r.curves[key] for r in g.completed if key in r.curves], g.label, color)
            if other:
                _band(
                    ax,
                    [r.curves[other] for r in g.completed if other in r.curves],
                    f"{g.label}, other",
                    color,
                    ls="--",
                    lw=1,
                )
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
    axes[0][0].legend(fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def layer_bar_figure(
    groups: list[Group], path: Path, prefixes: list[tuple[str, str]], ylabel: str, title: str
) -> Path | None:
    """Bars of mean ± std per layer per group (dots: single seeds), one panel per prefix."""
    plt = _plt()
    layers = sorted(
        {
            int(k.rsplit("_l", 1)[1])
            for g in groups
            for r in g.completed
            for k in r.metrics
            if any(k.startswith(p + "_l") for p, _ in prefixes)
        }
    )
    if not layers:
        return None
    fig, axes = plt.subplots(1, len(prefixes), figsize=(4.5 * len(prefixes), 3.4), squeeze=False)
    width = 0.8 / max(len(groups), 1)
    for ax, (prefix, panel) in zip(axes[0], prefixes):
        for i, (g, color) in enumerate(zip(groups, _colors(len(groups)))):
            for j, layer in enumerate(layers):
                vals = [r.metrics.get(f"{prefix}_l{layer}") for r in g.completed]
                m, s, n = stats(vals)
                x = j + (i - (len(groups) - 1) / 2) * width
                ax.bar(
                    x,
                    0 if not math.isfinite(m) else m,
                    width * 0.9,
                    color=color,
                    yerr=None if not math.isfinite(s) else s,
                    capsize=2,
                    label=g.label if j == 0 else None,
                )
                pts = [v for v in vals if _finite(v)]
                ax.plot([x] * len(pts), pts, "k.", ms=3)
        ax.set_xticks(range(len(layers)), [f"hidden {k}" for k in layers])
        ax.set_ylabel(ylabel)
        ax.set_title(panel, fontsize=9)
    axes[0][0].legend(fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------ experiments


def _get(d: Any, *keys: Any) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _class_metrics(res: dict) -> dict[str, Any]:
    test, other, hist = res["test"], res.get("other") or {}, res.get("history") or {}
    out: dict[str, Any] = {
        "test_acc": test["test_acc"],
        "test_loss": test.get("test_loss"),
        "other_method": other.get("method"),
        "other_test_acc": other.get("test_acc"),
        "other_test_loss": other.get("test_loss"),
        "final_train_acc": (hist.get("train_acc") or [None])[-1],
        "final_valid_acc": (hist.get("valid_acc") or [None])[-1],
        "best_valid_acc": max((v for v in hist.get("valid_acc") or [] if _finite(v)), default=None),
    }
    for name, entry in (("", test), ("other_", other)):
        for key, label in (("test_rates", "rate"), ("fano", "fano")):
            for i, v in enumerate(entry.get(key) or []):
                out[f"{name}{label}_l{i + 1}"] = v
    out["run_time_s"] = res.get("run_time_s")
    return out


def _class_hyper(cfg: dict) -> dict[str, Any]:
    return {"lr": _get(cfg, "method", "lr")}


def _class_curves(path: Path, res: dict) -> dict[str, np.ndarray]:
    hist = res.get("history") or {}
    return {
        k: np.asarray([np.nan if v is None else v for v in hist[k]], dtype=float)
        for k in ("train_acc", "valid_acc", "train_loss", "valid_loss")
        if hist.get(k)
    }


def _class_figures(groups: list[Group], out: Path) -> list[Path]:
    figs = [
        curve_figure(
            groups,
            out / "accuracy.png",
            [("train_acc", "training accuracy", None), ("valid_acc", "validation accuracy", None)],
            "Accuracy over epochs: mean ± std over seeds",
        ),
        layer_bar_figure(
            groups,
            out / "fano.png",
            [
                ("fano", "evaluated with the trained method"),
                ("other_fano", "evaluated with the other method"),
            ],
            "Fano factor",
            "Fano factor per hidden layer (test sample repeats)",
        ),
    ]
    return [f for f in figs if f is not None]


def _stm_metrics(res: dict) -> dict[str, Any]:
    final = _get(res, "losses", "final")
    if not isinstance(final, dict):
        raise KeyError("losses.final")
    last10 = _get(res, "losses", "mean_last_10") or {}
    out: dict[str, Any] = {
        "final_vRd": final["loss_hist_vRd"],
        "final_L2": final.get("loss_hist_L2"),
        "other_final_vRd": final.get("loss_hist_vRd_valid"),
        "other_final_L2": final.get("loss_hist_L2_valid"),
        "mean_last_10_vRd": last10.get("loss_hist_vRd"),
        "other_mean_last_10_vRd": last10.get("loss_hist_vRd_valid"),
    }
    for name, mode in (("", "train"), ("other_", "valid")):
        s = _get(res, "spike_stats", "final_epoch", mode) or {}
        for layer in ("hidden", "output"):
            out[f"{name}rate_{layer}_hz"] = s.get(f"rate_{layer}_hz")
            out[f"{name}fano_{layer}"] = s.get(f"fano_{layer}")
    out["run_time_s"] = _get(res, "timing", "run_time_s")
    return out


def _stm_hyper(cfg: dict) -> dict[str, Any]:
    return {
        "lr_h": _get(cfg, "dataset_method", "lr_h"),
        "lr_o": _get(cfg, "dataset_method", "lr_o"),
    }


def _stm_curves(path: Path, res: dict) -> dict[str, np.ndarray]:
    """Loss histories from the run's data/<name>_<epoch_end>.npy chunks, in epoch order."""
    out = {}
    for name in ("loss_hist_vRd", "loss_hist_L2", "loss_hist_vRd_valid", "loss_hist_L2_valid"):
        chunks = []
        for p in (path / "data").glob(f"{name}_*.npy"):
            end = p.stem[len(name) + 1 :]
            if end.isdigit():
                chunks.append((int(end), p))
        if chunks:
            out[name] = np.concatenate([np.load(p).ravel() for _, p in sorted(chunks)])
    return out


def _stm_figures(groups: list[Group], out: Path) -> list[Path]:
    fig = curve_figure(
        groups,
        out / "losses.png",
        [
            ("loss_hist_vRd", "van Rossum distance", "loss_hist_vRd_valid"),
            ("loss_hist_L2", "L2 distance", "loss_hist_L2_valid"),
        ],
        "Spike-train matching: mean ± std over seeds (dashed: evaluated with the other method)",
    )
    return [fig] if fig is not None else []


EXPERIMENTS: dict[str, Experiment] = {
    "classification": Experiment(
        "Classification",
        _class_metrics,
        _class_hyper,
        _class_curves,
        _class_figures,
        ("test_acc", "other_test_acc", "final_valid_acc", "fano_l1", "other_fano_l1"),
    ),
    "spike_train_matching": Experiment(
        "Spike train matching",
        _stm_metrics,
        _stm_hyper,
        _stm_curves,
        _stm_figures,
        ("final_vRd", "final_L2", "other_final_vRd", "other_final_L2", "rate_hidden_hz"),
    ),
}


# ------------------------------------------------------------------------------- entry


def collect(
    root: str | Path, experiment: str, out: str | Path | None = None, figures: bool = True
) -> dict[str, Any]:
    """Collect every run under `root` into summary.csv, summary.md and figures in `out`."""
    if experiment not in EXPERIMENTS:
        raise CollectError(f"experiment={experiment!r}; choose one of: {', '.join(EXPERIMENTS)}")
    exp = EXPERIMENTS[experiment]
    root = Path(root)
    runs = collect_runs(root, exp)
    groups = group_runs(runs)
    out = Path(out) if out is not None else root
    out.mkdir(parents=True, exist_ok=True)
    write_csv(groups, out / SUMMARY_CSV)
    figs = exp.figures(groups, out) if figures else []
    write_markdown(groups, out / SUMMARY_MD, root, exp, figs)
    return {
        "groups": groups,
        "runs": runs,
        "problems": problems(groups),
        "files": [out / SUMMARY_CSV, out / SUMMARY_MD, *figs],
    }


def main(experiment: str, argv: list[str] | None = None) -> int:
    """Command line of the per-experiment `collect.py` wrappers."""
    parser = argparse.ArgumentParser(
        description=f"Collect a {EXPERIMENTS[experiment].name} sweep: summary.csv, summary.md "
        "and figures of mean and spread over seeds per method."
    )
    parser.add_argument("folder", help="sweep folder (or any folder above its run folders)")
    parser.add_argument("--out", default=None, help="where to write (default: the folder)")
    parser.add_argument("--no-figures", action="store_true", help="tables only")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit with status 1 if any run is not completed or a group is mixed",
    )
    args = parser.parse_args(argv)
    try:
        res = collect(args.folder, experiment, args.out, figures=not args.no_figures)
    except CollectError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    runs = res["runs"]
    done = sum(r.status == COMPLETED for r in runs)
    print(f"{len(runs)} runs in {len(res['groups'])} groups, {done} completed")
    for line in res["problems"]:
        print(f"  {line}")
    for p in res["files"]:
        print(f"wrote {p}")
    return 1 if args.strict and res["problems"] else 0


__all__ = [
    "CollectError",
    "Experiment",
    "Group",
    "Run",
    "SweepCallback",
    "collect",
    "collect_runs",
    "cpus_for",
    "expected_jobs",
    "find_run_dirs",
    "group_runs",
    "main",
    "n_jobs_for",
    "stats",
    "usable_cores",
]
