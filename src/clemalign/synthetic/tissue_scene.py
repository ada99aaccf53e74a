"""The thick-tissue scene, in microCT physical µm ``(x, y, z)``.

Nuclei are packed by a hard-core random process (no lattice: real tissue has no
long-range order, and a lattice would make false matches), vessels are persistent random
walks, and no nucleus lies in a lumen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import TissueConfig

__all__ = ["Scene", "make_scene"]


@dataclass(frozen=True)
class Scene:
    """Nuclei (centres, radii, label brightness) and vessel axes, in scene µm (x, y, z)."""

    centres: np.ndarray  # (n, 3)
    radii: np.ndarray  # (n,)
    label: np.ndarray  # (n,) LM brightness, 0 = unlabelled
    vessel_points: np.ndarray  # (m, 3) polyline vertices, all vessels
    vessel_segments: np.ndarray  # (k, 2) vertex indices of each segment
    vessel_radii: np.ndarray  # (k,) radius of each segment


def _hard_core_points(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray,
                      min_distance: float) -> np.ndarray:
    """Matérn type-II hard-core process: Poisson points thinned so that no two lie closer
    than ``min_distance`` (the point with the larger random mark of each close pair goes)."""
    from scipy.spatial import cKDTree

    exclusion = 4.0 / 3.0 * np.pi * min_distance**3
    volume = float(np.prod(hi - lo))
    n = rng.poisson(2.0 * volume / exclusion)  # λ·v = 2: near the process's densest
    points = rng.uniform(lo, hi, (n, 3))
    marks = rng.uniform(size=n)
    pairs = cKDTree(points).query_pairs(min_distance, output_type="ndarray")
    removed = np.zeros(n, bool)
    loser = np.where(marks[pairs[:, 0]] > marks[pairs[:, 1]], pairs[:, 0], pairs[:, 1])
    removed[loser] = True
    return points[~removed]


def _vessels(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, cfg: TissueConfig
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random tubes: persistent random walks of 12 µm steps until the set length is used."""
    total = float(np.prod(hi - lo)) / cfg.vessel_spacing_um**2
    points, segments, radii = [], [], []
    used = 0.0
    step = 12.0
    while used < total:
        p = rng.uniform(lo, hi)
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        radius = rng.uniform(*cfg.vessel_radius_um)
        start = len(points)
        points.append(p)
        for _ in range(int(2 * np.linalg.norm(hi - lo) / step)):
            d = d + rng.normal(0.0, 0.2, 3)
            d /= np.linalg.norm(d)
            p = p + step * d
            points.append(p)
            segments.append((len(points) - 2, len(points) - 1))
            radii.append(radius)
            used += step
            if np.any(p < lo - step) or np.any(p > hi + step) or used >= total:
                break
        if len(points) - start == 1:
            points.pop()
    return (np.asarray(points, float).reshape(-1, 3), np.asarray(segments, int).reshape(-1, 2),
            np.asarray(radii, float))


def make_scene(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray,
               cfg: TissueConfig, labelled_fraction: float) -> Scene:
    from scipy.spatial import cKDTree

    vpoints, vsegs, vradii = _vessels(rng, lo, hi, cfg)
    centres = _hard_core_points(rng, lo, hi, cfg.nucleus_min_distance_um)
    radii = rng.uniform(*cfg.nucleus_radius_um, len(centres))
    if len(vsegs):
        # no nucleus inside a lumen: distance to the densely sampled vessel axes
        t = np.linspace(0.0, 1.0, 7)
        axis = (vpoints[vsegs[:, 0], None] * (1 - t)[None, :, None]
                + vpoints[vsegs[:, 1], None] * t[None, :, None]).reshape(-1, 3)
        axis_r = np.repeat(vradii, len(t))
        dist, idx = cKDTree(axis).query(centres)
        keep = dist > axis_r[idx] + radii + 1.0
        centres, radii = centres[keep], radii[keep]
    labelled = rng.uniform(size=len(centres)) < labelled_fraction
    label = np.where(labelled, rng.uniform(0.7, 1.3, len(centres)), 0.0)
    return Scene(centres, radii, label, vpoints, vsegs, vradii)
