"""Compare 25-epoch Randman runs of this code with runs of the original stork code.

Reads this code's run folders (`<method>_s<seed>/results.json`) and the original code's logs
(`<method>_s<seed>.log`, the last `{'train_loss': ...}` dictionary it logs), and writes one
JSON file with every run's test accuracy (and the other mode's), the mean and spread per
method and code, and Welch's t-test of equal means per method.

How the runs are made (seed s = network seed = data seed, one thread, wandb off):

    # this code, from Classification/experiments
    python3 deep_convSNN.py --config-name=config method=M nb_epochs=25 seed=s dataset.seed=s \
        threads=1 wandb.mode=disabled hydra.run.dir=PROJECT/M_ss
    # the original code (fmi-basel/surrogate-gradient-theory with stork and randman), outside
    # this project, from its Classification/experiments, OMP_NUM_THREADS=1 WANDB_MODE=disabled
    python deep_convSNN.py dataset=randman method=M nb_epochs=25 plot=none seed=s \
        dataset.randmanseed=s hydra.run.dir=... > ORIGINAL/M_ss.log

Usage: python3 benchmarks/randman_vs_original.py PROJECT ORIGINAL OUT.json
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import numpy as np
from scipy import stats

METHODS = ("superspike", "stochasticsuperspike")
RUN = re.compile(r"^(?P<method>[a-z]+)_s(?P<seed>\d+)$")


def project_runs(folder: Path) -> dict[str, dict]:
    """Completed runs of this code: test accuracy in the trained mode and the other mode."""
    runs = {}
    for results in sorted(folder.glob("*/results.json")):
        match = RUN.match(results.parent.name)
        record = json.loads(results.read_text())
        if match is None or record.get("status") != "completed":
            continue
        runs[results.parent.name] = {
            "method": match["method"],
            "seed": int(match["seed"]),
            "test_acc": record["test"]["test_acc"],
            "other_test_acc": record["other"]["test_acc"],
            "fano": record["test"]["fano"],
            "commit": record["versions"].get("git_commit"),
        }
    return runs


def original_runs(folder: Path) -> dict[str, dict]:
    """Finished runs of the original code, read from the last results dictionary it logs."""
    runs = {}
    for log in sorted(folder.glob("*.log")):
        match = RUN.match(log.stem)
        found = re.findall(r"INFO\] - (\{'train_loss'.*\})", log.read_text(errors="replace"))
        if match is None or not found:
            continue
        logged = ast.literal_eval(found[-1])
        runs[log.stem] = {
            "method": match["method"],
            "seed": int(match["seed"]),
            "test_acc": float(logged["test_acc"]),
            "other_test_acc": float(logged["test_acc_other"]),
        }
    return runs


def summary(project: dict[str, dict], original: dict[str, dict]) -> dict[str, dict]:
    """Mean and sample standard deviation per method and code, and Welch's test per method."""
    out = {}
    for method in METHODS:
        accs = {
            code: np.array([r["test_acc"] for r in runs.values() if r["method"] == method])
            for code, runs in (("project", project), ("original", original))
        }
        row = {
            code: {
                "n": len(a),
                "mean": float(a.mean()) if len(a) else None,
                "std": float(a.std(ddof=1)) if len(a) > 1 else None,
            }
            for code, a in accs.items()
        }
        if min(len(a) for a in accs.values()) > 1:
            test = stats.ttest_ind(accs["project"], accs["original"], equal_var=False)
            row["welch_p"] = float(test.pvalue)
        out[method] = row
    return out


def main(argv: list[str]) -> None:
    if len(argv) != 3:
        sys.exit(__doc__.rsplit("Usage: ", 1)[1])
    project, original = project_runs(Path(argv[0])), original_runs(Path(argv[1]))
    result = {
        "project_runs": project,
        "original_runs": original,
        "summary": summary(project, original),
    }
    Path(argv[2]).write_text(json.dumps(result, indent=1))
    for method, row in result["summary"].items():
        print(method, json.dumps(row))


if __name__ == "__main__":
    main(sys.argv[1:])
