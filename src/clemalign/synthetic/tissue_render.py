"""Rendering of the thick-tissue scene by microCT and by a two-photon microscope.

Both render in z-slabs to bound memory (the publication size is ~1 G voxels).  Nuclei
are painted all at once as anti-aliased spheres; vessels as capsules, one bounding box
per segment.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .config import TissueConfig
from .tissue_scene import Scene

__all__ = ["Grid", "render_microct", "render_two_photon"]

# microCT grey levels (attenuation display, 0–255)
_CT_TISSUE = 118.0
_CT_NUCLEUS = 46.0  # added inside nuclei
_CT_LUMEN = -58.0  # added inside vessel lumens
_CT_WALL = 18.0  # vessel wall ring
_EDGE_UM = 0.6  # anti-aliased surface width


@dataclass(frozen=True)
class Grid:
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


def _paint_spheres(out: np.ndarray, grid: Grid, z0: int, centres: np.ndarray,
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


def _vessel_distance(grid: Grid, z0: int, z1: int, scene: Scene,
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


def _nuclei_near(scene: Scene, grid: Grid, z0: int, z1: int, which: np.ndarray
                 ) -> np.ndarray:
    """Indices (among ``which``) of nuclei whose bounding box meets grid slab z0:z1."""
    to_index = grid.scene_to_index()
    k = scene.centres[which] @ to_index[2, :3] + to_index[2, 3]
    reach = (scene.radii[which] + _EDGE_UM) * np.abs(to_index[2, :3]).sum() + 1
    return which[(k + reach >= z0) & (k - reach < z1)]


def render_microct(scene: Scene, grid: Grid, cfg: TissueConfig,
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


def render_two_photon(scene: Scene, grid: Grid, cfg: TissueConfig,
                      attenuation_um: float, rng: np.random.Generator) -> np.ndarray:
    """Two-photon counts (uint16, channels nuclei and vessels), optical sections.

    Objects are drawn on a grid ``sub`` times finer in z than the LM (≤ 1 µm), blurred by
    the PSF and sampled at the LM planes (an optical section samples, it does not average).
    """
    nz, ny, nx = grid.shape_zyx
    sz, sy, sx = grid.voxel_size_um
    sub = max(1, int(np.ceil(sz / 1.0)))
    fine = Grid((nz * sub, ny, nx), (sz / sub, sy, sx), grid.to_scene)
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
