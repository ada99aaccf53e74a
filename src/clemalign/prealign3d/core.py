"""3D pre-alignment: where, and how turned, the EM region of interest sits in the LM volume.

The XY pre-alignment matches projections, which is right for a monolayer but not for
thick tissue: the maximum-intensity projection of a deep stack of packed nuclei is a
uniform carpet of blobs.  Here the EM ROI is placed in the LM *volume*:

1. **structure scale** — the LM's blob scale, selected on a few of its planes (nuclei,
   cells; :func:`lm_structure_sigma`), gives the 3D LoG scale of the shared structures;
2. **scan** — EM ROI and LM on one isotropic working grid as coarse as a voxel budget
   asks (block means: the full-resolution volumes never exist in float), blob responses
   at ``max(structure scale, 1.2 pixels)``, each LM plane divided by its robust spread
   (depth-dependent dimming must not weigh the shallow planes more); the EM response
   inside an upright cylinder inscribed in the ROI is turned over the full circle of
   angles (a step that moves the cylinder's rim by one scale), with and without an x
   mirror, with and without reversed z, and scored against the LM at every 3D offset
   by FFT normalised cross-correlation (:func:`clemalign.correlation.shared_support_ncc`:
   the cylinder is the same support for all of them).  Both contrast signs of the EM are
   read off the same maps; scores become robust z-values;
3. **hypotheses** — the best placement of each orientation that is a local maximum over
   angle, best first; the peak margin (best placement vs the best separate one) and the
   orientation margin (best orientation vs the best clearly different one) go to the
   confidence score;
4. **refinement** — each hypothesis is refined by a local search of the three rotation
   angles (tilts about x and y included) and the translation, maximising the NCC of
   sampled EM response values with the LM response read at the mapped points, first on
   the scan grid from a few tilted starts, then on grids twice finer down to the
   structure scale.

Output: an ``initial_em_to_lm`` with z, tilt and handedness, and the hypotheses for the
3D stage (:func:`clemalign.registration.register_3d`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from .._timing import StepTimer
from ..correlation import shared_support_ncc
from ..errors import InputError
from ..representation import Polarity, ScaleSelection, blob_response, select_log_scale
from ..transforms import Affine, angle_distance, rotation_matrix_xyz
from ..volume import Volume, inside_grid

__all__ = ["Prealign3DConfig", "Prealign3DResult", "Hypothesis3D", "prealign_3d",
           "lm_structure_scale", "refine_pose", "pose_ncc", "level_response", "hand_name"]


@dataclass(frozen=True)
class Prealign3DConfig:
    """Parameters of :func:`prealign_3d` (defaults are the benchmarked ones).

    Attributes
    ----------
    max_rotation_deg : float
        Largest in-plane rotation searched (180 = the full circle).
    mirror : bool
        Also search an x-mirrored EM.
    flip_z : bool
        Also search a reversed z (a stack seen from the other side: with ``mirror``, a
        180° turn about an in-plane axis).
    max_tilt_deg : float
        Tilts about x and y reachable by the refinement (starts at 0 and ±⅔ of it).
    structure_sigma_um : float, optional
        3D LoG scale of the shared structures; default :func:`lm_structure_scale`.
    scan_pixel_scales : float
        The scan's pixel in structure scales (its LoG scale is 1.2 pixels): coarse enough
        that a step of the angle scan moves the template's rim by a fraction of a
        structure, fine enough that single structures (nuclei) still count.
    scan_voxels : int
        Most voxels of the LM on the scan grid (a coarser pixel above).
    scan_radius_scales : float
        Radius of the scan's cylinder at most this many scan scales (its half-depth half
        of it): on a large ROI the scan uses the central part, the refinement all of it.
    final_pixel_um : float, optional
        Pixel of the last refinement level (default: the structure scale / 1.5, at least
        the LM's lateral voxel, and coarse enough that the ROI holds at most
        ``refine_voxels``).
    refine_voxels : int
    n_hypotheses : int
        Most orientations refined (and handed to the 3D stage).
    hypothesis_gap : float
        Only orientations scoring within this many robust z-units of the best are refined.
    min_overlap_fraction : float
        Placements must overlap the LM with at least this fraction of the EM support.
    samples : int
        EM samples of the refinement's NCC (fixed seed).
    seed : int
    """

    max_rotation_deg: float = 180.0
    mirror: bool = True
    flip_z: bool = True
    max_tilt_deg: float = 10.0
    structure_sigma_um: float | None = None
    scan_pixel_scales: float = 2.7
    scan_voxels: int = 2_000_000
    scan_radius_scales: float = 13.0
    final_pixel_um: float | None = None
    refine_voxels: int = 1_000_000
    n_hypotheses: int = 3
    hypothesis_gap: float = 4.0
    min_overlap_fraction: float = 0.5
    samples: int = 30_000
    seed: int = 20261201

    def __post_init__(self) -> None:
        if not 0 <= self.max_rotation_deg <= 180:
            raise InputError(f"max_rotation_deg: expected a value in [0, 180], got "
                             f"{self.max_rotation_deg}")
        if not 0 <= self.max_tilt_deg <= 45:
            raise InputError(f"max_tilt_deg: expected a value in [0, 45], got "
                             f"{self.max_tilt_deg}")
        if self.scan_voxels < 1000:
            raise InputError(f"scan_voxels: need at least 1000, got {self.scan_voxels}")
        if self.n_hypotheses < 1:
            raise InputError(f"n_hypotheses: need at least 1, got {self.n_hypotheses}")


@dataclass(frozen=True)
class Hypothesis3D:
    """One placement of the EM ROI in the LM: ``em_to_lm = T(lm_centre) · linear · T(−c)``.

    ``linear`` is a rotation, possibly times ``diag(−1, 1, 1)`` (x mirror) and/or
    ``diag(1, 1, −1)`` (reversed z); ``scan_z`` the robust z-score of its orientation in
    the scan, ``ncc`` the NCC of the refinement's last level.
    """

    angle_deg: float
    mirrored: bool
    flipped_z: bool
    linear: np.ndarray
    lm_centre_xyz_um: np.ndarray
    scan_z: float
    ncc: float = float("nan")

    def em_to_lm(self, em_centre_xyz_um: np.ndarray) -> Affine:
        c = np.asarray(em_centre_xyz_um, float)
        return Affine.from_linear_translation(self.linear, self.lm_centre_xyz_um
                                              - self.linear @ c)

    def to_dict(self, em_centre_xyz_um: np.ndarray) -> dict:
        return {"angle_deg": self.angle_deg, "mirrored": self.mirrored,
                "flipped_z": self.flipped_z, "scan_z": self.scan_z, "ncc": self.ncc,
                "centre_xyz_um": [float(v) for v in self.lm_centre_xyz_um],
                "initial_em_to_lm": self.em_to_lm(em_centre_xyz_um).to_list()}


@dataclass(frozen=True, eq=False)
class Prealign3DResult:
    """Result of :func:`prealign_3d`.

    Attributes
    ----------
    initial_em_to_lm : Affine
        The best refined hypothesis (rotation incl. tilt, handedness, z, translation).
    em_roi_centre_xyz_um : ndarray
    hypotheses : tuple of Hypothesis3D
        Refined placements, best first (the first gives ``initial_em_to_lm``).
    confidence : dict
        ``margin`` (best placement's robust z minus the best separate placement's, in
        the best orientation's map), ``orientation_margin`` (best orientation minus the
        best one more than 20° away or of other handedness), ``best_score``.
    scan : dict
        ``angles_deg``, ``scores`` (robust z per handedness name and angle), the scan's
        pixel and scale, ``em_polarity`` found.
    sigmas_um : dict
        ``structure`` (3D LoG scale of the LM's structures) and the scale of each level.
    levels_um : tuple of float
        Pixel of the scan and of each refinement level.
    timings_s : dict
    roi_corners_xyz_um : ndarray, shape (8, 3)
        The EM ROI's corner voxel centres (EM physical µm), for figures.
    lm_response : Volume, optional
        The LM blob response on the scan grid (for figures).
    scale_selections : dict
        ``{"LM planes": ...}``: the structure-scale selection (for reports).
    """

    initial_em_to_lm: Affine
    em_roi_centre_xyz_um: np.ndarray
    hypotheses: tuple[Hypothesis3D, ...]
    confidence: dict
    scan: dict
    sigmas_um: dict
    levels_um: tuple[float, ...]
    timings_s: dict = field(default_factory=dict)
    roi_corners_xyz_um: np.ndarray | None = None
    lm_response: Volume | None = None
    scale_selections: dict = field(default_factory=dict)
    method: str = "3d"

    @property
    def mirrored(self) -> bool:
        return bool(np.linalg.det(self.initial_em_to_lm.linear) < 0)

    def to_dict(self) -> dict:
        c = self.em_roi_centre_xyz_um
        return {"initial_em_to_lm": self.initial_em_to_lm.to_list(),
                "em_roi_centre_xyz_um": [float(v) for v in c],
                "hypotheses": [h.to_dict(c) for h in self.hypotheses],
                "confidence": self.confidence, "scan": self.scan,
                "sigmas_um": self.sigmas_um, "levels_um": list(self.levels_um),
                "timings_s": self.timings_s, "method": self.method,
                "scale_selections": self.scale_selections}


# ------------------------------------------------------------ representation
def lm_structure_scale(lm: Volume, *, n_planes: int = 4, pixel_um: float = 1.0,
                       polarity: Polarity = "bright") -> tuple[float, ScaleSelection]:
    """3D LoG scale (µm) of the LM's structures (of ``polarity``), from blob counting on
    a few planes.

    Planes (binned to at most ``pixel_um``) are used because a thick stack's z voxel is
    often coarser than its structures.  A 2D section of a sphere of radius ``r`` selects
    ``σ₂ ≈ r/√2``; the 3D scale of that sphere is ``r/√3``.  A structure seen in 3D spans
    about two planes, so the scale is at least half the z voxel: blob counting on the
    sharp-edged sections of labelled nuclei can pick a scale of edge noise instead
    (measured 0.52 µm on one of 20 simulated two-photon stacks, whose 3D search then
    failed; nuclei select ~1.7 µm).

    Returns
    -------
    sigma_um : float
        The 3D scale, ``max(σ₂·√(2/3), z voxel / 2)``.
    selection : ScaleSelection
        The 2D selection on the planes (for reports).
    """
    data = lm.data
    nz = data.shape[0]
    picks = np.unique(np.linspace(0.2 * (nz - 1), 0.8 * (nz - 1), n_planes).round().astype(int))
    sy, sx = lm.voxel_size_um[1:]
    f = [max(1, int(pixel_um // s)) for s in (sy, sx)]
    planes = []
    for k in picks:
        plane = np.asarray(data[k], np.float32)
        h, w = (plane.shape[0] // f[0]) * f[0], (plane.shape[1] // f[1]) * f[1]
        planes.append(plane[:h, :w].reshape(h // f[0], f[0], w // f[1], f[1]).mean((1, 3)))
    sel = select_log_scale(np.stack(planes), (1.0, sy * f[0], sx * f[1]), polarity=polarity,
                           per_slice=True)
    return float(max(sel.sigma_um * np.sqrt(2.0 / 3.0), 0.5 * lm.voxel_size_um[0])), sel


def level_response(volume: Volume, pixel_um: float, sigma_um: float, polarity: str, *,
                   box_kji: tuple[slice, slice, slice] | None = None,
                   normalise_planes: bool = False) -> Volume:
    """Blob response of a (cropped) volume on a grid of about ``pixel_um``.

    The volume is block-averaged (``registration.working_volume``; z is not refined
    beyond the volume's own voxel), then filtered at ``sigma_um``.  With
    ``normalise_planes`` each z-plane is divided by its robust spread, so that signal
    dimmed with depth weighs like the surface's.
    """
    from ..registration import working_volume

    work = working_volume(volume, (pixel_um, pixel_um, pixel_um), box_kji)
    axes = tuple(a for a, n in enumerate(work.shape_zyx) if n >= 3)
    resp = blob_response(work.data, sigma_um, work.voxel_size_um, polarity,  # type: ignore[arg-type]
                         axes=axes)
    if normalise_planes:
        flat = resp.reshape(resp.shape[0], -1)
        med = np.median(flat, axis=1)
        mad = np.median(np.abs(flat - med[:, None]), axis=1)
        scale = np.where(mad > 0, 1.0 / (1.4826 * np.maximum(mad, 1e-30)), 0.0)
        resp = ((resp - med[:, None, None]) * scale[:, None, None].astype(np.float32))
    return work.with_data(np.ascontiguousarray(resp, dtype=np.float32))


# ------------------------------------------------------------------ geometry
def _orientation(angle_deg: float, mirrored: bool, flipped_z: bool,
                 tilt_deg: Sequence[float] = (0.0, 0.0)) -> np.ndarray:
    flip = np.diag([-1.0 if mirrored else 1.0, 1.0, -1.0 if flipped_z else 1.0])
    return rotation_matrix_xyz([tilt_deg[0], tilt_deg[1], angle_deg]) @ flip


def _em_index_map(em_resp: Volume, em_centre: np.ndarray, linear: np.ndarray,
                  lm_spacing_xyz: np.ndarray, half_xyz: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``affine_transform`` matrix and offset (z, y, x order): canvas voxel → EM voxel.

    Canvas voxel ``c`` (x, y, z) lies at LM offset ``(c − half)·s`` from the ROI centre's
    image; the EM point there is ``em_centre + linear⁻¹ · offset``.
    """
    inv = np.linalg.inv(linear)
    s_em = em_resp.spacing_xyz_um
    m_xyz = np.diag(1.0 / s_em) @ inv @ np.diag(lm_spacing_xyz)
    o_xyz = (em_centre - np.asarray(em_resp.origin_xyz_um) - inv @ (lm_spacing_xyz * half_xyz)
             ) / s_em
    return m_xyz[::-1, ::-1], o_xyz[::-1]


def _cylinder(em_resp: Volume, lm_spacing_xyz: np.ndarray, max_radius_um: float
              ) -> tuple[np.ndarray, np.ndarray, float]:
    """The upright cylinder inscribed in the EM ROI (radius at most ``max_radius_um``,
    half-depth at most half that), drawn on an LM-spaced canvas.

    Returns the support (bool, z y x), the canvas half-size (x, y, z voxels) and the
    cylinder's radius (µm).
    """
    ext = (np.asarray(em_resp.shape_zyx[::-1]) - 1) * em_resp.spacing_xyz_um
    radius = min(0.5 * float(min(ext[0], ext[1])), max_radius_um)
    half_depth = min(0.5 * float(ext[2]), 0.5 * max_radius_um)
    half = np.ceil(np.array([radius, radius, half_depth]) / lm_spacing_xyz).astype(int)
    k, j, i = np.meshgrid(*(np.arange(-h, h + 1) for h in half[::-1]), indexing="ij")
    sx, sy, sz = lm_spacing_xyz
    support = ((i * sx) ** 2 + (j * sy) ** 2 <= radius**2) & (np.abs(k * sz) <= half_depth)
    return support, half, radius


# ---------------------------------------------------------------------- scan
def _robust_stats(sample: np.ndarray) -> tuple[float, float]:
    sample = sample[sample != 0]  # 0 = too little overlap
    if sample.size < 10:
        return 0.0, 1.0
    med = float(np.median(sample))
    return med, float(1.4826 * np.median(np.abs(sample - med))) or 1.0


@dataclass(frozen=True, eq=False)
class _Scan:
    """The orientation scan: per handedness and angle the best robust z-score and where."""

    angles: np.ndarray
    hands: list[tuple[bool, bool]]  # (mirrored, reversed z)
    z: np.ndarray  # (hand, angle) robust z of the best placement
    where: np.ndarray  # (hand, angle, 3) its correlation index
    sign: float  # EM contrast: +1 dark blobs, −1 bright
    median: float
    spread: float
    support: np.ndarray
    half: np.ndarray
    score: Callable[[np.ndarray], np.ndarray]
    step_deg: float


def hand_name(mirrored: bool, reversed_z: bool) -> str:
    """``direct``, ``mirrored``, ``reversed_z`` or ``mirrored_reversed_z``."""
    return {(False, False): "direct", (True, False): "mirrored",
            (False, True): "reversed_z", (True, True): "mirrored_reversed_z"}[
        (bool(mirrored), bool(reversed_z))]


def _scan(em_resp: Volume, lm_resp: Volume, em_centre: np.ndarray, sigma_um: float,
          config: Prealign3DConfig) -> _Scan:
    """Every orientation at every offset; per orientation the best of each EM sign."""
    s_lm = lm_resp.spacing_xyz_um
    support, half, radius = _cylinder(em_resp, s_lm, config.scan_radius_scales * sigma_um)
    score = shared_support_ncc(lm_resp.data, support,
                               min_overlap_fraction=config.min_overlap_fraction)
    # one step moves the rim by 1.5 scales: the true angle is then within 0.75 scales
    step = float(np.clip(np.degrees(1.5 * sigma_um / max(radius, 1e-6)), 2.0, 15.0))
    if config.max_rotation_deg >= 180.0 - 1e-9:
        angles = np.arange(-180.0, 180.0 - 1e-9, 360.0 / np.ceil(360.0 / step))
    else:
        n = int(np.ceil(2 * config.max_rotation_deg / step)) + 1
        angles = np.linspace(-config.max_rotation_deg, config.max_rotation_deg, n)
    hands = [(m, f) for m in ((False, True) if config.mirror else (False,))
             for f in ((False, True) if config.flip_z else (False,))]
    best = np.zeros((2, len(hands), len(angles)))  # [sign +/-, hand, angle]
    where = np.zeros((2, len(hands), len(angles), 3), int)
    pooled = []
    for h, (mirrored, flipped) in enumerate(hands):
        for a, angle in enumerate(angles):
            ncc = score(_template(em_resp, em_centre, _orientation(angle, mirrored, flipped),
                                  s_lm, half, support.shape))
            for sign in (0, 1):
                flat = int(np.argmax(ncc)) if sign == 0 else int(np.argmin(ncc))
                best[sign, h, a] = ncc.flat[flat] * (1 if sign == 0 else -1)
                where[sign, h, a] = np.unravel_index(flat, ncc.shape)
            # a copy: a view would keep the whole map alive
            pooled.append(ncc.ravel()[::max(1, ncc.size // 20_000)].copy())
    med, spread = _robust_stats(np.concatenate(pooled))
    z_pos = (best[0] - med) / spread
    z_neg = (best[1] + med) / spread  # best[1] = −min: the low tail, mirrored
    sign = 1.0 if z_pos.max() >= z_neg.max() else -1.0
    return _Scan(angles, hands, z_pos if sign > 0 else z_neg, where[0 if sign > 0 else 1],
                 sign, med, spread, support, half, score,
                 float(angles[1] - angles[0]) if len(angles) > 1 else 0.0)


def _template(em_resp: Volume, em_centre: np.ndarray, linear: np.ndarray,
              lm_spacing_xyz: np.ndarray, half_xyz: np.ndarray, shape: Sequence[int]
              ) -> np.ndarray:
    """The EM response turned by ``linear`` onto the LM-spaced canvas of the cylinder."""
    matrix, offset = _em_index_map(em_resp, em_centre, linear, lm_spacing_xyz, half_xyz)
    return ndi.affine_transform(em_resp.data, matrix, offset, output_shape=tuple(shape),
                                order=1, mode="constant", cval=0.0, output=np.float32)


def _canvas_centre_xyz(lm_resp: Volume, offset_kji: np.ndarray, half_xyz: np.ndarray,
                       support_shape: Sequence[int]) -> np.ndarray:
    """LM position of the canvas centre for a correlation index (see ``masked_ncc``)."""
    top_left = np.asarray(offset_kji, float) - (np.asarray(support_shape) - 1)
    return lm_resp.index_to_physical(top_left + half_xyz[::-1])


def _hypotheses(scan: _Scan, lm_resp: Volume, n: int) -> list[Hypothesis3D]:
    """Best placements of the orientations that are local maxima over angle."""
    z, angles = scan.z, scan.angles
    full = abs(angles[0] + 180.0) < 1e-6
    found = []
    for h in range(len(scan.hands)):
        curve = z[h]
        for a in range(len(angles)):
            left = curve[a - 1] if (a > 0 or full) else -np.inf
            right = curve[(a + 1) % len(angles)] if (a + 1 < len(angles) or full) else -np.inf
            if curve[a] >= left and curve[a] >= right:
                found.append((float(curve[a]), h, a))
    found.sort(reverse=True)
    out = []
    for value, h, a in found[:n]:
        mirrored, flipped = scan.hands[h]
        centre = _canvas_centre_xyz(lm_resp, scan.where[h, a], scan.half, scan.support.shape)
        out.append(Hypothesis3D(float(angles[a]), mirrored, flipped,
                                _orientation(angles[a], mirrored, flipped), centre, value))
    return out


def _margins(scan: _Scan, em_resp: Volume, lm_resp: Volume, em_centre: np.ndarray,
             best: Hypothesis3D) -> dict:
    """Peak margin in the best orientation's map; orientation margin over the scan."""
    from skimage.feature import peak_local_max

    template = _template(em_resp, em_centre, best.linear, lm_resp.spacing_xyz_um, scan.half,
                         scan.support.shape)
    zmap = (scan.sign * scan.score(template) - scan.median) / scan.spread
    ext = (np.asarray(em_resp.shape_zyx) - 1) * np.asarray(em_resp.voxel_size_um)
    dist = max(1, int(0.25 * min(ext[1:]) / max(lm_resp.voxel_size_um[1:])))
    peaks = peak_local_max(zmap, min_distance=dist, num_peaks=2, exclude_border=False)
    values = [float(zmap[tuple(p)]) for p in peaks]
    margin = values[0] - values[1] if len(values) == 2 else float("nan")
    hb = scan.hands.index((best.mirrored, best.flipped_z))
    others = [scan.z[h, a] for h in range(len(scan.hands)) for a in range(len(scan.angles))
              if h != hb or angle_distance(scan.angles[a], best.angle_deg) > 20.0]
    orientation_margin = float(best.scan_z - max(others)) if others else float("nan")
    return {"margin": margin, "orientation_margin": orientation_margin,
            "best_score": float(best.scan_z)}


# ---------------------------------------------------------------- refinement
@dataclass(frozen=True, eq=False)
class _Samples:
    """EM response samples: physical points (x, y, z) and zero-mean values."""

    points: np.ndarray
    values: np.ndarray


def _em_samples(em_resp: Volume, n: int, seed: int, sign: float) -> _Samples:
    rng = np.random.default_rng(seed)
    size = em_resp.data.size
    flat = np.sort(rng.choice(size, size=min(n, size), replace=False))
    kji = np.stack(np.unravel_index(flat, em_resp.shape_zyx), axis=1).astype(float)
    values = sign * em_resp.data.reshape(-1)[flat].astype(np.float64)
    return _Samples(em_resp.index_to_physical(kji), values - values.mean())


def pose_ncc(samples: _Samples, lm_resp: Volume, em_to_lm: Affine,
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


def refine_pose(samples: _Samples, lm_resp: Volume, em_centre: np.ndarray,
                linear: np.ndarray, lm_centre: np.ndarray, *, step_deg: float,
                step_um: float, max_evaluations: int = 300,
                min_overlap_fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray, float]:
    """Powell search of three rotation angles (about the ROI centre's image, LM axes) and
    the translation maximising :func:`pose_ncc`.

    Returns the refined ``linear``, ``lm_centre`` and NCC.
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


# --------------------------------------------------------------------- stage
def _check(em: Volume, lm: Volume, roi: tuple[slice, slice, slice]) -> None:
    if em.data.ndim != 3 or lm.data.ndim != 3:
        raise InputError("prealign_3d: EM and LM must be single-channel 3D volumes")
    roi_ext = np.array([s.stop - s.start for s in roi]) * np.asarray(em.voxel_size_um)
    lm_ext = np.asarray(lm.extent_um)
    if roi_ext[1] > lm_ext[1] * 1.5 or roi_ext[2] > lm_ext[2] * 1.5:
        raise InputError(f"the EM ROI ({roi_ext[2]:.1f} × {roi_ext[1]:.1f} µm) is much larger "
                         f"than the LM field ({lm_ext[2]:.1f} × {lm_ext[1]:.1f} µm); check "
                         "both voxel sizes, or choose a smaller --roi")


def prealign_3d(em: Volume, lm: Volume, *, roi: tuple[slice, slice, slice] | None = None,
                config: Prealign3DConfig = Prealign3DConfig(),
                structure: tuple[float, ScaleSelection] | None = None,
                progress: Callable[[str, float], None] | None = None) -> Prealign3DResult:
    """Place the EM ROI in the LM volume: orientation (with mirror, reversed z, tilt),
    position in x, y and z.

    Parameters
    ----------
    em : Volume
        EM (or microCT) volume, one channel.
    lm : Volume
        The LM channel to register.
    roi : tuple of slices, optional
        EM ROI in voxel indices (default: the whole EM).
    config : Prealign3DConfig
    structure : (float, ScaleSelection), optional
        :func:`lm_structure_scale` of ``lm`` when the caller has it already.
    progress : callable, optional
        Called with (step name, fraction of the stage done).

    Returns
    -------
    Prealign3DResult
    """
    timer = StepTimer(progress)
    roi = roi or tuple(slice(0, n) for n in em.shape_zyx)  # type: ignore[assignment]
    _check(em, lm, roi)
    centre_kji = np.array([(s.start + s.stop - 1) / 2.0 for s in roi])
    em_centre = em.index_to_physical(centre_kji)
    selection = None
    if config.structure_sigma_um is not None:
        structure = float(config.structure_sigma_um)
    else:
        structure, selection = structure or lm_structure_scale(lm)
    timer.tick("structure_scale", 0.05)

    # scan grid: a few structure scales, coarser when the LM is very large
    floor = max(max(lm.voxel_size_um[1:]), max(em.voxel_size_um[1:]))
    pixel = max(config.scan_pixel_scales * structure, floor,
                float(np.prod(lm.extent_um) / config.scan_voxels) ** (1 / 3))
    sigma = max(structure, 1.2 * pixel)
    em_resp = level_response(em, pixel, sigma, "dark", box_kji=roi)
    lm_resp = level_response(lm, pixel, sigma, "bright", normalise_planes=True)
    timer.tick("scan_representation", 0.15)
    scan = _scan(em_resp, lm_resp, em_centre, sigma, config)
    hyps = _hypotheses(scan, lm_resp, config.n_hypotheses)
    if hyps:
        # a clear winner needs no rivals refined (gap in robust z-units)
        hyps = [h for h in hyps if h.scan_z >= hyps[0].scan_z - config.hypothesis_gap]
    if not hyps:
        raise InputError("3D pre-alignment: no placement of the EM ROI overlaps the LM "
                         "volume enough; check the voxel sizes and the ROI")
    confidence = _margins(scan, em_resp, lm_resp, em_centre, hyps[0])
    timer.tick("scan", 0.55)

    # refinement: the scan grid (from tilted starts too), then twice finer grids
    roi_um3 = float(np.prod([(sl.stop - sl.start) * v for sl, v in
                             zip(roi, em.voxel_size_um, strict=True)]))
    final = float(config.final_pixel_um or max(structure / 1.5, floor,
                                               (roi_um3 / config.refine_voxels) ** (1 / 3)))
    levels = [pixel]
    while levels[-1] > 1.25 * final and len(levels) < 4:
        levels.append(max(final, levels[-1] / 2.0))
    corners = em.index_to_physical(np.array(
        [[k, j, i] for k in (roi[0].start, roi[0].stop - 1)
         for j in (roi[1].start, roi[1].stop - 1) for i in (roi[2].start, roi[2].stop - 1)],
        float))
    level_sigmas = [max(structure, 1.2 * px) for px in levels]
    for n_level, (px, sig) in enumerate(zip(levels, level_sigmas, strict=True)):
        if n_level == 0:
            e_resp, l_resp = em_resp, lm_resp
        else:
            box = lm.index_box(np.vstack([h.em_to_lm(em_centre).apply(corners) for h in hyps]),
                               3.0 * levels[n_level - 1] + sig)
            e_resp = level_response(em, px, sig, "dark", box_kji=roi)
            l_resp = level_response(lm, px, sig, "bright", box_kji=box, normalise_planes=True)
        samples = _em_samples(e_resp, config.samples, config.seed, scan.sign)
        step_deg = max(1.0, scan.step_deg / 2 ** (n_level + 1))
        tilt = 2.0 / 3.0 * config.max_tilt_deg if n_level == 0 else 0.0
        hyps = sorted((_refine_hypothesis(h, samples, l_resp, em_centre, step_deg, px, tilt,
                                          config.min_overlap_fraction) for h in hyps),
                      key=lambda h: -h.ncc)[:2 if n_level == 0 else None]
        timer.tick(f"refine_{px:.2g}um", 0.55 + 0.45 * (n_level + 1) / len(levels))
    confidence["refined_ncc"] = float(hyps[0].ncc)
    scan_record = {"angles_deg": [float(a) for a in scan.angles],
                   "scores": {hand_name(*hand): [float(v) for v in scan.z[h]]
                              for h, hand in enumerate(scan.hands)},
                   "pixel_um": pixel, "sigma_um": sigma, "step_deg": scan.step_deg,
                   "em_polarity": "dark" if scan.sign > 0 else "bright"}
    return Prealign3DResult(
        initial_em_to_lm=hyps[0].em_to_lm(em_centre), em_roi_centre_xyz_um=em_centre,
        hypotheses=tuple(hyps), confidence=confidence, scan=scan_record,
        sigmas_um={"structure": structure, "levels": level_sigmas}, levels_um=tuple(levels),
        timings_s=timer.total(), roi_corners_xyz_um=corners, lm_response=lm_resp,
        scale_selections={"LM planes": selection.to_dict()} if selection else {})


def _refine_hypothesis(h: Hypothesis3D, samples: _Samples, lm_resp: Volume,
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
