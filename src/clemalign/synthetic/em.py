"""EM rendering of the monolayer scene.

Stained membranes and dense organelles are dark on bright resin.  Shapes are painted
front to back with anti-aliased edges, then a slow shading and Gaussian detector noise
are applied slice by slice; the result is uint8.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .config import SimulationConfig
from .scene import Capsule, Cell, Ellipsoid, Grid, Sphere, inside_fraction

__all__ = ["render_em"]


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


def _chunks(box: tuple[slice, ...], depth: int) -> Iterator[tuple[slice, ...]]:
    """Split a voxel box along z so that large shapes are rendered in bounded memory."""
    for z0 in range(box[0].start, box[0].stop, depth):
        yield (slice(z0, min(z0 + depth, box[0].stop)), box[1], box[2])


def _paint(slab: np.ndarray, z0: int, grid: Grid, shape: Ellipsoid | Capsule | Sphere,
           box: tuple[slice, ...], *, value: float | None = None, membrane: float = 0.0,
           edge_um: float = 0.1, rim: tuple[float, float, float] | None = None,
           chunk_voxels: int = 4_000_000) -> None:
    """Paint one shape into the EM planes ``slab`` (grid planes ``z0`` on), in place.

    ``box`` is the shape's voxel box on the grid, within the slab's planes.  ``value``
    (grey level) fills the interior with an anti-aliased edge ``edge_um`` (µm) wide;
    ``membrane`` darkens a thin band around the surface by that many grey levels;
    ``rim=(drop, offset_um, width_um)`` darkens a band inside the surface
    (heterochromatin under the nuclear envelope).  The box is painted in z-chunks of at
    most ``chunk_voxels`` voxels.  Every voxel's value depends only on its own position,
    so painting slab by slab gives the same volume as painting it whole.
    """
    plane = (box[1].stop - box[1].start) * (box[2].stop - box[2].start)
    for sub in _chunks(box, max(1, chunk_voxels // max(plane, 1))):
        d = shape.sdf(*grid.scene_coords(sub))
        target = slab[(slice(sub[0].start - z0, sub[0].stop - z0), sub[1], sub[2])]
        inside = inside_fraction(d, edge_um)
        if value is not None:
            target += inside * (np.float32(value) - target)
        if rim is not None:
            drop, offset, width = rim
            target -= np.float32(drop) * inside * np.exp(-0.5 * ((d + offset) / width) ** 2)
        if membrane:
            target -= np.float32(membrane) * np.exp(-0.5 * (d / _EM_MEMBRANE_WIDTH_UM) ** 2)


def _scene(cells: list[Cell]) -> Iterator[tuple[Ellipsoid | Capsule | Sphere, dict]]:
    """The shapes of the scene, front to back, with their paint."""
    for cell in cells:
        yield cell.body, {"value": _EM_CYTOPLASM, "membrane": 70.0}
        yield cell.nucleus, {"value": _EM_NUCLEUS, "membrane": 80.0,
                             "rim": (_EM_HETEROCHROMATIN_DROP, 0.2, 0.12)}
        for s in cell.nucleoli:
            yield s, {"value": _EM_NUCLEOLUS, "edge_um": 0.15}
        for s in cell.vesicles:
            yield s, {"value": _EM_VESICLE, "membrane": 40.0}
        for s in cell.lipid_droplets:
            yield s, {"value": _EM_LIPID, "edge_um": 0.12}
        for s in cell.lysosomes:
            yield s, {"value": _EM_LYSOSOME, "membrane": 20.0}
        for c in cell.mitochondria:
            yield c, {"value": _EM_MITO, "membrane": 45.0}


def render_em(cells: list[Cell], grid: Grid, cfg: SimulationConfig,
              rng: np.random.Generator, *, slab_planes: int = 16) -> np.ndarray:
    """EM grey values (uint8) on ``grid``: the scene drawn front to back, then noise.

    Rendered ``slab_planes`` planes at a time into one float buffer (the whole float
    volume was 600 MB at the default size); the result does not depend on it.
    """
    nz, ny, nx = grid.shape_zyx
    # slow shading: a random smooth gain across the field, and per-slice brightness jitter
    # (drawn before the noise, as when the volume was painted whole: painting draws none)
    yy, xx = np.meshgrid(np.linspace(-1, 1, ny, dtype=np.float32),
                         np.linspace(-1, 1, nx, dtype=np.float32), indexing="ij")
    c = rng.normal(0, 1, 5).astype(np.float32)
    field = (c[0] * xx + c[1] * yy + c[2] * xx * yy + c[3] * (xx * xx - 0.33)
             + c[4] * (yy * yy - 0.33))
    gain = 1.0 + np.float32(cfg.em_shading) * field / max(float(np.abs(field).max()), 1e-6)
    slice_gain = 1.0 + 0.25 * cfg.em_shading * rng.uniform(-1, 1, nz)
    # cells outside the field are skipped whole, as are shapes outside it
    shapes = [(shape, paint, box) for cell in cells
              if grid.index_box(*cell.body.bbox()) is not None
              for shape, paint in _scene([cell])
              if (box := grid.index_box(*shape.bbox())) is not None]
    out = np.empty(grid.shape_zyx, dtype=np.uint8)
    buffer = np.empty((min(slab_planes, nz), ny, nx), dtype=np.float32)
    for z0 in range(0, nz, slab_planes):
        z1 = min(z0 + slab_planes, nz)
        slab = buffer[:z1 - z0]
        slab.fill(_EM_RESIN)
        for shape, paint, box in shapes:
            lo, hi = max(box[0].start, z0), min(box[0].stop, z1)
            if lo < hi:
                _paint(slab, z0, grid, shape, (slice(lo, hi), box[1], box[2]), **paint)
        for z in range(z0, z1):
            noisy = slab[z - z0] * gain * np.float32(slice_gain[z]) + \
                np.float32(cfg.em_noise_sd) * rng.standard_normal((ny, nx), dtype=np.float32)
            np.clip(np.rint(noisy), 0, 255, out=noisy)
            out[z] = noisy
    return out
