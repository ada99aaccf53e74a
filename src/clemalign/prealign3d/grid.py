"""Grids of the 3D pre-alignment: the LM's structure scale, the EM ROI's geometry, the scan
grid and the refinement levels, and blob responses on block-averaged grids."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..representation import Polarity, ScaleSelection, blob_response, select_log_scale
from ..volume import Volume
from .config import Prealign3DConfig

__all__ = ["EmRoi", "ScanGrid", "Levels", "lm_structure_scale", "structure_scale",
           "scan_grid", "refinement_levels", "level_response"]

Box = tuple[slice, slice, slice]


@dataclass(frozen=True, eq=False)
class EmRoi:
    """The EM region of interest: voxel ranges and geometry (EM physical µm, x y z).

    Attributes
    ----------
    slices : tuple of slice
        ``(z, y, x)`` voxel index ranges.
    centre_xyz_um : ndarray, shape (3,)
        Centre of its voxel centres: the point every hypothesis turns about.
    corners_xyz_um : ndarray, shape (8, 3)
        Its corner voxel centres.
    volume_um3 : float
        Volume of its voxels, µm³.
    """

    slices: Box
    centre_xyz_um: np.ndarray
    corners_xyz_um: np.ndarray
    volume_um3: float

    @classmethod
    def of(cls, em: Volume, roi: Box) -> EmRoi:
        """Geometry of the ROI ``roi`` (voxel slices with start and stop) of ``em``."""
        centre_kji = np.array([(s.start + s.stop - 1) / 2.0 for s in roi])
        corners = em.index_to_physical(np.array(
            [[k, j, i] for k in (roi[0].start, roi[0].stop - 1)
             for j in (roi[1].start, roi[1].stop - 1) for i in (roi[2].start, roi[2].stop - 1)],
            float))
        volume = float(np.prod([(sl.stop - sl.start) * v for sl, v in
                                zip(roi, em.voxel_size_um, strict=True)]))
        return cls(roi, em.index_to_physical(centre_kji), corners, volume)


@dataclass(frozen=True)
class ScanGrid:
    """The isotropic grid of the orientation scan.

    Attributes
    ----------
    pixel_um : float
        Its pixel, µm.
    sigma_um : float
        LoG scale of its blob responses, µm (at least 1.2 pixels).
    floor_um : float
        No grid is finer than this (the coarser lateral voxel of EM and LM), µm.
    """

    pixel_um: float
    sigma_um: float
    floor_um: float


@dataclass(frozen=True)
class Levels:
    """Pixel and LoG scale (µm) of the scan grid (level 0) and each finer refinement
    level."""

    pixels_um: tuple[float, ...]
    sigmas_um: tuple[float, ...]


def lm_structure_scale(lm: Volume, *, n_planes: int = 4, pixel_um: float = 1.0,
                       polarity: Polarity = "bright") -> tuple[float, ScaleSelection]:
    """3D LoG scale (µm) of the LM's structures (of ``polarity``), from blob counting on
    a few planes.

    Planes (binned to at most ``pixel_um``) are used because a thick stack's z voxel is
    often coarser than its structures.  A 2D section of a sphere of radius ``r`` selects
    ``σ₂ ≈ r/√2``; the 3D scale of that sphere is ``r/√3``.  A structure seen in 3D spans
    about two planes, so the scale is at least half the z voxel: blob counting on the
    sharp-edged sections of labelled nuclei can pick a scale of edge noise instead
    (measured 0.52 µm on one of 20 simulated two-photon stacks, whose 3D search then
    failed; nuclei select ~1.7 µm).

    Returns
    -------
    sigma_um : float
        The 3D scale, ``max(σ₂·√(2/3), z voxel / 2)``.
    selection : ScaleSelection
        The 2D selection on the planes (for reports).
    """
    data = lm.data
    nz = data.shape[0]
    picks = np.unique(np.linspace(0.2 * (nz - 1), 0.8 * (nz - 1), n_planes).round().astype(int))
    sy, sx = lm.voxel_size_um[1:]
    f = [max(1, int(pixel_um // s)) for s in (sy, sx)]
    planes = []
    for k in picks:
        plane = np.asarray(data[k], np.float32)
        h, w = (plane.shape[0] // f[0]) * f[0], (plane.shape[1] // f[1]) * f[1]
        planes.append(plane[:h, :w].reshape(h // f[0], f[0], w // f[1], f[1]).mean((1, 3)))
    sel = select_log_scale(np.stack(planes), (1.0, sy * f[0], sx * f[1]), polarity=polarity,
                           per_slice=True)
    return float(max(sel.sigma_um * np.sqrt(2.0 / 3.0), 0.5 * lm.voxel_size_um[0])), sel


def structure_scale(lm: Volume, config: Prealign3DConfig,
                    known: tuple[float, ScaleSelection] | None = None
                    ) -> tuple[float, ScaleSelection | None]:
    """The structure scale (µm): ``config.structure_sigma_um`` if set (no selection),
    else ``known`` (the caller's :func:`lm_structure_scale`), else measured on ``lm``."""
    if config.structure_sigma_um is not None:
        return float(config.structure_sigma_um), None
    sigma, selection = known or lm_structure_scale(lm)
    return sigma, selection


def scan_grid(em: Volume, lm: Volume, structure_um: float,
              config: Prealign3DConfig) -> ScanGrid:
    """The scan grid: ``scan_pixel_scales`` structure scales, coarser when the LM would
    exceed ``scan_voxels`` on it, never finer than either lateral voxel."""
    floor = max(max(lm.voxel_size_um[1:]), max(em.voxel_size_um[1:]))
    pixel = max(config.scan_pixel_scales * structure_um, floor,
                float(np.prod(lm.extent_um) / config.scan_voxels) ** (1 / 3))
    return ScanGrid(pixel, max(structure_um, 1.2 * pixel), floor)


def refinement_levels(grid: ScanGrid, structure_um: float, roi_volume_um3: float,
                      config: Prealign3DConfig) -> Levels:
    """The scan grid, then grids twice finer (at most four in all) down to the final
    pixel (``config.final_pixel_um``, default: a structure scale / 1.5, at least the
    floor, and coarse enough that the ROI holds at most ``refine_voxels``)."""
    final = float(config.final_pixel_um or max(structure_um / 1.5, grid.floor_um,
                                               (roi_volume_um3 / config.refine_voxels)
                                               ** (1 / 3)))
    levels = [grid.pixel_um]
    while levels[-1] > 1.25 * final and len(levels) < 4:
        levels.append(max(final, levels[-1] / 2.0))
    return Levels(tuple(levels), tuple(max(structure_um, 1.2 * px) for px in levels))


def level_response(volume: Volume, pixel_um: float, sigma_um: float, polarity: str, *,
                   box_kji: Box | None = None, normalise_planes: bool = False) -> Volume:
    """Blob response of a (cropped) volume on a grid of about ``pixel_um``.

    The volume is block-averaged (``registration.working_volume``; z is not refined
    beyond the volume's own voxel), then filtered at ``sigma_um`` (µm).  With
    ``normalise_planes`` each z-plane is divided by its robust spread, so that signal
    dimmed with depth weighs like the surface's.
    """
    from ..registration import working_volume

    work = working_volume(volume, (pixel_um, pixel_um, pixel_um), box_kji)
    axes = tuple(a for a, n in enumerate(work.shape_zyx) if n >= 3)
    resp = blob_response(work.data, sigma_um, work.voxel_size_um, polarity,  # type: ignore[arg-type]
                         axes=axes)
    if normalise_planes:
        flat = resp.reshape(resp.shape[0], -1)
        med = np.median(flat, axis=1)
        mad = np.median(np.abs(flat - med[:, None]), axis=1)
        scale = np.where(mad > 0, 1.0 / (1.4826 * np.maximum(mad, 1e-30)), 0.0)
        resp = ((resp - med[:, None, None]) * scale[:, None, None].astype(np.float32))
    return work.with_data(np.ascontiguousarray(resp, dtype=np.float32))
