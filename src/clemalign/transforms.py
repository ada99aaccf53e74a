"""Affine transforms between physical spaces.

Every transform is a 4×4 homogeneous matrix acting on physical points
``(x, y, z, 1)`` in µm.  ``em_to_lm`` maps an EM physical point to the
corresponding LM physical point (ITK's fixed→moving convention, EM fixed).
Composition follows matrix products: ``(a @ b).apply(p) == a.apply(b.apply(p))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import InputError

__all__ = ["CONVENTION", "decompose", "Affine", "rotation_matrix_xyz", "wrap_deg", "angle_distance"]

CONVENTION = ("em_to_lm maps an EM physical point (x, y, z, 1) in µm to the corresponding LM "
              "physical point; voxel (k, j, i) of a volume lies at origin + (i*sx, j*sy, k*sz); "
              "this is ITK's fixed-to-moving transform with the EM as the fixed image")


def wrap_deg(angle: float) -> float:
    """Angle in (-180, 180]."""
    a = (float(angle) + 180.0) % 360.0 - 180.0
    return 180.0 if a == -180.0 else a


def angle_distance(a: float, b: float) -> float:
    """Smallest absolute difference of two angles (degrees)."""
    return abs(wrap_deg(a - b))


def rotation_matrix_xyz(angles_deg: Sequence[float]) -> np.ndarray:
    """3×3 rotation about the x, then y, then z axis (angles in degrees).

    ``R = Rz @ Ry @ Rx``, acting on column vectors ``(x, y, z)``; a positive angle
    rotates counter-clockwise when looking down the axis towards the origin.
    """
    ax, ay, az = np.deg2rad(np.asarray(angles_deg, dtype=float))
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass(frozen=True, eq=False)
class Affine:
    """A 3D affine transform of physical points ``(x, y, z)`` in µm.

    Parameters
    ----------
    matrix : ndarray, shape (4, 4)
        Homogeneous matrix; validated to be finite, invertible, with last row
        ``[0, 0, 0, 1]``.
    """

    matrix: np.ndarray

    def __post_init__(self) -> None:
        m = np.array(self.matrix, dtype=float)
        if m.shape != (4, 4):
            raise InputError(f"affine matrix must be 4×4, got shape {m.shape}")
        if not np.all(np.isfinite(m)):
            raise InputError("affine matrix contains NaN or infinite values")
        if not np.allclose(m[3], [0, 0, 0, 1], atol=1e-12):
            raise InputError(f"affine matrix last row must be [0, 0, 0, 1], got {m[3].tolist()}")
        m[3] = [0, 0, 0, 1]
        det = np.linalg.det(m[:3, :3])
        if not np.isfinite(det) or abs(det) < 1e-12:
            raise InputError("affine matrix is singular (determinant ~ 0)")
        m.setflags(write=False)
        object.__setattr__(self, "matrix", m)

    @classmethod
    def identity(cls) -> Affine:
        """The identity transform."""
        return cls(np.eye(4))

    @classmethod
    def from_linear_translation(cls, linear: np.ndarray, translation_um: Sequence[float]) -> Affine:
        """Build ``p -> linear @ p + translation_um`` (``linear`` 3×3, translation in µm)."""
        m = np.eye(4)
        m[:3, :3] = linear
        m[:3, 3] = translation_um
        return cls(m)

    @classmethod
    def from_translation(cls, translation_um: Sequence[float]) -> Affine:
        """Pure translation by ``(tx, ty, tz)`` µm."""
        return cls.from_linear_translation(np.eye(3), translation_um)

    @property
    def linear(self) -> np.ndarray:
        """The 3×3 linear part."""
        return self.matrix[:3, :3]

    @property
    def translation_um(self) -> np.ndarray:
        """The translation ``(tx, ty, tz)`` in µm."""
        return self.matrix[:3, 3]

    def apply(self, points_xyz_um: np.ndarray | Sequence[float]) -> np.ndarray:
        """Transform physical points of shape ``(3,)`` or ``(n, 3)``."""
        p = np.asarray(points_xyz_um, dtype=float)
        return p @ self.linear.T + self.translation_um

    def inverse(self) -> Affine:
        """The inverse transform."""
        return Affine(np.linalg.inv(self.matrix))

    def __matmul__(self, other: Affine) -> Affine:
        if not isinstance(other, Affine):
            return NotImplemented
        return Affine(self.matrix @ other.matrix)

    def to_list(self) -> list[list[float]]:
        """The matrix as nested lists (for JSON)."""
        return self.matrix.tolist()

    def __repr__(self) -> str:
        rows = np.array2string(self.matrix, precision=6, suppress_small=True)
        return f"Affine(\n{rows})"


def decompose(affine: Affine) -> dict:
    """Translation, rotation, mirror, scale and shear of an affine, for people to read.

    Polar decomposition of the linear part ``A = Q · P`` (``Q`` orthogonal, ``P``
    symmetric positive definite).  When ``det A < 0``, ``Q = R · diag(-1, 1, 1)``: the x
    axis is mirrored first, then ``R`` (a proper rotation) applies — the form of
    :func:`clemalign.prealign.placement_transform`.  ``R = Rz·Ry·Rx`` gives the angles
    (the convention of :func:`rotation_matrix_xyz`), the eigenvalues of ``P`` the
    (positive) scales along its principal axes, and ``P``'s off-diagonal terms relative
    to its diagonal the shear.

    Returns
    -------
    dict
        ``translation_um`` (x, y, z), ``rotation_deg`` (about x, y, z), ``mirror`` (bool),
        ``scale`` (principal scales, descending), ``stretch`` (P, 3×3), ``shear``
        (largest |P_ij| / sqrt(P_ii P_jj), i ≠ j).
    """
    a = affine.linear
    u, _, vt = np.linalg.svd(a)
    q = u @ vt
    p = q.T @ a
    mirror = bool(np.linalg.det(q) < 0)
    r = q @ np.diag([-1.0, 1.0, 1.0]) if mirror else q
    ry = np.degrees(np.arcsin(np.clip(-r[2, 0], -1.0, 1.0)))
    rx = np.degrees(np.arctan2(r[2, 1], r[2, 2]))
    rz = np.degrees(np.arctan2(r[1, 0], r[0, 0]))
    d = np.sqrt(np.abs(np.diag(p)))
    shear = np.abs(p / np.outer(d, d) - np.eye(3)).max()
    return {"translation_um": affine.translation_um.tolist(),
            "rotation_deg": [float(rx), float(ry), float(rz)], "mirror": mirror,
            "scale": sorted(np.linalg.eigvalsh((p + p.T) / 2).tolist(), reverse=True),
            "stretch": p.tolist(), "shear": float(shear)}

