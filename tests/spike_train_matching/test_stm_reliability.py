"""Bad inputs and faults of whole runs and of the command line (tiny configs, seconds each):
no recorded result is lost, nothing nonsensical is recorded as completed, every message
names the setting the user typed, sizes are bounded before anything is allocated, and
Hydra's own errors read like every other (`error: <setting>=<value> ...`, exit status 1)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import torch
from conftest import EXPERIMENTS, TINY, compose, refusal, run_cli, tiny_overrides

from sgruns.errors import CheckpointError
from sgtheory.backends.threads import usable_cores
from sgtheory.errors import ConfigError, NonFiniteError
from stm import checks, derived, memory, model, training


def _run_in_process(run_dir, *overrides, chosen=None):
    cfg = compose(*overrides)
    checked = checks.check(cfg, chosen=chosen)
    return training.run(cfg, run_dir, checked, time.perf_counter())


def _one_line(proc: subprocess.CompletedProcess, start: str) -> str:
    """The single stderr line of a run that stopped with status 1, starting `error: start`."""
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"error: {start}"), lines[0]
    return lines[0]


def _validate_error(*overrides: str, chosen=None) -> str:
    with pytest.raises(ConfigError) as info:
        checks.check(compose(*overrides), chosen=chosen)
    return str(info.value)


@pytest.fixture(scope="module")
def mid_png(tmp_path_factory):
    """A tiny target whose pixels lie in [0.2, 0.8] (so 0.1 and 0.9 are outside its range)."""
    import matplotlib.pyplot as plt

    path = tmp_path_factory.mktemp("mid") / "mid.png"
    img = 0.2 + 0.6 * np.random.default_rng(3).random((TINY["nb_outputs"], TINY["nb_steps"]))
    img[0, 0], img[0, 1] = 0.2, 0.8
    plt.imsave(path, img, cmap="gray", vmin=0.0, vmax=1.0)
    return path


# ------------------------------------------------------------------ data never dropped
def test_rerun_over_a_damaged_results_json_keeps_every_record(tmp_path, tiny_png):
    """A finished run's results.json replaced by garbage, then by a "failed" record without
    its statistics: the same command restores the final-epoch statistics and the timing of
    the session that trained, exactly as first written."""
    run_dir = tmp_path / "run"
    args = tiny_overrides(tiny_png, nb_epochs=4, logging_freq=2)
    run_cli(run_dir, *args)
    first = json.loads((run_dir / "results.json").read_text())
    assert "final_epoch" in first["spike_stats"] and first["timing"]["epochs_this_session"] == 4
    for damage in ("{not json", json.dumps({"status": "failed", "epochs": 4})):
        (run_dir / "results.json").write_text(damage)
        run_cli(run_dir, *args)
        again = json.loads((run_dir / "results.json").read_text())
        assert again["status"] == "completed" and again["epochs"] == 4
        for key in ("spike_stats", "timing", "losses", "warnings"):
            assert again[key] == first[key], key


def test_rerun_without_the_final_record_is_refused(tmp_path, tiny_png):
    """A checkpoint holding every epoch but no final statistics (and no copy of its results)
    beside a damaged results.json: refused in one error naming the folder, nothing written."""
    run_dir = tmp_path / "run"
    args = tiny_overrides(tiny_png, nb_epochs=2, logging_freq=2)
    run_cli(run_dir, *args)
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    for key in ("last", "timing", "results"):
        ckpt.pop(key)
    torch.save(ckpt, run_dir / "checkpoint.pt")
    (run_dir / "results.json").write_text("{")
    with pytest.raises(CheckpointError, match="holds all 2 epochs but not the last epoch's"):
        _run_in_process(run_dir, *args)
    assert (run_dir / "results.json").read_text() == "{"


def test_leftover_temporary_files_of_a_save_are_removed(tmp_path, tiny_png):
    """Temporary files of an interrupted atomic write (in data/ and beside the checkpoint)
    are removed by the next run in the folder; the run's own files stay."""
    run_dir = tmp_path / "run"
    args = tiny_overrides(tiny_png, nb_epochs=2, logging_freq=2)
    run_cli(run_dir, *args)
    leftovers = []
    for folder, name in ((run_dir / "data", "loss_hist_vRd_4.npy"), (run_dir, "checkpoint.pt")):
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
        leftovers.append(tmp)
        with open(fd, "wb") as fh:
            fh.write(b"half a file")
    run_cli(run_dir, *tiny_overrides(tiny_png, nb_epochs=4, logging_freq=2))
    assert not any(os.path.exists(p) for p in leftovers)
    assert (run_dir / "data" / "loss_hist_vRd_4.npy").exists()
    assert json.loads((run_dir / "results.json").read_text())["status"] == "completed"


# ------------------------------------------------------------------ nothing nonsensical
@pytest.mark.parametrize(
    ("call", "index", "key"), [(3, 0, "loss_hist_vRd"), (4, 1, "loss_hist_L2_valid")]
)
def test_a_nonfinite_loss_stops_the_run(tmp_path, tiny_png, monkeypatch, call, index, key):
    """A loss turning inf in epoch 2 (weights finite) stops the run there, status failed,
    the checkpoint and results.json those of epoch 1 (losses are computed twice an epoch:
    training pass, then validation pass)."""
    calls = {"n": 0}
    real = model.losses

    def losses(*args):
        calls["n"] += 1
        out = list(real(*args))
        if calls["n"] == call:
            out[index] = math.inf
        return tuple(out)

    monkeypatch.setattr(model, "losses", losses)
    run_dir = tmp_path / "run"
    with pytest.raises(NonFiniteError, match=f"{key} became NaN or infinite in epoch 2"):
        _run_in_process(run_dir, *tiny_overrides(tiny_png, nb_epochs=3, logging_freq=1))
    res = json.loads((run_dir / "results.json").read_text())
    assert res["status"] == "failed" and res["epochs"] == 1 and key in res["error"]
    assert all(math.isfinite(v) for v in res["losses"]["final"].values())


def test_eps0_too_large_for_float32_is_refused():
    """eps0=1e30: the van Rossum distance would be inf in float32 (up to nb_steps x
    (sum |eps|)^2); refused naming eps0 before any work."""
    msg = _validate_error("eps0=1e30")
    assert msg.startswith("eps0=1e+30 is not valid (default 0.2): the kernel eps sums to")
    ok = 189 * (0.2 * sum(abs(math.exp(-t / 10) - math.exp(-t / 5)) for t in range(189))) ** 2
    assert ok < derived.F32_MAX  # the default is far inside the bound


@pytest.mark.parametrize(
    ("eps0", "why"),
    [("1e-300", "the kernel eps rounds to 0 in float32"), ("1e-30", "below float32's smallest")],
)
def test_eps0_whose_distances_round_to_zero_is_refused(eps0, why):
    """eps0=1e-300: the kernel itself is 0 in float32; eps0=1e-30: the kernel is not, but
    a single spike's van Rossum distance 1/2 sum eps^2 / nb_outputs (about 1e-62) is."""
    msg = _validate_error(f"eps0={eps0}")
    assert msg.startswith(f"eps0={eps0} is not valid (default 0.2)") and why in msg
    checks.check(compose("eps0=1e-17"))  # 1/2 sum eps^2 / 200 about 2e-37: kept


@pytest.mark.parametrize(
    ("out_prob", "what"),
    [
        ("1.5", "a spike in every step"),
        ("0.9", "a spike in every step"),
        ("0.1", "no spike at all"),
    ],
)
def test_an_all_spike_or_empty_target_is_refused(mid_png, out_prob, what):
    """Pixels in [0.2, 0.8]: out_prob above 0.8 puts a spike everywhere, below 0.2 nowhere."""
    msg = _validate_error(f"dataset.data_path={mid_png}", f"out_prob={out_prob}", *_tiny_sizes())
    assert msg.startswith(f"out_prob={out_prob} is not valid for dataset.data_path=")
    assert what in msg and "above 0.2 (the darkest pixel) and at most 0.8" in msg


def test_a_uniform_image_is_refused_naming_the_image(tmp_path):
    import matplotlib.pyplot as plt

    path = tmp_path / "flat.png"
    plt.imsave(
        path, np.full((TINY["nb_outputs"], TINY["nb_steps"]), 0.5), cmap="gray", vmin=0, vmax=1
    )
    msg = _validate_error(f"dataset.data_path={path}", *_tiny_sizes())
    assert msg.startswith(f"dataset.data_path='{path}' is not a usable target: every pixel is")


def test_a_dataset_name_that_does_not_match_its_data_is_refused(tmp_path, tiny_png):
    proc = run_cli(tmp_path / "run", *tiny_overrides(tiny_png), "dataset.name=oxford", check=False)
    line = _one_line(proc, "dataset.name='oxford' does not match the dataset chosen (dataset=scene")
    assert "dataset=oxford" in line and not (tmp_path / "run" / "data").exists()
    msg = _validate_error("dataset.name=oxford", chosen={"dataset": "scene"})
    assert msg.startswith("dataset.name='oxford' does not match")
    checks.check(compose(), chosen={"dataset": "scene"})  # the default matches


def test_another_datasets_image_is_refused():
    """dataset=oxford with the shipped scene image: the run would be recorded as oxford."""
    scene = checks.CONFIG_DIR.parent.parent / "data" / "scene_200x189.png"
    msg = _validate_error("dataset=oxford", f"dataset.data_path={scene}")
    assert msg == (
        f"dataset.data_path={scene} is not valid with dataset=oxford: it is the image of "
        "dataset=scene; use dataset=scene for it, or give oxford's own image"
    )


def test_a_silent_network_is_flagged_with_one_warning_line(tmp_path, tiny_png):
    """threshold=1e30: no spike anywhere in any epoch. The run completes (a surrogate could
    revive such a network), one warning line on stderr, results.json counts every epoch."""
    run_dir = tmp_path / "run"
    args = tiny_overrides(tiny_png, nb_epochs=3, logging_freq=3, threshold="1e30")
    proc = run_cli(run_dir, *args)
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "fired no spike in epoch 1" in warnings[0], proc.stderr
    res = json.loads((run_dir / "results.json").read_text())
    assert res["status"] == "completed"
    assert res["silent_epochs"] == {
        "hidden": {"epochs": 3, "first": 1, "last": 3},
        "output": {"epochs": 3, "first": 1, "last": 3},
    }
    assert len(res["warnings"]) == 3 and "3 of 3 epochs" in res["warnings"][0]
    # the surrogate 1 / (beta |x| + 1)^2 at x = -1e30 is 0 in float32: nothing moves
    assert res["unchanged_epochs"] == {"epochs": 3, "first": 1, "last": 3}
    spk = np.load(run_dir / "data" / "spk_hist_h_3.npy")
    assert spk.sum() == 0 and res["spike_stats"]["final_epoch"]["train"]["rate_hidden_hz"] == 0


def test_a_saturated_layer_is_flagged(tmp_path, tiny_png):
    """Exponential escape noise with p0=1 and a huge delta_u_h: every hidden neuron fires at
    every step (probability p0 exp((u - threshold) / delta_u_h) = 1); flagged, not stopped."""
    run_dir = tmp_path / "run"
    over = ["method=multilayerspiker", "method.sigm=false", "p0=1", "delta_u_h=1e30"]
    args = tiny_overrides(tiny_png, nb_epochs=2, logging_freq=2, **{"method.nb_trials": 2})
    proc = run_cli(run_dir, *args, *over)
    assert [line for line in proc.stderr.splitlines() if line.startswith("warning:")] == [
        "warning: the hidden layer fired at every step in epoch 1; training goes on (a "
        "surrogate gradient may move it); check threshold=1.0, sigma_u=1.0, input_rate=50.0 "
        "and the escape noise's settings; results.json counts such epochs under warnings"
    ]
    res = json.loads((run_dir / "results.json").read_text())
    assert res["saturated_epochs"] == {"hidden": {"epochs": 2, "first": 1, "last": 2}}
    assert np.load(run_dir / "data" / "spk_hist_h_2.npy").all()


def test_epochs_without_any_weight_change_are_flagged(tmp_path, tiny_png):
    """Both learning rates 0: every update is 0, flagged in one warning line and counted."""
    run_dir = tmp_path / "run"
    args = tiny_overrides(tiny_png, nb_epochs=2, logging_freq=2)
    proc = run_cli(run_dir, *args, "dataset_method.lr_h=0", "dataset_method.lr_o=0")
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: no weight changed in epoch 1 (every update 0 in float32); check "
        "dataset_method.lr_h=0, dataset_method.lr_o=0, delta_u_o=0.013; results.json counts "
        "such epochs under warnings"
    ]
    res = json.loads((run_dir / "results.json").read_text())
    assert res["unchanged_epochs"] == {"epochs": 2, "first": 1, "last": 2}
    assert not np.load(run_dir / "data" / "dw0_mean_hist_2.npy").any()


def test_a_required_setting_missing_from_the_config_is_named(tmp_path):
    """A config file that leaves a setting out composes (the schema has no default for it)
    and is refused by the check naming the setting."""
    import shutil

    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from stm.schema import register

    register()
    config_dir = tmp_path / "config_experiments"
    shutil.copytree(EXPERIMENTS / "config_experiments", config_dir)
    text = (config_dir / "config.yaml").read_text()
    (config_dir / "config.yaml").write_text(re.sub(r"(?m)^seed: .*\n", "", text))
    with initialize_config_dir(str(config_dir), version_base="1.3"):
        cfg = hydra_compose("config")
    with pytest.raises(ConfigError, match=r"^seed is not set; it is a required setting"):
        checks.check(cfg, config_dir)


def test_a_network_that_fires_has_no_warnings(short_runs):
    for run_dir in short_runs.values():
        res = json.loads((run_dir / "results.json").read_text())
        assert res["warnings"] == [] and "silent_epochs" not in res
        assert "saturated_epochs" not in res and "unchanged_epochs" not in res
        assert np.load(run_dir / "data" / "spk_hist_o_7.npy").any()


# ------------------------------------------------------------------ the setting typed is named
def _tiny_sizes() -> list[str]:
    return [f"dataset.{k}={v}" for k, v in TINY.items()]


@pytest.mark.parametrize(
    ("override", "start", "why"),
    [
        (
            "input_rate=1e-300",
            "input_rate=1e-300 is not valid (default 50.0)",
            "initial weights W_ih",
        ),
        ("sigma_u=1e300", "sigma_u=1e+300 is not valid (default 1.0)", "initial weights W_ih"),
        ("sigma_u=1e-300", "sigma_u=1e-300 is not valid (default 1.0)", "initial weights W_ih"),
        ("tau_syn=1e-300", "tau_syn=1e-300 is not valid (default 0.005)", "initial weights W_ih"),
        ("tau_mem=1e300", "tau_mem=1e+300 is not valid (default 0.01)", "membrane never takes"),
        ("tau_syn=1e300", "tau_syn=1e+300 is not valid (default 0.005)", "current never decays"),
        ("dt=1e-300", "dt=1e-300 is not valid (default 0.001)", "rounds to 1 in float32"),
        ("delta_u_o=1e-300", "delta_u_o=1e-300 is not valid (default 0.013)", "divides the output"),
        ("threshold=1e300", "threshold=1e+300 is not valid", "computes in float32"),
        ("beta_o=1e-300", "beta_o=1e-300 is not valid", "computes in float32"),
    ],
)
def test_derived_quantities_name_the_setting_typed(override, start, why):
    """Decay factors, initial weight scales and the error scale are checked where they come
    from (in float64 logs, against float32's range); the message starts with the setting
    typed, not with the learning rates."""
    msg = _validate_error(override)
    assert msg.startswith(start) and why in msg and "lr_" not in msg


def test_initial_weight_std_bound_is_the_formula():
    """The std check follows sigma_u / sqrt(N nu eps_hat): just inside float32 passes, a
    factor 10 beyond is refused (sigma_u chosen from the closed form)."""
    eps_hat = 0.005**2 / (2 * 0.015)
    std_at_1 = 1 / math.sqrt(200 * 50 * eps_hat)
    edge = derived.F32_MAX / (6 * 200) / std_at_1  # sigma_u where fan-in x 6 std = max
    checks.check(compose(f"sigma_u={edge / 10}"))
    assert _validate_error(f"sigma_u={edge * 10}").startswith("sigma_u=")


def test_input_without_any_spike_names_input_rate(tmp_path, tiny_png):
    """input_rate=1e-20 is within every range, but the frozen input then holds no spike."""
    with pytest.raises(
        ConfigError, match=r"^input_rate=1e-20 is not valid here: .* holds no spike"
    ):
        _run_in_process(
            tmp_path / "run", *tiny_overrides(tiny_png), "input_rate=1e-20", "sigma_u=1e-5"
        )
    assert not (tmp_path / "run").exists()  # checked before the run folder is made


def test_nonfinite_initial_weights_name_the_settings_that_made_them(
    tmp_path, tiny_png, monkeypatch
):
    """Should the weights drawn be non-finite despite the checks, the error names the
    settings of the initialisation, not the learning rates, and nothing is written."""
    monkeypatch.setattr(
        training, "init_weights", lambda n_pre, n_post, *a: torch.full((n_pre, n_post), math.inf)
    )
    with pytest.raises(NonFiniteError) as info:
        _run_in_process(tmp_path / "run", *tiny_overrides(tiny_png))
    assert str(info.value) == (
        "sigma_u=1.0 input_rate=50.0 tau_mem=0.01 tau_syn=0.005: W_ih became NaN or infinite "
        "at initialisation"
    )
    assert not (tmp_path / "run").exists()


def test_a_nan_during_training_names_the_setting_far_from_its_default(tmp_path, tiny_png):
    """delta_u_o=1e-30 passes the checks made before training but blows the weights up in
    epoch 2: the message names delta_u_o (the learning rates only as the alternative)."""
    proc = run_cli(
        tmp_path / "run", *tiny_overrides(tiny_png, nb_epochs=4), "delta_u_o=1e-30", check=False
    )
    line = _one_line(proc, "delta_u_o=1e-30 is far from its default 0.013 (bring it closer")
    assert re.search(r"(W_ih|W_ho|loss_hist_\w+) became NaN or infinite in epoch \d", line)


def test_nonfinite_hint_names_the_learning_rates_when_they_changed_most():
    defaults = derived.shipped_defaults(checks.CONFIG_DIR, "scene", "superspike")
    hint = derived.nonfinite_hint(compose("dataset_method.lr_h=1e38", "sigma_u=10"), defaults)
    assert hint.startswith("dataset_method.lr_h=1e+38 dataset_method.lr_o=0.0001: lower")
    assert derived.nonfinite_hint(compose(), defaults).startswith("dataset_method.lr_h=1e-05")
    assert derived.nonfinite_hint(compose("p0=1e-9"), defaults).startswith("p0=1e-09 is far")


def test_data_path_to_a_directory_says_so(tmp_path):
    msg = _validate_error(f"dataset.data_path={tmp_path}")
    assert msg == (
        f"dataset.data_path='{tmp_path}' is a directory, not a file; give the path of an image "
        "file (PNG) in it"
    )


def test_data_path_to_a_device_is_not_a_regular_file():
    msg = _validate_error("dataset.data_path=/dev/null")
    assert msg.startswith("dataset.data_path='/dev/null' is not a regular file")


def test_a_wandb_project_name_wandb_refuses_is_named_before_the_run(tmp_path, tiny_png):
    """wandb refuses '/' in a project name only when it starts (after data/ is written):
    checked with the settings instead, naming wandb.project."""
    run_dir = tmp_path / "run"
    over = [*tiny_overrides(tiny_png), "wandb.mode=offline", "wandb.project=a/b"]
    proc = run_cli(run_dir, *over, check=False)
    _one_line(proc, "wandb.project='a/b' is not valid; a wandb project name may not contain")
    assert not (run_dir / "data").exists()


# ------------------------------------------------------------------ no traceback
@pytest.mark.parametrize(
    "override",
    [
        "dataset.nb_hidden=200.0",
        "dataset.batch_size=2.0",
        "method.nb_trials=2.0",
        "valid_nb_trials=1.0",
        "logging_freq=500.0",
        "nb_epochs=1500.0",
        "fano_window=10.0",
        "max_chunks=1.0",
        "threads=1.0",
        "seed=1000.0",
    ],
)
def test_a_whole_number_float_for_an_integer_setting_is_refused(override):
    """Refused by the schema while composing: an integer setting takes no float, 200.0
    included."""
    key, value = override.split("=")
    assert refusal(override).startswith(f"{key}={value} is not valid; it must be an integer")


def test_a_whole_number_float_on_the_command_line_is_one_line(tmp_path, tiny_png):
    proc = run_cli(
        tmp_path / "run", *tiny_overrides(tiny_png), "dataset.nb_hidden=15.0", check=False
    )
    _one_line(proc, "dataset.nb_hidden=15.0 is not valid; it must be an integer")
    assert not (tmp_path / "run").exists()  # refused before Hydra made the run folder


# ------------------------------------------------------------------ bounded before it starts
@pytest.mark.parametrize("override", ["dataset.batch_size=100000", "method.nb_trials=100000000"])
def test_sizes_beyond_the_memory_are_refused_with_the_estimate(tmp_path, override):
    """Refused before any allocation with the estimate; the data and run folder untouched."""
    proc = run_cli(tmp_path / "run", override, "wandb.mode=disabled", check=False)
    line = _one_line(proc, f"{override} is not valid here: the run would need about")
    assert (
        re.search(r"about [\d.]+ (TiB|PiB) of memory", line) and "available on this machine" in line
    )
    need, _ = memory.estimate(compose(override))
    assert need > 2**40  # more than a TiB
    assert not (tmp_path / "run" / "data").exists()


def test_memory_estimate_bounds_the_measured_peak(tmp_path, tiny_png):
    """With the process's own memory measured by a tiny run (the libraries), the estimate
    is at least the peak resident memory of a real run whose epoch arrays dominate (60
    trials of 200 + 200 neurons), and within a factor 2 of it."""

    def peak(run_dir):
        return json.loads((run_dir / "results.json").read_text())["timing"]["peak_rss_mb"]

    run_cli(tmp_path / "tiny", *tiny_overrides(tiny_png, nb_epochs=1))
    base = int(peak(tmp_path / "tiny") * 2**20)
    over = [
        "method=stochasticsuperspike",
        "method.nb_trials=60",
        "save_spk=false",
        "nb_epochs=1",
        "dataset.nb_inputs=200",
        "dataset.nb_hidden=200",
        "dataset.nb_outputs=200",
        "dataset.nb_steps=189",
    ]
    run_cli(tmp_path / "big", *over, "wandb.mode=disabled", "progress=false")
    measured = peak(tmp_path / "big") * 2**20
    need, parts = memory.estimate(compose(*over), base=base)
    assert measured <= need <= 2 * measured, (measured / 2**20, need / 2**20)
    assert parts["one epoch's arrays"] > measured - base  # the arrays dominate as intended


def test_available_memory_is_read():
    have = memory.available()
    assert have is not None and 0 < have <= 2**60


# ------------------------------------------------------------ the same rules as Classification
def test_threads_rules():
    cores = usable_cores()
    assert _validate_error("threads=1000").startswith(
        f"threads=1000 is not valid: this process may run on {cores} core(s)"
    )
    assert _validate_error("threads=0").startswith("threads=0 is not valid")
    checks.check(compose("threads=null"))
    checks.check(compose(f"threads={cores}"))
    assert compose().threads == 1  # the default: one thread


def test_threads_null_uses_every_usable_core(tmp_path, tiny_png, monkeypatch):
    seen = []
    monkeypatch.setattr(torch, "set_num_threads", seen.append)
    _run_in_process(tmp_path / "run", *tiny_overrides(tiny_png, nb_epochs=1), "threads=null")
    assert seen == [usable_cores()]


def test_a_checkpoint_naming_the_threads_num_threads_resumes(tmp_path, tiny_png):
    """Checkpoints whose settings call the thread count num_threads resume like any other."""
    run_dir = tmp_path / "run"
    run_cli(run_dir, *tiny_overrides(tiny_png, nb_epochs=2, logging_freq=2))
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    ckpt["config"]["num_threads"] = ckpt["config"].pop("threads")
    torch.save(ckpt, run_dir / "checkpoint.pt")
    res = _run_in_process(run_dir, *tiny_overrides(tiny_png, nb_epochs=4, logging_freq=2))
    assert res["status"] == "completed" and res["timing"]["resumed_from_epoch"] == 2


def test_seed_rules():
    checks.check(compose("seed=0"))
    assert _validate_error("seed=-1").startswith(
        "seed=-1 is not valid; it must be an integer from 0"
    )
    assert refusal("seed=1.0").startswith("seed=1.0 is not valid; it must be an integer")


# ------------------------------------------------------------------ Hydra's errors, one line
def test_a_failed_sweep_job_records_its_failure(tmp_path, tiny_png):
    """-m with a value out of range: each job stops with one error line, the sweep goes on,
    and each job's folder gets a results.json saying failed and why (so the collection
    lists it)."""
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "run_image_task_1hid.py", "--config-name=config", "-m", "seed=1,2"]
    cmd += [*tiny_overrides(tiny_png), "fano_window=31", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(cmd, cwd=EXPERIMENTS, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and all("fano_window=31 is not valid" in e for e in errors)
    records = sorted(sweep.glob("seed=*/results.json"))
    assert len(records) == 2
    for path in records:
        res = json.loads(path.read_text())
        assert res["status"] == "failed" and res["error"].startswith("fano_window=31")


def test_a_sweep_with_a_wrong_type_stops_before_its_first_job(tmp_path, tiny_png):
    """-m with a value of the wrong type: refused by the schema before any job starts; one
    line, no sweep folder."""
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "run_image_task_1hid.py", "--config-name=config", "-m", "seed=1,2"]
    cmd += [*tiny_overrides(tiny_png), "dataset.nb_hidden=15.0", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(cmd, cwd=EXPERIMENTS, capture_output=True, text=True, timeout=300)
    _one_line(proc, "dataset.nb_hidden=15.0 is not valid; it must be an integer")
    assert not sweep.exists()


@pytest.mark.parametrize(
    ("args", "start"),
    [
        (["foo=1"], "foo=1 is not a setting of this experiment"),
        (["nb_epochs=abc"], "nb_epochs=abc is not valid; it must be an integer"),
        (
            ["num_threads=2"],
            "num_threads=2 is not a setting of this experiment; did you mean threads?",
        ),
        (
            ["dataset.nb_hidden={a:1}"],
            "dataset.nb_hidden={a:1} is not valid; it takes a single value",
        ),
        (["seed=[1,2]"], "seed=[1,2] is not valid; it takes a single value"),
        (
            ["--config-name=nonexistent"],
            "--config-name=nonexistent is not valid; choose one of: config",
        ),
        (
            ["method=superspike,multilayerspiker"],
            "method=superspike,multilayerspiker gives several values",
        ),
    ],
)
def test_hydra_errors_are_one_line(tmp_path, args, start):
    cmd = [sys.executable, "run_image_task_1hid.py", *args, f"hydra.run.dir={tmp_path / 'run'}"]
    if not args[0].startswith("--config-name"):
        cmd.insert(2, "--config-name=config")
    proc = subprocess.run(cmd, cwd=EXPERIMENTS, capture_output=True, text=True, timeout=120)
    _one_line(proc, start)
    assert not (tmp_path / "run").exists()  # refused before Hydra made the run folder
