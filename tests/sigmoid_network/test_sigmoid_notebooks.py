"""Both Sigmoid_network notebooks run top to bottom on coarse grids and write figures and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

SIGMOID_DIR = Path(__file__).resolve().parents[2] / "Sigmoid_network"
CIRCLE_NB = SIGMOID_DIR / "SGs_are_not_gradients" / "integrate_closed_circle.ipynb"
BIAS_NB = SIGMOID_DIR / "SG_induces_bias" / "SG_induce_bias_in_sigmoid_nets.ipynb"


def run_notebook(path: Path, overrides: dict) -> nbformat.NotebookNode:
    """Execute `path` in its own folder with a cell injected after the 'parameters' cell."""
    nb = nbformat.read(path, as_version=4)
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell must be tagged 'parameters'"
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit cleared"
    source = "\n".join(f"{k} = {v!r}" for k, v in overrides.items())
    nb.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(source))
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    return nb


@pytest.mark.slow
def test_closed_circle_notebook_runs_and_writes_numbers(tmp_path: Path) -> None:
    out = tmp_path / "plots"
    run_notebook(
        CIRCLE_NB,
        {
            "N_CIRCLE": 300,
            "REFINE_TOL": 1e-3,
            "N_UNIFORM_DOUBLINGS": 1,
            "GRID_N": 120,
            "OUT_DIR": str(out),
        },
    )
    assert (out / "output_plane.png").stat().st_size > 1000
    assert (out / "circle_integrals.png").stat().st_size > 1000
    record = json.loads((out / "closed_circle_integrals.json").read_text())
    setup = record["setup"]
    assert setup["radius"] == 1.8 and setup["beta"] == 10000.0 and len(setup["d1"]) == 5
    loop = record["closed_loop_integral"]
    assert abs(loop["true_gradient"]) < 0.05
    assert set(loop["sg"]) == {"1", "5", "20"}
    assert all(abs(v) > 0.05 for v in loop["sg"].values())


@pytest.mark.slow
def test_bias_notebook_runs_and_writes_numbers(tmp_path: Path) -> None:
    out = tmp_path / "plots"
    run_notebook(BIAS_NB, {"PLANE_N": 201, "LINE_N": 1001, "OUT_DIR": str(out)})
    assert (out / "integrated_sg_plane.png").stat().st_size > 1000
    assert (out / "sg_bias_along_w.png").stat().st_size > 1000
    record = json.loads((out / "sg_bias.json").read_text())
    line = record["line_w"]
    assert line["grid"]["n"] == 1001 and line["true_derivative_at_w0"] > 0
    for beta_sg in ("15", "30"):
        stats = line["per_beta_sg"][beta_sg]
        assert stats["sg_at_w0"] < 0 and stats["fraction_opposite_sign"] > 0
        assert stats["minima_integrated_sg"]
    assert line["beta_sg_where_sg_at_w0_changes_sign"] == pytest.approx([42.45], abs=0.01)
    plane = record["plane"]["per_beta_sg"]
    # the SG field has curl (orders disagree) unless beta_SG = beta, where only the coarse
    # grid's discretisation error remains
    assert plane["4"]["max_abs_difference_between_orders"] > 0.3
    assert plane["20"]["max_abs_difference_between_orders"] < 0.1
