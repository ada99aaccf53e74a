"""Figures of the results (matplotlib, no computation).

Figures are built with matplotlib's object API (``Figure`` + Agg canvas), not pyplot, so
they work headless and never touch a user's interactive backend.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Polygon
from matplotlib.ticker import NullFormatter

from .prealign import PrealignResult
from .prealign3d import Prealign3DResult, hand_name
from .transforms import angle_distance
from .volume import regular_sample

__all__ = ["plot_prealignment", "plot_prealignment_3d", "plot_orientation_3d",
           "plot_slice_overlays", "plot_orthogonal_views", "plot_projection_overlay",
           "plot_checkerboard", "plot_scale_selection"]


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
    for marker, part in (("o", "histogram"), ("x", "ncc")):
        for inlier, colour in ((False, "tab:red"), (True, "lime")):
            pts = np.array([c.snapped_xy_um for c in cands
                            if c.part == part and c.inlier == inlier]).reshape(-1, 2)
            if len(pts):
                label = (f"{'histogram (A)' if part == 'histogram' else 'NCC (B)'} "
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


def _limits(values: np.ndarray, low: float, high: float) -> tuple[float, float]:
    sample = regular_sample(values)
    lo, hi = np.percentile(sample.astype(np.float32), [low, high])
    return float(lo), float(hi)


def _stretch(values: np.ndarray, low: float = 1.0, high: float = 99.5,
             limits: tuple[float, float] | None = None) -> np.ndarray:
    """Percentile contrast stretch to [0, 1] (robust to a few saturated voxels).

    ``limits`` (from the whole volume) keep one contrast for every plane shown, so an
    empty slice stays dark instead of showing stretched noise.
    """
    values = np.asarray(values, dtype=np.float32)
    lo, hi = limits if limits is not None else _limits(values, low, high)
    if hi <= lo:
        return np.zeros_like(values)
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0)


def _volume_limits(em_data: np.ndarray, lm_data: np.ndarray) -> tuple[tuple, tuple]:
    # the label's background (most voxels) stays dark: stretch from the 90th percentile
    return _limits(em_data, 1.0, 99.5), _limits(lm_data, 90.0, 99.9)


def _blend(em_plane: np.ndarray, lm_plane: np.ndarray, alpha: float = 0.6,
           limits: tuple[tuple, tuple] | None = None) -> np.ndarray:
    """EM in grey, LM in green added with ``alpha``: an RGB image in [0, 1]."""
    em_lim, lm_lim = limits if limits is not None else (None, None)
    grey = _stretch(em_plane, limits=em_lim)
    green = _stretch(lm_plane, 90.0, 99.9, limits=lm_lim)
    rgb = np.repeat(grey[..., None], 3, axis=-1) * (1.0 - 0.5 * alpha * green[..., None])
    rgb[..., 1] = np.clip(rgb[..., 1] + alpha * green, 0.0, 1.0)
    return rgb


def _extent(shape_yx: tuple[int, int], spacing_yx: tuple[float, float],
            origin_xy: tuple[float, float]) -> tuple[float, float, float, float]:
    (ny, nx), (sy, sx), (ox, oy) = shape_yx, spacing_yx, origin_xy
    return (ox - sx / 2, ox + (nx - 0.5) * sx, oy + (ny - 0.5) * sy, oy - sy / 2)


def plot_slice_overlays(em, lm_in_em, *, z_indices=None, channel: int = 0) -> Figure:
    """EM slices (grey) with the registered fluorescence (green), physical axes (µm).

    Parameters
    ----------
    em : Volume
        EM ROI volume (the grid of ``lm_in_em``).
    lm_in_em : Volume
        LM resampled onto that grid, ``(c, z, y, x)``.
    z_indices : sequence of int, optional
        Slices to show (default: three at 25/50/75 % of the depth).
    channel : int
    """
    lm = lm_in_em.data[channel] if lm_in_em.data.ndim == 4 else lm_in_em.data
    limits = _volume_limits(em.data, lm)
    if z_indices is None:
        # where the fluorescence is: slices at 25/50/75 % of the bright LM voxels
        lo, hi = limits[1]
        profile = (lm > lo + 0.5 * (hi - lo)).reshape(lm.shape[0], -1).sum(axis=1)
        cumulative = np.cumsum(profile)
        if cumulative[-1] > 0:
            z_indices = sorted({int(np.searchsorted(cumulative, f * cumulative[-1]))
                                for f in (0.25, 0.5, 0.75)})
        else:
            nz = em.shape_zyx[0]
            z_indices = sorted({int(round(f * (nz - 1))) for f in (0.25, 0.5, 0.75)})
    z_indices = list(z_indices)
    fig = Figure(figsize=(4.2 * len(z_indices), 4.6), layout="constrained")
    sz, sy, sx = em.voxel_size_um
    ox, oy, oz = em.origin_xyz_um
    for k, z in enumerate(z_indices):
        ax = fig.add_subplot(1, len(z_indices), k + 1)
        ax.imshow(_blend(em.data[z], lm[z], limits=limits),
                  extent=_extent(em.shape_zyx[1:], (sy, sx), (ox, oy)), interpolation="nearest")
        ax.set_title(f"z = {oz + z * sz:.2f} µm (slice {z})", fontsize=9)
        ax.set_xlabel("x (µm, EM)")
        if k == 0:
            ax.set_ylabel("y (µm, EM)")
    fig.suptitle("EM (grey) with registered fluorescence (green)", fontsize=10)
    return fig


def plot_orthogonal_views(em, lm_in_em, *, centre_kji=None, channel: int = 0) -> Figure:
    """XY, XZ and YZ planes of the overlay through one point, at true physical aspect."""
    lm = lm_in_em.data[channel] if lm_in_em.data.ndim == 4 else lm_in_em.data
    nz, ny, nx = em.shape_zyx
    k, j, i = (int(v) for v in (centre_kji if centre_kji is not None
                                else (nz // 2, ny // 2, nx // 2)))
    sz, sy, sx = em.voxel_size_um
    ox, oy, oz = em.origin_xyz_um
    limits = _volume_limits(em.data, lm)
    width, height, depth = nx * sx, ny * sy, max(nz * sz, 1e-6)
    scale = 8.0 / (width + depth)
    fig = Figure(figsize=(8.5, max(4.0, scale * (height + depth) + 1.0)), layout="constrained")
    grid = fig.add_gridspec(2, 2, width_ratios=[width, depth], height_ratios=[height, depth])
    xy = fig.add_subplot(grid[0, 0])
    xy.imshow(_blend(em.data[k], lm[k], limits=limits),
              extent=_extent((ny, nx), (sy, sx), (ox, oy)), interpolation="nearest")
    xy.axhline(oy + j * sy, color="w", lw=0.5)
    xy.axvline(ox + i * sx, color="w", lw=0.5)
    xy.set_title(f"XY at z = {oz + k * sz:.2f} µm", fontsize=9)
    xy.set_ylabel("y (µm)")
    xz = fig.add_subplot(grid[1, 0], sharex=xy)
    xz.imshow(_blend(em.data[:, j, :], lm[:, j, :], limits=limits),
              extent=_extent((nz, nx), (sz, sx), (ox, oz)), interpolation="nearest",
              aspect="equal")
    xz.set_title(f"XZ at y = {oy + j * sy:.2f} µm", fontsize=9)
    xz.set_xlabel("x (µm)")
    xz.set_ylabel("z (µm)")
    yz = fig.add_subplot(grid[0, 1])
    yz.imshow(_blend(em.data[:, :, i].T, lm[:, :, i].T, limits=limits),
              extent=_extent((ny, nz), (sy, sz), (oz, oy)), interpolation="nearest",
              aspect="equal")
    yz.set_title(f"YZ at x = {ox + i * sx:.2f} µm", fontsize=9)
    yz.set_xlabel("z (µm)")
    fig.suptitle("Orthogonal views of the overlay (true physical aspect)", fontsize=10)
    return fig


def plot_projection_overlay(em, lm_in_em, *, channel: int = 0) -> Figure:
    """Mean projection of the EM ROI (grey) with the maximum projection of the LM (green)."""
    lm = lm_in_em.data[channel] if lm_in_em.data.ndim == 4 else lm_in_em.data
    sz, sy, sx = em.voxel_size_um
    ox, oy, _ = em.origin_xyz_um
    fig = Figure(figsize=(6.5, 6.0), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(_blend(em.data.mean(axis=0), lm.max(axis=0), limits=(
        _limits(em.data.mean(axis=0), 1.0, 99.5), _limits(lm.max(axis=0), 50.0, 99.8))),
              extent=_extent(em.shape_zyx[1:], (sy, sx), (ox, oy)), interpolation="nearest")
    ax.set_title("EM mean projection (grey) + fluorescence maximum projection (green)",
                 fontsize=9)
    ax.set_xlabel("x (µm, EM)")
    ax.set_ylabel("y (µm, EM)")
    return fig


def plot_checkerboard(em, lm_in_em, *, z_index=None, channel: int = 0, tiles: int = 8
                      ) -> Figure:
    """Checkerboard of the contrast-stretched EM and the (inverted) LM on one slice.

    The LM is inverted so that its bright label shows dark like the EM organelles:
    structures continue across tile edges when the alignment is right.
    """
    lm = lm_in_em.data[channel] if lm_in_em.data.ndim == 4 else lm_in_em.data
    z = em.shape_zyx[0] // 2 if z_index is None else int(z_index)
    a, b = _stretch(em.data[z]), 1.0 - _stretch(lm[z])
    ny, nx = a.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    board = ((yy * tiles // ny) + (xx * tiles // nx)) % 2 == 0
    sz, sy, sx = em.voxel_size_um
    ox, oy, oz = em.origin_xyz_um
    fig = Figure(figsize=(6.5, 6.0), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(np.where(board, a, b), cmap="gray", vmin=0, vmax=1,
              extent=_extent((ny, nx), (sy, sx), (ox, oy)), interpolation="nearest")
    ax.set_title(f"checkerboard EM / inverted fluorescence, z = {oz + z * sz:.2f} µm",
                 fontsize=9)
    ax.set_xlabel("x (µm, EM)")
    ax.set_ylabel("y (µm, EM)")
    return fig


def plot_scale_selection(selections: dict) -> Figure:
    """Blob count against LoG sigma for each image, the selected sigma marked.

    Parameters
    ----------
    selections : dict
        Name → :meth:`ScaleSelection.to_dict` (e.g. ``PrealignResult.scale_selections``).
    """
    fig = Figure(figsize=(6.5, 3.8), layout="constrained")
    ax = fig.add_subplot()
    for (name, sel), colour in zip(selections.items(), ("tab:gray", "tab:green", "tab:blue"),
                                   strict=False):
        sigmas, counts = np.asarray(sel["sigmas_um"]), np.asarray(sel["blob_counts"])
        ax.plot(sigmas, counts, "o-", ms=3, color=colour,
                label=f"{name}: σ = {sel['sigma_um']:.3g} µm ({sel['polarity']} blobs)")
        ax.axvline(sel["sigma_um"], color=colour, ls="--", lw=1)
    ax.set_xscale("log")
    # plain 1-2-5 labels in µm (the default 10^k labels are mathtext: harder to read, and
    # the first one costs ~0.3 s of parser set-up)
    sigmas = np.concatenate([np.asarray(sel["sigmas_um"], float)
                             for sel in selections.values()] or [np.ones(1)])
    lo, hi = float(sigmas.min()), float(sigmas.max())
    ticks = [m * 10.0 ** e for e in range(int(np.floor(np.log10(lo))),
                                          int(np.ceil(np.log10(hi))) + 1)
             for m in (1, 2, 5) if lo / 1.05 <= m * 10.0 ** e <= hi * 1.05]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("LoG sigma (µm)")
    ax.set_ylabel("scale-space blobs")
    ax.set_title("Automatic scale selection", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def plot_orientation(result: PrealignResult, starts: Sequence[dict] = ()) -> Figure:
    """Orientation scan: best NCC (robust z) over positions per angle and handedness.

    The hypotheses searched at every scale are marked; the chosen orientation is the
    dashed line.  ``starts`` (from :attr:`Registration3DResult.starts`) adds the mutual
    information each hypothesis reached after the rigid 3D stage, as a text box.

    Parameters
    ----------
    result : PrealignResult
    starts : sequence of dict, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig = Figure(figsize=(9.5, 3.6), layout="constrained")
    ax = fig.add_subplot(fig.add_gridspec(1, 2, width_ratios=(3, 1))[0, 0])
    scan = result.orientation
    if scan:
        angles = np.asarray(scan["angles_deg"])
        for name, colour in (("direct", "tab:blue"), ("mirrored", "tab:orange")):
            if name in scan["scores"]:
                ax.plot(angles, scan["scores"][name], "-o", ms=3, color=colour,
                        label=f"{name} (EM x flipped)" if name == "mirrored" else name)
        for h in scan.get("hypotheses", []):
            # drawn on the plotted (mean) curve; each was proposed by one scan scale
            name = "mirrored" if h["mirrored"] else "direct"
            k = int(np.argmin([angle_distance(a, h["angle_deg"]) for a in angles]))
            ax.plot(angles[k], scan["scores"][name][k], "s", mfc="none", ms=10,
                    color="tab:orange" if h["mirrored"] else "tab:blue")
        scales = ", ".join(f"{v:g}" for v in scan.get("sigmas_um", []))
        ax.set_title(f"orientation scan: mean robust z over σ = {scales} µm\n"
                     "squares: hypotheses (best of each scale), searched at every scale",
                     fontsize=10)
    else:
        ax.set_title("orientation scan not run (rotation restricted, no mirror)")
    ax.axvline(result.angle_deg, ls="--", color="k",
               label=f"chosen {result.angle_deg:.1f}°{' mirrored' if result.mirrored else ''}")
    _finish_orientation_axes(ax, starts)
    return fig


def _finish_orientation_axes(ax, starts: Sequence[dict]) -> None:
    """Axis labels, legend and the box of the 3D stage's starts (MI after rigid)."""
    if starts:
        text = "\n".join(f"{'→ ' if s['chosen'] else '   '}start {k}: "
                         f"{'mirrored, ' if s['mirrored'] else ''}"
                         f"{'z reversed, ' if s.get('reversed_z') else ''}"
                         f"MI {s['mutual_information_rigid']:.3f}"
                         for k, s in enumerate(starts))
        # in a panel of its own beside the plot (inside it hid curves and the y ticks)
        side = ax.figure.add_subplot(ax.get_gridspec()[0, 1])
        side.axis("off")
        side.text(0.0, 1.0, "3D stage, MI after rigid:\n" + text, transform=side.transAxes,
                  fontsize=7, family="monospace", va="top", ha="left")
    ax.set_xlabel("in-plane angle EM → LM (°)")
    ax.set_ylabel("best NCC (robust z)")
    ax.legend(fontsize=7, loc="upper right")


# box edges as pairs of corner indices (corners ordered z-major, then y, then x)
_BOX_EDGES = ((0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7),
              (0, 4), (1, 5), (2, 6), (3, 7))


def plot_prealignment_3d(result: Prealign3DResult) -> Figure:
    """The EM ROI placed in the LM volume by the 3D pre-alignment.

    Left: the LM blob response of the scan grid, maximum over z (x-y, LM µm); right: the
    same over y (x-z).  The ROI's box mapped by ``initial_em_to_lm`` is drawn in yellow
    (its tilt shows in the x-z view), its centre as a cross.
    """
    fig = Figure(figsize=(11, 5.2), layout="constrained")
    ax_xy, ax_xz = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    vol = result.lm_response
    corners = result.initial_em_to_lm.apply(result.roi_corners_xyz_um)
    centre = result.initial_em_to_lm.apply(result.em_roi_centre_xyz_um)
    if vol is not None:
        sz, sy, sx = vol.voxel_size_um
        ox, oy, oz = vol.origin_xyz_um
        nz, ny, nx = vol.shape_zyx
        for ax, img, ext in (
                (ax_xy, vol.data.max(axis=0),
                 (ox - sx / 2, ox + (nx - 0.5) * sx, oy + (ny - 0.5) * sy, oy - sy / 2)),
                (ax_xz, vol.data.max(axis=1),
                 (ox - sx / 2, ox + (nx - 0.5) * sx, oz + (nz - 0.5) * sz, oz - sz / 2))):
            lo, hi = np.percentile(img, [1, 99.5])
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, extent=ext, interpolation="nearest")
    for ax, (a, b) in ((ax_xy, (0, 1)), (ax_xz, (0, 2))):
        for i, j in _BOX_EDGES:
            ax.plot(corners[[i, j], a], corners[[i, j], b], color="yellow", lw=1.2)
        ax.plot(centre[a], centre[b], "+", color="yellow", ms=14, mew=2)
        ax.set_xlabel("x (µm, LM)")
    ax_xy.set_ylabel("y (µm, LM)")
    ax_xz.set_ylabel("z (µm, LM)")
    ax_xy.set_title("LM blob response, maximum over z", fontsize=9)
    ax_xz.set_title("maximum over y", fontsize=9)
    conf = result.confidence
    h = result.hypotheses[0]
    fig.suptitle(f"3D pre-alignment: ROI centre → ({centre[0]:.1f}, {centre[1]:.1f}, "
                 f"{centre[2]:.1f}) µm{', mirrored' if h.mirrored else ''}"
                 f"{', z reversed' if h.flipped_z else ''}; peak margin "
                 f"{conf['margin']:.1f} z, refined NCC {conf.get('refined_ncc', float('nan')):.2f}",
                 fontsize=10)
    return fig


def plot_orientation_3d(result: Prealign3DResult, starts: Sequence[dict] = ()) -> Figure:
    """3D orientation scan: best NCC (robust z) over all 3D offsets per in-plane angle, for
    each handedness (direct, x mirrored, z reversed, both); the refined hypotheses marked.
    ``starts`` (from :attr:`Registration3DResult.starts`) adds the mutual information each
    reached after the rigid 3D stage."""
    fig = Figure(figsize=(9.5, 3.8), layout="constrained")
    ax = fig.add_subplot(fig.add_gridspec(1, 2, width_ratios=(3, 1))[0, 0])
    scan = result.scan
    angles = np.asarray(scan["angles_deg"])
    colours = {"direct": "tab:blue", "mirrored": "tab:orange", "reversed_z": "tab:green",
               "mirrored_reversed_z": "tab:red"}
    for name, values in scan["scores"].items():
        ax.plot(angles, values, "-", lw=1, color=colours.get(name),
                label=name.replace("_", " "))
    for k, h in enumerate(result.hypotheses):
        name = hand_name(h.mirrored, h.flipped_z)
        ax.plot(h.angle_deg, h.scan_z, "s" if k else "*", mfc="none", ms=11,
                color=colours.get(name))
    ax.set_title(f"3D orientation scan (σ = {scan['sigma_um']:.2g} µm on a "
                 f"{scan['pixel_um']:.2g} µm grid, EM contrast {scan['em_polarity']}); "
                 "★ chosen, □ other hypotheses", fontsize=9)
    _finish_orientation_axes(ax, starts)
    return fig
