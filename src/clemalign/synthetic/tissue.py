"""Simulated thick-tissue pairs: microCT of stained tissue + a two-photon stack.

The publication's second experiment registers a microCT volume (1 µm voxels) of stained
tissue with a two-photon stack (0.59 × 0.59 × 3 µm voxels) that lies deep inside it.  This
module renders such pairs with a known answer:

* **scene** — nuclei packed in 3D (a hard-core random process, no lattice: real tissue has
  no long-range order, and a lattice would make false matches), spheres of radius
  2.8–4.5 µm, and a few blood vessels (random tubes of radius 3–8 µm) with no nuclei in
  their lumen.  The scene lives in the microCT's physical frame (microCT is metrically
  true);
* **microCT** (the ``em`` volume) — attenuation contrast: tissue grey, nuclei brighter
  with chromatin texture, vessel lumens dark, slow density variation, fine texture, a
  slight blur and detector noise; ``em_contrast="dark"`` stores the inverted display;
* **two-photon LM** — channel ``nuclei``: a nuclear label in a random 60–80 % of the
  nuclei (brightness varying per nucleus), channel ``vessels``: dextran in the lumens;
  both blurred by an anisotropic PSF, sampled in optical sections every ``3 µm``, dimmed
  with depth (scattering), Poisson and read noise.  The LM's axial scale differs from the
  truth by 0.85–1.1 (refractive-index mismatch);
* **truth** — ``em_to_lm = T(c_lm) · diag(s, s, s_z) · Rz(angle) · Ry(tilt_y) · Rx(tilt_x)
  · F · T(−c_em)`` with ``F`` an optional x mirror and/or z reversal (a stack imaged from
  the other side is a 180° turn about an in-plane axis: mirror and reversed z); ``c_em``
  is the centre of the region of interest (``roi``), a box of the microCT that lies inside
  the LM field, as a user marks it with ``--roi``.

Landmarks are labelled nucleus centres inside the ROI.  Everything is deterministic for a
given :class:`TissueConfig`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from scipy import ndimage as ndi

from ..errors import InputError
from ..transforms import Affine, rotation_matrix_xyz
from ..volume import Volume
from .monolayer import SimulatedPair

__all__ = ["TissueConfig", "simulate_tissue_pair"]

# microCT grey levels (attenuation display, 0–255)
_CT_TISSUE = 118.0
_CT_NUCLEUS = 46.0  # added inside nuclei
_CT_LUMEN = -58.0  # added inside vessel lumens
_CT_WALL = 18.0  # vessel wall ring
_EDGE_UM = 0.6  # anti-aliased surface width


@dataclass(frozen=True)
class TissueConfig:
    """Parameters of a simulated microCT + two-photon pair.

    The defaults are the small size (tests, 20-pair benchmark): a 110×200×200 µm microCT
    block with a 70×140×140 µm ROI, inside a 108×227×227 µm two-photon stack.
    :meth:`publication` gives the publication's second experiment (microCT 1084×896×1094
    at 1 µm, LM 2×1024×1024×107 at 0.59/0.59/3 µm).

    Parameters
    ----------
    seed : int
        Seed of every random choice.
    em_shape_zyx, em_voxel_size_um : tuples
        microCT grid and voxel size ``(z, y, x)`` µm.
    roi_shape_zyx : tuple
        Region of interest (microCT voxels); it is placed inside the LM field.
    lm_shape_zyx, lm_voxel_size_um : tuples
        Two-photon grid and voxel size.
    rotation_deg : float, optional
        Rotation about z (EM → LM); default uniform over the full circle.
    mirror : bool
        Mirror the x axis (handedness flip).
    flip_z : bool
        Reverse z (imaged from the other side; with ``mirror`` a 180° turn about y).
    tilt_deg : (float, float), optional
        Tilts about x and y; default drawn uniformly in ``±max_tilt_deg`` each.
    max_tilt_deg : float
    z_scale_range : (float, float)
        Axial scale of the LM (refractive index), drawn uniformly.
    lateral_scale_change : float
        Lateral scales drawn in ``1 ± lateral_scale_change``.
    labelled_fraction_range : (float, float)
        Fraction of nuclei carrying the LM label, drawn uniformly.
    nucleus_radius_um : (float, float)
    nucleus_min_distance_um : float
        Hard-core distance between nucleus centres.
    vessel_spacing_um : float
        Vessel length per volume is ``1 / vessel_spacing_um²``.
    vessel_radius_um : (float, float)
    psf_sigma_um : tuple
        Two-photon PSF standard deviations ``(z, y, x)``.
    attenuation_length_um : (float, float)
        Depth over which the LM signal falls by ``e``, drawn uniformly.
    lm_photons, lm_background_photons, lm_read_noise : float
        Photons from a labelled nucleus at the surface, background photons, read noise.
    em_noise_sd : float
        microCT detector noise (grey levels).
    em_contrast : {"bright", "dark"}
        Nuclei brighter than tissue (attenuation display) or darker (inverted).
    roi_margin_um : float
        Least distance between the mapped ROI and the LM field border.
    max_landmarks : int
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


# ------------------------------------------------------------------ scene
@dataclass(frozen=True)
class _Scene:
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


def _make_scene(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray,
                cfg: TissueConfig, labelled_fraction: float) -> _Scene:
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
    return _Scene(centres, radii, label, vpoints, vsegs, vradii)


# -------------------------------------------------------------- rendering
@dataclass(frozen=True)
class _Grid:
    """A voxel grid whose physical points map to scene points by ``to_scene`` (4×4)."""

    shape_zyx: tuple[int, int, int]
    voxel_size_um: tuple[float, float, float]
    to_scene: np.ndarray

    def index_to_scene(self) -> np.ndarray:
        """4×4 taking homogeneous voxel indices ``(i, j, k, 1)`` to scene ``(x, y, z, 1)``."""
        return self.to_scene @ np.diag([*self.voxel_size_um[::-1], 1.0])

    def scene_to_index(self) -> np.ndarray:
        return np.linalg.inv(self.index_to_scene())


def _z_chunks(nz: int, depth: int) -> Iterator[tuple[int, int]]:
    for z0 in range(0, nz, depth):
        yield z0, min(nz, z0 + depth)


def _paint_spheres(out: np.ndarray, grid: _Grid, z0: int, centres: np.ndarray,
                   radii: np.ndarray, values: np.ndarray, edge_um: float) -> None:
    """Add ``value × anti-aliased inside(sphere)`` to a z-slab ``out`` (grid z ``z0``…).

    All spheres at once: one fixed-size index patch per sphere, the signed distance
    computed in scene µm (exact for spheres whatever the grid's rotation, tilt or
    anisotropy), accumulated with one ``bincount`` (spheres do not overlap).
    """
    if len(centres) == 0:
        return
    to_index = grid.scene_to_index()
    to_scene = grid.index_to_scene().astype(np.float32)
    centre_idx = centres @ to_index[:3, :3].T + to_index[:3, 3]  # (i, j, k)
    # a sphere of radius r spans r·‖row a of to_index‖ index units along axis a; keep the
    # offsets within reach of the (rounded) centre, half a voxel of rounding included
    r_max = float(radii.max()) + edge_um
    half = np.ceil(r_max * np.linalg.norm(to_index[:3, :3], axis=1)).astype(int) + 1
    offsets = np.stack(np.meshgrid(*(np.arange(-h, h + 1) for h in half), indexing="ij"),
                       axis=-1).reshape(-1, 3)  # (p, 3) in (i, j, k)
    slack = 0.5 * float(np.linalg.norm(to_scene[:3, :3], axis=0).sum())
    offsets = offsets[np.linalg.norm(offsets @ to_scene[:3, :3].T, axis=1) <= r_max + slack]
    shape_ijk = np.array([out.shape[2], out.shape[1], out.shape[0]])
    batch = max(1, 2_000_000 // len(offsets))
    flats, weights = [], []
    for start in range(0, len(centres), batch):
        sl = slice(start, start + batch)
        idx = np.rint(centre_idx[sl]).astype(np.int32)[:, None, :] + offsets[None]
        pos = idx.astype(np.float32) @ to_scene[:3, :3].T + to_scene[:3, 3]
        d = np.linalg.norm(pos - centres[sl, None, :].astype(np.float32), axis=-1) \
            - radii[sl, None].astype(np.float32)
        w = np.clip(0.5 - d / np.float32(edge_um), 0.0, 1.0) * values[sl, None]
        idx[..., 2] -= z0
        keep = np.all((idx >= 0) & (idx < shape_ijk), axis=-1) & (w > 0)
        il = idx[keep]
        flats.append(np.ravel_multi_index((il[:, 2], il[:, 1], il[:, 0]), out.shape))
        weights.append(w[keep])
    flat = np.concatenate(flats)
    out.reshape(-1)[:] += np.bincount(flat, weights=np.concatenate(weights),
                                      minlength=out.size).astype(out.dtype)


def _vessel_distance(grid: _Grid, z0: int, z1: int, scene: _Scene,
                     cap_um: float = 8.0) -> np.ndarray:
    """Signed distance (µm, capped at ``cap_um``) of the voxels of grid slab ``z0:z1`` to
    the nearest vessel surface: each segment's capsule is evaluated in its bounding box."""
    ny, nx = grid.shape_zyx[1:]
    out = np.full((z1 - z0, ny, nx), cap_um, np.float32)
    to_index = grid.scene_to_index()
    to_scene = grid.index_to_scene().astype(np.float32)
    a_all = scene.vessel_points[scene.vessel_segments[:, 0]]
    b_all = scene.vessel_points[scene.vessel_segments[:, 1]]
    bound = np.array([nx, ny, z1])
    for a, b, r in zip(a_all, b_all, scene.vessel_radii, strict=True):
        lo = np.minimum(a, b) - r - cap_um
        hi = np.maximum(a, b) + r + cap_um
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])
                            for z in (lo[2], hi[2])])
        idx = corners @ to_index[:3, :3].T + to_index[:3, 3]
        i0 = np.maximum(np.floor(idx.min(0)).astype(int), [0, 0, z0])
        i1 = np.minimum(np.ceil(idx.max(0)).astype(int) + 1, bound)
        if np.any(i1 <= i0):
            continue
        k, j, i = np.meshgrid(*(np.arange(i0[n], i1[n], dtype=np.float32) for n in (2, 1, 0)),
                              indexing="ij")
        p = [to_scene[c, 0] * i + to_scene[c, 1] * j + to_scene[c, 2] * k + to_scene[c, 3]
             for c in range(3)]
        ab = (b - a).astype(np.float32)
        t = ((p[0] - a[0]) * ab[0] + (p[1] - a[1]) * ab[1] + (p[2] - a[2]) * ab[2]) \
            / np.float32(max(float(ab @ ab), 1e-9))
        np.clip(t, 0.0, 1.0, out=t)
        d = np.sqrt(sum((p[c] - a[c] - t * ab[c]) ** 2 for c in range(3))) - np.float32(r)
        box = (slice(i0[2] - z0, i1[2] - z0), slice(i0[1], i1[1]), slice(i0[0], i1[0]))
        np.minimum(out[box], d, out=out[box])
    return out


def _upsample_linear(low: np.ndarray, coords: list[np.ndarray]) -> np.ndarray:
    """Separable linear interpolation of a small grid at per-axis coordinates (low-grid
    index units): one small matrix product per axis, no per-voxel coordinate arrays."""
    out = low
    for axis, c in enumerate(coords):
        n = low.shape[axis]
        c = np.clip(c, 0, n - 1)
        i0 = np.minimum(np.floor(c).astype(int), n - 2)
        f = (c - i0).astype(np.float32)
        w = np.zeros((len(c), n), np.float32)
        w[np.arange(len(c)), i0] = 1 - f
        w[np.arange(len(c)), i0 + 1] = f
        out = np.moveaxis(np.tensordot(w, out, axes=([1], [axis])), 0, axis)
    return out


def _nuclei_near(scene: _Scene, grid: _Grid, z0: int, z1: int, which: np.ndarray
                 ) -> np.ndarray:
    """Indices (among ``which``) of nuclei whose bounding box meets grid slab z0:z1."""
    to_index = grid.scene_to_index()
    k = scene.centres[which] @ to_index[2, :3] + to_index[2, 3]
    reach = (scene.radii[which] + _EDGE_UM) * np.abs(to_index[2, :3]).sum() + 1
    return which[(k + reach >= z0) & (k - reach < z1)]


def _render_microct(scene: _Scene, grid: _Grid, cfg: TissueConfig,
                    rng: np.random.Generator) -> np.ndarray:
    """microCT grey values (uint8), rendered in z-slabs to bound memory."""
    shape = grid.shape_zyx
    out = np.empty(shape, np.uint8)
    # slow density variation: low-resolution noise, linearly upsampled per slab
    coarse = 24.0
    low_shape = tuple(int(np.ceil(n * s / coarse)) + 3 for n, s in
                      zip(shape, grid.voxel_size_um, strict=True))
    low = ndi.gaussian_filter(rng.standard_normal(low_shape).astype(np.float32), 1.0)
    low *= np.float32(8.0 / max(float(low.std()), 1e-6))
    yx = [np.arange(n) * s / coarse for n, s in zip(shape[1:], grid.voxel_size_um[1:],
                                                       strict=True)]
    all_nuclei = np.arange(len(scene.centres))
    halo = 3
    depth = max(8, 16_000_000 // max(1, shape[1] * shape[2]))
    for z0, z1 in _z_chunks(shape[0], depth):
        a, b = max(0, z0 - halo), min(shape[0], z1 + halo)
        near = _nuclei_near(scene, grid, a, b, all_nuclei)
        nuclei = np.zeros((b - a, shape[1], shape[2]), np.float32)
        _paint_spheres(nuclei, grid, a, scene.centres[near], scene.radii[near],
                       np.ones(len(near), np.float32), _EDGE_UM)
        # one fine texture: chromatin inside nuclei, cell texture outside
        texture = ndi.gaussian_filter(rng.standard_normal(nuclei.shape, np.float32), 0.8)
        texture /= np.float32(max(float(texture.std()), 1e-6))
        slab = _CT_TISSUE + nuclei * np.float32(_CT_NUCLEUS) \
            + (np.float32(3.0) + np.float32(7.0) * nuclei) * texture
        del nuclei, texture
        if len(scene.vessel_segments):
            d = _vessel_distance(grid, a, b, scene)
            slab += np.float32(_CT_LUMEN) * np.clip(0.5 - d / np.float32(_EDGE_UM), 0, 1)
            slab += np.float32(_CT_WALL) * np.exp(-0.5 * ((d - 0.8) / 0.7) ** 2)
            del d
        zc = np.arange(a, b) * grid.voxel_size_um[0] / coarse
        slab += _upsample_linear(low, [zc, *yx])
        slab = ndi.gaussian_filter(slab, 0.6)  # the scanner's resolution
        slab += np.float32(cfg.em_noise_sd) * rng.standard_normal(slab.shape, np.float32)
        if cfg.em_contrast == "dark":
            slab = 255.0 - slab
        out[z0:z1] = np.clip(np.rint(slab[z0 - a:z1 - a]), 0, 255)
    return out


def _render_two_photon(scene: _Scene, grid: _Grid, cfg: TissueConfig,
                       attenuation_um: float, rng: np.random.Generator) -> np.ndarray:
    """Two-photon counts (uint16, channels nuclei and vessels), optical sections.

    Objects are drawn on a grid ``sub`` times finer in z than the LM (≤ 1 µm), blurred by
    the PSF and sampled at the LM planes (an optical section samples, it does not average).
    """
    nz, ny, nx = grid.shape_zyx
    sz, sy, sx = grid.voxel_size_um
    sub = max(1, int(np.ceil(sz / 1.0)))
    fine = _Grid((nz * sub, ny, nx), (sz / sub, sy, sx), grid.to_scene)
    sigma_px = np.asarray(cfg.psf_sigma_um) / np.asarray(fine.voxel_size_um)
    halo = int(np.ceil(4 * sigma_px[0])) + 1
    labelled = np.flatnonzero(scene.label > 0)
    out = np.empty((2, nz, ny, nx), np.uint16)
    planes_per_chunk = max(1, 16_000_000 // (ny * nx * sub))
    for p0, p1 in _z_chunks(nz, planes_per_chunk):
        a, b = max(0, p0 * sub - halo), min(fine.shape_zyx[0], (p1 - 1) * sub + 1 + halo)
        near = _nuclei_near(scene, fine, a, b, labelled)
        label = np.full((b - a, ny, nx), 0.04, np.float32)  # autofluorescent tissue
        _paint_spheres(label, fine, a, scene.centres[near], scene.radii[near],
                       scene.label[near].astype(np.float32), 0.3)
        vessels = np.zeros_like(label)
        if len(scene.vessel_segments):
            inside = np.clip(0.5 - _vessel_distance(fine, a, b, scene) / np.float32(0.3), 0, 1)
            vessels += inside
            label *= 1.0 - inside  # no nuclei, no tissue in a lumen
            del inside
        planes = np.arange(p0, p1) * sub - a
        depth_um = (np.arange(p0, p1) * sz)[:, None, None]
        dim = np.exp(-depth_um / attenuation_um).astype(np.float32)
        for c, signal in enumerate((label, vessels)):
            # blur along z at full resolution, then in-plane only on the sampled planes
            blurred = ndi.gaussian_filter1d(signal, sigma_px[0], axis=0, mode="constant")[planes]
            blurred = ndi.gaussian_filter(blurred, (0.0, *sigma_px[1:]), mode="constant")
            expected = cfg.lm_photons * blurred * dim + cfg.lm_background_photons
            counts = rng.poisson(expected).astype(np.float32)
            counts += np.float32(cfg.lm_read_noise) * rng.standard_normal(counts.shape,
                                                                           np.float32)
            out[c, p0:p1] = np.clip(np.rint(counts + 100.0), 0, 65535)
    return out


# ------------------------------------------------------------------ truth
def _draw_truth(rng: np.random.Generator, cfg: TissueConfig) -> tuple[Affine, dict, tuple]:
    """The EM → LM transform and the ROI (voxel box of the microCT) it maps inside the LM.

    Random orientations are redrawn (up to 100 times) until the mapped ROI fits inside
    the LM field; a tilted, rotated ROI can need more room than the field has.
    """
    em_sp = np.asarray(cfg.em_voxel_size_um[::-1], float)  # x, y, z
    lm_sp = np.asarray(cfg.lm_voxel_size_um[::-1], float)
    roi_n = np.asarray(cfg.roi_shape_zyx[::-1])
    em_n = np.asarray(cfg.em_shape_zyx[::-1])
    lm_extent = (np.asarray(cfg.lm_shape_zyx[::-1]) - 1) * lm_sp
    flip = np.diag([-1.0 if cfg.mirror else 1.0, 1.0, -1.0 if cfg.flip_z else 1.0])
    for _ in range(100):
        angle = float(cfg.rotation_deg if cfg.rotation_deg is not None
                      else rng.uniform(-180.0, 180.0))
        tilt = (np.asarray(cfg.tilt_deg, float) if cfg.tilt_deg is not None
                else rng.uniform(-cfg.max_tilt_deg, cfg.max_tilt_deg, 2))
        s_lat = 1.0 + rng.uniform(-cfg.lateral_scale_change, cfg.lateral_scale_change)
        s_z = float(rng.uniform(*cfg.z_scale_range))
        linear = (np.diag([s_lat, s_lat, s_z])
                  @ rotation_matrix_xyz([tilt[0], tilt[1], angle]) @ flip)
        half = np.abs(linear) @ ((roi_n - 1) / 2.0 * em_sp)
        lo, hi = half + cfg.roi_margin_um, lm_extent - half - cfg.roi_margin_um
        if np.all(hi >= lo):
            break
    else:
        raise InputError("the ROI does not fit inside the LM field at this orientation; "
                         "make roi_shape_zyx smaller or the LM larger")
    roi_start = np.array([rng.integers(0, e - r + 1) for e, r in zip(em_n, roi_n, strict=True)])
    c_em = (roi_start + (roi_n - 1) / 2.0) * em_sp
    c_lm = rng.uniform(lo, hi)
    truth = Affine.from_linear_translation(linear, c_lm - linear @ c_em)
    roi = tuple(slice(int(s), int(s + n)) for s, n in zip(roi_start[::-1], roi_n[::-1],
                                                          strict=True))
    params = {"rotation_deg": angle, "tilt_x_deg": float(tilt[0]), "tilt_y_deg": float(tilt[1]),
              "mirror": bool(cfg.mirror), "flip_z": bool(cfg.flip_z),
              "lateral_scale": float(s_lat), "z_scale": s_z,
              "roi_centre_em_xyz_um": c_em.tolist(), "roi_centre_lm_xyz_um": c_lm.tolist()}
    return truth, params, roi


def simulate_tissue_pair(config: TissueConfig | None = None, *,
                         progress: Callable[[str], None] | None = None,
                         **overrides) -> SimulatedPair:
    """Render a microCT + two-photon pair of thick tissue with its ground truth.

    Parameters
    ----------
    config : TissueConfig, optional
        All parameters (default: the small size).
    progress : callable, optional
        Called with the name of each rendering step as it starts.
    **overrides
        Fields of :class:`TissueConfig` to replace.

    Returns
    -------
    SimulatedPair
        ``em`` (microCT, uint8), ``lm`` (uint16, channels ``nuclei`` and ``vessels``), the
        truth, landmark pairs (labelled nucleus centres inside the ROI) and ``roi`` (the
        ``--roi`` string of the region that lies inside the LM field).
    """
    cfg = replace(config or TissueConfig(), **overrides)
    report = progress or (lambda step: None)
    report("scene")
    rng = np.random.default_rng([cfg.seed, 14])
    truth, params, roi = _draw_truth(rng, cfg)
    lm_to_em = truth.inverse()
    em_sp = np.asarray(cfg.em_voxel_size_um[::-1], float)
    lm_sp = np.asarray(cfg.lm_voxel_size_um[::-1], float)
    em_extent = (np.asarray(cfg.em_shape_zyx[::-1]) - 1) * em_sp
    lm_extent = (np.asarray(cfg.lm_shape_zyx[::-1]) - 1) * lm_sp
    corners = np.array([[x, y, z] for x in (0, lm_extent[0]) for y in (0, lm_extent[1])
                        for z in (0, lm_extent[2])])
    lm_in_scene = lm_to_em.apply(corners)
    margin = 12.0
    lo = np.minimum(lm_in_scene.min(0), 0.0) - margin
    hi = np.maximum(lm_in_scene.max(0), em_extent) + margin
    labelled_fraction = float(rng.uniform(*cfg.labelled_fraction_range))
    attenuation = float(rng.uniform(*cfg.attenuation_length_um))
    scene = _make_scene(rng, lo, hi, cfg, labelled_fraction)
    report("microCT")
    em_grid = _Grid(cfg.em_shape_zyx, cfg.em_voxel_size_um, np.eye(4))
    em_data = _render_microct(scene, em_grid, cfg, np.random.default_rng([cfg.seed, 15]))
    report("two-photon")
    lm_grid = _Grid(cfg.lm_shape_zyx, cfg.lm_voxel_size_um, lm_to_em.matrix)
    lm_data = _render_two_photon(scene, lm_grid, cfg, attenuation,
                                 np.random.default_rng([cfg.seed, 16]))
    # landmarks: labelled nuclei well inside the ROI and the LM field
    roi_lo = np.array([s.start for s in roi[::-1]]) * em_sp + 2.0
    roi_hi = (np.array([s.stop for s in roi[::-1]]) - 1) * em_sp - 2.0
    in_roi = np.all((scene.centres >= roi_lo) & (scene.centres <= roi_hi), axis=1)
    lm_pts = truth.apply(scene.centres)
    in_lm = np.all((lm_pts >= 1.0) & (lm_pts <= lm_extent - 1.0), axis=1)
    chosen = np.flatnonzero(in_roi & in_lm & (scene.label > 0))
    if len(chosen) > cfg.max_landmarks:
        chosen = np.sort(np.random.default_rng([cfg.seed, 17]).choice(
            chosen, cfg.max_landmarks, replace=False))
    em = Volume(em_data, cfg.em_voxel_size_um, channel_names=("microCT",),
                source="simulated microCT")
    lm = Volume(lm_data, cfg.lm_voxel_size_um, channel_names=("nuclei", "vessels"),
                source="simulated two-photon")
    params.update(labelled_fraction=labelled_fraction, attenuation_length_um=attenuation,
                  n_nuclei=int(len(scene.centres)), n_vessel_segments=int(len(
                      scene.vessel_segments)), n_landmarks=int(len(chosen)))
    roi_text = ",".join(f"{s.start}:{s.stop}" for s in roi)
    return SimulatedPair(em, lm, truth, scene.centres[chosen], lm_pts[chosen], cfg, params,
                         roi=roi_text, scene="tissue")
