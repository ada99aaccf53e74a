"""Confocal LM rendering of the monolayer scene.

Channel ``mito``: the label fills every mitochondrion (point samples splatted onto the
grid, so sub-voxel mitochondria keep their share of signal) plus a faint cytosolic haze;
channel ``autofluorescence``: weak cytoplasm and nuclei.  Both are blurred by the PSF,
dimmed by vignetting and given Poisson and read noise (uint16 counts).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .config import SimulationConfig
from .scene import Capsule, Cell, Grid, inside_fraction

__all__ = ["render_lm"]


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


def _sample_capsules(rng: np.random.Generator, capsules: list[Capsule],
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


def render_lm(cells: list[Cell], grid: Grid, cfg: SimulationConfig,
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
            target[box] = np.maximum(target[box], inside_fraction(d, edge))
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
