"""Parameters of the two simulators.

:class:`SimulationConfig` describes adherent cells imaged by EM and confocal LM
(:func:`~clemalign.synthetic.simulate_pair`), :class:`TissueConfig` thick tissue imaged
by microCT and two-photon LM (:func:`~clemalign.synthetic.simulate_tissue_pair`).  Both
are frozen: a config, its ``seed`` included, fixes the pair, and ``truth.json`` records
it with :func:`dataclasses.asdict`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from ..errors import InputError

__all__ = ["SimulationConfig", "TissueConfig"]


@dataclass(frozen=True)
class SimulationConfig:
    """Parameters of a simulated CLEM pair (adherent cells, EM + confocal LM).

    Parameters
    ----------
    seed : int
        Seed of every random choice; the same config gives the same pair.
    scale : float
        Lateral size factor in [0.05, 2]: multiplies the x/y shape of both fields and the
        size of cells (not organelles, voxel sizes or z).  ``scale=0.3`` gives small
        pairs for tests.
    em_shape_zyx, em_voxel_size_um : tuples
        EM grid at ``scale=1`` (voxels) and its voxel size ``(z, y, x)`` (µm).
    lm_shape_zyx, lm_voxel_size_um : tuples
        LM grid at ``scale=1`` (voxels) and its voxel size ``(z, y, x)`` (µm).
    rotation_deg, max_rotation_deg : float or None, float
        In-plane rotation of the EM field in the LM (degrees); ``None`` draws it
        uniformly in ``±max_rotation_deg``.
    mirror, flip_z : bool
        Mirror the EM x axis (handedness flip) before rotating; reverse the EM z axis
        (with ``mirror``: the EM block imaged from the other side than the LM, a 180°
        turn about an in-plane axis).
    tilt_deg, max_tilt_deg : (float, float) or None, float
        Tilts about the x and y axes (degrees); ``None`` draws each uniformly in
        ``±max_tilt_deg``.
    max_scale_change : float
        Per-axis scale factors are drawn in ``1 ± max_scale_change``.
    placement : {"anywhere", "cell", "border"}
        Where the EM field centre is drawn: uniformly over the positions that keep the
        field inside the LM field, on a random cell, or as close to the LM border as
        the field allows.
    border_margin_um : float
        Minimum distance between the EM field and the LM field border (µm).
    psf_sigma_um : tuple
        Gaussian PSF standard deviations ``(z, y, x)`` (µm).
    lm_photons, lm_background_photons : float
        Expected photons from a voxel completely filled with labelled mitochondrion, and
        expected background photons per voxel.
    lm_read_noise : float
        Camera/detector read noise (standard deviation, counts).
    em_noise_sd : float
        EM detector noise (standard deviation, grey levels of 255).
    em_shading : float
        Amplitude of the slow multiplicative brightness variation across the EM field
        (detector geometry, charging) and, at a quarter of it, between slices.
    lm_vignetting : float
        Fractional fall-off of LM illumination from the field centre to its corners.
    max_landmarks : int
        Maximum number of landmark pairs returned.
    """

    seed: int = 0
    scale: float = 1.0
    em_shape_zyx: tuple[int, int, int] = (247, 903, 666)
    em_voxel_size_um: tuple[float, float, float] = (0.05, 0.14, 0.14)
    lm_shape_zyx: tuple[int, int, int] = (16, 1024, 1024)
    lm_voxel_size_um: tuple[float, float, float] = (0.6, 0.22, 0.22)
    rotation_deg: float | None = None
    max_rotation_deg: float = 15.0
    mirror: bool = False
    flip_z: bool = False
    tilt_deg: tuple[float, float] | None = None
    max_tilt_deg: float = 2.0
    max_scale_change: float = 0.03
    placement: Literal["anywhere", "cell", "border"] = "anywhere"
    border_margin_um: float = 2.0
    psf_sigma_um: tuple[float, float, float] = (0.4, 0.12, 0.12)
    lm_photons: float = 400.0
    lm_background_photons: float = 8.0
    lm_read_noise: float = 2.0
    em_noise_sd: float = 12.0
    em_shading: float = 0.08
    lm_vignetting: float = 0.3
    max_landmarks: int = 40

    def __post_init__(self) -> None:
        if not (0.05 <= self.scale <= 2.0):
            raise InputError(f"scale: expected a value in [0.05, 2], got {self.scale}")
        if self.placement not in ("anywhere", "cell", "border"):
            raise InputError(f"placement: expected anywhere, cell or border, got "
                             f"{self.placement!r}")
        if self.rotation_deg is not None and not np.isfinite(self.rotation_deg):
            raise InputError(f"rotation_deg: expected a finite angle, got {self.rotation_deg}")
        if self.lm_photons <= 0:
            raise InputError(f"lm_photons must be positive, got {self.lm_photons}")

    def scaled_shape(self, shape_zyx: tuple[int, int, int]) -> tuple[int, int, int]:
        """A grid shape with x and y multiplied by ``scale`` (z unchanged)."""
        z, y, x = shape_zyx
        return (z, max(8, round(y * self.scale)), max(8, round(x * self.scale)))


@dataclass(frozen=True)
class TissueConfig:
    """Parameters of a simulated microCT + two-photon pair (thick tissue).

    The defaults are the small size (tests, 20-pair benchmark): a 110×200×200 µm microCT
    block with a 70×140×140 µm ROI, inside a 108×227×227 µm two-photon stack.
    :meth:`publication` gives the publication's second experiment (microCT 1084×896×1094
    at 1 µm, LM 2×1024×1024×107 at 0.59/0.59/3 µm).

    Parameters
    ----------
    seed : int
        Seed of every random choice.
    em_shape_zyx, em_voxel_size_um : tuples
        microCT grid (voxels) and voxel size ``(z, y, x)`` (µm).
    roi_shape_zyx : tuple
        Region of interest (microCT voxels); it is placed inside the LM field.
    lm_shape_zyx, lm_voxel_size_um : tuples
        Two-photon grid (voxels) and voxel size ``(z, y, x)`` (µm).
    rotation_deg : float, optional
        Rotation about z (EM → LM, degrees); default uniform over the full circle.
    mirror, flip_z : bool
        Mirror the x axis (handedness flip); reverse z (imaged from the other side; with
        ``mirror`` a 180° turn about y).
    tilt_deg, max_tilt_deg : (float, float) or None, float
        Tilts about x and y (degrees); ``None`` draws each uniformly in
        ``±max_tilt_deg`` (at most 45).
    z_scale_range, lateral_scale_change : (float, float), float
        The LM's axial scale (refractive index) is drawn uniformly in ``z_scale_range``,
        its lateral scale in ``1 ± lateral_scale_change``.
    labelled_fraction_range : (float, float)
        Fraction of nuclei carrying the LM label, drawn uniformly.
    nucleus_radius_um, vessel_radius_um : (float, float)
        Ranges the nucleus and vessel radii are drawn from, uniformly (µm).
    nucleus_min_distance_um : float
        Hard-core distance between nucleus centres (µm); above the largest diameter.
    vessel_spacing_um : float
        Vessel length per volume is ``1 / vessel_spacing_um²`` (µm).
    psf_sigma_um : tuple
        Two-photon PSF standard deviations ``(z, y, x)`` (µm).
    attenuation_length_um : (float, float)
        Depth over which the LM signal falls by ``e`` (µm), drawn uniformly.
    lm_photons, lm_background_photons, lm_read_noise : float
        Photons from a labelled nucleus at the surface, background photons per voxel,
        read noise (standard deviation, counts).
    em_noise_sd : float
        microCT detector noise (standard deviation, grey levels of 255).
    em_contrast : {"bright", "dark"}
        Nuclei brighter than tissue (attenuation display) or darker (inverted).
    roi_margin_um : float
        Least distance between the mapped ROI and the LM field border (µm).
    max_landmarks : int
        Maximum number of landmark pairs returned.
    """

    seed: int = 0
    em_shape_zyx: tuple[int, int, int] = (110, 200, 200)
    em_voxel_size_um: tuple[float, float, float] = (1.0, 1.0, 1.0)
    roi_shape_zyx: tuple[int, int, int] = (70, 140, 140)
    lm_shape_zyx: tuple[int, int, int] = (36, 384, 384)
    lm_voxel_size_um: tuple[float, float, float] = (3.0, 0.59, 0.59)
    rotation_deg: float | None = None
    mirror: bool = False
    flip_z: bool = False
    tilt_deg: tuple[float, float] | None = None
    max_tilt_deg: float = 10.0
    z_scale_range: tuple[float, float] = (0.85, 1.1)
    lateral_scale_change: float = 0.02
    labelled_fraction_range: tuple[float, float] = (0.6, 0.8)
    nucleus_radius_um: tuple[float, float] = (2.8, 4.5)
    nucleus_min_distance_um: float = 9.5
    vessel_spacing_um: float = 150.0
    vessel_radius_um: tuple[float, float] = (3.0, 8.0)
    psf_sigma_um: tuple[float, float, float] = (1.2, 0.25, 0.25)
    attenuation_length_um: tuple[float, float] = (150.0, 300.0)
    lm_photons: float = 60.0
    lm_background_photons: float = 4.0
    lm_read_noise: float = 2.0
    em_noise_sd: float = 10.0
    em_contrast: Literal["bright", "dark"] = "bright"
    roi_margin_um: float = 2.0
    max_landmarks: int = 40

    def __post_init__(self) -> None:
        if self.em_contrast not in ("bright", "dark"):
            raise InputError(f"em_contrast: expected bright or dark, got {self.em_contrast!r}")
        if any(r > e for r, e in zip(self.roi_shape_zyx, self.em_shape_zyx, strict=True)):
            raise InputError(f"roi_shape_zyx {self.roi_shape_zyx} does not fit the microCT "
                             f"{self.em_shape_zyx}")
        if 2 * self.nucleus_radius_um[1] >= self.nucleus_min_distance_um:
            raise InputError("nucleus_min_distance_um must exceed the largest nucleus diameter")
        if not 0 <= self.max_tilt_deg <= 45:
            raise InputError(f"max_tilt_deg: expected [0, 45], got {self.max_tilt_deg}")

    @classmethod
    def publication(cls, **overrides) -> TissueConfig:
        """The publication's second-experiment sizes, with a 300×300×160 µm ROI."""
        base = cls(em_shape_zyx=(1094, 896, 1084), roi_shape_zyx=(160, 300, 300),
                   lm_shape_zyx=(107, 1024, 1024))
        return replace(base, **overrides)
