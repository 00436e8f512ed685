"""Faults and bad inputs of whole runs: non-finite weights, moving a finished run aside,
changed settings, equal time constants (tiny configs, seconds each)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from conftest import EXPERIMENTS, compose, run_cli, tiny_overrides

from sgtheory.errors import NonFiniteError
from stm import checks, learning, training


def _run_in_process(run_dir, *overrides):
    cfg = compose(*overrides)
    checked = checks.check(cfg)
    return training.run(cfg, run_dir, checked, time.perf_counter())


def test_huge_learning_rates_end_failed_with_one_line(tmp_path, tiny_png):
    run_dir = tmp_path / "nan"
    lrs = ["dataset_method.lr_o=1e38", "dataset_method.lr_h=1e38"]
    proc = run_cli(
        run_dir, *tiny_overrides(tiny_png, nb_epochs=6, logging_freq=3), *lrs, check=False
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("error: dataset_method.lr_h=1e+38 dataset_method.lr_o=1e+38")
    assert "became NaN or infinite in epoch" in lines[0]
    res = json.loads((run_dir / "results.json").read_text())
    assert res["status"] == "failed" and "NaN or infinite" in res["error"]
    if (run_dir / "checkpoint.pt").exists():  # a checkpoint is only ever a good one
        ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=False)
        assert torch.isfinite(ckpt["w_ih"]).all() and torch.isfinite(ckpt["w_ho"]).all()
        assert res["epochs"] == ckpt["epoch"]


def test_nonfinite_weights_keep_the_last_good_checkpoint(tmp_path, tiny_png, monkeypatch):
    """Weights turn NaN in epoch 5 (after the chunk of epochs 1-3 was saved): the run stops
    there, the checkpoint and results.json still describe epoch 3, status failed."""
    calls = {"n": 0}
    update = learning.weight_updates

    def broken(*args, **kwargs):
        calls["n"] += 1
        dw_ih, dw_ho = update(*args, **kwargs)
        return (dw_ih * float("nan"), dw_ho) if calls["n"] == 5 else (dw_ih, dw_ho)

    monkeypatch.setattr(learning, "weight_updates", broken)
    run_dir = tmp_path / "run"
    with pytest.raises(NonFiniteError, match="W_ih became NaN or infinite in epoch 5"):
        _run_in_process(run_dir, *tiny_overrides(tiny_png, nb_epochs=9, logging_freq=3))
    res = json.loads((run_dir / "results.json").read_text())
    assert res["status"] == "failed" and res["epochs"] == 3
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == 3 and torch.isfinite(ckpt["w_ih"]).all()
    chunks = sorted(p.name for p in (run_dir / "data").glob("loss_hist_vRd_[0-9]*.npy"))
    assert chunks == ["loss_hist_vRd_3.npy"]


def test_resume_false_over_a_finished_run_moves_it_aside(tmp_path, tiny_png):
    run_dir = tmp_path / "run"
    run_cli(run_dir, *tiny_overrides(tiny_png, nb_epochs=4, logging_freq=2))
    run_cli(run_dir, *tiny_overrides(tiny_png, nb_epochs=3, logging_freq=3), "resume=false")
    names = sorted(p.name for p in (run_dir / "data").glob("loss_hist_vRd_[0-9]*.npy"))
    assert names == ["loss_hist_vRd_3.npy"]  # no chunk of the old run beside the new one
    (old,) = tmp_path.glob("run.old-*")
    old_names = sorted(p.name for p in (old / "data").glob("loss_hist_vRd_[0-9]*.npy"))
    assert old_names == ["loss_hist_vRd_2.npy", "loss_hist_vRd_4.npy"]
    assert json.loads((old / "results.json").read_text())["epochs"] == 4
    assert json.loads((run_dir / "results.json").read_text())["epochs"] == 3


def test_changed_settings_are_refused_with_one_line(tmp_path, tiny_png):
    run_dir = tmp_path / "run"
    args = tiny_overrides(tiny_png, nb_epochs=2, logging_freq=2)
    run_cli(run_dir, *args)
    before = (run_dir / "results.json").read_text()
    proc = run_cli(run_dir, *args, "seed=18", check=False)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("error: seed=18 differs from the run in this folder (seed=17)")
    assert "resume=false" not in proc.stderr  # never recommends mixing runs
    assert (run_dir / "results.json").read_text() == before


def test_equal_time_constants_train_on_the_limit_kernel(tmp_path, tiny_png):
    """tau_mem == tau_syn: the van Rossum distance uses eps0 (t/tau) e^{-t/tau}, not 0."""
    over = tiny_overrides(tiny_png, nb_epochs=2, logging_freq=2, tau_syn=0.01)
    res = _run_in_process(tmp_path / "run", *over)
    assert res["status"] == "completed"
    first = res["losses"]["first"]
    assert first["loss_hist_vRd"] > 0.01 and first["loss_hist_L2"] > 0
    assert np.isfinite(np.load(tmp_path / "run" / "data" / "dw0_mean_hist_2.npy")).all()


def test_rerun_of_a_finished_run_does_nothing_and_a_longer_one_extends_it(tmp_path, tiny_png):
    run_dir = tmp_path / "run"
    run_cli(run_dir, *tiny_overrides(tiny_png, nb_epochs=2, logging_freq=2))
    before = (run_dir / "results.json").read_text()
    proc = run_cli(run_dir, *tiny_overrides(tiny_png, nb_epochs=2, logging_freq=2))
    assert "already completed" in proc.stdout
    assert (run_dir / "results.json").read_text() == before
    run_cli(run_dir, *tiny_overrides(tiny_png, nb_epochs=4, logging_freq=2))
    res = json.loads((run_dir / "results.json").read_text())
    assert res["status"] == "completed" and res["epochs"] == 4
    assert res["timing"]["resumed_from_epoch"] == 2
    assert (run_dir / "data" / "loss_hist_vRd_4.npy").exists()


def test_sigterm_is_one_line_and_status_interrupted(tmp_path, tiny_png):
    import signal
    import subprocess
    import sys

    run_dir = tmp_path / "term"
    args = tiny_overrides(tiny_png, nb_epochs=100000, logging_freq=20)
    cmd = [sys.executable, "run_image_task_1hid.py", "--config-name=config", *args]
    proc = subprocess.Popen(
        [*cmd, f"hydra.run.dir={run_dir}"],
        cwd=EXPERIMENTS,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (run_dir / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert err.strip().splitlines() == [
        "error: stopped by signal SIGTERM; rerun the same command to resume from the last "
        "checkpoint"
    ]
    res = json.loads((run_dir / "results.json").read_text())
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert res["status"] == "interrupted" and res["epochs"] == ckpt["epoch"]


def test_a_file_where_the_run_folder_should_be_is_one_line(tmp_path, tiny_png):
    (tmp_path / "file").write_text("x")
    proc = run_cli(tmp_path / "file" / "run", *tiny_overrides(tiny_png), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith(f"error: hydra.run.dir={tmp_path / 'file' / 'run'} is")
    assert "not writable" in proc.stderr


def test_a_full_disk_while_writing_the_chunk_files_is_one_error(tmp_path, tiny_png, monkeypatch):
    import errno
    import os

    from sgruns.errors import RunFolderError

    real = training.save_npy_atomic

    def save(path, array):
        if path.name.endswith("_4.npy"):  # inputs and the first chunk fit, the second does not
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, array)

    monkeypatch.setattr(training, "save_npy_atomic", save)
    args = tiny_overrides(tiny_png, nb_epochs=4, logging_freq=2)
    args = [a for a in args if not a.startswith(("wandb", "progress"))]
    with pytest.raises(RunFolderError, match="cannot write data/ \\(No space left on device\\)"):
        _run_in_process(tmp_path, *args, "wandb.mode=disabled", "progress=false")
    res = json.loads((tmp_path / "results.json").read_text())
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert res["status"] == "failed" and res["epochs"] == ckpt["epoch"] == 2
