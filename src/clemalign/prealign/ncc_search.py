"""Part B, the spatial score: masked NCC of the EM blob response over all placements.

Step 9 of the method: the EM image (the mean over the ROI depth, or of the given slices)
and the LM MIP are turned into blob responses at a fine scale and at coarse scales
(nuclei, cells), each at a working pixel of half its sigma; the EM response is rotated
(and mirrored) over the searched orientations and correlated everywhere by FFT
(:func:`clemalign.correlation.masked_ncc`); each scale's NCC becomes a robust z-score and
the scale — and, when the EM polarity is not given, the sign — whose best peak stands
farthest above its best separate rival is kept.  :func:`refine` then searches finer
angles and positions around the fused result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from skimage.feature import peak_local_max

from ..correlation import masked_ncc
from ..representation import Polarity, blob_response
from ..transforms import angle_distance, wrap_deg
from .config import (
    CELL_SCALES_UM,
    N_NCC_PEAKS,
    NCC_MAX_MAP_PX,
    REFINE_RADIUS_UM,
    REFINE_RANGE_DEG,
    REFINE_STEP_DEG,
    SIGN_SCAN_GAP,
    SIGN_SWITCH_MARGIN,
    WEIGHT_BY_OVERLAP,
    WIDE_SCAN_SCALE_UM,
    OrientationConfig,
    SearchConfig,
)
from .orientation import (
    Orientation,
    default_window,
    needs_scan,
    orientation_scan,
    oriented_templates,
    search_orientations,
)
from .planes import parabola_offset, resample_plane, robust_z, subpixel_peak
from .result import Candidate, NccSummary

__all__ = ["ScaleImages", "ScoreMap", "NccSearch", "ncc_search", "refine", "peak_margin",
           "scale_images"]


@dataclass(frozen=True, eq=False)
class ScaleImages:
    """Blob responses of LM and EM at one scale, on that scale's working pixel."""

    sigma_um: float
    pixel_um: float
    lm: np.ndarray
    em: np.ndarray
    em_centre_rc: np.ndarray  # ROI centre in ``em`` (row, col)


@dataclass(frozen=True, eq=False)
class ScoreMap:
    """Best score over orientations at each placement of the kept scale.

    Map index ``(i, j)`` puts the ROI centre at LM ``origin + ((j, i) + shift_px)·pixel``.
    """

    score: np.ndarray
    best_orientation: np.ndarray  # index into ``orientations``
    orientations: list[Orientation]
    shift_px: np.ndarray
    pixel_um: float
    origin_xy_um: np.ndarray
    step_deg: float  # angle step between neighbouring orientations of a group

    def to_xy(self, i: float, j: float) -> np.ndarray:
        return self.origin_xy_um + (np.array([j, i]) + self.shift_px) * self.pixel_um


@dataclass(frozen=True, eq=False)
class NccSearch:
    """Part B's findings.

    ``sign`` is +1 when the EM polarity assumed was right, −1 when the match is with the
    EM response negated (the EM's contrast is the other way round); ``sign_margin`` how
    much clearer the kept sign's best peak stood than the other sign's (NaN: one sign).
    """

    score_map: ScoreMap
    candidates: list[Candidate]
    group_best: list[Candidate]
    summary: NccSummary
    kept: ScaleImages
    scan: dict
    sign: int
    sign_margin: float


def default_ncc_sigmas(roi_size_um: Sequence[float], fine_um: float) -> tuple[float, ...]:
    """The fine scale plus :data:`CELL_SCALES_UM` up to a tenth of the ROI's smaller side."""
    limit = min(roi_size_um) / 10.0
    return (fine_um,) + tuple(s for s in CELL_SCALES_UM if 1.4 * fine_um <= s <= limit)


def default_scan_sigmas(roi_size_um: Sequence[float], coarsest_um: float) -> tuple[float, ...]:
    """The coarsest Part B scale, plus :data:`WIDE_SCAN_SCALE_UM` where the ROI allows."""
    if 1.4 * coarsest_um <= WIDE_SCAN_SCALE_UM <= min(roi_size_um) / 10.0:
        return (coarsest_um, WIDE_SCAN_SCALE_UM)
    return (coarsest_um,)


def peak_margin(score: np.ndarray, min_distance: int) -> float:
    """Best peak minus the best separate rival peak."""
    peaks = peak_local_max(score, min_distance=min_distance, num_peaks=2, exclude_border=False)
    values = [float(score[tuple(p)]) for p in peaks]
    return values[0] - values[1] if len(values) == 2 else 0.0


def _peak_candidate(total: np.ndarray, smap: ScoreMap, groups: list[int], i: int, j: int,
                    a: int, rank: int) -> Candidate:
    """Sub-pixel position at orientation ``a``; the angle refined by a parabola."""
    step = smap.step_deg
    si, sj = subpixel_peak(total[a], i, j)
    angle, mirrored = smap.orientations[a]

    def neighbour(delta: float) -> int | None:
        for k, (b, m) in enumerate(smap.orientations):
            if m == mirrored and groups[k] == groups[a] and \
                    abs(wrap_deg(b - angle) - delta) < 1e-6:
                return k
        return None

    lo, hi = neighbour(-step), neighbour(step)
    if lo is not None and hi is not None:
        angle += parabola_offset(total[lo, i, j], total[a, i, j], total[hi, i, j]) * step
    xy = smap.to_xy(si, sj)
    value = float(total[a, i, j])
    return Candidate("ncc", rank, (xy[0], xy[1]), (xy[0], xy[1]), value, value,
                     wrap_deg(angle), mirrored=mirrored)


def scale_images(mip: np.ndarray, lm_spacing_yx: Sequence[float], em_image: np.ndarray,
                 em_spacing_yx: Sequence[float], sigma_um: float, pixel_um: float,
                 polarity: tuple[Polarity, Polarity], workers: int | None = None
                 ) -> ScaleImages:
    """Blob responses of the LM MIP and the EM image at one scale and working pixel."""
    em_polarity, lm_polarity = polarity
    roi_centre_px = np.array([(em_image.shape[0] - 1) / 2.0, (em_image.shape[1] - 1) / 2.0])
    return ScaleImages(
        sigma_um, pixel_um,
        blob_response(resample_plane(mip, lm_spacing_yx, pixel_um), sigma_um, pixel_um,
                      lm_polarity, workers=workers),
        blob_response(resample_plane(em_image, em_spacing_yx, pixel_um), sigma_um, pixel_um,
                      em_polarity, workers=workers),
        roi_centre_px * np.asarray(em_spacing_yx) / pixel_um)


def _ncc_maps(im: ScaleImages, orientations: list[Orientation], min_overlap_fraction: float,
             workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The masked NCC of every orientation at one scale, and the map shift (pixels)
    from map index to LM offset of the ROI centre."""
    templates, masks, centre = oriented_templates(im.em, im.em_centre_rc, orientations)
    z = masked_ncc(im.lm, templates, masks, min_overlap_fraction=min_overlap_fraction,
                   weight_by_overlap=WEIGHT_BY_OVERLAP, workers=workers)
    n = templates[0].shape[0]
    return np.array([centre[1] - (n - 1), centre[0] - (n - 1)]), z


def _placements(total: np.ndarray, smap: ScoreMap, groups: list[int],
                roi_size_um: Sequence[float]) -> tuple[list[Candidate], list[Candidate]]:
    """Part B's candidates (separate peaks of the best-over-orientation map) and the best
    placement of each orientation group (hypotheses for the 3D stage), best first."""
    dist = max(1, int(0.25 * min(roi_size_um) / smap.pixel_um))
    peaks = peak_local_max(smap.score, min_distance=dist, num_peaks=N_NCC_PEAKS,
                           exclude_border=False)
    if len(peaks) == 0:
        peaks = np.array([np.unravel_index(np.argmax(smap.score), smap.score.shape)])
    best_index = smap.best_orientation
    candidates = [_peak_candidate(total, smap, groups, int(i), int(j), int(best_index[i, j]), r)
                  for r, (i, j) in enumerate(peaks)]
    per_template = total.reshape(total.shape[0], -1)
    group_best = []
    for g in sorted(set(groups)):
        a = max((t for t in range(total.shape[0]) if groups[t] == g),
                key=lambda t: per_template[t].max())
        i, j = np.unravel_index(int(np.argmax(total[a])), smap.score.shape)
        group_best.append(_peak_candidate(total, smap, groups, int(i), int(j), a, g))
    group_best.sort(key=lambda c: -c.spatial_score)
    return candidates, group_best


def _orientation_margin(per_template: np.ndarray, orientations: list[Orientation]) -> float:
    """Best template minus the best one at a clearly different orientation."""
    t_best = per_template.max(axis=1)
    b = int(np.argmax(t_best))
    others = [t_best[k] for k in range(len(orientations))
              if orientations[k][1] != orientations[b][1]
              or angle_distance(orientations[k][0], orientations[b][0]) > 20.0]
    return float(t_best[b] - max(others)) if others else float("nan")


def ncc_search(mip: np.ndarray, lm_spacing_yx: Sequence[float], em_image: np.ndarray,
               em_spacing_yx: Sequence[float], *, roi_size_um: tuple[float, float],
               origin_xy_um: np.ndarray, fine_sigma_um: float, search: SearchConfig,
               orientation: OrientationConfig, polarity: tuple[Polarity, Polarity],
               signs: Sequence[int] = (1,), workers: int | None = None) -> NccSearch:
    """Step 9: masked NCC over orientations at each scale; the clearest scale (and sign).

    Parameters
    ----------
    mip : ndarray (y, x)
        LM maximum-intensity projection at its own pixel ``lm_spacing_yx`` (µm).
    em_image : ndarray (y, x)
        The EM image matched (mean over the ROI depth) at ``em_spacing_yx`` (µm).
    roi_size_um : (float, float)
        ROI width and height.
    origin_xy_um : (2,) array
        LM physical position of pixel (0, 0).
    fine_sigma_um : float
        The LM's selected LoG scale: Part B's fine scale (at least two working pixels).
    search, orientation : configs
    polarity : (EM polarity, LM polarity)
        Polarities of the blob responses.
    signs : sequence of {1, -1}
        EM signs scored; −1 negates the NCC maps (no extra correlation).
    workers : int, optional
        Threads of the filters and FFTs (see :func:`clemalign.correlation.masked_ncc`).
    """
    lm_pixel = float(lm_spacing_yx[1])
    field_um = max(mip.shape[0] * lm_spacing_yx[0], mip.shape[1] * lm_spacing_yx[1])
    finest = max(lm_pixel, field_um / NCC_MAX_MAP_PX)
    sigmas = tuple(sorted(search.ncc_sigmas_um or default_ncc_sigmas(
        roi_size_um, max(fine_sigma_um, 2.0 * finest))))

    def images_at(sigma: float) -> ScaleImages:
        return scale_images(mip, lm_spacing_yx, em_image, em_spacing_yx, sigma,
                            max(finest, sigma / 2.0), polarity, workers)

    window = default_window(orientation)
    scan: dict = {}
    cache: dict[float, ScaleImages] = {}
    if needs_scan(orientation):
        scan_sigmas = tuple(orientation.scan_sigmas_um
                            or default_scan_sigmas(roi_size_um, sigmas[-1]))
        for sigma in scan_sigmas:
            cache[sigma] = images_at(sigma)
        scan = orientation_scan([(c.lm, c.em, c.em_centre_rc) for c in cache.values()],
                                orientation, window,
                                min_overlap_fraction=search.min_overlap_fraction, signs=signs,
                                workers=workers)
        scan["sigmas_um"] = [float(v) for v in scan_sigmas]
    plan = _sign_plan(signs, scan, window, orientation.window_step_deg)
    maps, images, margins, best = _score_scales(sigmas, cache, images_at, plan, search,
                                                roi_size_um, workers)
    cache.clear()
    _, k, sign = best
    other = [max(v) for s, v in margins.items() if s != sign]
    sign_margin = max(margins[sign]) - other[0] if other else float("nan")
    shift_px, total = maps[k][0], maps[k][1][sign]
    del maps
    orientations, groups = plan.per_sign[sign]
    if sign < 0:
        np.negative(total, out=total)
    kept = images[k]
    best_index = np.argmax(total, axis=0)
    smap = ScoreMap(np.take_along_axis(total, best_index[None], 0)[0], best_index, orientations,
                    shift_px, kept.pixel_um, np.asarray(origin_xy_um, float),
                    orientation.window_step_deg)
    if scan:  # the figure shows the curves and hypotheses of the kept sign
        scan.update(scan["by_sign"][f"{sign:+d}"])

    candidates, group_best = _placements(total, smap, groups, roi_size_um)
    per_template = total.reshape(len(orientations), -1)
    summary = NccSummary(tuple(float(s) for s in sigmas), tuple(float(m) for m in margins[sign]),
                         float(sigmas[k]), len(orientations),
                         _orientation_margin(per_template, orientations))
    return NccSearch(smap, candidates, group_best, summary, kept, scan, sign, sign_margin)


@dataclass(frozen=True)
class _SignPlan:
    """The orientations each EM sign searches.

    Each sign searches the window plus its own scan's hypotheses, so that with the sign
    +1 kept the search is exactly that of a given polarity (pooling both signs'
    hypotheses gave an unrelated pair extra chances: peak margin 1.1 → 2.3 on one).  The
    assumed sign (+1) always proposes its own hypotheses; the reversed sign only when
    its scan comes within :data:`SIGN_SCAN_GAP` of the assumed one's (else it is scored
    on the assumed sign's orientations): normal pairs cost one sign's search, inverted
    and ambiguous ones both.
    """

    proposing: tuple[int, ...]
    per_sign: dict  # sign → (orientations, groups)
    union: list     # every orientation correlated, once
    index: dict     # sign → indices of its orientations in ``union``


def _sign_plan(signs: Sequence[int], scan: dict, window, step_deg: float) -> _SignPlan:
    by_sign = scan.get("by_sign", {})
    first = signs[0]
    proposing = tuple(s for s in signs if s == first or not by_sign or by_sign[f"{s:+d}"]["best"]
                      >= by_sign[f"{first:+d}"]["best"] - SIGN_SCAN_GAP)
    own = {s: search_orientations(window, by_sign.get(f"{s:+d}", {}), step_deg)
           for s in proposing}
    per_sign = {s: own.get(s, own[first]) for s in signs}
    union = list(dict.fromkeys(o for s in signs for o in per_sign[s][0]))
    index = {s: np.array([union.index(o) for o in per_sign[s][0]]) for s in signs}
    return _SignPlan(proposing, per_sign, union, index)


def _score_scales(sigmas: Sequence[float], cache: dict, images_at: Callable, plan: _SignPlan,
                  search: SearchConfig, roi_size_um: tuple[float, float], workers: int | None
                  ) -> tuple[list, list, dict, tuple[float, int, int]]:
    """Each scale's robust z-maps and, per sign, its peak margin; the clearest
    ``(margin, scale index, sign)``.  The assumed sign (+1) is kept unless the other is
    clearly better (:data:`SIGN_SWITCH_MARGIN`), here and in the scan (a sign the scan
    left far behind does not propose, so does not win on one peak)."""
    signs = list(plan.per_sign)
    best: tuple[float, int, int] | None = None
    maps, images, margins = [], [], {s: [] for s in signs}
    for sigma in sigmas:
        im = cache.get(sigma) or images_at(sigma)
        shift_px, ncc = _ncc_maps(im, plan.union, search.min_overlap_fraction, workers)
        dist = max(1, int(0.25 * min(roi_size_um) / im.pixel_um))
        # robust z over each sign's own orientations (its statistics, as if searched alone)
        z: dict[int, np.ndarray] = {}
        # a sign searching every orientation is done last, in ncc's own buffer (the
        # others' subsets are copies taken before it)
        whole = {s: len(plan.index[s]) == len(plan.union) for s in signs}
        for s in sorted(signs, key=whole.get):
            # signs searching the same orientations share one z-map
            same = next((t for t in z if np.array_equal(plan.index[t], plan.index[s])), None)
            z[s] = z[same] if same is not None else robust_z(
                ncc if whole[s] else ncc[plan.index[s]], overwrite=whole[s])
        del ncc
        for s in signs:
            m = peak_margin(z[s].max(axis=0) if s > 0 else -z[s].min(axis=0), dist)
            margins[s].append(m)
            handicap = 0.0 if s > 0 else SIGN_SWITCH_MARGIN
            if s in plan.proposing and (best is None or m - handicap > best[0]):
                best = (m - handicap, len(maps), s)
        maps.append((shift_px, z))
        images.append(im)
    return maps, images, margins, best


def refine(centre_xy_um: np.ndarray, angle_deg: float, kept: ScaleImages,
           origin_xy_um: np.ndarray, *, min_overlap_fraction: float, mirrored: bool = False,
           sign: int = 1, workers: int | None = None) -> tuple[np.ndarray, float, float]:
    """Local search of angle (fine steps) and position around the fused result.

    The coarse angle grid leaves up to half a step of error, which shifts the best match
    by ``r·δ`` for content at radius ``r`` from the ROI centre (40 µm × 2° ≈ 1.4 µm), so
    angles ±:data:`REFINE_RANGE_DEG` in :data:`REFINE_STEP_DEG` steps are scored by masked
    NCC within :data:`REFINE_RADIUS_UM` at the kept scale.

    Returns (centre_xy_um, angle_deg, ncc).
    """
    pixel = kept.pixel_um
    angles = angle_deg + np.arange(-REFINE_RANGE_DEG, REFINE_RANGE_DEG + 1e-9, REFINE_STEP_DEG)
    templates, masks, centre = oriented_templates(
        kept.em if sign > 0 else -kept.em, kept.em_centre_rc,
        [(float(a), mirrored) for a in angles])
    n = templates[0].shape[0]
    radius = max(2, int(np.ceil(REFINE_RADIUS_UM / pixel)))
    cx, cy = (np.asarray(centre_xy_um) - origin_xy_um) / pixel
    top, left = int(round(cy - centre[0])), int(round(cx - centre[1]))
    r0, c0 = max(0, top - radius), max(0, left - radius)
    r1 = min(kept.lm.shape[0], top + n + radius)
    c1 = min(kept.lm.shape[1], left + n + radius)
    if r1 - r0 < 3 or c1 - c0 < 3:
        return np.asarray(centre_xy_um, float), angle_deg, float("nan")
    ncc = masked_ncc(kept.lm[r0:r1, c0:c1], templates, masks,
                     min_overlap_fraction=min_overlap_fraction,
                     weight_by_overlap=WEIGHT_BY_OVERLAP, workers=workers)
    # offsets (top-left in the crop) within ±radius of the nominal one
    i_nom, j_nom = top - r0 + (n - 1), left - c0 + (n - 1)
    ii, jj = np.mgrid[0:ncc.shape[1], 0:ncc.shape[2]]
    near = (np.abs(ii - i_nom) <= radius) & (np.abs(jj - j_nom) <= radius)
    masked = np.where(near[None], ncc, -np.inf)
    a, i, j = np.unravel_index(np.argmax(masked), masked.shape)
    if not np.isfinite(masked[a, i, j]):
        return np.asarray(centre_xy_um, float), angle_deg, float("nan")
    si, sj = subpixel_peak(np.where(near, ncc[a], ncc[a].min()), int(i), int(j))
    best_angle = float(angles[a])
    if 0 < a < len(angles) - 1:
        best_angle += parabola_offset(*ncc[a - 1:a + 2, i, j]) * REFINE_STEP_DEG
    # crop offset (si, sj) -> canvas top-left on the LM grid -> ROI centre
    row = si - (n - 1) + r0 + centre[0]
    col = sj - (n - 1) + c0 + centre[1]
    return (origin_xy_um + np.array([col, row]) * pixel, wrap_deg(best_angle),
            float(ncc[a, i, j]))
