"""Steps 8 and 10: candidates re-scored by the spatial score and fused robustly.

The published fusion: median, MAD outlier rejection, inverse-distance-weighted mean
(:func:`robust_fuse`).  Beyond it, Part A's candidates are first moved to the best
spatial score within half a search stride (:func:`snap`), and only candidates within
5 % of the best spatial score and at its orientation are fused (:func:`fuse`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import InputError
from ..transforms import angle_distance
from .config import ORIENTATION_WINDOW_DEG, SCORE_TOLERANCE
from .ncc_search import ScoreMap
from .planes import subpixel_peak
from .result import Candidate

__all__ = ["robust_fuse", "snap", "fuse", "same_orientation", "Fusion"]


def robust_fuse(points: np.ndarray, *, mad_c: float = 3.0, min_mad: float = 1e-6
                ) -> tuple[np.ndarray, np.ndarray]:
    """Median, MAD outlier rejection and inverse-distance-weighted mean of points.

    Parameters
    ----------
    points : ndarray, shape (n, 2)
    mad_c : float
        Points farther from the median than ``mad_c`` × MAD of the distances are outliers.
    min_mad : float
        Floor of the MAD (same unit as the points) so that identical points all stay.

    Returns
    -------
    fused : ndarray, shape (2,)
        Mean of the inliers weighted by ``1 / (distance to the median + min_mad)``.
    inlier : ndarray of bool, shape (n,)
    """
    points = np.asarray(points, dtype=float)
    if points.ndim != 2 or points.shape[0] == 0:
        raise InputError("robust_fuse: need at least one point")
    median = np.median(points, axis=0)
    dist = np.linalg.norm(points - median, axis=1)
    mad = max(float(np.median(dist)), min_mad)
    inlier = dist <= mad_c * mad
    weight = 1.0 / (dist[inlier] + min_mad)
    return (points[inlier] * weight[:, None]).sum(0) / weight.sum(), inlier


def snap(c: Candidate, smap: ScoreMap, radius_um: float) -> Candidate:
    """Move a candidate to the best spatial score within ``radius_um``; record the score."""
    pixel = smap.pixel_um
    j, i = (np.asarray(c.centre_xy_um) - smap.origin_xy_um) / pixel - smap.shift_px
    r = max(1, int(np.ceil(radius_um / pixel)))
    i0, i1 = max(0, int(round(i)) - r), min(smap.score.shape[0], int(round(i)) + r + 1)
    j0, j1 = max(0, int(round(j)) - r), min(smap.score.shape[1], int(round(j)) + r + 1)
    unscored = replace(c, snapped_xy_um=c.centre_xy_um, spatial_score=0.0, angle_deg=0.0,
                       mirrored=False)
    if i0 >= i1 or j0 >= j1:
        return unscored
    window = smap.score[i0:i1, j0:j1]
    yy, xx = np.mgrid[i0:i1, j0:j1]
    masked = np.where((yy - i) ** 2 + (xx - j) ** 2 <= r * r, window, -np.inf)
    a, b = np.unravel_index(np.argmax(masked), masked.shape)
    if not np.isfinite(masked[a, b]):
        return unscored
    bi, bj = subpixel_peak(smap.score, i0 + a, j0 + b)
    snapped = smap.to_xy(bi, bj)
    angle, mirrored = smap.orientations[int(smap.best_orientation[i0 + a, j0 + b])]
    return replace(c, snapped_xy_um=(float(snapped[0]), float(snapped[1])),
                   spatial_score=float(masked[a, b]), angle_deg=float(angle),
                   mirrored=mirrored)


@dataclass(frozen=True, eq=False)
class Fusion:
    """The fused ROI centre (LM µm), the candidates with inlier flags, the orientation of
    the best inlier and the peak-margin evidence."""

    centre_xy_um: np.ndarray
    candidates: list[Candidate]
    angle_deg: float
    mirrored: bool
    confidence: dict


def same_orientation(a: Candidate, b: Candidate) -> bool:
    """Same handedness and angles within :data:`ORIENTATION_WINDOW_DEG`."""
    return a.mirrored == b.mirrored and \
        angle_distance(a.angle_deg, b.angle_deg) <= ORIENTATION_WINDOW_DEG


def fuse(candidates: list[Candidate], *, spatial: bool, mad_c: float, pixel_um: float,
         roi_size_um: tuple[float, float]) -> Fusion:
    """Choose the candidates to fuse, reject outliers, take the weighted mean.

    Parameters
    ----------
    candidates : list of Candidate
    spatial : bool
        The candidates carry a spatial score (Part B ran): fuse those within
        :data:`SCORE_TOLERANCE` of the best and at its orientation
        (:func:`same_orientation`) at their snapped positions, and take the
        orientation of the best inlier.  Otherwise (Part A alone, as published) fuse
        every map's best peak at its own position.
    mad_c : float
    pixel_um : float
        The score map's pixel: the MAD floor is half of it.
    roi_size_um : (float, float)
        Rivals are peaks farther than a quarter of the smaller side.
    """
    if not candidates:
        raise InputError("pre-alignment produced no candidate position")
    if not spatial:
        chosen = [k for k, c in enumerate(candidates) if c.rank == 0]
        points = np.array([candidates[k].centre_xy_um for k in chosen])
    else:
        scores = np.array([c.spatial_score for c in candidates])
        k_best = int(np.nanargmax(scores))
        top, best = candidates[k_best], float(scores[k_best])
        # candidates at another orientation are rival hypotheses, not noisy copies of
        # the best one: their positions are not averaged with it
        chosen = [k for k, (c, s) in enumerate(zip(candidates, scores, strict=True))
                  if s >= best - SCORE_TOLERANCE * abs(best) and same_orientation(c, top)]
        points = np.array([candidates[k].snapped_xy_um for k in chosen])
    fused, inlier = robust_fuse(points, mad_c=mad_c, min_mad=0.5 * pixel_um)
    flags = np.zeros(len(candidates), bool)
    flags[np.array(chosen)[inlier]] = True
    out = [replace(c, inlier=bool(f)) for c, f in zip(candidates, flags, strict=True)]
    confidence: dict = {"inlier_fraction": float(inlier.mean()), "n_fused": int(inlier.sum())}
    if not spatial:
        return Fusion(fused, out, 0.0, False, confidence)
    inl = [c for c in out if c.inlier]
    top = inl[int(np.argmax([max(c.spatial_score, 1e-6) for c in inl]))]
    best_score = float(max(c.spatial_score for c in inl))
    far = 0.25 * min(roi_size_um)
    rivals = [c.spatial_score for c in out
              if c.part == "ncc" and np.hypot(*(np.asarray(c.snapped_xy_um) - fused)) > far]
    rival = float(max(rivals)) if rivals else 0.0
    confidence.update(best_score=best_score, rival_score=rival, margin=best_score - rival)
    return Fusion(fused, out, float(top.angle_deg), bool(top.mirrored), confidence)
