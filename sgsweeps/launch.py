"""Launcher side of a sweep: the resolvers `sgt.n_jobs` / `sgt.cpus` used by the launcher presets
(`hydra/launcher=joblib_local|slurm|slurm_local`) and `SweepCallback`, which those presets install
to register the resolvers and to record Hydra's view of each job in `job_status.json`."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

JOB_STATUS = "job_status.json"  # written by SweepCallback
COMPLETED = "completed"


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

# The repository root: sgtheory/sweeps/launch.py -> parents[2].
REPO_ROOT = Path(__file__).resolve().parents[2]


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
        repo = REPO_ROOT
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
    from ..runs import write_json_atomic

    write_json_atomic(path, obj)


__all__ = [
    "COMPLETED",
    "JOB_STATUS",
    "REPO_ROOT",
    "SweepCallback",
    "cpus_for",
    "n_jobs_for",
    "register_resolvers",
    "usable_cores",
]
