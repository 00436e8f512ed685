"""Theory study: exact gradients of the expected loss against SG, stochastic AD, REINFORCE.

Run from this folder:  python3 run_theory.py [overrides], e.g. `beta=10 nb_samples=5000`.
Writes results.json (every number) and Plots/*.png into the Hydra run folder
(Runs/<date>/<time> unless hydra.run.dir=... is given; it must be new, empty or a run
folder of this project). The config is a structured config: its type is
`sgtheory.theory.study.StudySettings` (stored in Hydra's ConfigStore as `theory_schema`,
named first in config/config.yaml's defaults), so an unknown setting or a value of the wrong
type is refused while the command line is composed; value ranges are checked by
`StudySettings.validate`. Any bad setting or fault stops it with one line
`error: <setting>=<value> ...` on stderr and exit status 1. See README.md.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sgruns.cli import run_cli  # light: the heavy imports happen inside `app`

CONFIG_DIR = Path(__file__).resolve().parent / "config"
EXPERIMENT = "theory"


def register() -> None:
    """Store the config's type, `StudySettings`, in Hydra's ConfigStore (before composing)."""
    from hydra.core.config_store import ConfigStore

    from sgtheory.theory.study import StudySettings

    ConfigStore.instance().store(name="theory_schema", node=StudySettings)


def run(cfg, run_dir: Path) -> None:
    """Settings from the config (typed by the schema, ranges checked here), the whole study,
    outputs into `run_dir`."""
    import time

    import matplotlib
    import torch
    from omegaconf import OmegaConf

    from sgruns.cli import MARKER, mark
    from sgruns.records import versions
    from sgtheory.theory.figures import write_outputs
    from sgtheory.theory.study import run_study

    matplotlib.use("Agg")
    torch.set_num_threads(1)  # small networks: a second thread only spins on a shared machine
    settings = OmegaConf.to_object(cfg).validate()  # a StudySettings of plain values
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / MARKER).exists():
        mark(run_dir, EXPERIMENT)
    start, cpu = time.perf_counter(), time.process_time()
    record = run_study(settings)
    record["total_time_s"] = time.perf_counter() - start
    record["total_cpu_time_s"] = time.process_time() - cpu
    record["versions"] = versions()
    write_outputs(record, run_dir / "results.json", run_dir / "Plots")
    print(f"wrote {run_dir / 'results.json'} and {run_dir / 'Plots'}")


def app() -> None:
    """Hydra's entry point; an error inside the job is one line (before Hydra logs it)."""
    import hydra
    from hydra.core.hydra_config import HydraConfig

    from sgruns.cli import report

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
    def main(cfg) -> None:
        try:
            run(cfg, Path(HydraConfig.get().runtime.output_dir))
        except SystemExit:
            raise
        except BaseException as err:  # noqa: BLE001 - one line, exit 1, no traceback
            if isinstance(err, KeyboardInterrupt):
                print("error: stopped by Ctrl-C; no results were written", file=sys.stderr)
                sys.exit(1)
            report(err)

    main()


def main(argv: list[str] | None = None) -> None:
    """The command line (`argv`, default sys.argv[1:]): every failure one line, exit 1."""
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    run_cli(app, CONFIG_DIR, argv=argv, register=register)


if __name__ == "__main__":
    main()
