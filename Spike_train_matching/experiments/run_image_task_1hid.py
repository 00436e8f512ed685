"""Spike-train matching: a one-hidden-layer LIF network learns to emit a target raster.

Run from this folder:  python3 run_image_task_1hid.py --config-name=config [overrides]
e.g. `method=stochasticsuperspike`, `dataset=oxford dataset.data_path=/path/to/image.png`,
or a sweep with `-m seed=1,2,3`. See ../README.md for what a run writes. Bad settings and
faults (Hydra's own too: unknown settings, wrong types, missing config names, bad run
folders) end with one line `error: <setting>=<value> ...` on stderr and exit status 1.
"""

# ruff: noqa: E402
from __future__ import annotations

import time

_T0 = time.perf_counter()  # process start (before the heavy imports), for the start-up time

from pathlib import Path

from sgruns.cli import run_cli  # light: the heavy imports happen inside `app`
from sgtheory.backends.allocator import restart_with_huge_pages  # light: no torch
from stm.schema import register  # light: the types of every setting (no torch)

CONFIG_DIR = Path(__file__).resolve().parent / "config_experiments"


def app() -> None:
    """Hydra's app: each job's settings checked (`stm.checks.check`), then its run."""
    import logging

    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from sgruns.cli import record_failure, report
    from sgruns.errors import RUN_ERRORS
    from sgruns.folder import exit_on_error
    from stm.checks import check
    from stm.training import run

    logging.raiseExceptions = False  # a log file on a full disk: no traceback per message

    @hydra.main(version_base="1.3", config_path="config_experiments", config_name="config")
    def _app(cfg) -> None:
        hydra_cfg = HydraConfig.get()
        multirun = hydra_cfg.mode == RunMode.MULTIRUN
        run_dir = Path(hydra_cfg.runtime.output_dir)
        try:
            checked = check(cfg, CONFIG_DIR, dict(hydra_cfg.runtime.choices))
            run(cfg, run_dir, checked, _T0)
        except (*RUN_ERRORS, KeyboardInterrupt) as err:  # SIGTERM too (runfolder.Interrupted)
            if multirun:
                record_failure(run_dir, cfg, err, "spike_train_matching")
            exit_on_error(err, multirun=multirun)  # one line; a sweep goes on
        except Exception as err:  # a bug: one line (SGTHEORY_TRACEBACK=1 prints where)
            if multirun:
                record_failure(run_dir, cfg, err, "spike_train_matching")
                raise  # Hydra records the job as failed; the sweep goes on
            report(err)

    _app()


if __name__ == "__main__":
    restart_with_huge_pages()  # large activations on huge pages (sgtheory.backends.allocator)
    run_cli(app, CONFIG_DIR, register=register)
