"""The 3D pre-alignment stage, :func:`prealign_3d` (steps: :mod:`clemalign.prealign3d`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .._timing import StepTimer
from ..errors import InputError
from ..representation import ScaleSelection
from ..volume import Volume
from .config import Prealign3DConfig, Prealign3DResult
from .grid import EmRoi, level_response, refinement_levels, scan_grid, structure_scale
from .refine import refine_levels
from .scan import hypotheses, margins, scan_orientations

__all__ = ["prealign_3d"]

# a module-level default (frozen): ruff's B008 cannot see that a call from another
# module is immutable
_DEFAULT_CONFIG = Prealign3DConfig()


def _check(em: Volume, lm: Volume, roi: tuple[slice, slice, slice]) -> None:
    """Single-channel 3D volumes, and an ROI at most 1.5 times the LM field in x and y."""
    if em.data.ndim != 3 or lm.data.ndim != 3:
        raise InputError("prealign_3d: em and lm must be single-channel 3D volumes")
    roi_ext = np.array([s.stop - s.start for s in roi]) * np.asarray(em.voxel_size_um)
    lm_ext = np.asarray(lm.extent_um)
    if roi_ext[1] > lm_ext[1] * 1.5 or roi_ext[2] > lm_ext[2] * 1.5:
        raise InputError(f"the EM ROI ({roi_ext[2]:.1f} × {roi_ext[1]:.1f} µm) is much larger "
                         f"than the LM field ({lm_ext[2]:.1f} × {lm_ext[1]:.1f} µm); check "
                         "both voxel sizes, or choose a smaller roi")


def prealign_3d(em: Volume, lm: Volume, *, roi: tuple[slice, slice, slice] | None = None,
                config: Prealign3DConfig = _DEFAULT_CONFIG,
                structure: tuple[float, ScaleSelection] | None = None,
                progress: Callable[[str, float], None] | None = None) -> Prealign3DResult:
    """Place the EM ROI in the LM volume: orientation (with mirror, reversed z, tilt),
    position in x, y and z.

    Parameters
    ----------
    em : Volume
        EM (or microCT) volume, one channel.
    lm : Volume
        The LM channel to register.
    roi : tuple of slices, optional
        EM ROI in voxel indices (default: the whole EM).
    config : Prealign3DConfig
    structure : (float, ScaleSelection), optional
        :func:`~clemalign.prealign3d.lm_structure_scale` of ``lm`` when the caller has it
        already.
    progress : callable, optional
        Called with (step name, fraction of the stage done).

    Returns
    -------
    Prealign3DResult

    Raises
    ------
    InputError
        If ``em`` or ``lm`` is not a single-channel 3D volume, the ROI is much larger than
        the LM field, or no placement overlaps the LM enough.
    """
    timer = StepTimer(progress)
    roi = roi or tuple(slice(0, n) for n in em.shape_zyx)  # type: ignore[assignment]
    _check(em, lm, roi)
    box = EmRoi.of(em, roi)
    sigma_structure, selection = structure_scale(lm, config, structure)
    timer.tick("structure_scale", 0.05)

    # the scan: one coarse isotropic grid; block means, so full resolution is never float
    grid = scan_grid(em, lm, sigma_structure, config)
    em_resp = level_response(em, grid.pixel_um, grid.sigma_um, "dark", box_kji=roi)
    lm_resp = level_response(lm, grid.pixel_um, grid.sigma_um, "bright", normalise_planes=True)
    timer.tick("scan_representation", 0.15)
    scan = scan_orientations(em_resp, lm_resp, box.centre_xyz_um, grid.sigma_um, config)
    hyps = hypotheses(scan, lm_resp, config)
    confidence = margins(scan, em_resp, lm_resp, box.centre_xyz_um, hyps[0])
    timer.tick("scan", 0.55)

    # refinement: the scan grid (from tilted starts too), then twice finer grids
    levels = refinement_levels(grid, sigma_structure, box.volume_um3, config)
    hyps = refine_levels(hyps, em, lm, box, levels, (em_resp, lm_resp), scan, config, timer)
    confidence["refined_ncc"] = float(hyps[0].ncc)
    return Prealign3DResult(
        initial_em_to_lm=hyps[0].em_to_lm(box.centre_xyz_um),
        em_roi_centre_xyz_um=box.centre_xyz_um, hypotheses=tuple(hyps),
        confidence=confidence, scan=scan.record(grid.pixel_um, grid.sigma_um),
        sigmas_um={"structure": sigma_structure, "levels": list(levels.sigmas_um)},
        levels_um=levels.pixels_um, timings_s=timer.total(),
        roi_corners_xyz_um=box.corners_xyz_um, lm_response=lm_resp,
        scale_selections={"LM planes": selection.to_dict()} if selection else {})
