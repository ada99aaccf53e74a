"""Parameters and results of the 3D pre-alignment (:func:`~clemalign.prealign3d.prealign_3d`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..transforms import Affine
from ..volume import Volume

__all__ = ["Prealign3DConfig", "Hypothesis3D", "Prealign3DResult"]


@dataclass(frozen=True)
class Prealign3DConfig:
    """Parameters of :func:`~clemalign.prealign3d.prealign_3d` (defaults are the
    benchmarked ones).

    Attributes
    ----------
    max_rotation_deg : float
        Largest in-plane rotation searched, degrees (180 = the full circle).
    mirror : bool
        Also search an x-mirrored EM.
    flip_z : bool
        Also search a reversed z (a stack seen from the other side: with ``mirror``, a
        180° turn about an in-plane axis).
    max_tilt_deg : float
        Tilts about x and y reachable by the refinement, degrees (starts at 0 and ±⅔ of
        it).
    structure_sigma_um : float, optional
        3D LoG scale of the shared structures, µm; default
        :func:`~clemalign.prealign3d.lm_structure_scale`.
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
        Pixel of the last refinement level, µm (default: the structure scale / 1.5, at
        least the LM's lateral voxel, and coarse enough that the ROI holds at most
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
    ``diag(1, 1, −1)`` (reversed z); ``lm_centre_xyz_um`` the LM position (µm) of the ROI
    centre ``c``; ``scan_z`` the robust z-score of its orientation in the scan, ``ncc``
    the NCC of the refinement's last level.
    """

    angle_deg: float
    mirrored: bool
    flipped_z: bool
    linear: np.ndarray
    lm_centre_xyz_um: np.ndarray
    scan_z: float
    ncc: float = float("nan")

    def em_to_lm(self, em_centre_xyz_um: np.ndarray) -> Affine:
        """The EM → LM transform (physical µm) turning about the ROI centre ``c``."""
        c = np.asarray(em_centre_xyz_um, float)
        return Affine.from_linear_translation(self.linear, self.lm_centre_xyz_um
                                              - self.linear @ c)

    def to_dict(self, em_centre_xyz_um: np.ndarray) -> dict:
        """JSON-ready record, with the transform for the ROI centre ``em_centre_xyz_um``."""
        return {"angle_deg": self.angle_deg, "mirrored": self.mirrored,
                "flipped_z": self.flipped_z, "scan_z": self.scan_z, "ncc": self.ncc,
                "centre_xyz_um": [float(v) for v in self.lm_centre_xyz_um],
                "initial_em_to_lm": self.em_to_lm(em_centre_xyz_um).to_list()}


@dataclass(frozen=True, eq=False)
class Prealign3DResult:
    """Result of :func:`~clemalign.prealign3d.prealign_3d`.

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
        best one more than 20° away or of other handedness), ``best_score``,
        ``refined_ncc``.
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
        """Whether the best placement has a negative determinant (one handedness flip)."""
        return bool(np.linalg.det(self.initial_em_to_lm.linear) < 0)

    def to_dict(self) -> dict:
        """JSON-ready record (the LM response and corners are left out)."""
        c = self.em_roi_centre_xyz_um
        return {"initial_em_to_lm": self.initial_em_to_lm.to_list(),
                "em_roi_centre_xyz_um": [float(v) for v in c],
                "hypotheses": [h.to_dict(c) for h in self.hypotheses],
                "confidence": self.confidence, "scan": self.scan,
                "sigmas_um": self.sigmas_um, "levels_um": list(self.levels_um),
                "timings_s": self.timings_s, "method": self.method,
                "scale_selections": self.scale_selections}
