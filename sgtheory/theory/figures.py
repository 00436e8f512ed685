"""Figures of the theory study (from the record of `study.run_study`), and writing outputs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from sgtheory.files import write_json_atomic

NUMBERS = "theory_numbers.json"
FIGURES = ("sg_bias.png", "estimator_variance.png", "single_neuron.png", "learning.png")
ESTIMATOR_LABELS = {
    "exact": "exact gradient",
    "surrogate_gradient": "SG",
    "smoothed_stochastic_derivative": "smoothed SD (input-cond.)",
    "smoothed_input": "smoothed SD (input-cond.)",
    "smoothed_output_conditioned": "smoothed SD (output-cond.)",
    "smoothed_output": "smoothed SD (output-cond.)",
    "stochastic_ad": "stochastic AD",
    "reinforce": "REINFORCE",
    "reinforce_baseline": "REINFORCE + baseline",
}


def save_figure(fig, path: str | Path) -> None:
    """savefig to a temporary file in the same folder, then rename (atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120)
        os.chmod(tmp, 0o644)  # mkstemp makes it private
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _band(ax, xs, rows, key, label, style="o-"):
    med = [rows[k][key]["median"] for k in rows]
    lo = [rows[k][key]["q25"] for k in rows]
    hi = [rows[k][key]["q75"] for k in rows]
    ax.plot(xs, med, style, label=label)
    ax.fill_between(xs, lo, hi, alpha=0.2)


METRICS = (
    ("cosine", "cos(E[est], grad E[L])"),
    ("relative_error", "|E[est] - grad E[L]| / |grad E[L]|"),
    ("sign_disagreement", "fraction of params, opposite sign"),
)


def _smoothings(rows: dict) -> list[tuple[dict, str, str]]:
    """(rows, label, line style) of the SG (input-conditioned) and the output-conditioned."""
    output = {k: row["output_smoothing"] for k, row in rows.items()}
    return [(rows, "E[SG]", "o-"), (output, "output-cond.", "s--")]


def plot_bias(record: dict) -> plt.Figure:
    """E[SG] and the output-conditioned smoothing against the exact gradient: cosine,
    relative error and sign disagreement, vs depth and vs beta."""
    fig, axes = plt.subplots(3, 2, figsize=(10, 10), constrained_layout=True)
    for loss, rows in record["depth"].items():
        depths = [int(d) for d in rows]
        name = "L = output" if loss == "output" else "L = (output - 1)^2"
        for part, label, style in _smoothings(rows):
            for row, (key, _) in enumerate(METRICS):
                _band(axes[row, 0], depths, part, key, f"{label}, {name}", style)
    rows = record["beta"]
    betas = [float(b) for b in rows]
    depth = record["settings"]["beta_depth"]
    for part, label, style in _smoothings(rows):
        for row, (key, _) in enumerate(METRICS):
            _band(axes[row, 1], betas, part, key, f"{label}, depth {depth}", style)
    for ax in axes[:, 1]:
        ax.set_xscale("log")
        ax.set_xlabel("beta (escape noise and surrogate)")
    for ax in axes[:, 0]:
        ax.set_xlabel("number of spiking layers")
        ax.set_xticks(depths)
    for row, (_, ylabel) in enumerate(METRICS):
        for ax in axes[row]:
            ax.set_ylabel(ylabel)
    for ax in axes.flat:
        ax.legend(fontsize=7)
    fig.suptitle("Exact bias of the two smoothings (median, quartiles over random nets)")
    return fig


def plot_variance(record: dict) -> plt.Figure:
    """Per-trial variance (summed over parameters) and MSE of the N-sample mean."""
    tables = record["variance"]
    fig, axes = plt.subplots(1, len(tables), figsize=(5.5 * len(tables), 4), squeeze=False)
    for ax, (name, table) in zip(axes[0], tables.items()):
        rows = table["estimators"]
        labels = [ESTIMATOR_LABELS[k] for k in rows]
        xs = np.arange(len(rows))
        var = [r["variance_per_trial_sum_over_params"] for r in rows.values()]
        mse = [r["mse_of_mean_of_n"] for r in rows.values()]
        ax.bar(xs - 0.2, var, 0.4, label="variance per trial (sum over params)")
        ax.bar(xs + 0.2, mse, 0.4, label=f"MSE of the mean of N = {table['nb_samples']}")
        ax.set_yscale("log")
        ax.set_xticks(xs, labels, rotation=25, ha="right", fontsize=8)
        ax.set_title(
            f"{name}: {table['nb_spike_variables']} spikes, {table['nb_parameters']} params"
        )
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_single_neuron(record: dict) -> plt.Figure:
    """One neuron: E[S] and d E[S]/dw, exact against Monte Carlo, SG and REINFORCE."""
    cases = record["single_neuron"]
    fig, axes = plt.subplots(2, len(cases), figsize=(3.6 * len(cases), 6), squeeze=False)
    for col, (name, rows) in enumerate(cases.items()):
        x = np.asarray(rows["w"]) - 0.5
        top, bottom = axes[0, col], axes[1, col]
        dense = rows["dense"]
        top.plot(dense["x"], dense["p"], "-", label="escape prob p(x)")
        top.errorbar(
            x,
            rows["mc_p"],
            yerr=2 * np.asarray(rows["mc_p_se"]),
            fmt="o",
            ms=3,
            label="MC mean of S (escape.sample)",
        )
        bottom.plot(dense["x"], dense["dp"], "-", label="exact d E[S] / dw")
        factor = rows["factor"]
        sg_label = "E[SG]" if factor == 1 else f"E[SG] x {factor:g}"
        bottom.plot(x, rows["sg"], "s", ms=4, mfc="none", label=sg_label)
        bottom.errorbar(
            x,
            rows["rf"],
            yerr=2 * np.asarray(rows["rf_se"]),
            fmt=".",
            ms=3,
            label="REINFORCE +- 2 SE",
        )
        top.set_title(name.replace("+", " escape, ") + " surrogate", fontsize=9)
        bottom.set_xlabel("x = w - 0.5")
        top.legend(fontsize=7)
        bottom.legend(fontsize=7)
    axes[0, 0].set_ylabel("E[S]")
    axes[1, 0].set_ylabel("d E[S] / dw")
    fig.tight_layout()
    return fig


def plot_learning(record: dict) -> plt.Figure:
    """Exact E[L] against trials used, mean and quartiles over initialisations."""
    tasks = record.get("learning", {}).get("tasks", {})
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(5.5 * max(1, len(tasks)), 4.2))
    axes = np.atleast_1d(axes)
    for ax, (name, task) in zip(axes, tasks.items()):
        xs = np.asarray(task["samples_used"])
        for key, row in task["estimators"].items():
            band = row["expected_loss"]
            style = "k-" if key == "exact" else "-"
            (line,) = ax.plot(xs, band["mean"], style, lw=1.5, label=ESTIMATOR_LABELS[key])
            ax.fill_between(xs, band["q25"], band["q75"], color=line.get_color(), alpha=0.12)
        ax.axhline(task["optimum"], color="grey", lw=0.8, ls=":")
        ax.set_title(
            f"{name}: {task['nb_spike_variables']} spikes, {task['nb_parameters']} params, "
            f"lr {task['learning_rate']:g}",
            fontsize=9,
        )
        ax.set_xlabel("sampled trials used (exact gradient: same steps)")
        ax.set_ylabel("exact E[L] (mean, quartiles)")
        ax.legend(fontsize=7)
    if not tasks:
        axes[0].set_title("learning study off")
    fig.tight_layout()
    return fig


def write_outputs(record: dict, numbers_path: str | Path, figures_dir: str | Path) -> list[Path]:
    """Write the numbers (JSON) and the four figures (PNG); return the paths written."""
    write_json_atomic(numbers_path, record)
    paths = [Path(numbers_path)]
    plots = (plot_bias, plot_variance, plot_single_neuron, plot_learning)
    for name, plot in zip(FIGURES, plots):
        fig = plot(record)
        save_figure(fig, Path(figures_dir) / name)
        plt.close(fig)
        paths.append(Path(figures_dir) / name)
    return paths
