"""Draw the default target raster: an original 200-row x 189-column grayscale scene.

Rows are output neurons, columns are time steps; dark pixels (value < out_prob) become
spikes. The drawing is deterministic (fixed shapes, no randomness, no fonts), so running
this script reproduces `scene_200x189.png` exactly. Run: `python3 make_target_image.py`.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Circle, Polygon, Rectangle, Wedge  # noqa: E402

ROWS, COLS = 200, 189  # neurons x time steps
HERE = Path(__file__).resolve().parent


def draw_scene(path: str | Path = HERE / "scene_200x189.png") -> Path:
    """Draw a domed library under a sun, with a lawn and trees, into a grayscale PNG."""
    fig = plt.figure(figsize=(COLS / 100, ROWS / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, COLS)
    ax.set_ylim(ROWS, 0)  # row 0 at the top
    ax.axis("off")
    ax.add_patch(Rectangle((0, 0), COLS, ROWS, color="white"))
    dark, mid = "black", "0.45"
    # sun with rays (top right)
    ax.add_patch(Circle((160, 28), 12, facecolor="none", edgecolor=dark, linewidth=2))
    for angle in np.linspace(0, 2 * np.pi, 12, endpoint=False):
        c, s = np.cos(angle), np.sin(angle)
        ax.plot([160 + 16 * c, 160 + 22 * c], [28 + 16 * s, 28 + 22 * s], color=dark, lw=1.5)
    # drum of the building with columns
    ax.add_patch(Rectangle((45, 100), 100, 55, facecolor="none", edgecolor=dark, lw=2))
    for x in range(55, 140, 12):
        ax.add_patch(Rectangle((x, 106), 4, 44, color=mid))
    # dome, lantern, cupola
    ax.add_patch(Wedge((95, 100), 42, 180, 360, facecolor="none", edgecolor=dark, lw=2.5))
    for x in (70, 95, 120):
        ax.plot([x, 95 + (x - 95) * 0.3], [99, 62], color=dark, lw=1)
    ax.add_patch(Rectangle((88, 48), 14, 12, facecolor="none", edgecolor=dark, lw=1.5))
    ax.add_patch(Polygon([(86, 48), (104, 48), (95, 30)], closed=True, color=dark))
    # base steps and lawn
    ax.add_patch(Rectangle((35, 155), 120, 6, color=dark))
    ax.plot([0, COLS], [178, 178], color=dark, lw=2)
    for x in range(4, COLS, 9):
        ax.plot([x, x + 3], [192, 182], color=mid, lw=1)
    # two trees
    for cx in (18, 172):
        ax.add_patch(Rectangle((cx - 2, 140), 4, 38, color=dark))
        ax.add_patch(Circle((cx, 128), 13, facecolor="none", edgecolor=dark, lw=2))
    path = Path(path)
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(float) / 255.0
    plt.close(fig)
    gray = rgba.mean(axis=-1)
    assert gray.shape == (ROWS, COLS), gray.shape
    plt.imsave(path, gray, cmap="gray", vmin=0.0, vmax=1.0)
    return path


if __name__ == "__main__":
    out = draw_scene()
    img = plt.imread(out)[..., 0]
    print(f"wrote {out} shape={img.shape} spike density={np.mean(img < 0.85):.3f}")
