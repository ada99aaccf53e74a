"""Figures of the results (matplotlib, no computation).

Figures are built with matplotlib's object API (``Figure`` + Agg canvas), not pyplot, so
they work headless and never touch a user's interactive backend.
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Polygon

from .prealign import PrealignResult

__all__ = ["plot_prealignment", "save_figure"]


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = 110) -> None:
    """Write a figure as PNG atomically (temporary name, then rename)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    tmp = f"{os.fspath(path)}.tmp-{os.getpid()}.png"
    fig.savefig(tmp, dpi=dpi)
    os.replace(tmp, path)


def plot_prealignment(result: PrealignResult, *, max_candidates: int = 200) -> Figure:
    """Candidates of the XY pre-alignment over the LoG-LM-MIP.

    Part A candidates are dots, Part B (NCC) peaks are crosses; inliers of the fusion are
    green, outliers red; the fused EM ROI is drawn as its rotated outline.  Axes are
    LM physical µm.

    Parameters
    ----------
    result : PrealignResult
    max_candidates : int
        Draw at most this many candidates (the best by spatial or source score).

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig = Figure(figsize=(7.5, 6.5), layout="constrained")
    ax = fig.add_subplot()
    img = result.mip_log
    lo, hi = np.percentile(img, [1, 99.5])
    x0, y0 = result.mip_origin_xy_um
    p = result.pixel_um
    extent = (x0 - p / 2, x0 + (img.shape[1] - 0.5) * p, y0 + (img.shape[0] - 0.5) * p, y0 - p / 2)
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, extent=extent, interpolation="nearest")

    cands = sorted(result.candidates, key=lambda c: -(c.spatial_score if np.isfinite(
        c.spatial_score) else c.source_score))[:max_candidates]
    for marker, part in (("o", "hist"), ("x", "ncc")):
        for inlier, colour in ((False, "tab:red"), (True, "lime")):
            pts = np.array([c.snapped_xy_um for c in cands
                            if c.source.startswith(part) and c.inlier == inlier]).reshape(-1, 2)
            if len(pts):
                label = (f"{'histogram (A)' if part == 'hist' else 'NCC (B)'} "
                         f"{'inliers' if inlier else 'outliers'}")
                ax.scatter(pts[:, 0], pts[:, 1], s=28 if marker == "x" else 12, marker=marker,
                           c=colour, label=label, linewidths=1.5)
    # fused ROI outline: the EM ROI rectangle rotated by the found angle
    w, h = result.patch_size_um
    corners = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
    a = np.radians(result.angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    outline = corners @ rot.T + np.asarray(result.centre_lm_xy_um)
    ax.add_patch(Polygon(outline, closed=True, fill=False, edgecolor="yellow", lw=1.5,
                         label="fused EM ROI"))
    ax.plot(*result.centre_lm_xy_um, "+", color="yellow", ms=14, mew=2)
    conf = result.confidence
    title = (f"XY pre-alignment ({result.method}): centre ({result.centre_lm_xy_um[0]:.1f}, "
             f"{result.centre_lm_xy_um[1]:.1f}) µm, angle {result.angle_deg:.1f}°")
    if "margin" in conf:
        title += f"\nscore {conf['best_score']:.2f}, margin over rival {conf['margin']:.2f}"
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("x (µm, LM)")
    ax.set_ylabel("y (µm, LM)")
    ax.legend(loc="upper right", fontsize=7, framealpha=0.7)
    return fig
