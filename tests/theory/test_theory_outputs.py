"""The Theory notebook and command line run end to end and write figures and numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

THEORY = Path(__file__).resolve().parents[2] / "Theory"
NOTEBOOK = THEORY / "theory_gradients.ipynb"
FIGURES = ("sg_bias.png", "estimator_variance.png", "single_neuron.png")


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
    for case, rows in record["claim_c"].items():
        for row in rows.values():
            if case.endswith("+matched"):
                assert row["max_abs_difference"] < 1e-10 < row["max_abs_sg"]
            else:
                assert row["max_abs_difference"] > 1e-2
    for table in record["variance"].values():
        assert table["nb_samples"] == nb_samples
        rows = table["estimators"]
        assert rows["surrogate_gradient"]["exact_bias_relative"] > 0.01
        assert rows["stochastic_ad"]["exact_bias_relative"] == 0.0


@pytest.mark.slow
def test_notebook_runs_and_writes_numbers(tmp_path: Path) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit cleared"
    small = {"NB_NETWORKS": 3, "NB_SAMPLES": 400, "NB_SINGLE": 400, "SINGLE_POINTS": 3}
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
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("ConfigError: beta=-1.0 is not valid")
    assert not (tmp_path / "bad" / "results.json").exists()
