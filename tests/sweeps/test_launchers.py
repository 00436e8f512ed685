"""Real tiny sweeps (2 seeds x 2 methods) of both experiments through the joblib launcher and the
submitit launcher in local mode, then `collect` on each sweep folder."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import (
    CLS_DIR,
    CLS_TINY,
    STM_DIR,
    check_stats,
    parse_summary,
    results_by_method,
    run_sweep,
    stm_target,
    stm_tiny,
)

pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

METHODS = ("stochasticsuperspike", "superspike")
SWEEP = ["seed=1,2", "method=superspike,stochasticsuperspike"]
LAUNCHERS = ("joblib_local", "slurm_local")


def _args(experiment: str, tmp: Path) -> tuple[Path, str, list[str]]:
    if experiment == "stm":
        return STM_DIR, "run_image_task_1hid.py", stm_tiny(stm_target(tmp / "target.png"))
    return CLS_DIR, "deep_convSNN.py", list(CLS_TINY)


@pytest.fixture(
    scope="module",
    params=[(e, la) for e in ("stm", "cls") for la in LAUNCHERS],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def sweep(request, tmp_path_factory):
    """One finished sweep: (experiment, launcher, sweep folder, completed process)."""
    experiment, launcher = request.param
    tmp = tmp_path_factory.mktemp(f"{experiment}_{launcher}")
    folder, script, tiny = _args(experiment, tmp)
    sweep_dir = tmp / "sweep"
    proc = run_sweep(folder, script, sweep_dir, [f"hydra/launcher={launcher}", *tiny, *SWEEP])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return experiment, launcher, sweep_dir, proc


def test_sweep_makes_expected_run_folders(sweep):
    experiment, launcher, sweep_dir, proc = sweep
    runs = sorted(p.parent.name for p in sweep_dir.glob("*/results.json"))
    assert runs == sorted(f"{m}_{s}" for m in METHODS for s in (1, 2))
    for name in runs:
        run = sweep_dir / name
        assert (run / ".hydra" / "overrides.yaml").exists()
        assert (run / "job_status.json").exists()  # written by the preset's SweepCallback
    assert (sweep_dir / "multirun.yaml").exists()
    if launcher == "joblib_local":
        assert "Joblib.Parallel(n_jobs=" in proc.stdout + proc.stderr
    else:
        assert (sweep_dir / ".submitit").is_dir()


def test_collect_writes_csv_summary_and_figures(sweep, tmp_path):
    experiment, launcher, sweep_dir, _ = sweep
    folder = STM_DIR.parent if experiment == "stm" else CLS_DIR.parent
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "collect.py", str(sweep_dir), "--out", str(out)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "4 runs in 2 groups, 4 completed" in proc.stdout
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert len(rows) == 4
    assert {(r["method"], r["seed"]) for r in rows} == {(m, s) for m in METHODS for s in "12"}
    assert all(r["status"] == "completed" and float(r["wall_time_s"]) > 0 for r in rows)
    table = parse_summary(out / "summary.md")
    assert set(table) == set(METHODS)  # labels: shared overrides are listed once, not per group
    by_method = results_by_method(sweep_dir)
    for method in METHODS:
        res = by_method[method]
        assert len(res) == 2
        if experiment == "stm":
            check_stats(
                table[method], "final_vRd", [r["losses"]["final"]["loss_hist_vRd"] for r in res]
            )
            check_stats(
                table[method], "final_L2", [r["losses"]["final"]["loss_hist_L2"] for r in res]
            )
            check_stats(
                table[method],
                "other_final_vRd",
                [r["losses"]["final"]["loss_hist_vRd_valid"] for r in res],
            )
            assert "lr_h" in rows[0] and "lr_o" in rows[0]
        else:
            check_stats(table[method], "test_acc", [r["test"]["test_acc"] for r in res])
            check_stats(table[method], "other_test_acc", [r["other"]["test_acc"] for r in res])
            check_stats(table[method], "fano_l1", [r["test"]["fano"][0] for r in res])
            check_stats(
                table[method], "final_valid_acc", [r["history"]["valid_acc"][-1] for r in res]
            )
            assert "lr" in rows[0]
    figures = ["losses.png"] if experiment == "stm" else ["accuracy.png", "fano.png"]
    for name in figures:
        assert (out / name).stat().st_size > 5000
        assert f"]({name})" in (out / "summary.md").read_text()


# -------------------------------------------------------------- a failed run in a sweep


@pytest.mark.parametrize("experiment", ["stm", "cls"])
def test_failed_run_does_not_stop_the_sweep(experiment, tmp_path):
    """A bad hyperparameter in one job: the other jobs still run and the failure is recorded."""
    folder, script, tiny = _args(experiment, tmp_path)
    bad = "dataset_method.lr_o=-1" if experiment == "stm" else "method.lr=-1"
    good = "dataset_method.lr_o=1e-4" if experiment == "stm" else "method.lr=0.01"
    sweep_dir = tmp_path / "sweep"
    lr_key = bad.split("=")[0]
    proc = run_sweep(
        folder,
        script,
        sweep_dir,
        [
            "hydra/launcher=joblib_local",
            *tiny,
            "seed=1,2",
            f"{lr_key}={bad.split('=')[1]},{good.split('=')[1]}",
        ],
        subdir="hydra.sweep.subdir=${hydra.job.num}",
    )
    statuses = {}
    for run in sorted(p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()):
        status = json.loads((run / "job_status.json").read_text())["status"]
        statuses[run.name] = status
    assert len(statuses) == 4, (statuses, proc.stderr[-2000:])
    assert sorted(statuses.values()) == ["completed", "completed", "failed", "failed"]
