"""The command line: every input a user can type runs or ends in one line `error: ...`, exit 1.

These start deep_convSNN.py as a user would; most stop before the heavy imports (a second).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import EXPERIMENTS, TINY, read_results, run_cli

QUIET = [*TINY, "wandb.mode=disabled", "plotting.enabled=false", "nb_epochs=1"]


def _one_line(proc: subprocess.CompletedProcess, start: str) -> None:
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith(f"error: {start}"), proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "args,start",
    [
        (["foo=1"], "foo=1 is not a setting of this experiment"),
        (["nb_epoch=3"], "nb_epoch=3 is not a setting of this experiment; did you mean nb_epochs"),
        (["seed={a:1}"], "seed={a:1} is not valid; it takes a single value (default 1), not a"),
        (["dataset.nb_units={a:1}"], "dataset.nb_units={a:1} is not valid; it takes a single"),
        (["dataset={a:1}"], "dataset={a:1} is not valid; choose one of: randman, shd"),
        (["--config-name=nonexistent"], "--config-name=nonexistent is not valid; choose one of"),
        (["method=a,b"], "method=a,b is not valid; choose one of: exponentialstochastic"),
        (["seed=1,2"], "seed=1,2 gives several values; add -m to run one job per value"),
        (
            ["method=superspike,stochasticsuperspike"],
            "method=superspike,stochasticsuperspike gives",
        ),
        (["--foo"], "--foo is not an option of this command"),
        (["hydra.run.dir="], "hydra.run.dir= is not valid; give a folder for the run"),
        (["regularizer.upper_l2.dims=[-1,-1]"], "regularizer.upper_l2.dims=[-1, -1] is not valid"),
        (["dataset.name=shd"], "dataset.name=shd does not match the dataset's settings"),
        (["tau_syn=1e300"], "tau_syn=1e+300 is not valid with dataset.dt=0.002"),
        (["wandb.project=a/b"], "wandb.project=a/b is not valid"),
        (["plotting.dpi=20000"], "plotting.dpi=20000 is not valid; it must be at most 1000"),
        (["dataset.nb_units=1000000"], "dataset.nb_units=1000000, "),
        (["method.lr=1e300"], "method.lr=1e+300 is not valid; it must be at most"),
        (["dataset.nu=1e-300"], "dataset.nu=1e-300, method.target_sigma_u=1.0"),
        (["dataset.dt=1e-300"], "dataset.dt=1e-300 is not valid with tau_mem=0.02"),
        (["dataset.seed=-1"], "dataset.seed=-1 is not valid; it must be an integer from 0"),
        (["dataset.nb_classes=1"], "dataset.nb_classes=1 is not valid; a classification"),
        (["threads=1000"], "threads=1000 is not valid: this process may run on"),
    ],
)
def test_bad_command_lines_are_one_line(tmp_path, args, start):
    run_dir = tmp_path / "run"
    proc = run_cli(None if args == ["hydra.run.dir="] else run_dir, *QUIET, *args)
    _one_line(proc, start)
    assert not (run_dir / "results.json").exists()


@pytest.mark.parametrize(
    "args,start",
    [
        (["+foo=1"], "foo=1 is not a setting of this experiment; the settings and their"),
        (["++dataset.nb_sample=3"], "dataset.nb_sample=3 is not a setting of this experiment; did"),
        (["seed=abc"], "seed=abc is not valid; it must be an integer\n"),
        (["nb_epochs=2.5"], "nb_epochs=2.5 is not valid; it must be an integer\n"),
        (["tau_mem=abc"], "tau_mem=abc is not valid; it must be a number\n"),
        (["tau_mem=[1,2]"], "tau_mem=[1,2] is not valid; it takes a single value (default 0.02)"),
        (["dataset.split=0.5"], "dataset.split=0.5 is not valid; it must be a list of numbers\n"),
        (["dataset=randmann"], "dataset=randmann is not valid; choose one of: randman, shd\n"),
        (
            ["regularizer=lowerbound"],
            "regularizer=lowerbound is not valid; choose one of: default,",
        ),
        (["-m", "seed=1,abc"], "seed=abc is not valid (a value of the sweep seed=1,abc); it must"),
        (["p0=1.5"], "p0=1.5 is not valid; it must lie in (0, 1]\n"),
    ],
)
def test_the_schema_and_the_checks_stop_a_run_before_any_work(tmp_path, args, start):
    """Unknown keys, wrong types and misspelt group options are refused by the structured
    config while the command line is composed; values out of range by convsnn.checks."""
    run_dir = tmp_path / "run"
    proc = run_cli(run_dir, *QUIET, *args)
    _one_line(proc, start)
    if args[0].startswith("p0"):  # checked in the run, before any data or weights are made
        assert sorted(p.name for p in run_dir.iterdir()) == [".hydra", "stork_superspike.log"]
    else:  # refused while the command line is composed: not even Hydra's .hydra/
        assert not run_dir.exists()


@pytest.mark.parametrize("where", ["", ".", "experiments"])
def test_the_experiments_own_folder_is_refused_and_left_as_it_was(tmp_path, where):
    before = sorted(p.name for p in EXPERIMENTS.iterdir())
    arg = f"hydra.run.dir={EXPERIMENTS}" if where == "experiments" else f"hydra.run.dir={where}"
    proc = run_cli(None, *QUIET, arg, cwd=EXPERIMENTS)
    start = "hydra.run.dir= is not valid" if where == "" else "hydra.run.dir="
    _one_line(proc, start)
    if where:
        assert "holds files that are not a run of this project" in proc.stderr
    assert sorted(p.name for p in EXPERIMENTS.iterdir()) == before  # no .hydra/, nothing moved


def test_a_folder_with_a_users_notes_is_refused_and_kept(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    proc = run_cli(folder, *QUIET)
    _one_line(proc, f"hydra.run.dir={folder} holds files that are not a run of this project")
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    assert not list(tmp_path.glob("mine.old-*"))


def test_run_folders_with_spaces_commas_and_non_ascii_letters_work(tmp_path):
    folder = tmp_path / "a b, é's run"
    proc = run_cli(folder, *QUIET)
    assert proc.returncode == 0, proc.stderr
    assert read_results(folder)["status"] == "completed"
    assert read_results(folder)["run_dir"] == str(folder)


def test_ctrl_c_during_the_imports_is_one_line(tmp_path):
    env = {**os.environ, "WANDB_SILENT": "true"}
    cmd = [sys.executable, str(EXPERIMENTS / "deep_convSNN.py"), *QUIET]
    cmd.append(f"hydra.run.dir={tmp_path / 'run'}")
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, cwd=EXPERIMENTS)
    # inside the heavy imports: torch's library is mapped (its import goes on for a while);
    # a fixed sleep would miss that window on a loaded machine
    maps, deadline = Path(f"/proc/{proc.pid}/maps"), time.monotonic() + 60
    while "libtorch" not in maps.read_text() and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: stopped by Ctrl-C before the run started")
    assert not (tmp_path / "run").exists()
