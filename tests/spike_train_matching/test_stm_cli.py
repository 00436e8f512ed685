"""The command line: files and shapes of a short run, resume, and clear errors on bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import TINY, compose, refusal, run_cli, tiny_overrides, write_png

from sgtheory.errors import ConfigError
from stm import checks

KINDS_1D = [
    "loss_hist_vRd",
    "loss_hist_L2",
    "loss_hist_vRd_valid",
    "loss_hist_L2_valid",
    "dw0_mean_hist",
    "dw1_mean_hist",
]


def test_short_run_writes_every_file(short_runs):
    T, NI, NH, NO = TINY["nb_steps"], TINY["nb_inputs"], TINY["nb_hidden"], TINY["nb_outputs"]
    for method, run_dir in short_runs.items():
        data = run_dir / "data"
        trials, vtrials = (1, 1) if method == "superspike" else (3, 2)
        assert np.load(data / "x_data.npy").shape == (1, T, NI)
        z = np.load(data / "z_data.npy")
        assert z.shape == (1, T, NO)
        for end, n in ((3, 3), (6, 3), (7, 1)):
            for kind in KINDS_1D:
                arr = np.load(data / f"{kind}_{end}.npy")
                assert arr.shape == (n,) and np.isfinite(arr).all(), kind
            shapes = {
                "spk_hist_h": (n, trials, 1, T, NH),
                "spk_hist_o": (n, trials, 1, T, NO),
                "spk_hist_h_valid": (n, vtrials, 1, T, NH),
                "spk_hist_o_valid": (n, vtrials, 1, T, NO),
                "mem_hist_h": (n, trials, 1, T, NH),
                "mem_hist_o": (n, trials, 1, T, NO),
                "w_hist_h": (n, NI, NH),
                "w_hist_o": (n, NH, NO),
                "dw_hist_h": (n, NI, NH),
                "dw_hist_o": (n, NH, NO),
            }
            for kind, shape in shapes.items():
                assert np.load(data / f"{kind}_{end}.npy").shape == shape, kind
        # the weights of an epoch plus its update are the next epoch's weights
        w = np.concatenate([np.load(data / f"w_hist_o_{e}.npy") for e in (3, 6, 7)])
        dw = np.concatenate([np.load(data / f"dw_hist_o_{e}.npy") for e in (3, 6, 7)])
        np.testing.assert_allclose(w[:-1] + dw[:-1], w[1:], rtol=1e-6, atol=1e-6)
        # spikes are drawn from the stored membrane: deterministic spikes iff mem > threshold
        if method == "superspike":
            mem, spk = np.load(data / "mem_hist_h_3.npy"), np.load(data / "spk_hist_h_3.npy")
            np.testing.assert_array_equal(spk.astype(bool), mem > 1.0)
        res = json.loads((run_dir / "results.json").read_text())
        assert res["status"] == "completed" and res["epochs"] == 7
        assert res["losses"]["final"]["loss_hist_vRd"] == pytest.approx(
            float(np.load(data / "loss_hist_vRd_7.npy")[-1])
        )
        assert "rate_hidden_hz" in res["spike_stats"]["final_epoch"]["train"]
        assert res["timing"]["run_time_s"] > 0
        assert not (run_dir / "status.json").exists()  # results.json holds the status
    stoch = json.loads((short_runs["stochasticsuperspike"] / "results.json").read_text())
    assert stoch["spike_stats"]["final_epoch"]["train"]["fano_hidden"] is not None


def test_resume_equals_uninterrupted(tmp_path, tiny_png):
    args = [
        "method=stochasticsuperspike",
        "method.nb_trials=2",
        *tiny_overrides(tiny_png, nb_epochs=8, logging_freq=3, save_w="true"),
    ]
    full, split = tmp_path / "full", tmp_path / "split"
    run_cli(full, *args)
    run_cli(split, *args, "max_chunks=1")
    status = json.loads((split / "results.json").read_text())
    assert status["status"] == "interrupted" and status["epochs"] == 3
    assert not (split / "data" / "loss_hist_vRd_6.npy").exists()
    run_cli(split, *args)
    names = sorted(p.name for p in (full / "data").iterdir())
    assert names == sorted(p.name for p in (split / "data").iterdir())
    for name in names:
        np.testing.assert_array_equal(
            np.load(full / "data" / name), np.load(split / "data" / name), err_msg=name
        )
    a = torch.load(full / "checkpoint.pt", weights_only=False)
    b = torch.load(split / "checkpoint.pt", weights_only=False)
    assert torch.equal(a["w_ih"], b["w_ih"]) and torch.equal(a["w_ho"], b["w_ho"])
    assert json.loads((split / "results.json").read_text())["timing"]["resumed_from_epoch"] == 3


def test_wandb_offline_run(tmp_path, tiny_png):
    args = tiny_overrides(tiny_png, nb_epochs=2, logging_freq=1)
    args = [a for a in args if not a.startswith("wandb.mode")] + ["wandb.mode=offline"]
    run_cli(tmp_path / "run", *args)
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("method=foo", "method=foo is not valid; choose one of: multilayerspiker"),
        ("dataset=bar", "dataset=bar is not valid; choose one of: oxford, scene"),
        ("tau_mem=-1", "tau_mem=-1"),
        ("seed=abc", "seed=abc is not valid; it must be an integer"),
        ("fano_window=1000", "fano_window=1000 is not valid; it must be at most"),
        ("stochastic_escape_h=exponential", "stochastic_escape_h=exponential is not a setting"),
    ],
)
def test_bad_input_cli(tmp_path, tiny_png, override, message):
    proc = run_cli(tmp_path / "bad", *tiny_overrides(tiny_png), override, check=False)
    assert proc.returncode == 1
    assert f"error: {message}" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "bad" / "data").exists()  # nothing was written


@pytest.mark.parametrize("method", ["superspike", "stochasticsuperspike", "multilayerspiker"])
@pytest.mark.parametrize("dataset", ["scene", "oxford"])
def test_the_shipped_configs_compose_typed_and_pass_the_checks(method, dataset):
    """Every dataset x method of config_experiments composes into the schema with every
    setting set and passes every check; oxford's image, not shipped, is refused as missing."""
    from omegaconf import OmegaConf

    from stm.schema import STMSchema

    cfg = compose(f"method={method}", f"dataset={dataset}")
    assert OmegaConf.get_type(cfg) is STMSchema and not OmegaConf.missing_keys(cfg)
    assert (cfg.method.name, cfg.dataset.name) == (method, dataset)
    chosen = {"dataset": dataset, "method": method}
    if not checks.resolve_data_path(cfg.dataset.data_path).exists():  # oxford, not shipped
        with pytest.raises(ConfigError, match=r"^dataset.data_path=.*oxford.png.* not shipped"):
            checks.check(cfg, chosen=chosen)
        return
    checked = checks.check(cfg, chosen=chosen)
    assert checked["target"].shape == (cfg.dataset.nb_steps, cfg.dataset.nb_outputs)


def test_the_schema_imports_without_torch():
    """The entry script registers the schema before composing the command line: no torch."""
    code = "import sys, stm.schema; print(sorted({'torch', 'numpy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("tau_syn=0", "tau_syn=0 is not valid"),
        ("nb_epochs=0", "nb_epochs=0 is not valid"),
        ("dt=-0.001", "dt=-0.001 is not valid"),
        ("logging_freq=0", "logging_freq=0 is not valid"),
        ("valid_escape=foo", "valid_escape='foo' is not valid; choose one of"),
        ("method.name=foo", "method='foo' is not valid; choose one of"),
        ("seed=-1", "seed=-1 is not valid; it must be an integer from 0 to 2**63 - 1"),
        ("seed=99999999999999999999", "seed=99999999999999999999 is not valid"),
        ("fano_window=1000", "fano_window=1000 is not valid; it must be at most"),
        ("max_chunks=0", "max_chunks=0 is not valid; it must be a positive integer"),
        ("dataset_method.lr_o=inf", "dataset_method.lr_o=inf is not valid"),
        ("dataset_method.lr_h=-1e-5", "dataset_method.lr_h=-1e-05 is not valid"),
        ("input_rate=2000", "input_rate=2000 is not valid with dt=0.001"),
        ("device=cuda", "device='cuda' is not valid; choose one of: cpu"),
        ("wandb.mode=foo", "wandb.mode='foo' is not valid; choose one of"),
        ("wandb.project=''", "wandb.project='' is not valid; it must be a non-empty string"),
        ("dataset.data_path=/nonexistent/x.png", "does not exist"),
    ],
)
def test_values_out_of_range(override, message):
    """Values of the right type that no run can use: refused by `stm.checks.check`."""
    cfg = compose(override)
    with pytest.raises(ConfigError, match=re.escape(message)):
        checks.check(cfg)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("nb_epochs=2.5", "nb_epochs=2.5 is not valid; it must be an integer"),
        ("method.sigm=maybe", "method.sigm=maybe is not valid; it must be true or false"),
        ("seed=abc", "seed=abc is not valid; it must be an integer"),
        ("seed=1.5", "seed=1.5 is not valid; it must be an integer"),
        ("fano_window=abc", "fano_window=abc is not valid; it must be an integer"),
        ("max_chunks=abc", "max_chunks=abc is not valid; it must be an integer or null"),
        ("threads=abc", "threads=abc is not valid; it must be an integer or null"),
        ("save_spk=abc", "save_spk=abc is not valid; it must be true or false"),
        ("resume=2", "resume=2 is not valid; it must be true or false"),
        ("threshold=abc", "threshold=abc is not valid; it must be a number"),
        ("threshold=true", "threshold=true is not valid; it must be a number"),
        ("dataset.nb_hidden=abc", "dataset.nb_hidden=abc is not valid; it must be an integer"),
        ("dataset_method.lr_h=abc", "dataset_method.lr_h=abc is not valid; it must be a number"),
        ("+foo=1", "foo=1 is not a setting of this experiment"),
        (
            "num_threads=2",
            "num_threads=2 is not a setting of this experiment; did you mean threads",
        ),
        (
            "++dataset.nb_hiden=3",
            "dataset.nb_hiden=3 is not a setting of this experiment; did you mean "
            "dataset.nb_hidden",
        ),
        ("+method.lr=1", "method.lr=1 is not a setting of this experiment"),
        ("wandb.entity=3", "wandb.entity=3 is not valid; it must be a string or null"),
    ],
)
def test_wrong_types_and_unknown_settings_are_refused_by_the_schema(override, message):
    """Refused while the command line is composed (`stm.schema`), before any work: one line
    naming the setting and the value as typed."""
    msg = refusal(override)
    assert msg.startswith(message) and "\n" not in msg, msg


def test_missing_oxford_image_says_where_to_get_it():
    cfg = compose("dataset=oxford", "dataset.data_path=/nonexistent/radcliffe.png")
    with pytest.raises(ConfigError, match="Radcliffe Camera.*not shipped"):
        checks.check(cfg)


def test_wrong_image_size(tmp_path):
    path = tmp_path / "small.png"
    write_png(path, 10, 10)
    with pytest.raises(ConfigError, match="10 rows x 10 columns"):
        checks.check(compose(f"dataset.data_path={path}"))


def test_every_value_of_a_sweep_names_a_config():
    """A sweep's group values are checked before its first job (the run folders untouched)."""
    msg = refusal("-m", "method=superspike,nope", "dataset=scene")
    assert msg.startswith("method=superspike,nope is not valid; choose one of: multilayerspiker")
    assert refusal("-m", "dataset=scene,bar").startswith("dataset=scene,bar is not valid")
    msg = refusal("-m", "dataset.nb_hidden=15,15.5")
    assert msg.startswith("dataset.nb_hidden=15.5 is not valid (a value of the sweep")
    assert msg.endswith("it must be an integer")
