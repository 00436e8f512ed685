"""Collect side of a sweep: turn a sweep folder into summary.csv, summary.md and figures of mean
and spread over seeds per group (see docs/sweeps.md).

A run folder is any folder holding `.hydra/` or `results.json`. Runs are grouped by method name +
config name + their command-line overrides minus `seed` and run-control settings (threads,
progress, wandb, ...). Within a group the saved configs are compared; any difference is reported
("mixed"), never averaged over silently.

This module knows nothing about a particular experiment: an `Experiment` says how to read its
results.json (scalars, hyperparameters, curves) and which figures to draw. Each experiment's
`collect.py` defines one and calls `main(experiment)`.
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

from .launch import COMPLETED, JOB_STATUS

RESULTS = "results.json"
STATUS = "status.json"  # written by the Spike_train_matching runner
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


class CollectError(ValueError):
    """A sweep folder cannot be collected (does not exist, holds no runs, ...)."""


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
    xs = [float(v) for v in values if finite(v)]
    n = len(xs)
    if n == 0:
        return math.nan, math.nan, 0
    mean = float(np.mean(xs))
    std = float(np.std(xs, ddof=1)) if n > 1 else math.nan
    return mean, std, n


def finite(v: Any) -> bool:
    """A real, finite number (not None, not a bool, not nan or inf)."""
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
        metric_keys = [k for k in metric_keys if any(finite(r.metrics.get(k)) for r in g.completed)]
        if not metric_keys:
            continue
        out += ["", "| metric | mean | std | n |", "|---|---|---|---|"]
        for k in metric_keys:
            m, s, n = stats(r.metrics.get(k) for r in g.completed)
            out.append(f"| {k} | {_fmt(m)} | {_fmt(s)} | {n} |")
    if figures:
        out += ["", "## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures]
    path.write_text("\n".join(out) + "\n")


def nested_get(d: Any, *keys: Any) -> Any:
    """d[k1][k2]...; None where a key is missing or a level is not a dict."""
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


# ------------------------------------------------------------------------------- entry


def collect(
    root: str | Path, experiment: Experiment, out: str | Path | None = None, figures: bool = True
) -> dict[str, Any]:
    """Collect every run under `root` into summary.csv, summary.md and figures in `out`.

    `experiment` is the Experiment defined by the experiment's own collect.py."""
    if not isinstance(experiment, Experiment):
        raise TypeError(
            f"experiment must be an Experiment (defined in the experiment's collect.py), "
            f"got {experiment!r}"
        )
    exp = experiment
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


def main(experiment: Experiment, argv: list[str] | None = None) -> int:
    """Command line of the per-experiment `collect.py` scripts."""
    parser = argparse.ArgumentParser(
        description=f"Collect a {experiment.name} sweep: summary.csv, summary.md "
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
    "COMPLETED",
    "JOB_STATUS",
    "RESULTS",
    "STATUS",
    "SUMMARY_CSV",
    "SUMMARY_MD",
    "CollectError",
    "Experiment",
    "Group",
    "Run",
    "collect",
    "collect_runs",
    "expected_jobs",
    "find_run_dirs",
    "finite",
    "flatten",
    "group_overrides",
    "group_runs",
    "load_run",
    "main",
    "nested_get",
    "problems",
    "stats",
    "write_csv",
    "write_markdown",
]
