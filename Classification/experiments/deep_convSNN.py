"""Train a deep convolutional SNN with surrogate gradients (Randman by default, or SHD).

Run from this folder:
    python3 deep_convSNN.py --config-name=config                      # Randman, superspike
    python3 deep_convSNN.py --config-name=config method=stochasticsuperspike
    python3 deep_convSNN.py --config-name=config_sigm                 # sigmoid surrogates
    python3 deep_convSNN.py --config-name=config dataset=shd dataset.datadir=/path/to/shd
    python3 deep_convSNN.py --config-name=config -m seed=1,2,3        # sweep
A run writes results.json, checkpoint.pt, Plots/ and wandb/ into its Runs/ folder and resumes
from its checkpoint when the same command is run again. Bad settings and faults end with one
line `error: <setting>=<value> ...` on stderr and exit status 1. See ../README.md.
"""

from __future__ import annotations

from pathlib import Path

from convsnn.schema import register  # light: the types of the settings, no torch
from sgruns.cli import run_cli  # light: the heavy imports happen inside `app`
from sgtheory.backends.allocator import restart_with_huge_pages  # light: no torch

CONFIG_DIR = Path(__file__).resolve().parent / "config_stork"


def app() -> None:
    """Import the experiment and run Hydra's entry point."""
    import logging

    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import DictConfig

    from convsnn.experiment import run_experiment
    from sgruns.cli import record_failure
    from sgruns.errors import RUN_ERRORS, one_line
    from sgruns.folder import exit_on_error

    log = logging.getLogger("deep_convSNN")
    logging.raiseExceptions = False  # a log file on a full disk: no traceback per message

    @hydra.main(version_base="1.3", config_path="config_stork", config_name="config")
    def main(cfg: DictConfig) -> float | None:
        """Run (or resume) one experiment in Hydra's output folder."""
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        multirun = HydraConfig.get().mode == RunMode.MULTIRUN

        try:
            results = run_experiment(cfg, run_dir)
        except (*RUN_ERRORS, KeyboardInterrupt) as err:
            log.error("%s", one_line(err))
            if multirun:
                record_failure(run_dir, cfg, err, "classification")
            exit_on_error(err, multirun)  # one line on stderr, exit 1; a sweep goes on
        except Exception as err:  # unexpected: recorded, then reported by run_cli
            if multirun:
                record_failure(run_dir, cfg, err, "classification")
            raise
        if results.get("status") == "completed":
            return float(results["test"]["test_acc"])
        return None

    main()


if __name__ == "__main__":
    restart_with_huge_pages()  # large activations on huge pages (sgtheory.backends.allocator)
    run_cli(app, CONFIG_DIR, register=register)
