"""Summarizing a sweep: group runs that differ only in seed, mean and spread per group, and write
summary.csv (one row per run), summary.md (per group, with a problems list) and the experiment's
figures (see docs/sweeps.md).

Runs are grouped by method name + config name + their command-line overrides minus `seed` and
run-control settings (threads, progress, wandb, ...). Within a group the saved configs are
compared; any difference is reported ("mixed"), never averaged over silently.
`collect_sweep(folder, experiment)` does all of it; `main(experiment, argv)` is the command line
of each experiment's `collect.py`.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from sgruns.sweeps.folders import (
    CollectError,
    Experiment,
    Group,
    Run,
    collect_runs,
    flatten,
    group_overrides,
    is_run_control,
)
from sgruns.sweeps.launch import COMPLETED

SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"


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
            {k: v for k, v in flatten(r.config).items() if not is_run_control(k)}
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
    """A table cell: floats to 6 significant digits, nan/inf as n/a, None as empty."""
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
    """A CSV cell: None, nan and inf as empty."""
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


def collect_sweep(
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
        res = collect_sweep(args.folder, experiment, args.out, figures=not args.no_figures)
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
    "SUMMARY_CSV",
    "SUMMARY_MD",
    "Group",
    "collect_sweep",
    "finite",
    "group_runs",
    "main",
    "problems",
    "stats",
    "write_csv",
    "write_markdown",
]
