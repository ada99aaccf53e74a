"""Refinement of the scan's hypotheses: Powell search of three rotation angles and the
translation, maximising the NCC of sampled EM response values with the LM response read
at the mapped points, on the scan grid (from tilted starts too), then on finer grids."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .._timing import StepTimer
from ..transforms import Affine, rotation_matrix_xyz
from ..volume import Volume, inside_grid
from .config import Hypothesis3D, Prealign3DConfig
from .grid import EmRoi, Levels, level_response
from .scan import Scan

__all__ = ["Samples", "em_samples", "pose_ncc", "refine_pose", "refine_hypothesis",
           "refine_levels"]


@dataclass(frozen=True, eq=False)
class Samples:
    """EM response samples: physical points (x, y, z, µm) and zero-mean values."""

    points: np.ndarray
    values: np.ndarray


def em_samples(em_resp: Volume, n: int, seed: int, sign: float) -> Samples:
    """``n`` voxels of ``em_resp`` drawn without replacement (fixed ``seed``), in raster
    order, their values times the EM contrast ``sign``."""
    rng = np.random.default_rng(seed)
    size = em_resp.data.size
    flat = np.sort(rng.choice(size, size=min(n, size), replace=False))
    kji = np.stack(np.unravel_index(flat, em_resp.shape_zyx), axis=1).astype(float)
    values = sign * em_resp.data.reshape(-1)[flat].astype(np.float64)
    return Samples(em_resp.index_to_physical(kji), values - values.mean())


def pose_ncc(samples: Samples, lm_resp: Volume, em_to_lm: Affine,
             min_overlap_fraction: float = 0.5) -> float:
    """NCC of EM samples with the LM response at their mapped points, times √(overlap).

    Samples mapped outside the LM grid are left out; below ``min_overlap_fraction`` of
    them inside, the score is 0.
    """
    idx = lm_resp.physical_to_index(em_to_lm.apply(samples.points))
    inside = inside_grid(idx, lm_resp.shape_zyx)
    frac = float(inside.mean())
    if frac < min_overlap_fraction:
        return 0.0
    f = ndi.map_coordinates(lm_resp.data, idx[inside].T, order=1, mode="nearest")
    e = samples.values[inside]
    f = f - f.mean()
    e = e - e.mean()
    den = float(np.sqrt((f * f).sum() * (e * e).sum()))
    return float((f * e).sum() / den * np.sqrt(frac)) if den > 0 else 0.0


def refine_pose(samples: Samples, lm_resp: Volume, em_centre: np.ndarray,
                linear: np.ndarray, lm_centre: np.ndarray, *, step_deg: float,
                step_um: float, max_evaluations: int = 300,
                min_overlap_fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray, float]:
    """Powell search of three rotation angles (about the ROI centre's image, LM axes) and
    the translation maximising :func:`pose_ncc`.

    ``step_deg`` and ``step_um`` are the search's unit steps (degrees, µm).  Returns the
    refined ``linear``, ``lm_centre`` (µm) and NCC.
    """
    from scipy.optimize import minimize

    scale = np.array([step_deg] * 3 + [step_um] * 3)

    def unpack(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = u * scale
        return rotation_matrix_xyz(p[:3]) @ linear, lm_centre + p[3:]

    def cost(u: np.ndarray) -> float:
        lin, centre = unpack(u)
        pose = Affine.from_linear_translation(lin, centre - lin @ em_centre)
        return -pose_ncc(samples, lm_resp, pose, min_overlap_fraction)

    res = minimize(cost, np.zeros(6), method="Powell",
                   options={"xtol": 0.05, "ftol": 1e-4, "maxfev": max_evaluations})
    lin, centre = unpack(res.x)
    return lin, centre, float(-res.fun)


def refine_hypothesis(h: Hypothesis3D, samples: Samples, lm_resp: Volume,
                      em_centre: np.ndarray, step_deg: float, step_um: float, tilt_deg: float,
                      min_overlap_fraction: float) -> Hypothesis3D:
    """:func:`refine_pose` from the hypothesis, then from ±``tilt_deg`` about x and y where
    that pose already scores better (a large tilt may lie beyond the local search's reach)."""
    lin, centre, ncc = refine_pose(samples, lm_resp, em_centre, h.linear, h.lm_centre_xyz_um,
                                   step_deg=step_deg, step_um=step_um,
                                   min_overlap_fraction=min_overlap_fraction)
    if tilt_deg > 0:
        for tx, ty in ((-tilt_deg, 0), (tilt_deg, 0), (0, -tilt_deg), (0, tilt_deg)):
            lin0 = rotation_matrix_xyz([tx, ty, 0.0]) @ lin
            pose = Affine.from_linear_translation(lin0, centre - lin0 @ em_centre)
            if pose_ncc(samples, lm_resp, pose, min_overlap_fraction) > ncc:
                out = refine_pose(samples, lm_resp, em_centre, lin0, centre, step_deg=step_deg,
                                  step_um=step_um, min_overlap_fraction=min_overlap_fraction)
                if out[2] > ncc:
                    lin, centre, ncc = out
    return Hypothesis3D(h.angle_deg, h.mirrored, h.flipped_z, lin, centre, h.scan_z, ncc)


def refine_levels(hyps: list[Hypothesis3D], em: Volume, lm: Volume, roi: EmRoi,
                  levels: Levels, scan_responses: tuple[Volume, Volume], scan: Scan,
                  config: Prealign3DConfig, timer: StepTimer) -> list[Hypothesis3D]:
    """Refine the hypotheses level by level; returns them best (highest NCC) first.

    Level 0 uses the scan's responses ``(em, lm)`` and tilted starts and keeps the best
    two; each finer level reads the LM only around the hypotheses' images of the ROI.
    Angle steps halve per level (at least 1°); position steps are the level's pixel.
    """
    em_centre = roi.centre_xyz_um
    n_levels = len(levels.pixels_um)
    for n_level, (px, sig) in enumerate(zip(levels.pixels_um, levels.sigmas_um, strict=True)):
        if n_level == 0:
            e_resp, l_resp = scan_responses
        else:
            # margin: a few previous pixels (the search's reach) plus the filter's
            box = lm.index_box(np.vstack([h.em_to_lm(em_centre).apply(roi.corners_xyz_um)
                                          for h in hyps]),
                               3.0 * levels.pixels_um[n_level - 1] + sig)
            e_resp = level_response(em, px, sig, "dark", box_kji=roi.slices)
            l_resp = level_response(lm, px, sig, "bright", box_kji=box, normalise_planes=True)
        samples = em_samples(e_resp, config.samples, config.seed, scan.sign)
        step_deg = max(1.0, scan.step_deg / 2 ** (n_level + 1))
        tilt = 2.0 / 3.0 * config.max_tilt_deg if n_level == 0 else 0.0
        hyps = sorted((refine_hypothesis(h, samples, l_resp, em_centre, step_deg, px, tilt,
                                         config.min_overlap_fraction) for h in hyps),
                      key=lambda h: -h.ncc)[:2 if n_level == 0 else None]
        timer.tick(f"refine_{px:.2g}um", 0.55 + 0.45 * (n_level + 1) / n_levels)
    return hyps
