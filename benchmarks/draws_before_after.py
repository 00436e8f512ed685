"""Stochastic Randman runs with two versions of the code: the same results in distribution?

    python3 benchmarks/draws_before_after.py [--before 5d77aba^] [--after HEAD]
        [--seeds 1 2 3 4 5] [--epochs 30] [--threads 1] [--out benchmarks/results] [override ...]

For the counter-based draws (`sgtheory.random`) the question is whether a stochastic run
trains as before, not whether it draws the same numbers (it does not). Each version's tree
(`git archive` of the commit into a temporary folder, run with its own `sgtheory` and
`convsnn` first on PYTHONPATH) trains `method=stochasticsuperspike` on Randman for every
seed, one run after the other; the script then writes `draws_before_after.json` (every
run's test accuracy and Fano factors, the commits, the machine) and `draws_before_after.md`
(mean and standard deviation over seeds per version, and Welch's t-test p-value of each
difference) into --out, atomically. Extra arguments are Hydra overrides for both versions
(e.g. `dataset.nb_samples=12 batch_size=60` for a quick check). Needs an idle machine for
the full table: 2 versions x 5 seeds x 30 epochs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "5d77aba^"  # the last commit whose stochastic layers drew torch's CPU generator


def export(commit: str, folder: Path) -> str:
    """The tree of `commit` into `folder`; returns the full hash."""
    full = subprocess.run(
        ["git", "rev-parse", commit], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    archive = folder.with_suffix(".tar")
    subprocess.run(["git", "archive", "-o", str(archive), full], cwd=ROOT, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    archive.unlink()
    return full


def train(tree: Path, run_dir: Path, seed: int, epochs: int, threads: int, extra: list) -> dict:
    """One stochastic Randman run of the code in `tree`; its results.json."""
    cmd = [
        sys.executable,
        "deep_convSNN.py",
        "--config-name=config",
        "method=stochasticsuperspike",
        f"seed={seed}",
        f"nb_epochs={epochs}",
        f"threads={threads}",
        "progress=false",
        "wandb.mode=disabled",
        "plotting.enabled=false",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]
    path = os.pathsep.join([str(tree), str(tree / "Classification")])
    env = dict(os.environ, PYTHONPATH=path, WANDB_MODE="disabled")
    cwd = tree / "Classification" / "experiments"
    code = "import sgtheory, convsnn; print(sgtheory.__file__, convsnn.__file__)"
    where = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    if not all(Path(p).is_relative_to(tree) for p in where):
        sys.exit(f"error: the run of {tree} would import {where}, not its own code")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"error: the run of seed={seed} in {tree} failed:\n{proc.stderr[-3000:]}")
    return json.loads((run_dir / "results.json").read_text())


def summary(runs: dict[str, list[dict]]) -> dict:
    """Per version: mean and standard deviation over seeds of test accuracy and each Fano
    factor; per quantity: Welch's t-test p-value of before vs after."""
    out: dict = {"versions": {}, "welch_p": {}}
    names = ["test_acc"] + [f"fano_l{i + 1}" for i in range(len(runs["before"][0]["fano"]))]
    values = {
        version: {
            name: np.array(
                [
                    r["test_acc"] if name == "test_acc" else r["fano"][int(name[6:]) - 1]
                    for r in entries
                ],
                dtype=float,
            )  # fmt: skip
            for name in names
        }
        for version, entries in runs.items()
    }
    for version, table in values.items():
        out["versions"][version] = {
            name: {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else None}
            for name, v in table.items()
        }
    for name in names:
        a, b = values["before"][name], values["after"][name]
        ok = len(a) > 1 and len(b) > 1 and (a.std() > 0 or b.std() > 0)
        out["welch_p"][name] = float(stats.ttest_ind(a, b, equal_var=False).pvalue) if ok else None
    return out


def markdown(result: dict) -> str:
    """The table of `summary`, with the setup it ran."""
    s = result["summary"]
    names = list(s["welch_p"])
    head = "| version | commit | " + " | ".join(names) + " |"
    lines = [head, "|" + "---|" * (len(names) + 2)]
    for version, table in s["versions"].items():
        cells = []
        for name in names:
            m, sd = table[name]["mean"], table[name]["sd"]
            cells.append(f"{m:.3f}" + ("" if sd is None else f" ± {sd:.3f}"))
        commit = result["commits"][version][:7]
        lines.append(f"| {version} | {commit} | " + " | ".join(cells) + " |")
    p = [("-" if s["welch_p"][n] is None else f"{s['welch_p'][n]:.2f}") for n in names]
    lines.append("| Welch's t-test p | | " + " | ".join(p) + " |")
    setup = result["setup"]
    intro = (
        f"Randman, method=stochasticsuperspike, seeds {setup['seeds']}, {setup['epochs']} "
        f"epochs, {setup['threads']} thread(s), overrides {setup['overrides'] or 'none'}; "
        f"mean ± standard deviation over seeds; {result['machine']}.\n\n"
    )
    return intro + "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default=BEFORE)
    parser.add_argument("--after", default="HEAD")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both versions")
    args = parser.parse_args()
    if args.epochs < 1 or not args.seeds or args.threads < 1:
        sys.exit(f"error: epochs={args.epochs}, seeds={args.seeds}, threads={args.threads}: "
                 "need epochs >= 1, at least one seed, threads >= 1")  # fmt: skip
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    commits = {}
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="draws_") as tmp:
        for version, commit in (("before", args.before), ("after", args.after)):
            tree = Path(tmp) / version
            commits[version] = export(commit, tree)
            for seed in args.seeds:
                run_dir = Path(tmp) / "runs" / version / f"seed={seed}"
                res = train(tree, run_dir, seed, args.epochs, args.threads, args.overrides)
                test = res["test"]
                entry = {"seed": seed, "test_acc": test["test_acc"], "fano": test["fano"]}
                runs[version].append({**entry, "epochs": res["epochs_done"]})
                fano = ", ".join(f"{f:.2f}" for f in test["fano"])
                print(f"{version} seed={seed}: test accuracy {test['test_acc']:.3f}, Fano {fano}")
    result = {
        "setup": {
            "seeds": args.seeds,
            "epochs": args.epochs,
            "threads": args.threads,
            "overrides": args.overrides,
        },  # fmt: skip
        "commits": commits,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "wall_s": time.time() - start,
        "runs": runs,
    }
    result["summary"] = summary(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / "draws_before_after.json", json.dumps(result, indent=1))
    write_atomic(args.out / "draws_before_after.md", markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
