"""The monolayer scene: adherent cells on a coverslip, in LM physical µm ``(x, y, z)``.

Each shape gives an approximate signed distance in µm (negative inside) at scene points,
and its axis-aligned bounding box in the scene.  Accuracy matters only near the surface,
where membranes and anti-aliased edges are drawn.  A :class:`Grid` maps the voxels of
either instrument into the scene, so EM and LM render the same cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import SimulationConfig

__all__ = ["Ellipsoid", "Capsule", "Sphere", "Cell", "make_cells", "Grid", "inside_fraction"]


@dataclass(frozen=True)
class Ellipsoid:
    """An ellipsoid rotated by ``phi`` about z, optionally cut below ``z = floor_z`` (µm)."""

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
class Capsule:
    """A cylinder with hemispherical caps from ``p0`` to ``p1`` (µm): a mitochondrion."""

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
class Sphere:
    """A sphere (µm): nucleolus, lysosome, lipid droplet or vesicle."""

    centre: np.ndarray
    radius: float

    def sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        dx, dy, dz = x - self.centre[0], y - self.centre[1], z - self.centre[2]
        return np.sqrt(dx * dx + dy * dy + dz * dz) - self.radius

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        return self.centre - self.radius, self.centre + self.radius


@dataclass
class Cell:
    """One adherent cell: its body, nucleus and organelles, in scene µm."""

    body: Ellipsoid
    nucleus: Ellipsoid
    nucleoli: list[Sphere]
    mitochondria: list[Capsule]
    lysosomes: list[Sphere]
    lipid_droplets: list[Sphere]
    vesicles: list[Sphere]


def _uniform_in_ellipse(rng: np.random.Generator, n: int, a: float, b: float,
                        rmax: float) -> tuple[np.ndarray, np.ndarray]:
    r = rmax * np.sqrt(rng.uniform(0, 1, n))
    t = rng.uniform(0, 2 * np.pi, n)
    return a * r * np.cos(t), b * r * np.sin(t)


def _make_cell(rng: np.random.Generator, centre_xy: np.ndarray, a: float, b: float,
               height: float, phi: float, floor_z: float) -> Cell:
    """Draw one adherent cell (a half-ellipsoid on the coverslip) and its organelles."""
    body = Ellipsoid(np.array([centre_xy[0], centre_xy[1], floor_z]),
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
    nucleus = Ellipsoid(n_centre, n_semi, phi + rng.uniform(-0.3, 0.3))
    nucleoli = []
    for _ in range(rng.integers(1, 3)):
        offset = rng.uniform(-0.35, 0.35, 3) * n_semi
        nucleoli.append(Sphere(n_centre + offset, float(rng.uniform(0.5, 0.9)) *
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
            mitochondria.append(Capsule(p0, p1, float(radius)))
    lysosomes = [Sphere(c, float(rng.uniform(0.2, 0.45)))
                 for c in sample_inside(int(rng.poisson(0.025 * area)), 0.5)]
    lipid_droplets = [Sphere(c, float(rng.uniform(0.3, 0.7)))
                      for c in sample_inside(int(rng.poisson(0.008 * area)), 0.75)]
    vesicles = [Sphere(c, float(rng.uniform(0.08, 0.16)))
                for c in sample_inside(int(rng.poisson(0.08 * area)), 0.2)]
    return Cell(body, nucleus, nucleoli, mitochondria, lysosomes, lipid_droplets, vesicles)


def make_cells(rng: np.random.Generator, cfg: SimulationConfig, lm_extent_xy: np.ndarray,
               floor_z: float, max_height: float) -> list[Cell]:
    """Scatter non-overlapping cells over the LM field (a few cut by its border)."""
    area = float(lm_extent_xy[0] * lm_extent_xy[1])
    n_target = max(3, round(area / (2800.0 * cfg.scale**2)))
    cells: list[Cell] = []
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


@dataclass(frozen=True)
class Grid:
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


def inside_fraction(d: np.ndarray, edge_um: float) -> np.ndarray:
    """Anti-aliased inside indicator from a signed distance (µm): 1 inside, 0 outside,
    a linear ramp ``edge_um`` wide across the surface."""
    return np.clip(0.5 - d / np.float32(edge_um), 0.0, 1.0)
