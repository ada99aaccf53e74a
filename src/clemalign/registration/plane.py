"""In-plane fine registration: sections and stacks too thin for a 3D fit.

A single EM section, an array-tomography ribbon of a few sections or a 3-plane LM stack
leaves fewer than three planes on the 3D stage's working grid, where a 3D LoG and a
3D mutual information are undefined.  Here the EM ROI is averaged through its depth and
the LM projected to one plane (maximum intensity), both take the 2D blob response at the
LM's structure scale, and SimpleITK maximises Mattes MI over a 2D rigid transform, then a
similarity (or an affine).  z is not fitted: the EM maps one to one onto the LM plane
whose blob response shares the most information with the EM's.
Each stage is kept only when it raises our mutual information over what came before —
the pre-alignment included — so the refinement never makes a result worse by that
measure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from .._timing import StepTimer
from ..representation import Polarity, blob_response
from ..transforms import Affine
from ..volume import Volume
from .config import Registration3DConfig, Registration3DResult, StageResult
from .metric import MetricContext, Samples
from .stages import execute, registration_method
from .starts import perturbations
from .working import WorkingGrid, clip_tails, mirror_x, working_volume

__all__ = ["register_plane", "too_thin_for_3d"]

_DEFAULT_CONFIG = Registration3DConfig()  # frozen: safe to share as the default

# planes a 3D LoG (3 taps per axis at least) and a 3D fit need on the working grid
MIN_WORKING_PLANES = 3


def too_thin_for_3d(em: Volume, lm: Volume, roi_kji: tuple[slice, slice, slice],
                    lm_sigma_um: float | None,
                    config: Registration3DConfig = _DEFAULT_CONFIG) -> str | None:
    """Why the 3D stage cannot run on this pair, or None when it can.

    Parameters
    ----------
    em, lm : Volume
        Single-channel volumes.
    roi_kji : tuple of slices
        EM ROI, voxel indices.
    lm_sigma_um : float, optional
        LM structure scale, µm (as for :func:`~clemalign.registration.register_3d`).
    config : Registration3DConfig

    Returns
    -------
    str or None
        A sentence naming the thin input and its planes on the working grid.
    """
    own = roi_kji[0].stop - roi_kji[0].start
    if own < MIN_WORKING_PLANES:
        return f"the EM ROI has {own} plane(s), fewer than {MIN_WORKING_PLANES}"
    grid = WorkingGrid.choose(em, lm, roi_kji, lm_sigma_um, config)
    em_depth_um = own * em.voxel_size_um[0]
    em_planes = int(em_depth_um / grid.z_um + 1e-9)
    if em_planes < MIN_WORKING_PLANES:
        return (f"the EM ROI is {em_depth_um:.2f} µm deep: {em_planes} plane(s) at the "
                f"working z of {grid.z_um:.2f} µm, fewer than {MIN_WORKING_PLANES}")
    if lm.shape_zyx[0] < MIN_WORKING_PLANES:
        return (f"the LM has {lm.shape_zyx[0]} plane(s), fewer than {MIN_WORKING_PLANES}")
    return None


def _plane_grid(em: Volume, lm: Volume, roi: tuple[slice, slice, slice],
                lm_sigma_um: float | None, config: Registration3DConfig) -> WorkingGrid:
    """Scale and pixel of the in-plane fit: the LM's structure scale (at least two LM
    pixels), not the 3D stage's 1 µm floor — a section's ROI is a few tens of µm wide
    and at 1 µm holds too few structures for mutual information to single out the right
    placement (measured on DeepCLEM sections: rivals scored above it)."""
    lm_px = float(lm.voxel_size_um[2])
    sigma = float(config.log_sigma_um or max(lm_sigma_um or 0.0, 2.0 * lm_px))
    roi_um = np.array([s.stop - s.start for s in roi[1:]]) * np.asarray(em.voxel_size_um[1:])
    budget_pixel = float(np.sqrt(np.prod(roi_um) / config.working_voxels))
    pixel = float(config.working_pixel_um or max(lm_px, sigma / 2.25, budget_pixel))
    return WorkingGrid(sigma, float(em.voxel_size_um[0]), pixel)


def _plane(vol: Volume, data2d: np.ndarray, z_um: float) -> Volume:
    """A one-plane volume at ``z_um`` with ``vol``'s lateral grid."""
    origin = np.array(vol.origin_xyz_um, float)
    origin[2] = z_um
    return Volume(data2d[None].astype(np.float32), vol.voxel_size_um, tuple(origin))


def _slab(plane: Volume) -> Volume:
    """The plane repeated at z ± 1 µm: samples mapped near it read it by linear
    interpolation instead of falling off a one-plane grid."""
    z0 = float(plane.origin_xyz_um[2])
    origin = (plane.origin_xyz_um[0], plane.origin_xyz_um[1], z0 - 1.0)
    return Volume(np.repeat(plane.data, 3, axis=0), (1.0, *plane.voxel_size_um[1:]), origin)


def _to_sitk_2d(plane: Volume):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(plane.data[0], dtype=np.float32))
    image.SetSpacing((float(plane.voxel_size_um[2]), float(plane.voxel_size_um[1])))
    image.SetOrigin((float(plane.origin_xyz_um[0]), float(plane.origin_xyz_um[1])))
    return image


def _in_plane(start: Affine, centre_xy: np.ndarray, model: str):
    """SimpleITK 2D transform about ``centre_xy`` at ``start``'s in-plane part (rigid and
    similarity at its nearest rotation, similarity with its mean scale)."""
    import SimpleITK as sitk

    linear = start.linear[:2, :2]
    u, _, vt = np.linalg.svd(linear)
    rot = u @ vt
    if model == "affine":
        transform = sitk.AffineTransform(2)
        transform.SetMatrix(tuple(float(v) for v in linear.ravel()))
    else:
        transform = sitk.Euler2DTransform() if model == "rigid" else sitk.Similarity2DTransform()
        transform.SetAngle(float(np.arctan2(rot[1, 0], rot[0, 0])))
        if model == "similarity":
            transform.SetScale(float(np.sqrt(abs(np.linalg.det(linear)))))
    transform.SetCenter(tuple(float(v) for v in centre_xy))
    mapped = linear @ centre_xy + start.translation_um[:2]
    transform.SetTranslation(tuple(float(v) for v in mapped - centre_xy))
    return transform


def _embed(transform, z_shift_um: float) -> Affine:
    """4×4 of a SimpleITK 2D matrix-offset transform; z shifted by ``z_shift_um``."""
    a = np.asarray(transform.GetMatrix(), float).reshape(2, 2)
    c = np.asarray(transform.GetCenter(), float)
    t = np.asarray(transform.GetTranslation(), float)
    m = np.eye(4)
    m[:2, :2] = a
    m[:2, 3] = c + t - a @ c
    m[2, 3] = z_shift_um
    return Affine(m)


def _optimise(model: str, fixed, moving, start: Affine, centre_xy: np.ndarray,
              n_fixed: int, config: Registration3DConfig) -> StageResult:
    """One SimpleITK stage in the plane, from ``start`` (its z row is kept)."""
    initial = _in_plane(start, centre_xy, model)
    iterations = config.rigid_iterations if model == "rigid" else config.affine_iterations
    t0 = time.perf_counter()
    reg = registration_method(config, n_fixed, iterations, gradient_filter=True)
    reg.SetInitialTransform(initial, inPlace=False)
    run = execute(reg, fixed, moving, initial)
    return StageResult(f"{model} in-plane", _embed(run.transform, float(start.matrix[2, 3])),
                       tuple(run.transform.GetParameters()), run.metric, run.iterations,
                       run.stop_condition, time.perf_counter() - t0,
                       lost_overlap=run.lost_overlap)


@dataclass(frozen=True, eq=False)
class _PlaneImages:
    """The fixed and moving planes of one in-plane refinement, in the fixed frame.

    ``pre`` maps the (x-mirrored when the start is) fixed frame to the EM; ``lm_responses``
    holds every LM plane's blob response, for the choice of plane.
    """

    fixed: Volume
    moving: Volume
    lm_responses: list[np.ndarray]
    lm_planes_z_um: np.ndarray
    pre: Affine
    centre: np.ndarray
    mirrored: bool
    roi_spacing_um: tuple[float, float, float]


def _plane_images(em: Volume, lm: Volume, roi: tuple[slice, slice, slice], grid: WorkingGrid,
                  initial: Affine, polarity: tuple[Polarity, Polarity]) -> _PlaneImages:
    """EM ROI averaged through its depth and the LM's maximum projection, as blob
    responses on the working pixel; the EM x-mirrored when ``initial`` is."""
    em_roi = working_volume(em, (em.voxel_size_um[0], grid.pixel_um, grid.pixel_um), roi)
    lm_w = working_volume(lm, (lm.voxel_size_um[0], grid.pixel_um, grid.pixel_um))
    centre = em.index_to_physical(np.array([(s.start + s.stop - 1) / 2.0 for s in roi]))
    n = lm.shape_zyx[0]
    planes_z = lm.index_to_physical(
        np.stack([np.arange(n), np.zeros(n), np.zeros(n)], axis=1).astype(float))[:, 2]

    def response(data2d: np.ndarray, spacing, pol: Polarity) -> np.ndarray:
        return clip_tails(blob_response(data2d, grid.sigma_um, spacing[1:], pol, fast=False))

    fixed_plane = _plane(em_roi, em_roi.data.mean(axis=0), float(centre[2]))
    fixed = response(fixed_plane.data[0], fixed_plane.voxel_size_um, polarity[0])
    mirrored = bool(np.linalg.det(initial.linear[:2, :2]) < 0)
    pre = mirror_x(fixed_plane) if mirrored else Affine.identity()
    if mirrored:  # a rigid transform cannot flip handedness: flip the EM instead
        fixed = np.ascontiguousarray(fixed[:, ::-1])
    moving = response(lm_w.data.max(axis=0), lm_w.voxel_size_um, polarity[1])
    per_plane = [response(p, lm_w.voxel_size_um, polarity[1]) for p in lm_w.data] \
        if n > 1 else [moving]
    return _PlaneImages(fixed_plane.with_data(fixed[None]),
                        _plane(lm_w, moving, float(planes_z[0])), per_plane, planes_z, pre,
                        centre, mirrored, tuple(float(v) for v in em_roi.voxel_size_um))


def _best_plane(images: _PlaneImages, samples: Samples, placement: Affine,
                bins: int) -> tuple[int, list[float]]:
    """The LM plane whose blob response shares the most information with the EM under
    ``placement`` (its z row ignored), and each plane's MI."""
    mis = []
    for k, resp in enumerate(images.lm_responses):
        slab = _slab(_plane(images.moving, resp, float(images.lm_planes_z_um[k])))
        m = placement.matrix.copy()
        m[2] = [0.0, 0.0, 1.0, float(images.lm_planes_z_um[k] - images.centre[2])]
        ctx = MetricContext(samples, samples.head(3), slab, slab.data, bins)
        mis.append(float(-ctx.metric(images.fixed.data, Affine(m))))
    return int(np.argmax(mis)), mis


def _keep_improving(candidates: list[Affine], stages: list[StageResult],
                    metric: MetricContext, fixed: np.ndarray) -> tuple[int, np.ndarray]:
    """Index of the candidate kept (the start, then each stage only when it raises our MI
    over the best before it) and every candidate's MI; stages not kept are marked."""
    mi = -metric.profile(fixed, candidates)
    best = 0
    for k in range(1, len(candidates)):
        if mi[k] > mi[best]:
            best = k
        else:
            stages[k - 1] = _not_kept(stages[k - 1], mi[k], mi[best])
    return best, mi


def register_plane(em: Volume, lm: Volume, initial_em_to_lm: Affine, *,
                   roi_kji: tuple[slice, slice, slice] | None = None,
                   lm_sigma_um: float | None = None,
                   config: Registration3DConfig = _DEFAULT_CONFIG,
                   polarity: tuple[Polarity, Polarity] = ("dark", "bright"),
                   reason: str = "", progress=None) -> Registration3DResult:
    """Refine an XY pre-alignment in the plane: 2D rigid, then ``config.plane_model``.

    Parameters
    ----------
    em, lm : Volume
        Single-channel volumes, any depth (one plane included).
    initial_em_to_lm : Affine
        The pre-alignment, µm → µm (a mirror allowed).
    roi_kji : tuple of slices, optional
        EM ROI, voxel indices (default: all of it).
    lm_sigma_um : float, optional
        LM structure scale, µm (the blob-response scale, at least two LM pixels).
    config : Registration3DConfig
        Metric, optimiser and pyramid settings, ``plane_model`` (the z ones unused;
        ``model="rigid"`` stops after the rigid stage).
    polarity : (EM polarity, LM polarity)
        Blob polarities found by stage 1.
    reason : str
        Why the 3D stage did not run (recorded in ``z_search``).
    progress : callable, optional
        Called with (step name, fraction done).

    Returns
    -------
    Registration3DResult
        Stages named ``"rigid in-plane"`` and ``"<plane_model> in-plane"``; ``z_search``
        says ``mode: "in-plane"``, the reason, the LM plane chosen (the one whose blob
        response shares the most information with the EM's, ``mi_by_lm_plane``) and
        which step was kept.  The final transform maps EM z one to one onto that plane.
    """
    timer = StepTimer(progress)
    roi = roi_kji or tuple(slice(0, n) for n in em.shape_zyx)
    grid = _plane_grid(em, lm, roi, lm_sigma_um, config)
    images = _plane_images(em, lm, roi, grid, initial_em_to_lm, polarity)
    timer.tick("representation", 0.2)
    pre, centre_f = images.pre, images.pre.apply(images.centre[None])[0]
    # registered on the LM projection, z put on its first plane (the plane is chosen last)
    g_start = initial_em_to_lm @ pre
    g_start = Affine(np.vstack([g_start.matrix[:2], [
        [0.0, 0.0, 1.0, float(images.lm_planes_z_um[0] - images.centre[2])], [0, 0, 0, 1]]]))
    moving_slab = _slab(images.moving)
    samples = Samples.draw(images.fixed, config.samples, config.seed)
    metric = MetricContext(samples, samples.head(3), moving_slab, moving_slab.data,
                           config.histogram_bins)
    fixed_sitk, moving_sitk = _to_sitk_2d(images.fixed), _to_sitk_2d(images.moving)
    n_fixed = int(np.prod(images.fixed.shape_zyx))
    stages = [_optimise("rigid", fixed_sitk, moving_sitk, g_start, centre_f[:2], n_fixed,
                        config)]
    timer.tick("rigid", 0.6)
    if config.model == "affine":
        stages.append(_optimise(config.plane_model, fixed_sitk, moving_sitk,
                                stages[0].em_to_lm, centre_f[:2], n_fixed, config))
        timer.tick("affine", 0.9)
    candidates = [g_start] + [s.em_to_lm for s in stages]
    best, mi = _keep_improving(candidates, stages, metric, images.fixed.data)
    g_final = candidates[best]
    perturbed = tuple(-metric.metric(images.fixed.data, g_final @ p)
                      for p in perturbations(centre_f, images.fixed.extent_um, False))
    plane, mi_planes = _best_plane(images, samples, g_final, config.histogram_bins)
    to_plane = Affine.from_translation(
        [0.0, 0.0, float(images.lm_planes_z_um[plane] - images.lm_planes_z_um[0])])
    z_search = {"mode": "in-plane", "reason": reason, "lm_plane": plane,
                "lm_plane_z_um": float(images.lm_planes_z_um[plane]),
                "mi_by_lm_plane": mi_planes,
                "kept": ("pre-alignment", *(s.name for s in stages))[best]}
    return Registration3DResult(
        em_to_lm=to_plane @ g_final @ pre, initial_em_to_lm=g_start @ pre, z_offset_um=0.0,
        z_search=z_search,
        stages=tuple(_in_em_frame(s, to_plane, pre) for s in stages),
        metric_initial=float(-mi[0]), metric_final=float(-mi[best]),
        log_sigma_um=grid.sigma_um,
        working_spacing_um=(images.roi_spacing_um[0], grid.pixel_um, grid.pixel_um),
        timings_s=timer.total(),
        starts=({"start_em_to_lm": initial_em_to_lm.to_list(), "mirrored": images.mirrored,
                 "reversed_z": False, "z_offset_um": 0.0,
                 "mutual_information_rigid": float(mi[1]), "chosen": True},),
        mirrored=images.mirrored, mutual_information_perturbed=perturbed)


def _not_kept(stage: StageResult, mi: float, mi_before: float) -> StageResult:
    return replace(stage, kept=False, stop_condition=(
        f"not kept: MI {mi:.4f} ≤ {mi_before:.4f} before it; " + stage.stop_condition))


def _in_em_frame(stage: StageResult, to_plane: Affine, pre: Affine) -> StageResult:
    return replace(stage, em_to_lm=to_plane @ stage.em_to_lm @ pre)

