"""Scale selection by blob counting: the LoG scale at which an image shows the most blobs.

Lindeberg's scale-normalised LoG, ``s²·L_s``, is computed over a geometric series of
scales; its maxima in space and scale that stand above a noise-adaptive threshold, pass an
edge test and are not nested inside a stronger, coarser blob (such as the pixel staircase
along a hard edge) are counted, and the scale with the most of them is selected.  The
noise level comes from :func:`estimate_noise_sd` and the filter's own noise gain.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from .._threads import resolve_workers
from ..errors import InputError
from .log import (
    Polarity,
    _check_image,
    _halve,
    _laplacian_of_gaussian,
    _max3,
    _per_axis,
    _Plan,
    _plan,
    _reduce,
    _resolve_axes,
    _second_difference,
    _smoothing_sigma_px,
)

__all__ = ["ScaleSelection", "select_log_scale", "default_sigmas_um", "estimate_noise_sd"]


# ------------------------------------------------------------ noise estimate
def estimate_noise_sd(image: np.ndarray, *, axes: Sequence[int] | None = None) -> float:
    """Robust standard deviation of white noise in an image.

    Applies the separable second difference ``[1, -2, 1]`` along every filtered axis,
    which cancels smooth structure (up to linear trends in each axis) and multiplies
    white noise variance by ``6`` per axis; the median absolute value then estimates
    the noise (Immerkær's idea, in any dimension).  Edges are rare, so they do not move
    the median much.
    """
    image = np.asarray(image, dtype=np.float32)
    ax = _resolve_axes(image.ndim, axes)
    response = image
    for a in ax:
        response = _second_difference(response, a)
    inner = tuple(slice(1, -1) if a in ax else slice(None) for a in range(image.ndim))
    mad = float(np.median(np.abs(response[inner])))
    return mad / 0.6745 / np.sqrt(6.0 ** len(ax))


def _effective_kernels(sigma_px: float, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Impulse responses, over original samples, of one output sample of the smoothing
    and of the smoothing-then-second-difference actually applied along one axis
    (pyramid reduction by ``factor`` included).

    Pushing a delta at each of the ``factor`` input phases through the real pipeline
    and reading every output gives each input sample's weight exactly once.
    """
    smoothing = _smoothing_sigma_px(sigma_px)
    n_out = 2 * int(4.0 * smoothing + 0.5) + 24
    deltas = np.zeros((factor, n_out * factor), dtype=np.float32)
    deltas[np.arange(factor), (n_out // 2) * factor + np.arange(factor)] = 1.0
    reduced = deltas
    for _ in range(int(round(np.log2(factor)))):
        reduced = _halve(reduced, [1], workers=1)
    g = ndi.gaussian_filter1d(reduced.astype(np.float64), smoothing, axis=1, mode="constant")
    d2 = _second_difference(g, 1)
    return g.ravel(), d2.ravel()


def _noise_gain(plan: _Plan) -> float:
    """Standard deviation of the LoG of unit white noise under ``plan`` (exact for the
    sampled pipeline, ignoring borders).

    The LoG is a sum over axes a of separable kernels K_a = D_a ⊗ Π_{b≠a} G_b / h_a²;
    its squared norm is Σ_a Σ_c Π_b <K_a,b, K_c,b> / (h_a² h_c²).
    """
    axes = [a for a, s in enumerate(plan.sigma_px) if s > 0]
    kernels = {a: _effective_kernels(plan.sigma_px[a], plan.factor[a]) for a in axes}
    total = 0.0
    for a in axes:
        for c in axes:
            prod = 1.0
            for b in axes:
                ka = kernels[b][1] if b == a else kernels[b][0]
                kc = kernels[b][1] if b == c else kernels[b][0]
                prod *= float(ka @ kc)
            total += prod / (plan.spacing_um[a] ** 2 * plan.spacing_um[c] ** 2)
    return float(np.sqrt(max(total, 0.0)))


# ---------------------------------------------------------- scale selection
@dataclass(frozen=True, eq=False)
class ScaleSelection:
    """Result of :func:`select_log_scale`.

    Attributes
    ----------
    sigma_um : float
        Selected LoG scale in µm (refined between grid scales).
    sigmas_um : ndarray
        The scale grid that was searched (µm).
    blob_counts : ndarray of int
        Number of scale-space blobs counted at each grid scale.
    polarity : {"bright", "dark"}
        Which blobs were counted.
    noise_sd : float
        Estimated image noise standard deviation (intensity units).
    threshold_sd : float
        Blobs had to exceed this many noise standard deviations of the response.
    selected_index : int
        Grid index with the most blobs.
    n_dims : int
        Number of filtered axes (2 for images and slice stacks, 3 for volumes).
    timings_s : dict
        Seconds spent.
    nested_counts : ndarray of int
        Maxima per grid scale that passed every per-scale test but were not counted
        because they lie inside a stronger blob found at a coarser scale (mostly the
        pixel staircase along hard edges).
    """

    sigma_um: float
    sigmas_um: np.ndarray
    blob_counts: np.ndarray
    polarity: Polarity
    noise_sd: float
    threshold_sd: float
    selected_index: int
    n_dims: int
    timings_s: dict = field(default_factory=dict)
    nested_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))

    @property
    def blob_radius_um(self) -> float:
        """Radius of the typical blob, ``sigma·√d`` for ``d`` filtered axes."""
        return float(np.sqrt(self.n_dims) * self.sigma_um)

    def to_dict(self) -> dict:
        """JSON-ready summary for reports."""
        return {"sigma_um": self.sigma_um, "sigmas_um": self.sigmas_um.tolist(),
                "blob_counts": self.blob_counts.tolist(), "polarity": self.polarity,
                "noise_sd": self.noise_sd, "threshold_sd": self.threshold_sd,
                "selected_index": self.selected_index, "n_dims": self.n_dims,
                "timings_s": self.timings_s, "nested_counts": self.nested_counts.tolist()}


def default_sigmas_um(shape: Sequence[int], spacing_um: Sequence[float],
                      axes: Sequence[int], *, ratio: float = 1.2,
                      blobs_across: float = 8.0) -> np.ndarray:
    """Geometric scale grid from one pixel up to a fraction of the image extent.

    The smallest sigma is the coarsest pixel size among the filtered axes (a finer blob
    is not sampled along that axis, and its LoG there is ill-defined); the largest is
    the smallest filtered extent divided by ``blobs_across`` (larger blobs would not fit
    several times in the image).
    """
    spacing = np.asarray(spacing_um, float)[list(axes)]
    extent = np.asarray(shape, float)[list(axes)] * spacing
    lo = float(spacing.max())
    hi = max(float(extent.min()) / blobs_across, lo * ratio**4)
    n = int(np.floor(np.log(hi / lo) / np.log(ratio))) + 1
    return lo * ratio ** np.arange(n)


def select_log_scale(image: np.ndarray, spacing_um: float | Sequence[float], *,
                     sigmas_um: Sequence[float] | None = None, polarity: Polarity = "bright",
                     ratio: float = 1.2, threshold_sd: float = 5.0, edge_ratio: float = 10.0,
                     min_scale_curvature: float = 1.0,
                     per_slice: bool = False, fast: bool = True,
                     progress: Callable[[float], None] | None = None,
                     workers: int | None = None) -> ScaleSelection:
    """Choose the LoG scale with the most scale-space blobs (Lindeberg).

    Blobs are local extrema of the scale-normalised LoG ``s²·L_s`` over space and
    scale: bright blobs are minima, dark blobs maxima.  An extremum counts when its
    response exceeds ``threshold_sd`` times the response that white noise of the
    image's estimated noise level would give at that scale — so the threshold adapts
    to the noise of each image and falls with scale exactly as the noise response does.
    Extrema on the first or last grid scale are not counted (they are not extrema in
    scale); one extra scale is computed beyond each end so that every reported scale
    can hold blobs.  Finally an extremum is not counted when it lies inside the central
    lobe (radius ``√(2d)·s``) of a stronger extremum at a coarser scale: it is detail of
    that blob, not an object of its own.  Hard-edged objects (binary masks, stained EM
    organelles) need this: the pixel staircase along their boundary gives hundreds of
    small, blob-like maxima at one to two pixels of scale, which would otherwise outnumber
    the objects (up to 293 such maxima against 24 binary disks of 25 pixels radius,
    ``benchmarks/results/scale_selection_edges.md``).

    Parameters
    ----------
    image : ndarray
        2D image, 3D volume, or (with ``per_slice``) a stack of 2D slices ``(n, y, x)``.
    spacing_um : float or sequence
        Pixel/voxel size in µm, array order (for ``per_slice`` a 3-sequence's first
        value is ignored, or give the 2 in-plane values).
    sigmas_um : sequence of float, optional
        Scales to search (µm).  Default: :func:`default_sigmas_um` with ``ratio``.
    polarity : {"bright", "dark"}
        Count bright blobs (fluorescence, default) or dark blobs (EM: stained membranes
        and dense organelles are dark).  See :func:`default_polarity`.
    ratio : float
        Ratio between consecutive default scales (1.15–1.25 is a good range).
    threshold_sd : float
        Detection threshold in noise standard deviations of the response.
    edge_ratio : float
        Extrema whose spatial curvatures (Hessian eigenvalues of the response, in µm)
        differ by more than this ratio lie on edges or ridges, not blobs, and are not
        counted (the edge test of SIFT, in any dimension).
    min_scale_curvature : float
        Minimum relative curvature of the response across log-scale,
        ``(2·R_s − R_{s/k} − R_{sk}) / (R_s · (ln k)²)``.  Blobs peak in scale (at ``k = 1.2``
        a Gaussian blob gives about 2, a disk about 4 at its peak); step edges give ~0 because
        ``s²·L`` of an edge does not depend on ``s``.  Extrema below it are not counted.
    per_slice : bool
        Treat axis 0 as independent 2D slices (not filtered along it) and add the counts.
    fast : bool
        Use the decimated filtering of :func:`log_transform` for large scales.
    progress : callable, optional
        Called with the fraction done (0–1) after each scale.
    workers : int, optional
        Threads (default: the machine's cores, at most 4): slices of a ``per_slice``
        stack in parallel, else the filters of one image; the result does not depend on it.

    Returns
    -------
    ScaleSelection
        Selected sigma (µm), the grid, the blob count per scale and the noise level.
        The selected sigma is the median, over the blobs counted at the most populated
        scale and its two neighbours, of their scale refined by a parabola through the
        responses at the three scales around each blob.  For a blob of radius ``r`` (a
        disk, a sphere, or a Gaussian of standard deviation ``r/√d``) it is ``r/√2`` in
        2D and ``r/√3`` in 3D: ``s`` is the standard deviation of the Gaussian, in µm,
        and the response is normalised as ``s²·∇²`` (Lindeberg's γ = 1).

    Raises
    ------
    InputError
        Empty, constant or NaN/Inf image; invalid spacing or scales.
    """
    import time

    t0 = time.perf_counter()
    image = np.asarray(image)
    if per_slice and image.ndim != 3:
        raise InputError(f"per_slice needs a (n, y, x) stack, got shape {image.shape}")
    axes = (1, 2) if per_slice else tuple(range(image.ndim))
    image = _check_image(image, "select_log_scale: image", axes)
    spacing_arr = np.asarray(spacing_um, dtype=float)
    if per_slice and spacing_arr.size == 2:
        spacing_arr = np.concatenate([[1.0], spacing_arr])
    spacing = _per_axis(spacing_arr, image.ndim, "spacing_um")
    if polarity not in ("bright", "dark"):
        raise InputError(f"polarity: expected 'bright' or 'dark', got {polarity!r}")
    if not ratio > 1.0:
        raise InputError(f"ratio: must be > 1, got {ratio}")
    if sigmas_um is None:
        grid = default_sigmas_um(image.shape, spacing, axes, ratio=ratio)
    else:
        grid = np.sort(np.asarray(sigmas_um, dtype=float))
        if grid.ndim != 1 or grid.size < 2 or np.any(grid <= 0) or not np.all(np.isfinite(grid)):
            raise InputError("sigmas_um: need at least two finite positive scales")
    # one extra scale on each side, so the reported ends can be extrema in scale
    lo_ratio = grid[1] / grid[0]
    hi_ratio = grid[-1] / grid[-2]
    padded = np.concatenate([[grid[0] / lo_ratio], grid, [grid[-1] * hi_ratio]])

    image32 = image.astype(np.float32, copy=False)
    noise_sd = estimate_noise_sd(image32, axes=axes)
    if noise_sd <= 0:  # noise-free (synthetic) images: fall back to a tiny fraction of range
        noise_sd = 1e-3 * float(image32.max() - image32.min())
    sign = np.float32(-1.0 if polarity == "bright" else 1.0)
    settings = dict(padded=padded, spacing=spacing, axes=axes, sign=sign, noise_sd=noise_sd,
                    threshold_sd=threshold_sd, edge_ratio=edge_ratio,
                    min_scale_curvature=min_scale_curvature, fast=fast)
    threads = resolve_workers(workers)
    if per_slice and threads > 1 and image32.shape[0] >= threads:
        # independent slices: one group per thread, filters single-threaded inside
        groups = np.array_split(np.arange(image32.shape[0]), threads)
        with ThreadPoolExecutor(threads) as pool:
            parts = list(pool.map(lambda g: _count_blobs(image32[g], workers=1, **settings),
                                  groups))
        counts = np.sum([c for c, _, _ in parts], axis=0)
        nested = np.sum([n for _, n, _ in parts], axis=0)
        refined = [np.concatenate([r[k] for _, _, r in parts]) for k in range(len(grid))]
        if progress is not None:
            progress(1.0)
    else:
        counts, nested, refined = _count_blobs(image32, workers=threads, progress=progress,
                                               **settings)
    best = int(np.argmax(counts))
    near_all = np.concatenate(
        [refined[k] for k in range(max(0, best - 1), min(len(grid), best + 2))])
    sigma = float(np.exp(np.median(near_all))) if near_all.size else float(grid[best])
    return ScaleSelection(sigma, grid, counts, polarity, float(noise_sd), float(threshold_sd),
                          best, len(axes), {"total": time.perf_counter() - t0}, nested)


def _count_blobs(image32: np.ndarray, *, padded: np.ndarray, spacing: np.ndarray,
                 axes: tuple[int, ...], sign: np.float32, noise_sd: float, threshold_sd: float,
                 edge_ratio: float, min_scale_curvature: float, fast: bool, workers: int,
                 progress: Callable[[float], None] | None = None
                 ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Blobs counted and nested maxima dropped per scale (``padded[1:-1]``), and each
    counted blob's refined log-scale."""
    log_padded = np.log(padded)
    ndim = image32.ndim
    n_scales = len(padded) - 2
    pyramid: dict[tuple[int, ...], np.ndarray] = {}
    cache: dict[tuple[int, tuple[int, ...]], tuple[np.ndarray, np.ndarray]] = {}

    def response(i: int, factor: tuple[int, ...] | None) -> tuple[np.ndarray, np.ndarray, _Plan]:
        """s²·L_s (signed so blobs are maxima) and its spatial max filter, on a grid."""
        s = float(padded[i])
        sig = np.where(np.isin(np.arange(ndim), axes), s, 1e-9)
        plan = _plan(sig, spacing, axes, fast, factor)  # factor: a neighbour's grid
        key = (i, plan.factor)
        if key not in cache:
            reduced = _reduce(image32, plan.factor, pyramid, workers)
            r = _laplacian_of_gaussian(reduced, plan, workers)
            r *= sign * np.float32(s * s)
            cache[key] = (r, _max3(r, axes))
        return (*cache[key], plan)

    # per grid scale, the maxima that pass the per-scale tests: centres (µm), responses,
    # refined log-scales
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for n, i in enumerate(range(1, len(padded) - 1)):
        r_cur, m_cur, plan = response(i, None)
        r_prev, m_prev, _ = response(i - 1, plan.factor)
        r_next, m_next, _ = response(i + 1, plan.factor)
        threshold = np.float32(threshold_sd * noise_sd * padded[i] ** 2 * _noise_gain(plan))
        peaks = (r_cur == m_cur) & (r_cur > threshold) & (r_cur > m_prev) & (r_cur >= m_next)
        # ignore the outermost pixel of filtered axes: reflect padding invents extrema there
        for a in axes:
            idx = [slice(None)] * ndim
            idx[a] = 0
            peaks[tuple(idx)] = False
            idx[a] = -1
            peaks[tuple(idx)] = False
        where = np.nonzero(peaks)
        step = 0.5 * (log_padded[i + 1] - log_padded[i - 1])
        yp, yc, yn = r_prev[where], r_cur[where], r_next[where]
        if len(yc):
            # a blob has a definite scale: its response falls on both sides in scale;
            # edges and ridges give responses nearly constant across scale
            peaked = (2 * yc - yp - yn) >= min_scale_curvature * yc * step**2
            keep = peaked & _blob_like(r_cur, where, axes, plan.spacing_um, edge_ratio)
            yp, yc, yn = yp[keep], yc[keep], yn[keep]
            where = tuple(w[keep] for w in where)
        curvature = yp - 2 * yc + yn
        offset = np.where(curvature < 0, 0.5 * (yp - yn) / np.where(curvature < 0,
                                                                     curvature, -1), 0)
        found.append((_centres_um(where, plan, spacing, axes, padded[-1]), yc.astype(np.float64),
                      log_padded[i] + np.clip(offset, -0.5, 0.5) * step))
        # free grids no longer needed (scale i-1 is never used again)
        for key in [k for k in cache if k[0] < i]:
            del cache[key]
        if progress is not None:
            progress((n + 1) / n_scales)
    kept = _not_nested(found, len(axes))
    counts = np.array([int(k.sum()) for k in kept], dtype=int)
    nested = np.array([int((~k).sum()) for k in kept], dtype=int)
    refined = [f[2][k] for f, k in zip(found, kept, strict=True)]
    return counts, nested, refined


def _centres_um(where: tuple[np.ndarray, ...], plan: _Plan, spacing: np.ndarray,
                axes: tuple[int, ...], largest_sigma_um: float) -> np.ndarray:
    """Blob centres in µm on the original grid, ``(n, ndim)``, from pyramid-level indices.

    Unfiltered axes (independent slices) are spread far apart, so that blobs of different
    slices are never within a blob radius of each other.
    """
    apart = 10.0 * largest_sigma_um * np.sqrt(2.0 * len(axes)) + 1.0
    cols = []
    for a, w in enumerate(where):
        if a in axes:
            # level pixel m covers original pixels [m·f, (m + 1)·f): centre (m + ½)·f − ½
            cols.append(((w + 0.5) * plan.factor[a] - 0.5) * spacing[a])
        else:
            cols.append(w * apart)
    return np.stack(cols, axis=1) if cols else np.empty((0, len(where)))


def _not_nested(found: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n_dims: int
                ) -> list[np.ndarray]:
    """Which blobs are not nested in a stronger blob found at a coarser grid scale.

    A blob of scale ``s`` seen at its own scale (a Gaussian of standard deviation
    ``s``) has a central lobe of one sign out to ``√(2d)·s``.  A weaker maximum at a finer
    scale inside that lobe is detail of the coarser blob — typically the pixel staircase
    of a hard edge, which gives hundreds of small maxima just inside the boundary of
    binary objects — not an object of its own, so it is not counted.

    Parameters
    ----------
    found : list of (centres_um, responses, log_scales)
        Per grid scale, fine to coarse: blob centres ``(n, ndim)`` in µm, their
        scale-normalised responses and their refined ``ln(sigma / µm)``.
    n_dims : int
        Number of filtered axes ``d``.

    Returns
    -------
    list of ndarray of bool
        Per grid scale, which of its blobs are kept.
    """
    scale_index = np.repeat(np.arange(len(found)), [len(f[1]) for f in found])
    centres = np.concatenate([f[0] for f in found])
    resp = np.concatenate([f[1] for f in found])
    reach = np.sqrt(2.0 * n_dims) * np.exp(np.concatenate([f[2] for f in found]))  # µm
    kept = np.ones(len(resp), dtype=bool)
    n_near = 8  # coarser blobs examined per finer one; maxima of one scale rarely crowd more
    for j in np.unique(scale_index):
        coarse = np.flatnonzero(scale_index == j)
        fine = np.flatnonzero(scale_index < j)
        if not len(fine):
            continue
        k = min(n_near, len(coarse))
        dist, near = cKDTree(centres[coarse]).query(
            centres[fine], k=k, distance_upper_bound=float(reach[coarse].max()))
        dist, near = dist.reshape(len(fine), k), near.reshape(len(fine), k)
        valid = near < len(coarse)  # neighbours beyond the bound come back as index n
        near = coarse[np.where(valid, near, 0)]
        inside = valid & (dist < reach[near]) & (resp[near] > resp[fine, None])
        kept[fine[inside.any(axis=1)]] = False
    return np.split(kept, np.cumsum([len(f[1]) for f in found])[:-1])


def _blob_like(response: np.ndarray, where: tuple[np.ndarray, ...], axes: tuple[int, ...],
               spacing_um: Sequence[float], edge_ratio: float) -> np.ndarray:
    """Which maxima are blobs: all Hessian eigenvalues negative and of similar size."""
    d = len(axes)
    n = len(where[0])
    shape = response.shape
    hess = np.empty((n, d, d), dtype=np.float64)
    centre = response[where].astype(np.float64)

    def at(offsets: dict[int, int]) -> np.ndarray:
        idx = list(where)
        for a, o in offsets.items():
            idx[a] = np.clip(where[a] + o, 0, shape[a] - 1)
        return response[tuple(idx)].astype(np.float64)

    for p, a in enumerate(axes):
        hess[:, p, p] = (at({a: 1}) - 2 * centre + at({a: -1})) / spacing_um[a] ** 2
        for q in range(p + 1, d):
            b = axes[q]
            cross = (at({a: 1, b: 1}) - at({a: 1, b: -1}) - at({a: -1, b: 1})
                     + at({a: -1, b: -1})) / (4 * spacing_um[a] * spacing_um[b])
            hess[:, p, q] = hess[:, q, p] = cross
    eig = np.linalg.eigvalsh(hess)  # ascending; a maximum has all eigenvalues < 0
    return (eig[:, -1] < 0) & (eig[:, 0] > edge_ratio * eig[:, -1])
