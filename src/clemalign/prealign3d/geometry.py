"""Geometry of the orientation scan: handedness, orientation matrices, and the EM
response turned onto the LM-spaced canvas of an upright cylinder."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..transforms import rotation_matrix_xyz
from ..volume import Volume

__all__ = ["Hand", "hand_name", "hands", "orientation", "Cylinder", "cylinder", "template",
           "canvas_centre_xyz"]


def hand_name(mirrored: bool, reversed_z: bool) -> str:
    """``direct``, ``mirrored``, ``reversed_z`` or ``mirrored_reversed_z``."""
    return {(False, False): "direct", (True, False): "mirrored",
            (False, True): "reversed_z", (True, True): "mirrored_reversed_z"}[
        (bool(mirrored), bool(reversed_z))]


@dataclass(frozen=True)
class Hand:
    """Handedness of a placement: an x mirror and/or a reversed z."""

    mirrored: bool
    reversed_z: bool

    @property
    def name(self) -> str:
        """:func:`hand_name` of this handedness."""
        return hand_name(self.mirrored, self.reversed_z)


def hands(mirror: bool, flip_z: bool) -> list[Hand]:
    """The handedness searched: direct first, then (if asked) reversed z, mirrored, both."""
    return [Hand(m, f) for m in ((False, True) if mirror else (False,))
            for f in ((False, True) if flip_z else (False,))]


def orientation(angle_deg: float, mirrored: bool, flipped_z: bool,
                tilt_deg: Sequence[float] = (0.0, 0.0)) -> np.ndarray:
    """``R(tilt_x, tilt_y, angle) · diag(±1, 1, ±1)`` (degrees; x mirror, reversed z)."""
    flip = np.diag([-1.0 if mirrored else 1.0, 1.0, -1.0 if flipped_z else 1.0])
    return rotation_matrix_xyz([tilt_deg[0], tilt_deg[1], angle_deg]) @ flip


@dataclass(frozen=True, eq=False)
class Cylinder:
    """The scan's support: an upright cylinder on an LM-spaced canvas.

    Attributes
    ----------
    support : ndarray of bool, (z, y, x)
        The cylinder's voxels on the canvas.
    half_xyz : ndarray of int, shape (3,)
        The canvas half-size, voxels (x, y, z); the canvas centre is the ROI centre.
    radius_um : float
    """

    support: np.ndarray
    half_xyz: np.ndarray
    radius_um: float


def cylinder(em_resp: Volume, lm_spacing_xyz: np.ndarray, max_radius_um: float) -> Cylinder:
    """The upright cylinder inscribed in the EM ROI (radius at most ``max_radius_um``,
    half-depth at most half that), drawn on a canvas of LM voxels ``lm_spacing_xyz`` (µm).
    """
    ext = (np.asarray(em_resp.shape_zyx[::-1]) - 1) * em_resp.spacing_xyz_um
    radius = min(0.5 * float(min(ext[0], ext[1])), max_radius_um)
    half_depth = min(0.5 * float(ext[2]), 0.5 * max_radius_um)
    half = np.ceil(np.array([radius, radius, half_depth]) / lm_spacing_xyz).astype(int)
    k, j, i = np.meshgrid(*(np.arange(-h, h + 1) for h in half[::-1]), indexing="ij")
    sx, sy, sz = lm_spacing_xyz
    support = ((i * sx) ** 2 + (j * sy) ** 2 <= radius**2) & (np.abs(k * sz) <= half_depth)
    return Cylinder(support, half, radius)


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


def template(em_resp: Volume, em_centre: np.ndarray, linear: np.ndarray,
             lm_spacing_xyz: np.ndarray, cyl: Cylinder) -> np.ndarray:
    """The EM response turned by ``linear`` about ``em_centre`` (µm) onto the cylinder's
    canvas (float32, linear interpolation, 0 outside the EM)."""
    matrix, offset = _em_index_map(em_resp, em_centre, linear, lm_spacing_xyz, cyl.half_xyz)
    return ndi.affine_transform(em_resp.data, matrix, offset,
                                output_shape=tuple(cyl.support.shape), order=1,
                                mode="constant", cval=0.0, output=np.float32)


def canvas_centre_xyz(lm_resp: Volume, offset_kji: np.ndarray, cyl: Cylinder) -> np.ndarray:
    """LM position (µm) of the canvas centre for a correlation index (see
    ``masked_ncc``)."""
    top_left = np.asarray(offset_kji, float) - (np.asarray(cyl.support.shape) - 1)
    return lm_resp.index_to_physical(top_left + cyl.half_xyz[::-1])
