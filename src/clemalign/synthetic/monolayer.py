"""Simulated CLEM pairs with a known ground truth.

One random scene of adherent cells is rendered twice:

* **EM** — a small, finely sampled field (default 666×903×247 voxels of
  0.14×0.14×0.05 µm in x, y, z): resin, cells with dark plasma membranes, nuclei with
  envelope, heterochromatin and nucleoli, mitochondria, lysosomes, lipid droplets,
  small vesicles, and Gaussian detector noise;
* **LM** — a large confocal field (default 1024×1024×16 voxels of 0.22×0.22×0.6 µm),
  channel ``mito`` (the fluorescent label on every mitochondrion, plus a faint
  cytosolic haze) and a weak ``autofluorescence`` channel, both blurred by an
  anisotropic Gaussian PSF with Poisson and read noise.

The scene lives in LM physical coordinates.  The EM field is a rotated (optionally
mirrored), slightly tilted and rescaled window into it: the EM voxel at physical
point ``p`` shows the scene at ``em_to_lm.apply(p)``.  So the returned ``em_to_lm``
is exact by construction, and the landmarks (mitochondrion centres inside the EM
field) are given in both spaces.

Everything is deterministic for a given :class:`SimulationConfig` (its ``seed``).
"""

from __future__ import annotations

import csv
import io as _io
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import ndimage as ndi

from ..errors import InputError
from ..transforms import Affine, rotation_matrix_xyz
from ..volume import Volume

__all__ = ["SimulationConfig", "SimulatedPair", "simulate_pair", "write_simulated_pair",
           "DegradedCase", "degrade_fluorescence", "real_appearance_cases",
           "LANDMARK_COLUMNS", "SIMULATED_FILES"]

SIMULATED_FILES = ("em.ome.tif", "lm.ome.tif", "truth.json", "landmarks.csv")
LANDMARK_COLUMNS = ("name", "em_x_um", "em_y_um", "em_z_um", "lm_x_um", "lm_y_um", "lm_z_um")


@dataclass(frozen=True)
class SimulationConfig:
    """Parameters of a simulated CLEM pair.

    Parameters
    ----------
    seed : int
        Seed of every random choice; the same config gives the same pair.
    scale : float
        Lateral size factor: multiplies the x/y shape of both fields and the size of
        cells (not organelles, voxel sizes or z).  ``scale=0.3`` gives small pairs for
        tests.
    em_shape_zyx, em_voxel_size_um : tuples
        EM grid at ``scale=1`` and its voxel size ``(z, y, x)`` in µm.
    lm_shape_zyx, lm_voxel_size_um : tuples
        LM grid at ``scale=1`` and its voxel size ``(z, y, x)`` in µm.
    rotation_deg : float or None
        In-plane rotation of the EM field in the LM; ``None`` draws it uniformly in
        ``±max_rotation_deg``.
    max_rotation_deg : float
        Range of the random rotation.
    mirror : bool
        Mirror the EM x axis (handedness flip) before rotating.
    flip_z : bool
        Reverse the EM z axis (with ``mirror``: the EM block imaged from the other side
        than the LM, a 180° turn about an in-plane axis).
    tilt_deg : (float, float), optional
        Tilts about the x and y axes; default drawn uniformly in ``±max_tilt_deg``.
    max_tilt_deg : float
        Range of the random tilts about the x and y axes.
    max_scale_change : float
        Per-axis scale factors are drawn in ``1 ± max_scale_change``.
    placement : {"anywhere", "cell", "border"}
        Where the EM field centre is drawn: uniformly over the positions that keep the
        field inside the LM field, on a random cell, or as close to the LM border as
        the field allows.
    border_margin_um : float
        Minimum distance between the EM field and the LM field border (µm).
    psf_sigma_um : tuple
        Gaussian PSF standard deviations ``(z, y, x)`` in µm.
    lm_photons : float
        Expected photons from a voxel completely filled with labelled mitochondrion.
    lm_background_photons : float
        Expected background photons per voxel.
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
            raise InputError(f"--scale: expected a value in [0.05, 2], got {self.scale}")
        if self.placement not in ("anywhere", "cell", "border"):
            raise InputError(f"placement: expected anywhere, cell or border, got "
                             f"{self.placement!r}")
        if self.rotation_deg is not None and not np.isfinite(self.rotation_deg):
            raise InputError(f"--rotation-deg: expected a finite angle, got {self.rotation_deg}")
        if self.lm_photons <= 0:
            raise InputError(f"lm_photons must be positive, got {self.lm_photons}")

    def scaled_shape(self, shape_zyx: tuple[int, int, int]) -> tuple[int, int, int]:
        """A grid shape with x and y multiplied by ``scale`` (z unchanged)."""
        z, y, x = shape_zyx
        return (z, max(8, round(y * self.scale)), max(8, round(x * self.scale)))


@dataclass(frozen=True, eq=False)
class SimulatedPair:
    """A simulated EM/LM pair and its ground truth.

    Attributes
    ----------
    em : Volume
        EM volume, uint8, ``(z, y, x)``.
    lm : Volume
        LM volume, uint16, ``(c, z, y, x)`` with channels ``("mito", "autofluorescence")``.
    em_to_lm : Affine
        True transform from EM physical points to LM physical points (µm).
    landmarks_em_um, landmarks_lm_um : ndarray, shape (n, 3)
        Corresponding ``(x, y, z)`` points (mitochondrion centres inside the EM field);
        ``landmarks_lm_um == em_to_lm.apply(landmarks_em_um)``.
    config : SimulationConfig or TissueConfig
        The configuration that produced the pair.
    parameters : dict
        The drawn truth parameters (rotation, mirror, tilts, scales, field centres).
    roi : str, optional
        ``"z0:z1,y0:y1,x0:x1"`` EM region to register (the ``--roi`` a user would give);
        ``None``: the whole EM.
    scene : {"monolayer", "tissue"}
        Which simulator made the pair (:func:`simulate_pair` or
        :func:`clemalign.synthetic_tissue.simulate_tissue_pair`).
    """

    em: Volume
    lm: Volume
    em_to_lm: Affine
    landmarks_em_um: np.ndarray
    landmarks_lm_um: np.ndarray
    config: object
    parameters: dict = field(default_factory=dict)
    roi: str | None = None
    scene: str = "monolayer"


# ----------------------------------------------------------------- scene shapes
# Each shape gives an approximate signed distance in µm (negative inside) at scene
# points, and its axis-aligned bounding box in the scene.  Accuracy matters only near
# the surface, where membranes and anti-aliased edges are drawn.

@dataclass(frozen=True)
class _Ellipsoid:
    centre: np.ndarray  # (x, y, z)
    semi_axes: np.ndarray  # (a, b, c) along the rotated x, y and z
    phi: float  # rotation about z (rad)
    floor_z: float | None = None  # cut below this plane (a cell sitting on the coverslip)

    def sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        a, b, c = self.semi_axes
        cos, sin = np.float32(np.cos(self.phi)), np.float32(np.sin(self.phi))
        dx, dy, dz = x - self.centre[0], y - self.centre[1], z - self.centre[2]
        u = (cos * dx + sin * dy) / a
        v = (-sin * dx + cos * dy) / b
        w = dz / c
        q = u * u + v * v + w * w
        # first-order distance (q - 1) / |grad q|
        grad = 2.0 * np.sqrt((u / a) ** 2 + (v / b) ** 2 + (w / c) ** 2) + 1e-6
        d = (q - 1.0) / grad
        if self.floor_z is not None:
            d = np.maximum(d, self.floor_z - z)
        return d

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        r = float(np.max(self.semi_axes[:2]))
        lo = self.centre - np.array([r, r, self.semi_axes[2]])
        hi = self.centre + np.array([r, r, self.semi_axes[2]])
        if self.floor_z is not None:
            lo[2] = max(lo[2], self.floor_z)
        return lo, hi

    def contains(self, p: np.ndarray, margin: float = 0.0) -> np.ndarray:
        return self.sdf(p[:, 0], p[:, 1], p[:, 2]) < -margin


@dataclass(frozen=True)
class _Capsule:
    p0: np.ndarray
    p1: np.ndarray
    radius: float

    def sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        axis = (self.p1 - self.p0).astype(np.float32)
        length2 = float(axis @ axis) + 1e-12
        dx, dy, dz = x - self.p0[0], y - self.p0[1], z - self.p0[2]
        t = np.clip((dx * axis[0] + dy * axis[1] + dz * axis[2]) / length2, 0.0, 1.0)
        ex, ey, ez = dx - t * axis[0], dy - t * axis[1], dz - t * axis[2]
        return np.sqrt(ex * ex + ey * ey + ez * ez) - self.radius

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.minimum(self.p0, self.p1) - self.radius,
                np.maximum(self.p0, self.p1) + self.radius)

    @property
    def centre(self) -> np.ndarray:
        return 0.5 * (self.p0 + self.p1)

    @property
    def volume_um3(self) -> float:
        length = float(np.linalg.norm(self.p1 - self.p0))
        return np.pi * self.radius**2 * length + 4.0 / 3.0 * np.pi * self.radius**3


@dataclass(frozen=True)
class _Sphere:
    centre: np.ndarray
    radius: float

    def sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        dx, dy, dz = x - self.centre[0], y - self.centre[1], z - self.centre[2]
        return np.sqrt(dx * dx + dy * dy + dz * dz) - self.radius

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        return self.centre - self.radius, self.centre + self.radius


@dataclass
class _Cell:
    body: _Ellipsoid
    nucleus: _Ellipsoid
    nucleoli: list[_Sphere]
    mitochondria: list[_Capsule]
    lysosomes: list[_Sphere]
    lipid_droplets: list[_Sphere]
    vesicles: list[_Sphere]


# EM grey levels (0–255): stained membranes and dense organelles are dark.
_EM_RESIN = 212.0
_EM_CYTOPLASM = 158.0
_EM_NUCLEUS = 172.0
_EM_HETEROCHROMATIN_DROP = 55.0
_EM_NUCLEOLUS = 95.0
_EM_MITO = 100.0
_EM_LYSOSOME = 55.0
_EM_LIPID = 118.0
_EM_VESICLE = 125.0
_EM_MEMBRANE_WIDTH_UM = 0.06


def _uniform_in_ellipse(rng: np.random.Generator, n: int, a: float, b: float,
                        rmax: float) -> tuple[np.ndarray, np.ndarray]:
    r = rmax * np.sqrt(rng.uniform(0, 1, n))
    t = rng.uniform(0, 2 * np.pi, n)
    return a * r * np.cos(t), b * r * np.sin(t)


def _make_cell(rng: np.random.Generator, centre_xy: np.ndarray, a: float, b: float,
               height: float, phi: float, floor_z: float) -> _Cell:
    """Draw one adherent cell (a half-ellipsoid on the coverslip) and its organelles."""
    body = _Ellipsoid(np.array([centre_xy[0], centre_xy[1], floor_z]),
                      np.array([a, b, height]), phi, floor_z=floor_z)
    cos, sin = np.cos(phi), np.sin(phi)

    def to_scene(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return centre_xy[0] + cos * u - sin * v, centre_xy[1] + sin * u + cos * v

    # nucleus: off-centre ellipsoid in the thick part of the cell
    nu, nv = _uniform_in_ellipse(rng, 1, a, b, 0.2)
    nx, ny = to_scene(nu, nv)
    local_h = height * np.sqrt(max(0.2, 1 - (nu[0] / a) ** 2 - (nv[0] / b) ** 2))
    n_semi = np.array([a * rng.uniform(0.36, 0.46), b * rng.uniform(0.45, 0.55), 0.36 * local_h])
    n_centre = np.array([nx[0], ny[0], floor_z + 0.15 + 0.5 * local_h])
    nucleus = _Ellipsoid(n_centre, n_semi, phi + rng.uniform(-0.3, 0.3))
    nucleoli = []
    for _ in range(rng.integers(1, 3)):
        offset = rng.uniform(-0.35, 0.35, 3) * n_semi
        nucleoli.append(_Sphere(n_centre + offset, float(rng.uniform(0.5, 0.9)) *
                                min(1.0, float(n_semi[2]) / 1.5)))
    area = np.pi * a * b

    def sample_inside(n: int, margin: float) -> np.ndarray:
        """Points in the cytoplasm at least ``margin`` µm from cell and nucleus surfaces."""
        out = np.empty((0, 3))
        for _ in range(20):
            m = max(4 * n, 64)
            u, v = _uniform_in_ellipse(rng, m, a, b, 0.95)
            x, y = to_scene(u, v)
            dome = height * np.sqrt(np.clip(1 - (u / a) ** 2 - (v / b) ** 2, 0, 1))
            z = floor_z + rng.uniform(0, 1, m) * dome
            p = np.stack([x, y, z], axis=1)
            ok = body.contains(p, margin) & ~nucleus.contains(p, -margin)
            out = np.vstack([out, p[ok]])
            if len(out) >= n:
                break
        return out[:n]

    mitochondria = []
    centres = sample_inside(int(rng.poisson(0.11 * area)), 0.5)
    for c in centres:
        length = rng.uniform(0.8, 3.5)
        radius = rng.uniform(0.18, 0.3)
        azimuth, elevation = rng.uniform(0, 2 * np.pi), rng.normal(0, 0.25)
        d = np.array([np.cos(azimuth) * np.cos(elevation), np.sin(azimuth) * np.cos(elevation),
                      np.sin(elevation)])
        p0, p1 = c - 0.5 * length * d, c + 0.5 * length * d
        ends = np.stack([p0, p1])
        if body.contains(ends, radius).all() and not nucleus.contains(ends, -radius).any():
            mitochondria.append(_Capsule(p0, p1, float(radius)))
    lysosomes = [_Sphere(c, float(rng.uniform(0.2, 0.45)))
                 for c in sample_inside(int(rng.poisson(0.025 * area)), 0.5)]
    lipid_droplets = [_Sphere(c, float(rng.uniform(0.3, 0.7)))
                      for c in sample_inside(int(rng.poisson(0.008 * area)), 0.75)]
    vesicles = [_Sphere(c, float(rng.uniform(0.08, 0.16)))
                for c in sample_inside(int(rng.poisson(0.08 * area)), 0.2)]
    return _Cell(body, nucleus, nucleoli, mitochondria, lysosomes, lipid_droplets, vesicles)


def _make_cells(rng: np.random.Generator, cfg: SimulationConfig, lm_extent_xy: np.ndarray,
                floor_z: float, max_height: float) -> list[_Cell]:
    """Scatter non-overlapping cells over the LM field (a few cut by its border)."""
    area = float(lm_extent_xy[0] * lm_extent_xy[1])
    n_target = max(3, round(area / (2800.0 * cfg.scale**2)))
    cells: list[_Cell] = []
    placed: list[tuple[np.ndarray, float]] = []
    for _ in range(60 * n_target):
        if len(cells) >= n_target:
            break
        a = rng.uniform(14.0, 22.0) * cfg.scale
        b = a * rng.uniform(0.6, 0.9)
        centre = rng.uniform(-0.05, 1.05, 2) * lm_extent_xy
        if any(np.linalg.norm(centre - c) < 0.95 * (a + r) for c, r in placed):
            continue
        height = min(rng.uniform(4.0, 7.0), max_height)
        cells.append(_make_cell(rng, centre, a, b, height, rng.uniform(0, np.pi), floor_z))
        placed.append((centre, a))
    return cells


# --------------------------------------------------------------------- rendering
@dataclass(frozen=True)
class _Grid:
    """A voxel grid and the affine from its physical points to scene points."""

    shape_zyx: tuple[int, int, int]
    voxel_size_um: tuple[float, float, float]
    to_scene: np.ndarray  # 4×4, grid physical (x, y, z) -> scene (x, y, z)

    def index_box(self, lo: np.ndarray, hi: np.ndarray, pad: int = 2) -> tuple[slice, ...] | None:
        """Voxel slices covering a scene-space box, or None if it misses the grid."""
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])
                            for z in (lo[2], hi[2])])
        inv = np.linalg.inv(self.to_scene)
        phys = corners @ inv[:3, :3].T + inv[:3, 3]
        idx = phys[:, ::-1] / np.asarray(self.voxel_size_um)  # (k, j, i)
        start = np.floor(idx.min(axis=0)).astype(int) - pad
        stop = np.ceil(idx.max(axis=0)).astype(int) + pad + 1
        start = np.maximum(start, 0)
        stop = np.minimum(stop, self.shape_zyx)
        if np.any(stop <= start):
            return None
        return tuple(slice(int(a), int(b)) for a, b in zip(start, stop, strict=True))

    def scene_coords(self, box: tuple[slice, ...]) -> tuple[np.ndarray, ...]:
        """Scene ``x, y, z`` (float32 arrays) of the voxel centres in ``box``."""
        sz, sy, sx = self.voxel_size_um
        k = np.arange(box[0].start, box[0].stop, dtype=np.float32) * np.float32(sz)
        j = np.arange(box[1].start, box[1].stop, dtype=np.float32) * np.float32(sy)
        i = np.arange(box[2].start, box[2].stop, dtype=np.float32) * np.float32(sx)
        m = self.to_scene.astype(np.float32)
        return tuple(m[r, 0] * i[None, None, :] + m[r, 1] * j[None, :, None]
                     + (m[r, 2] * k + m[r, 3])[:, None, None] for r in range(3))


def _inside_fraction(d: np.ndarray, edge_um: float) -> np.ndarray:
    """Anti-aliased inside indicator from a signed distance (µm): 1 inside, 0 outside,
    a linear ramp ``edge_um`` wide across the surface."""
    return np.clip(0.5 - d / np.float32(edge_um), 0.0, 1.0)


def _chunks(box: tuple[slice, ...], depth: int):
    """Split a voxel box along z so that large shapes are rendered in bounded memory."""
    for z0 in range(box[0].start, box[0].stop, depth):
        yield (slice(z0, min(z0 + depth, box[0].stop)), box[1], box[2])


def _paint(volume: np.ndarray, grid: _Grid, shape, *, value: float | None = None,
           membrane: float = 0.0, edge_um: float = 0.1, rim: tuple[float, float, float]
           | None = None, chunk_voxels: int = 4_000_000) -> None:
    """Paint one shape into an EM volume (in place).

    ``value`` fills the interior with an anti-aliased edge; ``membrane`` darkens a thin
    band around the surface; ``rim=(drop, offset_um, width_um)`` darkens a band inside
    the surface (heterochromatin under the nuclear envelope).
    """
    box = grid.index_box(*shape.bbox())
    if box is None:
        return
    plane = (box[1].stop - box[1].start) * (box[2].stop - box[2].start)
    for sub in _chunks(box, max(1, chunk_voxels // max(plane, 1))):
        d = shape.sdf(*grid.scene_coords(sub))
        target = volume[sub]
        inside = _inside_fraction(d, edge_um)
        if value is not None:
            target += inside * (np.float32(value) - target)
        if rim is not None:
            drop, offset, width = rim
            target -= np.float32(drop) * inside * np.exp(-0.5 * ((d + offset) / width) ** 2)
        if membrane:
            target -= np.float32(membrane) * np.exp(-0.5 * (d / _EM_MEMBRANE_WIDTH_UM) ** 2)


def _render_em(cells: list[_Cell], grid: _Grid, cfg: SimulationConfig,
               rng: np.random.Generator) -> np.ndarray:
    """EM grey values (uint8) on ``grid``: the scene drawn front to back, then noise."""
    vol = np.full(grid.shape_zyx, _EM_RESIN, dtype=np.float32)
    for cell in cells:
        if grid.index_box(*cell.body.bbox()) is None:
            continue
        _paint(vol, grid, cell.body, value=_EM_CYTOPLASM, membrane=70.0)
        _paint(vol, grid, cell.nucleus, value=_EM_NUCLEUS, membrane=80.0,
               rim=(_EM_HETEROCHROMATIN_DROP, 0.2, 0.12))
        for s in cell.nucleoli:
            _paint(vol, grid, s, value=_EM_NUCLEOLUS, edge_um=0.15)
        for s in cell.vesicles:
            _paint(vol, grid, s, value=_EM_VESICLE, membrane=40.0)
        for s in cell.lipid_droplets:
            _paint(vol, grid, s, value=_EM_LIPID, edge_um=0.12)
        for s in cell.lysosomes:
            _paint(vol, grid, s, value=_EM_LYSOSOME, membrane=20.0)
        for c in cell.mitochondria:
            _paint(vol, grid, c, value=_EM_MITO, membrane=45.0)
    # slow shading: a random smooth gain across the field, and per-slice brightness jitter
    ny, nx = grid.shape_zyx[1:]
    yy, xx = np.meshgrid(np.linspace(-1, 1, ny, dtype=np.float32),
                         np.linspace(-1, 1, nx, dtype=np.float32), indexing="ij")
    c = rng.normal(0, 1, 5).astype(np.float32)
    field = (c[0] * xx + c[1] * yy + c[2] * xx * yy + c[3] * (xx * xx - 0.33)
             + c[4] * (yy * yy - 0.33))
    gain = 1.0 + np.float32(cfg.em_shading) * field / max(float(np.abs(field).max()), 1e-6)
    slice_gain = 1.0 + 0.25 * cfg.em_shading * rng.uniform(-1, 1, grid.shape_zyx[0])
    out = np.empty(grid.shape_zyx, dtype=np.uint8)
    for z in range(grid.shape_zyx[0]):
        noisy = vol[z] * gain * np.float32(slice_gain[z]) + np.float32(cfg.em_noise_sd) * \
            rng.standard_normal(vol.shape[1:], dtype=np.float32)
        np.clip(np.rint(noisy), 0, 255, out=noisy)
        out[z] = noisy
    return out


def _splat(points_kji: np.ndarray, weights: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Trilinear splatting of weighted points (fractional voxel indices) onto a grid."""
    out = np.zeros(int(np.prod(shape)), dtype=np.float64)
    base = np.floor(points_kji).astype(np.int64)
    frac = points_kji - base
    shape_arr = np.asarray(shape)
    for corner in np.ndindex(2, 2, 2):
        c = np.asarray(corner)
        idx = base + c
        w = weights * np.prod(np.where(c, frac, 1.0 - frac), axis=1)
        ok = np.all((idx >= 0) & (idx < shape_arr), axis=1)
        flat = np.ravel_multi_index(idx[ok].T, shape)
        out += np.bincount(flat, weights=w[ok], minlength=out.size)
    return out.reshape(shape).astype(np.float32)


def _sample_capsules(rng: np.random.Generator, capsules: list[_Capsule],
                     density_per_um3: float) -> tuple[np.ndarray, np.ndarray]:
    """Points filling each capsule's cylinder uniformly, weighted by volume share."""
    pts, wts = [], []
    for cap in capsules:
        n = max(16, int(cap.volume_um3 * density_per_um3))
        axis = cap.p1 - cap.p0
        length = float(np.linalg.norm(axis))
        d = axis / max(length, 1e-9)
        # two unit vectors orthogonal to the axis
        helper = np.array([0.0, 0.0, 1.0]) if abs(d[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
        e1 = np.cross(d, helper)
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(d, e1)
        t = rng.uniform(-cap.radius, length + cap.radius, n)
        r = cap.radius * np.sqrt(rng.uniform(0, 1, n))
        ang = rng.uniform(0, 2 * np.pi, n)
        # points beyond the cylinder ends fall in the round caps only if inside them
        along = np.clip(t, 0, length)
        p = (cap.p0 + along[:, None] * d + (t - along)[:, None] * d
             + (r * np.cos(ang))[:, None] * e1 + (r * np.sin(ang))[:, None] * e2)
        inside = cap.sdf(p[:, 0], p[:, 1], p[:, 2]) <= 0
        p = p[inside]
        pts.append(p)
        wts.append(np.full(len(p), cap.volume_um3 / max(len(p), 1)))
    if not pts:
        return np.empty((0, 3)), np.empty(0)
    return np.vstack(pts), np.concatenate(wts)


def _render_lm(cells: list[_Cell], grid: _Grid, cfg: SimulationConfig,
               rng: np.random.Generator) -> np.ndarray:
    """LM photon counts (uint16, 2 channels) on ``grid`` (scene = LM physical space)."""
    shape = grid.shape_zyx
    voxel_um3 = float(np.prod(cfg.lm_voxel_size_um))
    # label: volume fraction of labelled mitochondria per voxel
    pts, wts = _sample_capsules(rng, [m for c in cells for m in c.mitochondria], 300.0)
    label = _splat(pts[:, ::-1] / np.asarray(cfg.lm_voxel_size_um), wts / voxel_um3, shape)
    cytoplasm = np.zeros(shape, dtype=np.float32)
    nucleus = np.zeros(shape, dtype=np.float32)
    edge = float(min(cfg.lm_voxel_size_um))
    for cell in cells:
        for shape_, target in ((cell.body, cytoplasm), (cell.nucleus, nucleus)):
            box = grid.index_box(*shape_.bbox())
            if box is None:
                continue
            d = shape_.sdf(*grid.scene_coords(box))
            target[box] = np.maximum(target[box], _inside_fraction(d, edge))
    cytoplasm = np.clip(cytoplasm - nucleus, 0, 1)
    sigma_px = np.asarray(cfg.psf_sigma_um) / np.asarray(cfg.lm_voxel_size_um)
    label = ndi.gaussian_filter(label + 0.02 * cytoplasm, sigma_px, mode="constant")
    auto = ndi.gaussian_filter(0.12 * cytoplasm + 0.05 * nucleus, sigma_px, mode="constant")
    # illumination falls off towards the corners of the field (vignetting)
    yy, xx = np.meshgrid(np.linspace(-1, 1, shape[1]), np.linspace(-1, 1, shape[2]),
                         indexing="ij")
    illumination = (1.0 - cfg.lm_vignetting * 0.5 * (xx * xx + yy * yy)).astype(np.float32)
    out = np.empty((2,) + shape, dtype=np.uint16)
    offset = 100.0
    for c, signal in enumerate((label, auto)):
        expected = cfg.lm_photons * signal * illumination + cfg.lm_background_photons
        counts = rng.poisson(expected).astype(np.float32)
        counts += np.float32(cfg.lm_read_noise) * rng.standard_normal(shape, dtype=np.float32)
        out[c] = np.clip(np.rint(counts + offset), 0, 65535)
    return out


# ------------------------------------------------------------------ the truth
def _draw_truth(rng: np.random.Generator, cfg: SimulationConfig, em_extent_xyz: np.ndarray,
                lm_extent_xyz: np.ndarray, cells: list[_Cell], floor_z: float
                ) -> tuple[Affine, dict]:
    """Draw the EM→LM transform: EM field centre → a point of the LM field."""
    angle = (cfg.rotation_deg if cfg.rotation_deg is not None
             else rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg))
    tilt = rng.uniform(-cfg.max_tilt_deg, cfg.max_tilt_deg, 2)
    if cfg.tilt_deg is not None:
        tilt = np.asarray(cfg.tilt_deg, float)
    scales = 1.0 + rng.uniform(-cfg.max_scale_change, cfg.max_scale_change, 3)
    mirror = np.diag([-1.0 if cfg.mirror else 1.0, 1.0, -1.0 if cfg.flip_z else 1.0])
    linear = rotation_matrix_xyz([tilt[0], tilt[1], angle]) @ np.diag(scales) @ mirror
    # half extent in LM x/y of the EM field footprint after rotation
    half = 0.5 * np.abs(linear[:2, :2]) @ em_extent_xyz[:2]
    lo = half + cfg.border_margin_um
    hi = lm_extent_xyz[:2] - half - cfg.border_margin_um
    if np.any(hi < lo):
        raise InputError("the EM field does not fit inside the LM field; reduce the EM "
                         "shape or enlarge the LM shape")
    em_centre = 0.5 * em_extent_xyz

    def covered(centre_xy: np.ndarray) -> float:
        """Fraction of EM field sample points (mid-depth) that fall inside some cell."""
        u, v = np.meshgrid(np.linspace(-0.45, 0.45, 9), np.linspace(-0.45, 0.45, 9))
        p = np.stack([u.ravel() * em_extent_xyz[0], v.ravel() * em_extent_xyz[1],
                      np.zeros(u.size)], axis=1) @ linear[:2, :].T
        p = np.column_stack([p[:, 0] + centre_xy[0], p[:, 1] + centre_xy[1],
                             np.full(len(p), floor_z + 1.0)])
        return float(np.mean(np.any([c.body.contains(p) for c in cells], axis=0)))

    centre_xy = None
    for _ in range(200):
        if cfg.placement == "cell":
            cell = cells[rng.integers(len(cells))]
            cand = cell.body.centre[:2] + rng.uniform(-0.3, 0.3, 2) * cell.body.semi_axes[:2]
            cand = np.clip(cand, lo, hi)
        elif cfg.placement == "border":
            cand = rng.uniform(lo, hi)
            axis = rng.integers(2)
            cand[axis] = lo[axis] if rng.uniform() < 0.5 else hi[axis]
        else:
            cand = rng.uniform(lo, hi)
        if covered(cand) >= 0.25:
            centre_xy = cand
            break
    if centre_xy is None:
        centre_xy = cand  # the field is sparse; keep the last draw
    lm_centre = np.array([centre_xy[0], centre_xy[1], floor_z + rng.uniform(4.0, 5.5)])
    translation = lm_centre - linear @ em_centre
    truth = Affine.from_linear_translation(linear, translation)
    params = {"rotation_deg": float(angle), "mirror": bool(cfg.mirror),
              "flip_z": bool(cfg.flip_z),
              "tilt_x_deg": float(tilt[0]), "tilt_y_deg": float(tilt[1]),
              "scale_xyz": [float(s) for s in scales],
              "em_centre_xyz_um": em_centre.tolist(), "lm_centre_xyz_um": lm_centre.tolist(),
              "coverslip_z_um": float(floor_z)}
    return truth, params


def simulate_pair(config: SimulationConfig | None = None, *,
                  progress: Callable[[str], None] | None = None, **overrides) -> SimulatedPair:
    """Render a simulated CLEM pair with its ground-truth ``em_to_lm`` transform.

    Parameters
    ----------
    config : SimulationConfig, optional
        All parameters; defaults to ``SimulationConfig()``.
    progress : callable, optional
        Called with the name of each rendering step as it starts (for progress displays).
    **overrides
        Fields of :class:`SimulationConfig` to replace (e.g. ``seed=3, scale=0.3``).

    Returns
    -------
    SimulatedPair
        EM and LM volumes, the truth transform and landmark pairs.

    Examples
    --------
    >>> pair = simulate_pair(seed=1, scale=0.25)   # doctest: +SKIP
    >>> pair.em_to_lm.apply(pair.landmarks_em_um) - pair.landmarks_lm_um   # ~0
    """
    cfg = replace(config or SimulationConfig(), **overrides)
    report = progress or (lambda step: None)
    report("scene")
    rng = np.random.default_rng(cfg.seed)
    em_shape = cfg.scaled_shape(cfg.em_shape_zyx)
    lm_shape = cfg.scaled_shape(cfg.lm_shape_zyx)
    em_extent = np.asarray(em_shape[::-1], float) * np.asarray(cfg.em_voxel_size_um[::-1])
    lm_extent = np.asarray(lm_shape[::-1], float) * np.asarray(cfg.lm_voxel_size_um[::-1])
    floor_z = float(rng.uniform(0.6, 1.2))
    max_height = max(2.0, float(lm_extent[2]) - floor_z - 1.0)
    cells = _make_cells(rng, cfg, lm_extent[:2], floor_z, max_height)
    em_to_lm, params = _draw_truth(rng, cfg, em_extent, lm_extent, cells, floor_z)

    em_grid = _Grid(em_shape, cfg.em_voxel_size_um, em_to_lm.matrix)
    lm_grid = _Grid(lm_shape, cfg.lm_voxel_size_um, np.eye(4))
    report("EM")
    em_data = _render_em(cells, em_grid, cfg, np.random.default_rng([cfg.seed, 1]))
    report("LM")
    lm_data = _render_lm(cells, lm_grid, cfg, np.random.default_rng([cfg.seed, 2]))

    # landmarks: labelled mitochondria whose centre lies well inside the EM field
    lm_to_em = em_to_lm.inverse()
    centres_lm = np.array([m.centre for c in cells for m in c.mitochondria]).reshape(-1, 3)
    centres_em = lm_to_em.apply(centres_lm)
    margin = np.array([1.0, 1.0, 0.5])
    inside = np.all((centres_em >= margin) & (centres_em <= em_extent - margin), axis=1)
    inside &= (centres_lm[:, 2] >= 0) & (centres_lm[:, 2] <= lm_extent[2])
    chosen = np.flatnonzero(inside)
    if len(chosen) > cfg.max_landmarks:
        chosen = np.sort(np.random.default_rng([cfg.seed, 3]).choice(
            chosen, cfg.max_landmarks, replace=False))
    em = Volume(em_data, cfg.em_voxel_size_um, channel_names=("EM",), source="simulated EM")
    lm = Volume(lm_data, cfg.lm_voxel_size_um, channel_names=("mito", "autofluorescence"),
                source="simulated LM")
    params.update({"n_cells": len(cells),
                   "n_mitochondria": int(len(centres_lm)), "n_landmarks": int(len(chosen))})
    return SimulatedPair(em, lm, em_to_lm, centres_em[chosen], centres_lm[chosen], cfg, params)


def landmarks_csv_text(em_points_um: np.ndarray, lm_points_um: np.ndarray,
                       names: list[str] | None = None) -> str:
    """Landmark pairs as CSV text with the columns of :data:`LANDMARK_COLUMNS`."""
    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(LANDMARK_COLUMNS)
    for n, (e, m) in enumerate(zip(em_points_um, lm_points_um, strict=True)):
        name = names[n] if names else f"L{n + 1}"
        writer.writerow([name] + [repr(float(v)) for v in (*e, *m)])
    return buf.getvalue()


def write_simulated_pair(outdir: str | os.PathLike, pair: SimulatedPair, *,
                         overwrite: bool = False) -> dict[str, Path]:
    """Write ``em.ome.tif``, ``lm.ome.tif``, ``truth.json`` and ``landmarks.csv``.

    Nothing is written if any of them exists and ``overwrite`` is false.
    """
    from .. import __version__
    from ..io import atomic_write_text, ensure_writable, write_json, write_ome_tiff

    outdir = Path(outdir)
    paths = {name: outdir / name for name in SIMULATED_FILES}
    for p in paths.values():  # check all before writing any
        ensure_writable(p, overwrite=overwrite)
    write_ome_tiff(paths["em.ome.tif"], pair.em, overwrite=overwrite)
    write_ome_tiff(paths["lm.ome.tif"], pair.lm, overwrite=overwrite)
    truth = {
        "em_to_lm": pair.em_to_lm.to_list(),
        "lm_to_em": pair.em_to_lm.inverse().to_list(),
        "convention": ("4x4 matrices act on physical (x, y, z, 1) in micrometres; em_to_lm maps "
                       "an EM physical point to the LM physical point showing the same place"),
        "em_voxel_size_um": list(pair.em.voxel_size_um),
        "lm_voxel_size_um": list(pair.lm.voxel_size_um),
        "parameters": pair.parameters,
        "scene": pair.scene,
        "roi": pair.roi,
        "config": asdict(pair.config),
        "clemalign_version": __version__,
    }
    write_json(paths["truth.json"], truth, overwrite=overwrite)
    atomic_write_text(paths["landmarks.csv"],
                      landmarks_csv_text(pair.landmarks_em_um, pair.landmarks_lm_um),
                      overwrite=overwrite)
    return paths


# ------------------------------------------------- real-appearance 2D cases
@dataclass(frozen=True, eq=False)
class DegradedCase:
    """An EM image with a known-answer LM made from its aligned fluorescence.

    Attributes
    ----------
    em : Volume
        The EM image as a one-slice stack (origin 0).
    lm : Volume
        The degraded fluorescence as a one-slice stack.
    em_to_lm : Affine
        Truth: EM physical (x, y, z) → LM physical (x, y, z).
    """

    em: Volume
    lm: Volume
    em_to_lm: Affine


def degrade_fluorescence(em_image: np.ndarray, fm_image: np.ndarray, *, em_pixel_um: float,
                         rotation_deg: float = 0.0, shift_xy_um: tuple[float, float] = (0.0, 0.0),
                         downsample: int = 4, psf_sigma_um: float = 0.15,
                         peak_photons: float = 200.0, seed: int = 0) -> DegradedCase:
    """Make an LM-like image from fluorescence aligned to an EM image, with a known truth.

    The fluorescence (same grid as the EM) is rotated by ``rotation_deg`` (anticlockwise
    in x-y) about the image centre and shifted by ``shift_xy_um``, blurred by a Gaussian
    PSF, block-averaged ``downsample``× and given Poisson noise with ``peak_photons`` at
    the brightest pixel.  Used to build real-appearance pre-alignment cases from expert-
    aligned 2D CLEM pairs.

    Parameters
    ----------
    em_image, fm_image : ndarray, shape (y, x)
        Registered EM and fluorescence images of the same shape.
    em_pixel_um : float
        EM pixel size (µm); the LM pixel is ``downsample`` times larger.

    Returns
    -------
    DegradedCase
    """
    em_image = np.asarray(em_image)
    fm = np.asarray(fm_image, dtype=np.float64)
    if em_image.ndim != 2 or em_image.shape != fm.shape:
        raise InputError(f"degrade_fluorescence: need two 2D images of one shape, got "
                         f"{em_image.shape} and {fm.shape}")
    rng = np.random.default_rng(seed)
    h, w = fm.shape
    centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0]) * em_pixel_um
    linear = rotation_matrix_xyz((0.0, 0.0, rotation_deg))
    shift = np.array([shift_xy_um[0], shift_xy_um[1], 0.0])
    # EM point p -> LM point R (p - c) + c + shift, with c the image centre
    c3 = np.array([centre[0], centre[1], 0.0])
    em_to_lm = Affine.from_linear_translation(linear, c3 - linear @ c3 + shift)
    # render on the EM grid: output pixel q (LM frame, EM pixel size) shows the fluorescence at
    # em_to_lm⁻¹(q); in (row, col) order the inverse linear part is R(-angle)
    inverse = em_to_lm.inverse()
    m = inverse.matrix
    matrix_rc = np.array([[m[1, 1], m[1, 0]], [m[0, 1], m[0, 0]]])
    offset_rc = np.array([m[1, 3], m[0, 3]]) / em_pixel_um
    rotated = ndi.affine_transform(fm, matrix_rc, offset_rc, order=1, mode="constant", cval=0.0)
    blurred = ndi.gaussian_filter(rotated, psf_sigma_um / em_pixel_um)
    f = int(downsample)
    hh, ww = (h // f) * f, (w // f) * f
    binned = blurred[:hh, :ww].reshape(hh // f, f, ww // f, f).mean(axis=(1, 3))
    scale = peak_photons / max(float(binned.max()), 1e-12)
    noisy = rng.poisson(binned * scale + 2.0).astype(np.uint16)
    lm_pixel = em_pixel_um * f
    # LM pixel i averages EM-grid pixels f·i .. f·i+f-1: its centre is at (f·i + (f-1)/2)
    origin = (f - 1) / 2.0 * em_pixel_um
    em = Volume(em_image[None], (0.05, em_pixel_um, em_pixel_um), (0.0, 0.0, 0.0), ("EM",))
    lm = Volume(noisy[None], (0.5, lm_pixel, lm_pixel), (origin, origin, 0.0), ("fluorescence",))
    return DegradedCase(em, lm, em_to_lm)


def real_appearance_cases(em_image: np.ndarray, fm_image: np.ndarray, *, em_pixel_um: float,
                          n_cases: int, roi_width_um: tuple[float, float] = (15.0, 20.0),
                          max_rotation_deg: float = 15.0, max_shift_um: float = 2.0,
                          seed: int = 0, **degrade: float) -> list[tuple[DegradedCase, str]]:
    """Known-answer pre-alignment cases from one expert-aligned 2D EM/fluorescence pair.

    Each case is an EM ROI (square, ``roi_width_um`` wide, inside the image) centred near
    a fluorescent object — so it contains one — and an LM made with
    :func:`degrade_fluorescence` at a random rotation (±``max_rotation_deg``) and shift.

    Returns
    -------
    list of (DegradedCase, roi)
        ``roi`` is the ``"z0:z1,y0:y1,x0:x1"`` string for the EM ROI.
    """
    fm = np.asarray(fm_image, dtype=np.float64)
    h, w = fm.shape
    rng = np.random.default_rng(seed)
    # fluorescent objects: smoothed signal above half its 99.5th percentile
    smooth = ndi.gaussian_filter(fm, 1.0 / em_pixel_um)
    labels, n = ndi.label(smooth > 0.5 * np.percentile(smooth, 99.5))
    if n == 0:
        raise InputError("real_appearance_cases: the fluorescence image shows no object")
    sizes = ndi.sum_labels(np.ones_like(fm), labels, np.arange(1, n + 1))
    keep = np.arange(1, n + 1)[sizes >= 0.25 * sizes.max()]
    centres = np.array(ndi.center_of_mass(smooth, labels, keep))  # (row, col)
    cases = []
    for k in range(n_cases):
        side = int(round(rng.uniform(*roi_width_um) / em_pixel_um))
        if side >= min(h, w):
            raise InputError(f"real_appearance_cases: ROI of {side} px does not fit the image")
        r, c = centres[k % len(centres)] + rng.uniform(-0.25, 0.25, 2) * side
        r0 = int(np.clip(round(r - side / 2), 0, h - side))
        c0 = int(np.clip(round(c - side / 2), 0, w - side))
        case = degrade_fluorescence(
            em_image, fm_image, em_pixel_um=em_pixel_um,
            rotation_deg=float(rng.uniform(-max_rotation_deg, max_rotation_deg)),
            shift_xy_um=tuple(rng.uniform(-max_shift_um, max_shift_um, 2)),
            seed=int(rng.integers(2**31)), **degrade)
        cases.append((case, f"0:1,{r0}:{r0 + side},{c0}:{c0 + side}"))
    return cases
