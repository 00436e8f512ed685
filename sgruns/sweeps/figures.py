"""Generic sweep figures: mean over seeds with a ±1 std band per group (`curve_figure`) and bars
of mean ± std per hidden layer per group (`layer_bar_figure`). Experiments choose the curves and
metrics in their collect.py."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from sgruns.sweeps.summary import Group, finite, stats


def _band(ax: Any, curves: list[np.ndarray], label: str, color: Any, **kw: Any) -> None:
    """Mean over seeds with a ±1 std band; curves of unequal length are cut to the shortest."""
    if not curves:
        return
    n = min(len(c) for c in curves)
    arr = np.stack([np.asarray(c[:n], dtype=float) for c in curves])
    x = np.arange(1, n + 1)
    mean = np.nanmean(arr, axis=0)
    ax.plot(x, mean, color=color, label=f"{label} (n={len(curves)})", **kw)
    if len(curves) > 1:
        std = np.nanstd(arr, axis=0, ddof=1)
        ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, lw=0)


def _colors(n: int) -> list[Any]:
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10")
    return [cmap(i % 10) for i in range(n)]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curve_figure(
    groups: list[Group], path: Path, panels: list[tuple[str, str, str | None]], title: str
) -> Path | None:
    """One panel per (curve, y label, dashed 'other' curve): mean ± std over seeds per group."""
    plt = _plt()
    if not any(r.curves for g in groups for r in g.completed):
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (key, ylabel, other) in zip(axes[0], panels):
        for g, color in zip(groups, _colors(len(groups))):
            _band(ax, [r.curves[key] for r in g.completed if key in r.curves], g.label, color)
            if other:
                _band(
                    ax,
                    [r.curves[other] for r in g.completed if other in r.curves],
                    f"{g.label}, other",
                    color,
                    ls="--",
                    lw=1,
                )
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
    axes[0][0].legend(fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def layer_bar_figure(
    groups: list[Group], path: Path, prefixes: list[tuple[str, str]], ylabel: str, title: str
) -> Path | None:
    """Bars of mean ± std per layer per group (dots: single seeds), one panel per prefix."""
    plt = _plt()
    layers = sorted(
        {
            int(k.rsplit("_l", 1)[1])
            for g in groups
            for r in g.completed
            for k in r.metrics
            if any(k.startswith(p + "_l") for p, _ in prefixes)
        }
    )
    if not layers:
        return None
    fig, axes = plt.subplots(1, len(prefixes), figsize=(4.5 * len(prefixes), 3.4), squeeze=False)
    width = 0.8 / max(len(groups), 1)
    for ax, (prefix, panel) in zip(axes[0], prefixes):
        for i, (g, color) in enumerate(zip(groups, _colors(len(groups)))):
            for j, layer in enumerate(layers):
                vals = [r.metrics.get(f"{prefix}_l{layer}") for r in g.completed]
                m, s, n = stats(vals)
                x = j + (i - (len(groups) - 1) / 2) * width
                ax.bar(
                    x,
                    0 if not math.isfinite(m) else m,
                    width * 0.9,
                    color=color,
                    yerr=None if not math.isfinite(s) else s,
                    capsize=2,
                    label=g.label if j == 0 else None,
                )
                pts = [v for v in vals if finite(v)]
                ax.plot([x] * len(pts), pts, "k.", ms=3)
        ax.set_xticks(range(len(layers)), [f"hidden {k}" for k in layers])
        ax.set_ylabel(ylabel)
        ax.set_title(panel, fontsize=9)
    axes[0][0].legend(fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["curve_figure", "layer_bar_figure"]
