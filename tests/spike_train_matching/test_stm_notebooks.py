"""Every analysis notebook runs on a short run's output (parameters injected) and saves figures."""

from __future__ import annotations

import nbformat
import pytest
from conftest import ANALYSIS
from nbclient import NotebookClient

NOTEBOOKS = {
    "loss.ipynb": ["loss.png"],
    "firing_rates.ipynb": ["firing_rates.png", "fano_factor.png"],
    "spk.ipynb": ["input_target.png", "spk_superspike.png", "spk_stochasticsuperspike.png"],
    "vogels_plots.ipynb": ["vogels_hidden.png"],
}


def test_notebooks_are_committed_without_outputs():
    for name in NOTEBOOKS:
        nb = nbformat.read(ANALYSIS / name, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, name
        for cell in nb.cells:
            assert not cell.get("outputs"), name
            if cell.cell_type == "code":
                assert "def " not in cell.source, f"{name} holds model code"


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebook_runs(name, short_runs, tmp_path):
    nb = nbformat.read(ANALYSIS / name, as_version=4)
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    runs = {k: str(v) for k, v in short_runs.items()}
    plot_dir = tmp_path / "plots"
    injected = f"runs = {runs!r}\nplot_dir = {str(plot_dir)!r}\nfano_every = 1"
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(injected))
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ANALYSIS)}}
    ).execute()
    for figure in NOTEBOOKS[name]:
        assert (plot_dir / figure).stat().st_size > 0, figure
