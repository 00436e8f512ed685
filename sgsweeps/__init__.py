"""Hydra multirun sweeps (see docs/sweeps.md).

- `launch`: the launcher presets' resolvers (`sgt.n_jobs`, `sgt.cpus`) and `SweepCallback`,
  which writes `job_status.json` into each run folder. Importing this package registers the
  resolvers, so the presets' `_target_: sgtheory.sweeps.SweepCallback` is enough.
- `collect`: finding and loading run folders, grouping runs that differ only in seed, mean and
  spread per group, summary.csv / summary.md and the problems report; `main(experiment, argv)`
  is the command line of each experiment's `collect.py`.
- `figures`: generic figures of mean and spread over seeds (curves per epoch, bars per layer).

What to read from an experiment's results.json lives with the experiment, in
`Classification/collect.py` and `Spike_train_matching/collect.py`, as an `Experiment`.

Note: `sgtheory.sweeps.collect` is the `collect` function (as before the split), which shadows
the submodule of the same name as a package attribute; `from sgtheory.sweeps.collect import X`
still reaches the module, as does `importlib.import_module("sgtheory.sweeps.collect")`.
"""

from .collect import (
    COMPLETED,
    JOB_STATUS,
    RESULTS,
    STATUS,
    SUMMARY_CSV,
    SUMMARY_MD,
    CollectError,
    Experiment,
    Group,
    Run,
    collect,
    collect_runs,
    expected_jobs,
    find_run_dirs,
    finite,
    flatten,
    group_overrides,
    group_runs,
    load_run,
    main,
    nested_get,
    problems,
    stats,
    write_csv,
    write_markdown,
)
from .figures import curve_figure, layer_bar_figure
from .launch import SweepCallback, cpus_for, n_jobs_for, register_resolvers, usable_cores

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
    "SweepCallback",
    "collect",
    "collect_runs",
    "cpus_for",
    "curve_figure",
    "expected_jobs",
    "find_run_dirs",
    "finite",
    "flatten",
    "group_overrides",
    "group_runs",
    "layer_bar_figure",
    "load_run",
    "main",
    "n_jobs_for",
    "nested_get",
    "problems",
    "register_resolvers",
    "stats",
    "usable_cores",
    "write_csv",
    "write_markdown",
]
