"""Reading a sweep folder: find its run folders, read each run's overrides, config, status and
results (through the experiment's `Experiment`), and list the jobs its multirun.yaml asked for
that have no folder yet (see docs/sweeps.md).

A run folder is any folder holding `.hydra/` or `results.json`. This module knows nothing about a
particular experiment: an `Experiment` says how to read its results.json (scalars,
hyperparameters, curves) and which figures to draw. Each experiment's `collect.py` defines one.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sgruns.folder import read_status
from sgruns.sweeps.launch import COMPLETED, JOB_STATUS

RESULTS = "results.json"
STATUS = "status.json"  # written by the Spike_train_matching runner
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
        """The run's seed: from its overrides, else from its saved config."""
        for o in self.overrides:
            key, _, value = o.partition("=")
            if key.lstrip("+~") == "seed":
                return _parse_scalar(value)
        return (self.config or {}).get("seed")

    @property
    def method(self) -> str:
        """The method's name: from the saved config, else the `method=` override, else the one
        borrowed from the run's other seeds (a job that never started has no config)."""
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
        """What runs of one group share: method, config name and overrides minus seed."""
        return (self.method, self.config_name or "config", tuple(sorted(group_overrides(self))))


@dataclass
class Group:
    """Runs that differ only in seed (and run-control settings); `summary.group_runs` makes them."""

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
        """The group's completed runs (the ones that enter means and figures)."""
        return [r for r in self.runs if r.status == COMPLETED]


def _parse_scalar(text: str) -> Any:
    """An override's value as JSON (`1` -> 1), else the text itself."""
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return text


def is_run_control(key: str) -> bool:
    """Whether `key` (a config key or override key) only controls how a run runs."""
    key = key.lstrip("+~")
    return key in RUN_CONTROL or key.startswith(RUN_CONTROL_PREFIXES)


def group_overrides(run: Run) -> list[str]:
    """The run's overrides that define its group: minus seed, method and run-control ones."""
    out = []
    for o in run.overrides:
        key = o.partition("=")[0].lstrip("+~")
        if is_run_control(key) or key == "method":
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


def _read_hydra(path: Path, run: Run) -> list[str]:
    """Overrides, config and config name from `path/.hydra` into `run`; problems found."""
    hydra_dir = path / ".hydra"
    problems: list[str] = []
    if not hydra_dir.is_dir():
        return problems
    try:
        run.overrides = [str(o) for o in (_read_yaml(hydra_dir / "overrides.yaml") or [])]
    except (OSError, ValueError) as exc:
        problems.append(f".hydra/overrides.yaml unreadable: {exc}")
    try:
        run.config = _read_yaml(hydra_dir / "config.yaml")
    except (OSError, ValueError) as exc:
        problems.append(f".hydra/config.yaml unreadable: {exc}")
    try:
        hydra_cfg = _read_yaml(hydra_dir / "hydra.yaml") or {}
        run.config_name = hydra_cfg.get("hydra", {}).get("job", {}).get("config_name")
    except (OSError, ValueError):
        pass
    return problems


def _status_from_results(run: Run, path: Path) -> None:
    """Status and error from results.json (written by both experiments)."""
    results, err = _read_json(path / RESULTS)
    if err or not isinstance(results, dict):
        run.status, run.error = "corrupt", err or "results.json is not a JSON object"
        return
    run.results = results
    run.status = str(results.get("status", "unknown"))
    if run.status == "running" and read_status(path) == "interrupted":
        run.status = "interrupted"  # its folder lock is free: the process is gone
    run.error = results.get("error")
    if run.config is None and isinstance(results.get("config"), dict):
        run.config = results["config"]


def _status_from_status_json(run: Run, path: Path) -> None:
    """Status and error from status.json, for a run that has not written results.json yet."""
    status, err = _read_json(path / STATUS)
    if err or not isinstance(status, dict):
        run.status, run.error = "corrupt", err or "status.json is not a JSON object"
        return
    run.status = str(status.get("status", "unknown"))
    run.error = status.get("error")
    if run.status == COMPLETED:  # finished but results.json is gone
        run.status, run.note = "missing", "status.json says completed, no results.json"
    elif "epoch" in status:
        run.note = f"epoch {status.get('epoch')}/{status.get('nb_epochs')}"


def _read_status(run: Run, path: Path) -> None:
    """The run's status, from the first of results.json, status.json, job_status.json found;
    a running run is noted with the age of its newest file."""
    job, job_err = (None, None)
    if (path / JOB_STATUS).exists():
        job, job_err = _read_json(path / JOB_STATUS)
        if isinstance(job, dict):
            run.wall_s = job.get("wall_s")
    if (path / RESULTS).exists():
        _status_from_results(run, path)
    elif (path / STATUS).exists():
        _status_from_status_json(run, path)
    elif isinstance(job, dict):
        run.status = str(job.get("status", "missing"))
        run.error = job.get("error")
        if run.status == COMPLETED:
            run.status, run.note = "missing", "job ended but wrote no results.json"
    elif job_err:
        run.status, run.error = "corrupt", job_err
    if run.status == "running":
        files = [p for p in (path / RESULTS, path / STATUS, path / JOB_STATUS) if p.exists()]
        if files:
            age = f"last update {_age(max(files, key=lambda p: p.stat().st_mtime))} ago"
            run.note = f"{run.note}; {age}" if run.note else age


def load_run(path: Path, exp: Experiment) -> Run:
    """Read one run folder: overrides, config, status, metrics and curves."""
    run = Run(path=path, overrides=[], status="missing")
    problems = _read_hydra(path, run)
    _read_status(run, path)
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


def expand_overrides(overrides: list[str]) -> list[list[str]]:
    """The jobs of a basic-sweeper multirun: the product of every sweep override's values
    (`seed=1,2`, `range(3)`, `choice(a,b)`), parsed with Hydra's public override parser. A key
    given twice keeps its last value, as Hydra does. Interval sweeps (only meaningful to other
    sweepers) raise ValueError."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    options: dict[str, list[str]] = {}
    for override in OverridesParser.create().parse_overrides(overrides=overrides):
        key = override.get_key_element()
        if not override.is_sweep_override():
            options[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            options[key] = [f"{key}={v}" for v in override.sweep_string_iterator()]
        else:
            raise ValueError(f"{key}: a basic-sweeper multirun cannot expand {override.input_line}")
    return [list(job) for job in itertools.product(*options.values())]


def expected_jobs(root: Path) -> list[list[str]]:
    """The jobs each multirun.yaml under `root` asked for."""
    jobs: list[list[str]] = []
    for path in sorted(root.rglob("multirun.yaml")):
        try:
            task = _read_yaml(path)["hydra"]["overrides"]["task"]
            jobs.extend(expand_overrides([str(t) for t in task]))
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


def nested_get(d: Any, *keys: Any) -> Any:
    """d[k1][k2]...; None where a key is missing or a level is not a dict."""
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


__all__ = [
    "RESULTS",
    "STATUS",
    "CollectError",
    "Experiment",
    "Group",
    "Run",
    "collect_runs",
    "expand_overrides",
    "expected_jobs",
    "find_run_dirs",
    "flatten",
    "group_overrides",
    "is_run_control",
    "load_run",
    "nested_get",
]
