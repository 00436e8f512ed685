"""Theory study: exact gradients of the expected loss against SG, stochastic AD, REINFORCE.

Run from this folder:  python3 run_theory.py [overrides], e.g. `beta=10 nb_samples=5000`.
Writes results.json (every number) and Plots/*.png into the Hydra run folder
(Runs/<date>/<time> unless hydra.run.dir=... is given). See README.md. A bad setting stops
it with one line `error: <setting>=<value> ...` and exit status 1.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent / "config"
EXIT_ERROR = 1


def fail(message: str) -> None:
    """Print `error: <message>` on one line to stderr and exit with status 1."""
    print("error: " + " ".join(message.split()), file=sys.stderr)
    sys.exit(EXIT_ERROR)


def check_command_line(args: list[str], settings: list[str]) -> None:
    """Refuse, before Hydra starts, an override of a name that is not a setting and a config
    name that does not exist (Hydra would report either over several lines)."""
    names = {p.stem for p in CONFIG_DIR.glob("*.yaml")}
    for i, arg in enumerate(args):
        option, _, value = arg.partition("=")
        if option in ("-cn", "--config-name"):
            value = value or (args[i + 1] if i + 1 < len(args) else "")
            if value.removesuffix(".yaml") not in names:
                fail(f"{option}={value} is not valid; the configs are: {', '.join(sorted(names))}")
        if arg.startswith("-") or "=" not in arg:
            continue
        key = option.lstrip("+~")
        if key == "hydra" or key.startswith("hydra."):
            continue
        if key not in settings:
            import difflib

            close = difflib.get_close_matches(key, settings, n=2)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            fail(
                f"{arg} is not valid: {key} is not a setting of the Theory study; {hint}the "
                f"settings and their defaults are in {CONFIG_DIR / 'config.yaml'}"
            )


def run(cfg) -> Path:
    """Settings from the config, the whole study, outputs into the run folder."""
    import matplotlib
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from sgtheory.errors import one_line
    from sgtheory.runs import versions
    from sgtheory.theory.figures import write_outputs
    from sgtheory.theory.study import StudySettings, run_study

    matplotlib.use("Agg")
    try:  # inside Hydra's job: reported here, before Hydra logs it over several lines
        values = OmegaConf.to_container(cfg, resolve=True)
        settings = StudySettings(**values).validate()
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        start = time.perf_counter()
        record = run_study(settings)
        record["total_time_s"] = time.perf_counter() - start
        record["versions"] = versions()
        write_outputs(record, run_dir / "results.json", run_dir / "Plots")
    except KeyboardInterrupt:
        fail("interrupted (Ctrl-C); no results were written")
    except Exception as err:  # noqa: BLE001 - one line, no traceback
        if os.environ.get("SGTHEORY_TRACEBACK") == "1":
            raise
        fail(one_line(err))
    print(f"wrote {run_dir / 'results.json'} and {run_dir / 'Plots'}")
    return run_dir


def main(argv: list[str] | None = None) -> None:
    """The command line: every failure is one line `error: ...` and exit status 1."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        import hydra

        from sgtheory.errors import one_line
        from sgtheory.theory.study import StudySettings

        check_command_line(args, [f.name for f in dataclasses.fields(StudySettings)])
        os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra's errors reach the handler below
        sys.argv[1:] = args
        hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")(run)()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        fail("interrupted (Ctrl-C); no results were written")
    except BaseException as err:  # noqa: BLE001 - no traceback for any input
        if os.environ.get("SGTHEORY_TRACEBACK") == "1":
            raise
        fail(one_line(err))


if __name__ == "__main__":
    main()
