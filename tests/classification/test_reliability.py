"""Faults during a run: broken weights, two runs in one folder, damaged files, a full disk.

Each case is a tiny Randman run (seconds), called in-process where possible; the README's
table "Bad inputs and faults" lists these cases and their outcomes.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import EXPERIMENTS, TINY, read_results, run_cli

from sgruns.cli import mark
from sgruns.errors import CheckpointError, RunFolderError
from sgruns.folder import RunFolder, read_status
from sgtheory.errors import ConfigError, DataError, NonFiniteError

QUIET = [*TINY, "wandb.mode=disabled", "plotting.enabled=false"]


@pytest.fixture
def run(compose):
    """run(folder, *overrides): run_experiment in-process on the tiny config."""
    from convsnn.experiment import run_experiment

    return lambda folder, *overrides: run_experiment(compose(*QUIET, *overrides), folder)


def _ckpt_epoch(folder) -> int:
    return int(torch.load(folder / "checkpoint.pt", weights_only=False)["epoch"])


def test_huge_learning_rate_fails_instead_of_completing_with_nan_weights(run, tmp_path):
    with pytest.raises(NonFiniteError) as err:
        run(tmp_path, "optimizer=sgd", "method.lr=1e30")
    message = str(err.value)
    # which parameter turns non-finite first depends on the algorithms: a dense product gives
    # 0 x inf = NaN where an input is 0, the sparse one skips zero inputs (conv_kernels)
    assert re.match(
        r"method\.lr=1e\+30 \(optimizer=sgd\): the gradient of hidden\.\d\.weight ", message
    )
    assert "became NaN or infinite in epoch 1" in message and "(no checkpoint)" in message
    res = read_results(tmp_path)
    assert res["status"] == "failed" and res["epochs_done"] == 0 and res["history"]["beta"] == []
    assert res["error"] == message and not (tmp_path / "checkpoint.pt").exists()


def _poison_step(monkeypatch, after_calls: int, what: str) -> None:
    """The optimiser's step number `after_calls + 1` leaves a NaN in a weight or gradient."""
    from convsnn import experiment

    real = experiment.make_optimizer
    calls = {"n": 0}

    def make(*args, **kwargs):
        opt = real(*args, **kwargs)
        step = opt.step

        def poisoned_step(*a, **k):
            calls["n"] += 1
            out = step(*a, **k)
            if calls["n"] == after_calls + 1:
                param = opt.param_groups[0]["params"][0]
                with torch.no_grad():
                    (param if what == "weight" else param.grad).view(-1)[0] = float("nan")
            return out

        opt.step = poisoned_step
        return opt

    monkeypatch.setattr(experiment, "make_optimizer", make)


@pytest.mark.parametrize("what", ["weight", "gradient"])
def test_a_nan_weight_with_a_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    run, tmp_path, monkeypatch, what
):
    # 144 training samples / batch 60 = 3 steps per epoch: step 4 is epoch 2, batch 1
    _poison_step(monkeypatch, 3, what)
    with pytest.raises(NonFiniteError) as err:
        run(tmp_path, "nb_epochs=3")
    assert f"the {what} hidden.0.weight" in str(err.value).replace("gradient of", "gradient")
    assert "in epoch 2, batch 1" in str(err.value) and "checkpoint of epoch 1" in str(err.value)
    res = read_results(tmp_path)
    assert res["status"] == "failed" and res["epochs_done"] == _ckpt_epoch(tmp_path) == 1
    assert len(res["history"]["train_loss"]) == 1
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert all(torch.isfinite(p).all() for p in ckpt["model"].values())


def test_nan_loss_keeps_last_good_checkpoint(run, tmp_path, monkeypatch):
    from convsnn import training

    real = training.loss_fn
    calls = {"n": 0}

    def poisoned(loss_type):
        f = real(loss_type)

        def loss(out, y):
            calls["n"] += 1
            value = f(out, y)
            return value * float("nan") if calls["n"] > 3 else value  # batch 1 of epoch 2

        return loss

    monkeypatch.setattr(training, "loss_fn", poisoned)
    with pytest.raises(NonFiniteError, match="loss became nan in epoch 2, batch 1"):
        run(tmp_path, "nb_epochs=3")
    res = read_results(tmp_path)
    assert res["status"] == "failed" and res["epochs_done"] == _ckpt_epoch(tmp_path) == 1


def test_a_full_disk_leaves_results_and_checkpoint_in_agreement(run, tmp_path, monkeypatch):
    real_save = torch.save
    calls = {"n": 0}

    def save(obj, fh, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the checkpoint after epoch 2
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, fh, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(RunFolderError) as err:
        run(tmp_path, "nb_epochs=3")
    assert str(err.value).startswith(f"hydra.run.dir={tmp_path}: cannot write checkpoint.pt")
    assert "No space left on device" in str(err.value)
    res = read_results(tmp_path)
    assert res["status"] == "failed" and res["epochs_done"] == _ckpt_epoch(tmp_path) == 1
    assert len(res["history"]["valid_acc"]) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(torch, "save", real_save)
    res = run(tmp_path, "nb_epochs=3")  # free space again: the same command resumes
    assert res["status"] == "completed" and res["epochs_done"] == 3


def test_a_held_folder_is_refused_at_once(run, tmp_path):
    with RunFolder(tmp_path):
        with pytest.raises(RunFolderError, match=f"process {os.getpid()}"):
            run(tmp_path)
    assert not (tmp_path / "results.json").exists()


def test_other_settings_in_a_used_folder_are_refused_with_the_command_that_moves_it(run, tmp_path):
    folder = tmp_path / "run"
    run(folder, "nb_epochs=1")
    before = (folder / "results.json").read_text(), _ckpt_epoch(folder)
    with pytest.raises(ConfigError) as err:
        run(folder, "nb_epochs=1", "seed=2")
    message = str(err.value)
    assert message.startswith("seed=2 differs from the run in this folder (seed=1)")
    assert ((folder / "results.json").read_text(), _ckpt_epoch(folder)) == before
    command = message[message.index("mv ") :]
    subprocess.run(shlex.split(command), check=True)  # exactly what the message says
    res = run(folder, "nb_epochs=1", "seed=2")
    assert res["status"] == "completed" and res["config"]["seed"] == 2
    (old,) = tmp_path.glob("run.old-*")
    assert read_results(old)["config"]["seed"] == 1


def test_an_earlier_failed_run_is_moved_aside_not_mixed(run, tmp_path):
    folder = tmp_path / "run"
    with pytest.raises(NonFiniteError):
        run(folder, "optimizer=sgd", "method.lr=1e30")
    res = run(folder, "nb_epochs=1")
    assert res["status"] == "completed"
    (old,) = tmp_path.glob("run.old-*")
    assert read_results(old)["status"] == "failed"


@pytest.mark.parametrize("damage", ["empty", "truncated", "foreign"])
def test_a_damaged_checkpoint_names_the_file_and_how_to_start_afresh(run, tmp_path, damage):
    run(tmp_path, "nb_epochs=1")
    path = tmp_path / "checkpoint.pt"
    data = path.read_bytes()
    if damage == "foreign":
        torch.save({"epoch": 1, "model": {"w": torch.ones(1)}, "config": {}}, path)
    else:
        path.write_bytes(b"" if damage == "empty" else data[: len(data) // 3])
    with pytest.raises((CheckpointError, ConfigError)) as err:
        run(tmp_path, "nb_epochs=1")
    message = str(err.value)
    if damage == "foreign":  # readable, but of other settings: refused, not loaded
        assert "differs from the run in this folder" in message
    else:
        assert message.startswith(f"checkpoint={path} cannot be read")
    assert f"mv {tmp_path} {tmp_path}.old" in message


def test_unwritable_run_folder(run, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RunFolderError, match="is not writable"):
        run(blocker / "run")


# ------------------------------------------------------------------ SHD files


def _shd_files(folder, label=None, unit=None, late=False, time=None):
    from sgtheory.data import write_shd_like

    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("test", 6)):
        times = [np.sort(rng.uniform(0, 0.6, 30)) for _ in range(n)]
        units = [rng.integers(0, 700, 30) for _ in range(n)]
        labels = list(np.arange(n) % 20)
        if split == "train":
            if label is not None:
                labels[3] = label
            if unit is not None:
                units[4][0] = unit
            if late:
                times[5] = times[5] + 0.8  # every spike of sample 5 after the 0.698 s window
            if time is not None:
                times[6][0] = time
        write_shd_like(folder / f"shd_{split}.h5", times, units, labels)
    return folder


@pytest.mark.parametrize(
    "kind,message",
    [
        ({"label": 20}, "sample 3: label 20 is out of range for dataset.nb_classes=20"),
        ({"unit": 700}, "sample 4: unit index 700 is out of range for dataset.nb_units=700"),
        ({"late": True}, "1 sample(s) have no spike within the 349 x 0.002 s"),
        ({"time": -0.1}, "sample 6: spike time -0.10000000149011612 is not valid"),
        ({"time": float("nan")}, "sample 6: spike time nan is not valid"),
    ],
)
def test_bad_shd_files_stop_before_training_naming_file_and_sample(
    compose, tmp_path, kind, message
):
    from convsnn.data import load_data, shd_paths

    datadir = _shd_files(tmp_path, **kind)
    cfg = compose("dataset=shd", f"dataset.datadir={datadir}", "fano.repeats=4")
    with pytest.raises(DataError) as err:
        load_data(cfg, shd_paths(cfg))
    text = str(err.value)
    assert text.startswith(f"dataset.datadir={datadir}: {datadir / 'shd_train.h5'}: ")
    assert message in text


def test_spikes_beyond_the_duration_are_reported_and_silent_samples_allowed_on_request(
    compose, tmp_path, caplog
):
    from convsnn.data import load_data, shd_paths

    datadir = _shd_files(tmp_path, late=True)
    cfg = compose(
        "dataset=shd",
        f"dataset.datadir={datadir}",
        "fano.repeats=4",
        "dataset.allow_silent_samples=true",
    )
    with caplog.at_level("WARNING"):
        data = load_data(cfg, shd_paths(cfg))
    report = data.files["train"]
    assert report["silent_samples"] == 1 and report["spikes_beyond_duration"] == 30
    assert "30 of 600 spikes (in 1 samples) lie at or after 0.698 s" in caplog.text
    assert data.files["test"]["spikes_beyond_duration"] == 0


@pytest.mark.parametrize("content", [b"", b"not hdf5 at all"])
def test_empty_or_foreign_shd_file(compose, tmp_path, content):
    from convsnn.data import load_data, shd_paths

    _shd_files(tmp_path)
    (tmp_path / "shd_test.h5").write_bytes(content)
    cfg = compose("dataset=shd", f"dataset.datadir={tmp_path}", "fano.repeats=4")
    with pytest.raises(DataError, match="shd_test.h5 is not a readable SHD file"):
        load_data(cfg, shd_paths(cfg))


# ------------------------------------------------------------------ whole processes


def test_cli_second_run_refused_and_killed_run_reads_interrupted(tmp_path):
    folder = tmp_path / "run"
    env = {**os.environ, "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0"}
    cmd = [sys.executable, str(EXPERIMENTS / "deep_convSNN.py"), *QUIET, "nb_epochs=500"]
    first = subprocess.Popen(
        [*cmd, f"hydra.run.dir={folder}"],
        cwd=EXPERIMENTS,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if json.loads((folder / "results.json").read_text())["epochs_done"] >= 1:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.2)
        assert read_status(folder) == "running"
        second = run_cli(folder, *QUIET, "seed=5")
        assert second.returncode == 1
        assert second.stderr == (
            f"error: hydra.run.dir={folder} is in use by another run (process {first.pid}); "
            "wait for it to end, or use another hydra.run.dir\n"
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert read_results(folder)["status"] == "running"  # as the killed process left it
    assert read_status(folder) == "interrupted"
    with RunFolder(folder):  # the next run takes the folder over
        assert read_results(folder)["status"] == "interrupted"
    assert read_results(folder)["epochs_done"] == _ckpt_epoch(folder)


def test_cli_wrong_type_and_device_are_one_line(tmp_path):
    proc = run_cli(tmp_path / "run", *QUIET, "regularizer.upper_l2.strength=abc")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert (
        proc.stderr
        == "error: regularizer.upper_l2.strength=abc is not valid; it must be a number\n"
    )
    assert not (tmp_path / "run").exists()  # refused while composing: nothing written
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = run_cli(blocker / "run", *QUIET)
    assert proc.returncode == 1 and proc.stderr.startswith(
        f"error: hydra.run.dir={blocker / 'run'} is not writable"
    )
    assert len(proc.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    "override,message",
    [
        ("dataset.max_samples=1", "dataset.max_samples=1 is not valid: it leaves the train"),
        ("dataset.valid_fraction=0.99", "dataset.valid_fraction=0.99 is not valid: it leaves"),
    ],
)
def test_an_empty_split_is_refused_before_training(compose, tmp_path, override, message):
    from convsnn.data import load_data, shd_paths

    datadir = _shd_files(tmp_path)
    cfg = compose("dataset=shd", f"dataset.datadir={datadir}", "fano.repeats=4", override)
    with pytest.raises(ConfigError, match=re.escape(message)):  # was a ZeroDivisionError
        load_data(cfg, shd_paths(cfg))


def test_a_checkpoint_written_into_a_full_disk_fails_as_oserror():
    """torch.save into a file that runs out of space raises RuntimeError ("unexpected pos");
    the checkpoint writer serialises in memory, so the write itself fails with ENOSPC."""
    import io

    from sgtheory.files import torch_writer

    class Full(io.RawIOBase):
        def writable(self):
            return True

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError) as err:
        torch_writer({"w": torch.zeros(1000)})(Full())
    assert err.value.errno == errno.ENOSPC


def test_the_holder_repairs_hydra_files_another_start_overwrote(tmp_path):
    """A second start is refused by the lock only after its Hydra wrote its .hydra/ here."""
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
    with RunFolder(tmp_path) as folder:
        folder.resume({"seed": 1})
        (tmp_path / ".hydra" / "overrides.yaml").write_text("- seed=2\n")  # the refused one
        folder.write_results({"x": 1})
        assert (tmp_path / ".hydra" / "overrides.yaml").read_text() == "- seed=1\n"


def test_a_checkpoint_without_settings_is_damaged(tmp_path):
    mark(tmp_path, "classification")  # a run folder of this project, holding a foreign file
    torch.save({"model": 1}, tmp_path / "checkpoint.pt")
    with RunFolder(tmp_path) as folder, pytest.raises(CheckpointError, match="holds no settings"):
        folder.resume({"seed": 1})
    assert (tmp_path / "checkpoint.pt").exists()  # left as it was


# ------------------------------------------------------------------ nothing nonsensical


@pytest.mark.parametrize(
    "overrides,named",
    [
        (["threshold=1e300"], "threshold=1e+300"),
        (["p0=1e-300", "method=exponentialstochasticsuperspike"], "p0=1e-300"),
    ],
)
def test_a_silent_network_is_flagged_in_results_and_one_warning_line(
    run, tmp_path, caplog, overrides, named
):
    with caplog.at_level("WARNING", logger="convsnn.experiment"):
        res = run(tmp_path, *overrides, "nb_epochs=2")
    assert res["status"] == "completed" and res["test"]["test_rates"] == [0.0, 0.0, 0.0]
    (warning,) = read_results(tmp_path)["warnings"]  # once, not once per epoch
    assert warning["epoch"] == 1
    assert warning["silent"] == ["hidden layer 1", "hidden layer 2", "hidden layer 3", "readout"]
    assert named in warning["warning"]
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert lines == [warning["warning"]]


def test_a_network_that_spikes_carries_no_warning(run, tmp_path):
    res = run(tmp_path, "nb_epochs=1")
    assert res["status"] == "completed" and res["warnings"] == []
    assert all(rate > 0 for rate in res["test"]["test_rates"])


@pytest.mark.parametrize("metric", ["valid_loss", "test_rates"])
def test_a_non_finite_metric_stops_the_run(run, tmp_path, monkeypatch, metric):
    from convsnn import experiment

    real = experiment.evaluate

    def poisoned(*args, **kwargs):
        out = real(*args, **kwargs)
        if metric == "valid_loss":
            out["loss"] = float("nan")
        else:
            out["rates"] = [float("inf")] * len(out["rates"])
        return out

    monkeypatch.setattr(experiment, "evaluate", poisoned)
    with pytest.raises(NonFiniteError) as err:
        run(tmp_path, "nb_epochs=1")
    if metric == "valid_loss":  # the phase before training evaluates the test set first
        assert "test_loss became nan before training" in str(err.value)
    else:
        assert "test_rates[0] became inf before training" in str(err.value)
    assert str(err.value).startswith("dataset.nu=5.0, method.target_sigma_u=1.0 (with")
    assert read_results(tmp_path)["status"] == "failed"


def test_a_nan_loss_before_the_first_step_names_the_initial_settings(run, tmp_path, monkeypatch):
    from convsnn import training

    real = training.loss_fn
    monkeypatch.setattr(training, "loss_fn", lambda t: lambda o, y: real(t)(o, y) * float("nan"))
    with pytest.raises(NonFiniteError) as err:
        run(tmp_path, "nb_epochs=1")
    message = str(err.value)
    assert message.startswith("dataset.nu=5.0, method.target_sigma_u=1.0 (with tau_mem=0.02")
    assert "method.lr" not in message and "change those settings" in message


def test_an_infinite_activity_penalty_names_the_regulariser(run, tmp_path):
    with pytest.raises(NonFiniteError) as err:
        run(tmp_path, "nb_epochs=1", "regularizer.upper_l2.strength=1e300", "threshold=1e-3")
    message = str(err.value)
    assert message.startswith("regularizer.upper_l2.strength=1e+300, regularizer.upper_l2.")
    assert "the activity penalty became inf in epoch 1, batch 1" in message


# ------------------------------------------------------------------ completed stays completed


@pytest.mark.parametrize("fault", ["memory", "disk full"])
def test_a_plot_failure_after_training_keeps_the_completed_results(
    run, tmp_path, monkeypatch, fault, caplog
):
    from convsnn import plots
    from sgtheory import files as runs

    def snapshot(*args, **kwargs):
        if fault == "memory":
            raise MemoryError("cannot allocate the canvas")
        # the disk is full: the figure and every later write fail
        monkeypatch.setattr(runs, "_write_temp", _full_disk)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "Plots/snapshot.png")

    monkeypatch.setattr(plots, "snapshot", snapshot)
    with caplog.at_level("WARNING"):
        res = run(tmp_path, "nb_epochs=1", "plotting.enabled=true")
    on_disk = read_results(tmp_path)
    assert on_disk["status"] == res["status"] == "completed"
    assert on_disk["test"]["test_acc"] == res["test"]["test_acc"] and "other" in on_disk
    assert "error" not in on_disk
    assert "plotting: the figures could not be drawn" in caplog.text
    if fault == "memory":
        assert on_disk["figures_error"].startswith("plotting: the figures could not be drawn")


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_batches_of_one_sample_are_not_taken_for_a_constant_readout(run, tmp_path):
    res = run(tmp_path, "nb_epochs=1", "batch_size=1")
    assert res["status"] == "completed" and res["warnings"] == []


def test_wandb_failing_to_start_names_wandb_mode(run, tmp_path, monkeypatch):
    import wandb

    def refuse(**kwargs):
        raise wandb.errors.UsageError("No API key configured")

    monkeypatch.setattr(wandb, "init", refuse)
    with pytest.raises(ConfigError, match=r"^wandb.mode=online: wandb could not start \(No API"):
        run(tmp_path, "nb_epochs=1", "wandb.mode=online")


def test_rerunning_a_completed_run_keeps_its_record(run, tmp_path, monkeypatch):
    first = run(tmp_path, "nb_epochs=1")
    before = (tmp_path / "results.json").read_text()
    from convsnn import experiment

    def broken(*args, **kwargs):
        raise KeyboardInterrupt  # whatever happens in a rerun's evaluation

    monkeypatch.setattr(experiment, "evaluate", broken)
    again = run(tmp_path, "nb_epochs=1")  # nothing to do: nothing evaluated
    assert again["test"] == first["test"] and (tmp_path / "results.json").read_text() == before
    (tmp_path / "results.json").write_text("{damaged")
    with pytest.raises(KeyboardInterrupt):  # a damaged record: recomputed, here interrupted
        run(tmp_path, "nb_epochs=1")
    assert read_results(tmp_path)["status"] == "interrupted"
    assert _ckpt_epoch(tmp_path) == 1
