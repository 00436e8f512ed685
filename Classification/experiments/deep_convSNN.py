"""Train a deep convolutional SNN with surrogate gradients (Randman by default, or SHD).

Run from this folder:
    python3 deep_convSNN.py --config-name=config                      # Randman, superspike
    python3 deep_convSNN.py --config-name=config method=stochasticsuperspike
    python3 deep_convSNN.py --config-name=config_sigm                 # sigmoid surrogates
    python3 deep_convSNN.py --config-name=config dataset=shd dataset.datadir=/path/to/shd
    python3 deep_convSNN.py --config-name=config -m seed=1,2,3        # sweep
A run writes results.json, checkpoint.pt, Plots/ and wandb/ into its Runs/ folder and resumes
from its checkpoint when the same command is run again. See ../README.md.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from convsnn.experiment import run_experiment
from sgtheory.errors import RUN_ERRORS, RunFolderError, one_line
from sgtheory.runfolder import check_output_dirs, exit_on_error
from sgtheory.runs import write_json_atomic

log = logging.getLogger("deep_convSNN")


@hydra.main(version_base="1.3", config_path="config_stork", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point: run (or resume) one experiment in Hydra's output folder."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        results = run_experiment(cfg, run_dir)
    except (*RUN_ERRORS, KeyboardInterrupt) as err:
        log.error("%s", one_line(err))
        if multirun and not isinstance(err, RunFolderError):
            # A job that stopped before it wrote results.json gets one saying why, so that
            # the sweep's collection lists it (a started run has recorded its own failure).
            if not (run_dir / "results.json").exists():
                failed = {
                    "status": "failed",
                    "error": one_line(err),
                    "config": OmegaConf.to_container(cfg, resolve=True),
                }
                write_json_atomic(run_dir / "results.json", failed)
        exit_on_error(err, multirun)  # one line on stderr, exit 1; a sweep goes on
    if results.get("status") == "completed":
        return float(results["test"]["test_acc"])
    return None


if __name__ == "__main__":
    logging.raiseExceptions = False  # a log file on a full disk: no traceback per message
    try:
        check_output_dirs(sys.argv[1:])  # Hydra would create them with a traceback
    except RunFolderError as err:
        exit_on_error(err)
    main()
