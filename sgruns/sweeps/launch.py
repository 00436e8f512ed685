"""Launcher side of a sweep: the resolvers `sgt.n_jobs` / `sgt.cpus` used by the launcher presets
(`hydra/launcher=joblib_local|slurm|slurm_local`) and `SweepCallback`, which those presets install
to register the resolvers and to record Hydra's view of each job in `job_status.json`."""

from __future__ import annotations

import os
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
            "(both experiments) to the command line, or "
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
    from hydra.core.utils import JobReturn, JobStatus
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover - hydra is only needed for sweeps
    _HydraCallback = object  # type: ignore[misc,assignment]


class SweepCallback(_HydraCallback):  # type: ignore[misc,valid-type]
    """Installed by the launcher presets. Importing it registers the resolvers; in each job it
    writes job_status.json (running -> completed/failed, error, wall time, host) in the run
    folder, so a job that raised is recorded even if the script wrote nothing itself."""

    def __init__(self, **kwargs: Any) -> None:
        register_resolvers()
        self._start: float | None = None

    @staticmethod
    def _path(config: Any) -> Path:
        """job_status.json in the job's run folder."""
        return Path(str(config.hydra.runtime.output_dir)) / JOB_STATUS

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        """Record the job as running (start time, host, pid)."""
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

    def on_job_end(self, config: Any, job_return: JobReturn, **kwargs: Any) -> None:
        """Record the job as completed or failed (with its exception), with its wall time."""
        end = time.time()
        failed = job_return.status == JobStatus.FAILED
        record = {
            "status": "failed" if failed else COMPLETED,
            "start": self._start,
            "end": end,
            "wall_s": None if self._start is None else end - self._start,
            "host": os.uname().nodename,
            "pid": os.getpid(),
        }
        if failed:
            record["error"] = _job_error(job_return)
        _write_json(self._path(config), record)


def _job_error(job_return: JobReturn) -> str:
    """'Type: message' of the exception a failed job raised (its public `return_value` re-raises
    it, and Hydra prints which job failed)."""
    try:
        _ = job_return.return_value
    except Exception as err:  # noqa: BLE001 - whatever the job raised is recorded
        return f"{type(err).__name__}: {err}"
    return "failed without an exception"


def _write_json(path: Path, obj: Any) -> None:
    from sgtheory.files import write_json_atomic

    write_json_atomic(path, obj)


__all__ = [
    "COMPLETED",
    "JOB_STATUS",
    "SweepCallback",
    "cpus_for",
    "n_jobs_for",
    "register_resolvers",
    "usable_cores",
]
