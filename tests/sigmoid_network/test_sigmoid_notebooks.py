"""Both Sigmoid_network notebooks run top to bottom on coarse grids and write figures and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import numpy as np
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


def check_figures(out: Path, record: dict, names: set[str]) -> None:
    """Every figure the JSON lists exists, is a real PNG, and the expected ones are listed."""
    assert names <= set(record["figures"])
    for name in record["figures"]:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name


@pytest.mark.slow
def test_closed_circle_notebook_follows_the_paper_and_writes_numbers(
    tmp_path: Path, loop_reference
) -> None:
    """Coarse plane grid; the convergence series and the adaptive path are the full ones."""
    out = tmp_path / "plots"
    run_notebook(CIRCLE_NB, {"GRID_N": 120, "OUT_DIR": str(out)})
    record = json.loads((out / "closed_circle_integrals.json").read_text())
    check_figures(
        out,
        record,
        {
            "output_plane.png",
            "paper_running_integrals_per_beta_sg.png",
            "paper_all_running_integrals.png",
            "convergence_in_n.png",
            "circle_integrals.png",
        },
    )
    setup = record["setup"]
    assert setup["radius"] == 1.8 and setup["beta"] == 1e4 and setup["centre"] == [0.0] * 5
    assert setup["direction_seed"] == 124 and setup["n_paper"] == 1500
    np.testing.assert_array_equal(setup["d1"], loop_reference.d1)
    np.testing.assert_array_equal(setup["d2"], loop_reference.d2)
    loops = record["closed_loop_integral"]
    assert set(loops["per_beta_sg"]) == {"1", "5", "20"}
    # converged = 768000 equal steps; its error is below the reference's 2**19-point gap (~1e-6)
    fields = {"true": loops["true_gradient"]}
    fields.update({f"sg_{k}": v["sg"] for k, v in loops["per_beta_sg"].items()})
    for key, entry in fields.items():
        assert entry["converged_n_points"] == 768000
        assert entry["at_n_paper"] == pytest.approx(loop_reference.at_n_paper[key], rel=1e-10)
        tol = loop_reference.bound[key] + 2e-6
        assert abs(entry["converged"] - loop_reference.converged[key]) <= tol, key
        assert abs(entry["adaptive"] - loop_reference.converged[key]) <= 1e-4, key
    for entry in loops["per_beta_sg"].values():  # the smooth network's gradient closes at 0
        smooth = entry["smooth_net_gradient"]
        assert abs(smooth["at_n_paper"]) < 1e-12 and abs(smooth["converged"]) < 1e-12
    rows = record["convergence_in_n"]
    assert [r["n_points"] for r in rows] == [1500 * 2**k for k in range(10)]


@pytest.mark.slow
def test_bias_notebook_runs_and_writes_numbers(tmp_path: Path, bias_reference) -> None:
    out = tmp_path / "plots"
    run_notebook(
        BIAS_NB, {"PLANE_N_V1": 201, "PLANE_N_V2": 211, "LINE_N": 1001, "OUT_DIR": str(out)}
    )
    record = json.loads((out / "sg_bias.json").read_text())
    check_figures(
        out,
        record,
        {"integrated_sg_plane_paper.png", "integrated_sg_plane.png", "sg_bias_along_w.png"},
    )
    line = record["line_w"]
    assert line["grid"]["n"] == 1001
    assert line["true_derivative_at_w0"] == pytest.approx(
        bias_reference["true_derivative_at_w0"], rel=1e-12
    )
    for beta_sg in ("15", "30"):
        stats = line["per_beta_sg"][beta_sg]
        assert stats["sg_at_w0"] == pytest.approx(bias_reference[f"sg_at_w0_{beta_sg}"], rel=1e-12)
        assert stats["fraction_opposite_sign"] > 0 and stats["minima_integrated_sg"]
    (change,) = line["beta_sg_where_sg_at_w0_changes_sign"]
    assert change == pytest.approx(bias_reference["beta_sg_sign_change"], abs=1e-8)
    plane = record["plane"]
    assert plane["integrated_from_v1_v2"] == [-2.0, -2.0]
    assert plane["grid"]["n_v1"] == 201 and plane["grid"]["n_v2"] == 211
    assert np.abs(plane["true_gradient_at_arrow"]).max() < 1e-15
    for beta_sg in ("2", "4"):
        sg = plane["per_beta_sg"][beta_sg]["sg_at_arrow"]
        assert sg[0] == pytest.approx(bias_reference[f"sg_{beta_sg}_at_arrow_v1"], rel=1e-12)
        assert sg[1] == pytest.approx(bias_reference[f"sg_{beta_sg}_at_arrow_v2"], rel=1e-12)
    # the SG field has curl (orders disagree) unless beta_SG = beta, where only the coarse
    # grid's discretisation error remains
    per = plane["per_beta_sg"]
    assert per["4"]["max_abs_difference_between_orders"] > 0.3
    assert per["20"]["max_abs_difference_between_orders"] < 0.1
