"""The orientation scan: every orientation (angle × handedness) of the EM response at
every 3D offset in the LM, by shared-support FFT NCC; hypotheses and margins from it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..correlation import shared_support_ncc
from ..errors import InputError
from ..transforms import angle_distance
from ..volume import Volume, regular_sample
from .config import Hypothesis3D, Prealign3DConfig
from .geometry import Cylinder, Hand, canvas_centre_xyz, cylinder, hands, orientation, template

__all__ = ["Scan", "scan_orientations", "scan_angles", "hypotheses", "margins"]


@dataclass(frozen=True, eq=False)
class Scan:
    """The orientation scan: per handedness and angle the best robust z-score and where.

    Attributes
    ----------
    angles : ndarray
        In-plane angles scanned, degrees.
    hands : list of Hand
    z : ndarray, (hand, angle)
        Robust z-score of the best placement (of the EM contrast sign chosen).
    where : ndarray of int, (hand, angle, 3)
        Its correlation index.
    sign : float
        EM contrast: +1 dark blobs, −1 bright.
    median, spread : float
        Robust centre and spread of all NCC values: ``z = (sign·ncc − median) / spread``.
    cylinder : Cylinder
        The shared support.
    score : callable
        Template (on the cylinder's canvas) → NCC map over offsets.
    step_deg : float
        Angle step (0 for a single angle).
    """

    angles: np.ndarray
    hands: list[Hand]
    z: np.ndarray
    where: np.ndarray
    sign: float
    median: float
    spread: float
    cylinder: Cylinder
    score: Callable[[np.ndarray], np.ndarray]
    step_deg: float

    def record(self, pixel_um: float, sigma_um: float) -> dict:
        """JSON-ready summary (:attr:`Prealign3DResult.scan`) for a scan grid's pixel and
        scale (µm)."""
        return {"angles_deg": [float(a) for a in self.angles],
                "scores": {hand.name: [float(v) for v in self.z[h]]
                           for h, hand in enumerate(self.hands)},
                "pixel_um": pixel_um, "sigma_um": sigma_um, "step_deg": self.step_deg,
                "em_polarity": "dark" if self.sign > 0 else "bright"}


def _robust_stats(sample: np.ndarray) -> tuple[float, float]:
    """Median and 1.4826·MAD of the non-zero values (1 if that is 0 or too few)."""
    sample = sample[sample != 0]  # 0 = too little overlap
    if sample.size < 10:
        return 0.0, 1.0
    med = float(np.median(sample))
    return med, float(1.4826 * np.median(np.abs(sample - med))) or 1.0


def scan_angles(max_rotation_deg: float, sigma_um: float, radius_um: float) -> np.ndarray:
    """Angles (degrees) whose step moves the cylinder's rim by 1.5 scales ``sigma_um``
    (2–15°): the full circle, or ``±max_rotation_deg``."""
    # the true angle is then within 0.75 scales of one of them
    step = float(np.clip(np.degrees(1.5 * sigma_um / max(radius_um, 1e-6)), 2.0, 15.0))
    if max_rotation_deg >= 180.0 - 1e-9:
        return np.arange(-180.0, 180.0 - 1e-9, 360.0 / np.ceil(360.0 / step))
    n = int(np.ceil(2 * max_rotation_deg / step)) + 1
    return np.linspace(-max_rotation_deg, max_rotation_deg, n)


def scan_orientations(em_resp: Volume, lm_resp: Volume, em_centre: np.ndarray,
                      sigma_um: float, config: Prealign3DConfig) -> Scan:
    """Every orientation at every offset; per orientation the best of each EM sign.

    Both signs are read off the same NCC maps; the sign whose best z-score is higher is
    kept.  ``em_centre`` is the ROI centre (EM µm), ``sigma_um`` the scan's LoG scale.
    """
    s_lm = lm_resp.spacing_xyz_um
    cyl = cylinder(em_resp, s_lm, config.scan_radius_scales * sigma_um)
    score = shared_support_ncc(lm_resp.data, cyl.support,
                               min_overlap_fraction=config.min_overlap_fraction)
    angles = scan_angles(config.max_rotation_deg, sigma_um, cyl.radius_um)
    handed = hands(config.mirror, config.flip_z)
    best = np.zeros((2, len(handed), len(angles)))  # [sign +/-, hand, angle]
    where = np.zeros((2, len(handed), len(angles), 3), int)
    pooled = []
    for h, hand in enumerate(handed):
        for a, angle in enumerate(angles):
            ncc = score(template(em_resp, em_centre,
                                 orientation(angle, hand.mirrored, hand.reversed_z), s_lm, cyl))
            for sign in (0, 1):
                flat = int(np.argmax(ncc)) if sign == 0 else int(np.argmin(ncc))
                best[sign, h, a] = ncc.flat[flat] * (1 if sign == 0 else -1)
                where[sign, h, a] = np.unravel_index(flat, ncc.shape)
            # a copy: a view would keep the whole map alive
            pooled.append(regular_sample(ncc, 20_000).copy())
    med, spread = _robust_stats(np.concatenate(pooled))
    z_pos = (best[0] - med) / spread
    z_neg = (best[1] + med) / spread  # best[1] = −min: the low tail, mirrored
    sign = 1.0 if z_pos.max() >= z_neg.max() else -1.0
    return Scan(angles, handed, z_pos if sign > 0 else z_neg, where[0 if sign > 0 else 1],
                sign, med, spread, cyl, score,
                float(angles[1] - angles[0]) if len(angles) > 1 else 0.0)


def hypotheses(scan: Scan, lm_resp: Volume, config: Prealign3DConfig) -> list[Hypothesis3D]:
    """Best placements of the orientations that are local maxima over angle, best first:
    at most ``n_hypotheses``, within ``hypothesis_gap`` robust z-units of the best.

    Raises
    ------
    InputError
        If no placement overlaps the LM enough (``min_overlap_fraction``).
    """
    z, angles = scan.z, scan.angles
    full = abs(angles[0] + 180.0) < 1e-6  # the full circle: the angle axis wraps
    found = []
    for h in range(len(scan.hands)):
        curve = z[h]
        for a in range(len(angles)):
            left = curve[a - 1] if (a > 0 or full) else -np.inf
            right = curve[(a + 1) % len(angles)] if (a + 1 < len(angles) or full) else -np.inf
            if curve[a] >= left and curve[a] >= right:
                found.append((float(curve[a]), h, a))
    found.sort(reverse=True)  # ties: higher hand and angle index first
    out = []
    for value, h, a in found[:config.n_hypotheses]:
        hand = scan.hands[h]
        centre = canvas_centre_xyz(lm_resp, scan.where[h, a], scan.cylinder)
        out.append(Hypothesis3D(float(angles[a]), hand.mirrored, hand.reversed_z,
                                orientation(angles[a], hand.mirrored, hand.reversed_z),
                                centre, value))
    if out:
        # a clear winner needs no rivals refined (gap in robust z-units)
        out = [h for h in out if h.scan_z >= out[0].scan_z - config.hypothesis_gap]
    if not out:
        raise InputError("prealign_3d: no placement of the EM ROI overlaps lm by "
                         f"min_overlap_fraction={config.min_overlap_fraction}; check the "
                         "voxel sizes of em and lm, and roi")
    return out


def margins(scan: Scan, em_resp: Volume, lm_resp: Volume, em_centre: np.ndarray,
            best: Hypothesis3D) -> dict:
    """Peak margin in the best orientation's map; orientation margin over the scan.

    Returns
    -------
    dict
        ``margin`` (robust z of the best placement minus the best one at least a quarter
        of the ROI's smaller side away), ``orientation_margin`` (best orientation minus
        the best one more than 20° away or of other handedness), ``best_score``.
    """
    from skimage.feature import peak_local_max

    tmpl = template(em_resp, em_centre, best.linear, lm_resp.spacing_xyz_um, scan.cylinder)
    zmap = (scan.sign * scan.score(tmpl) - scan.median) / scan.spread
    ext = (np.asarray(em_resp.shape_zyx) - 1) * np.asarray(em_resp.voxel_size_um)
    dist = max(1, int(0.25 * min(ext[1:]) / max(lm_resp.voxel_size_um[1:])))
    peaks = peak_local_max(zmap, min_distance=dist, num_peaks=2, exclude_border=False)
    values = [float(zmap[tuple(p)]) for p in peaks]
    margin = values[0] - values[1] if len(values) == 2 else float("nan")
    hb = scan.hands.index(Hand(best.mirrored, best.flipped_z))
    others = [scan.z[h, a] for h in range(len(scan.hands)) for a in range(len(scan.angles))
              if h != hb or angle_distance(scan.angles[a], best.angle_deg) > 20.0]
    orientation_margin = float(best.scan_z - max(others)) if others else float("nan")
    return {"margin": margin, "orientation_margin": orientation_margin,
            "best_score": float(best.scan_z)}
