"""The Theory notebook and command line run end to end and write figures and numbers."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

THEORY = Path(__file__).resolve().parents[2] / "Theory"
NOTEBOOK = THEORY / "theory_gradients.ipynb"
FIGURES = ("sg_bias.png", "estimator_variance.png", "single_neuron.png", "learning.png")


def check_record(record: dict, nb_samples: int) -> None:
    """Numbers any run must show, whatever its size."""
    for name, rows in record["single_neuron"].items():
        worst = max(abs(a - b) for a, b in zip(rows["sg"], rows["dp"]))
        if name == "sigmoid+superspike":
            assert worst > 0.1
        else:  # matched pairs: E[SG] (times beta / 2 for SuperSpike) is p'(x)
            assert worst < 1e-12, name
    assert record["single_neuron"]["superspike+superspike"]["factor"] == 2.5
    assert record["depth"]["output"]["1"]["relative_error"]["median"] < 1e-12
    assert record["depth"]["mse"]["1"]["relative_error"]["median"] > 0.05
    output = record["depth"]["mse"]["1"]["output_smoothing"]["relative_error"]
    assert output["median"] < 1e-12  # the trapezoid rule is exact for a quadratic loss
    for case, rows in record["claim_c"].items():
        for row in rows.values():
            assert row["max_abs_difference_output_conditioned"] > 1e-2
            if case.endswith("+matched"):
                assert row["max_abs_difference"] < 1e-10 < row["max_abs_sg"]
            else:
                assert row["max_abs_difference"] > 1e-2
    for table in record["variance"].values():
        assert table["nb_samples"] == nb_samples
        rows = table["estimators"]
        assert rows["surrogate_gradient"]["exact_bias_relative"] > 0.01
        assert rows["stochastic_ad"]["exact_bias_relative"] == 0.0
        assert rows["smoothed_output_conditioned"]["exact_bias_relative"] > 1e-3
    for task in record["learning"]["tasks"].values():
        assert set(task["estimators"]) >= {"exact", "surrogate_gradient", "stochastic_ad"}


@pytest.mark.slow
def test_notebook_runs_and_writes_numbers(tmp_path: Path) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit cleared"
    small = {"NB_NETWORKS": 3, "NB_SAMPLES": 400, "NB_SINGLE": 400, "SINGLE_POINTS": 3}
    small.update(LEARNING_INITS=2, LEARNING_STEPS=2, NAMED_NETWORKS=["deep3"])
    small["OUT_DIR"] = str(tmp_path / "plots")
    source = "\n".join(f"{k} = {v!r}" for k, v in small.items())
    nb.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(source))
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(THEORY)}}
    ).execute()
    for name in FIGURES:
        assert (tmp_path / "plots" / name).stat().st_size > 1000
    record = json.loads((tmp_path / "plots" / "theory_numbers.json").read_text())
    assert record["settings"]["nb_networks"] == 3
    check_record(record, 400)


def run_cli(*overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "run_theory.py", *overrides]
    return subprocess.run(cmd, cwd=THEORY, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_writes_a_run_folder(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = run_cli(
        "nb_networks=2",
        "depths=[1,2]",
        "betas=[1.0,10.0]",
        "nb_samples=300",
        "nb_single=300",
        "single_points=3",
        "learning_inits=2",
        "learning_steps=2",
        "named_networks=[deep3]",
        f"hydra.run.dir={run_dir}",
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads((run_dir / "results.json").read_text())
    assert set(record["depth"]["output"]) == {"1", "2"}
    assert set(record["beta"]) == {"1", "10"}
    check_record(record, 300)
    for name in FIGURES:
        assert (run_dir / "Plots" / name).stat().st_size > 1000
    assert (run_dir / ".hydra" / "config.yaml").is_file()


def test_cli_rejects_a_bad_setting_in_one_line(tmp_path: Path) -> None:
    proc = run_cli("beta=-1.0", f"hydra.run.dir={tmp_path / 'bad'}")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: beta=-1.0 is not valid; it must be a positive finite number"
    ]
    assert not (tmp_path / "bad" / "results.json").exists()


def test_the_default_config_composes_typed_and_valid() -> None:
    """config/config.yaml composes into its schema, StudySettings, with the library's own
    defaults, and passes the range checks."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from sgtheory.theory.study import StudySettings

    spec = importlib.util.spec_from_file_location("run_theory", THEORY / "run_theory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.register()
    with initialize_config_dir(str(THEORY / "config"), version_base="1.3"):
        cfg = compose("config")
    assert OmegaConf.get_type(cfg) is StudySettings
    settings = OmegaConf.to_object(cfg)
    assert settings == StudySettings() and settings.validate() is settings


BAD = {  # typed -> what the one line must say (after "error: ")
    "+foo=1": "foo=1 is not a setting of this experiment",
    "foo=1": "foo=1 is not a setting of this experiment",
    "nb_sample=5": "did you mean nb_samples",
    "--config-name=nonexistent": "--config-name=nonexistent is not valid",
    "depths=[]": "depths=[] is not valid",
    "betas=[]": "betas=[] is not valid",
    "depths=abc": "depths=abc is not valid; it must be a list of integers",
    "depths=[1,abc]": "depths=[1,abc] is not valid; it must be a list of integers",
    "depths=[12]": "depths=[12] is not valid with width=3",
    "single_points=1": "single_points=1 is not valid",
    "nb_networks=2.0": "nb_networks=2.0 is not valid; it must be an integer",
    "seed=abc": "seed=abc is not valid; it must be an integer",
    "beta=abc": "beta=abc is not valid; it must be a number",
    "learning_steps=abc": "learning_steps=abc is not valid; it must be an integer or null",
    "++nb_sample=5": "nb_sample=5 is not a setting of this experiment",
    "seed=-1": "seed=-1 is not valid",
    "learning=big": "learning='big' is not valid",
    "named_networks=[deep4]": "named_networks=['deep4'] is not valid",
    "beta={a:1}": "beta={a:1} is not valid",
    "beta=1,2": "beta=1,2 gives several values",
    "hydra.run.dir=.": "holds files that are not a run of this project",
}


@pytest.mark.parametrize("typed", list(BAD))
def test_every_bad_input_is_one_line_naming_the_value_typed(typed, tmp_path, capsys, monkeypatch):
    """In-process (the same `main` as the command line): exit status 1, one line on stderr,
    nothing written."""
    from hydra.core.global_hydra import GlobalHydra

    monkeypatch.chdir(THEORY)
    monkeypatch.setattr(sys, "argv", ["run_theory.py"])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    spec = importlib.util.spec_from_file_location("run_theory", THEORY / "run_theory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    folder = [] if typed.startswith("hydra.run.dir") else [f"hydra.run.dir={tmp_path / 'run'}"]
    before = sorted(p.name for p in THEORY.iterdir())
    GlobalHydra.instance().clear()
    with pytest.raises(SystemExit) as exit_info:
        module.main([typed, *folder])
    GlobalHydra.instance().clear()
    assert exit_info.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert BAD[typed] in lines[0]
    assert not (tmp_path / "run" / "results.json").exists()
    assert sorted(p.name for p in THEORY.iterdir()) == before  # nothing moved or written
