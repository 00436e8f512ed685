"""Hydra multirun sweeps of the experiments: launching and collecting them (see docs/sweeps.md).

A tools package beside the core library `sgtheory`, which knows nothing of Hydra.

- `launch`: the launcher presets' resolvers (`sgt.n_jobs`, `sgt.cpus`) and `SweepCallback`,
  which writes `job_status.json` into each run folder. Importing this package registers the
  resolvers, so the presets' `_target_: sgruns.sweeps.SweepCallback` is enough.
- `folders`: finding and reading run folders, and the jobs a multirun.yaml asked for.
- `summary`: grouping runs that differ only in seed, mean and spread per group, summary.csv /
  summary.md and the problems report; `collect_sweep(folder, experiment)` does all of it and
  `main(experiment, argv)` is the command line of each experiment's `collect.py`.
- `figures`: generic figures of mean and spread over seeds (curves per epoch, bars per layer).

What to read from an experiment's results.json lives with the experiment, in
`Classification/collect.py` and `Spike_train_matching/collect.py`, as an `Experiment`.
"""

from sgruns.sweeps.figures import curve_figure, layer_bar_figure
from sgruns.sweeps.folders import (
    RESULTS,
    STATUS,
    CollectError,
    Experiment,
    Run,
    collect_runs,
    expand_overrides,
    expected_jobs,
    find_run_dirs,
    flatten,
    group_overrides,
    load_run,
    nested_get,
)
from sgruns.sweeps.launch import (
    COMPLETED,
    JOB_STATUS,
    SweepCallback,
    cpus_for,
    n_jobs_for,
    register_resolvers,
    usable_cores,
)
from sgruns.sweeps.summary import (
    SUMMARY_CSV,
    SUMMARY_MD,
    Group,
    collect_sweep,
    finite,
    group_runs,
    main,
    problems,
    stats,
    write_csv,
    write_markdown,
)

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
    "collect_runs",
    "collect_sweep",
    "cpus_for",
    "curve_figure",
    "expand_overrides",
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
