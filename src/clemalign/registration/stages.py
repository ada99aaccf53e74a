"""One SimpleITK optimisation stage (rigid or affine) of the 3D registration.

SimpleITK's ``ImageRegistrationMethod`` maximises Mattes mutual information over a rigid
transform (``Euler3DTransform`` about the ROI centre) or a 12-parameter affine.  The
transform it finds maps fixed (EM) physical points to moving (LM) physical points —
exactly ``em_to_lm`` in the frame the fixed image is given in.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ..errors import InputError
from ..transforms import Affine
from ..volume import Volume, to_sitk
from .config import (
    AFFINE_PARAMETERS,
    HELD_TERMS,
    Model,
    Registration3DConfig,
    StageResult,
)

__all__ = ["Executed", "StageImages", "execute", "one_itk_thread", "overlap_mask",
           "registration_method", "run_stage"]

LOST_OVERLAP = "lost the overlap with the LM; kept the start"


@dataclass(frozen=True, eq=False)
class StageImages:
    """The images a stage registers, in one fixed frame.

    Attributes
    ----------
    fixed, moving : SimpleITK.Image
        Fixed (EM) and moving (LM) working images, float32, physical µm.
    fixed_vol, moving_vol : Volume
        Their grids (used for the affine stage's overlap mask).
    centre_xyz : ndarray, shape (3,)
        Rotation centre of the rigid stage (the ROI centre in this frame), µm.
    """

    fixed: Any
    moving: Any
    fixed_vol: Volume
    moving_vol: Volume
    centre_xyz: np.ndarray


def _affine_from_sitk(transform: Any) -> Affine:
    """4×4 of a SimpleITK matrix-offset transform: y = A (x − c) + c + t."""
    a = np.asarray(transform.GetMatrix(), float).reshape(3, 3)
    c = np.asarray(transform.GetCenter(), float)
    t = np.asarray(transform.GetTranslation(), float)
    return Affine.from_linear_translation(a, c + t - a @ c)


def _initial_transform(model: Model, start: Affine, centre_xyz: np.ndarray) -> Any:
    """SimpleITK transform of ``model`` about ``centre`` at (or, rigid, closest to) ``start``.

    The rigid one takes the rotation part of ``start`` (nearest rotation by SVD).
    """
    import SimpleITK as sitk

    linear = start.linear
    if model == "rigid":
        u, _, vt = np.linalg.svd(linear)
        linear = u @ vt
        if np.linalg.det(linear) < 0:  # a mirror cannot be rigid; the caller mirrors the data
            raise InputError("initial transform contains a mirror; rigid registration needs "
                             "a proper rotation")
        transform = sitk.Euler3DTransform()
    else:
        transform = sitk.AffineTransform(3)
    transform.SetCenter(tuple(float(v) for v in centre_xyz))
    transform.SetMatrix(tuple(float(v) for v in linear.ravel()))
    t = start.apply(centre_xyz[None])[0] - centre_xyz
    transform.SetTranslation(tuple(float(v) for v in t))
    return transform


def registration_method(config: Registration3DConfig, n_fixed: int, iterations: int, *,
                        gradient_filter: bool = False) -> Any:
    """The ImageRegistrationMethod: Mattes MI on ``config.samples`` of ``n_fixed`` voxels,
    regular-step gradient descent scaled by physical shift, the configured pyramid.

    The moving image's gradient is taken by central differences at the samples, or with
    ``gradient_filter`` from a recursive-Gaussian gradient of the whole image at each
    pyramid level.  On the one ITK thread we run, that filter was most of a 3D stage's
    time (publication-size pair: 4.3 → 1.7 s per σ-1 stage; the 20 registration-accuracy
    pairs' median 0.119 µm without it, 0.125 with it); the in-plane refinement of a
    section keeps it (small images; without it 3 of 20 DeepCLEM sections ended 0.06–0.17
    µm further from the expert alignment, worst 0.304 µm instead of 0.146 µm; with it
    ``sections_2d_issue22.md`` repeats ``sections_2d.md`` exactly).
    """
    import SimpleITK as sitk

    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=config.histogram_bins)
    # Mattes takes the gradient of the moving image only: the fixed image's filter is
    # never needed
    reg.SetMetricUseMovingImageGradientFilter(gradient_filter)
    reg.MetricUseFixedImageGradientFilterOff()
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(min(1.0, config.samples / max(n_fixed, 1)), config.seed)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=config.learning_rate_um, minStep=1e-3, numberOfIterations=iterations,
        relaxationFactor=0.5, gradientMagnitudeTolerance=1e-6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(list(config.shrink_factors))
    reg.SetSmoothingSigmasPerLevel(list(config.smoothing_sigmas_um))
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return reg


_ITK_THREADS_LOCK = threading.Lock()
_itk_threads_users = 0
_itk_threads_before = 0


@contextmanager
def one_itk_thread() -> Iterator[None]:
    """ITK's default thread count set to 1 while any caller is inside, then restored.

    ITK's Mattes MI adds its threads' derivative terms in the order they finish, so with
    two threads one input gave TREs 0.13–0.20 µm in different processes.  The metric
    takes its threads from the global default (``ImageRegistrationMethod``'s own setting
    does not reach it), hence the global switch; it is counted so that stages running
    side by side in threads (SimpleITK releases the GIL) share it safely.
    """
    import SimpleITK as sitk

    global _itk_threads_users, _itk_threads_before
    with _ITK_THREADS_LOCK:
        if _itk_threads_users == 0:
            _itk_threads_before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
        _itk_threads_users += 1
    try:
        yield
    finally:
        with _ITK_THREADS_LOCK:
            _itk_threads_users -= 1
            if _itk_threads_users == 0:
                sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(_itk_threads_before)


class Executed(NamedTuple):
    """What one SimpleITK optimisation gave (see :func:`execute`)."""

    transform: Any
    lost_overlap: bool
    stop_condition: str
    metric: float
    iterations: int


def execute(reg: Any, fixed: Any, moving: Any, initial: Any) -> Executed:
    """Run the optimiser on one ITK thread (deterministic).

    The transform it found (unwrapped from the composite ``Execute`` returns), or, when
    it lost all overlap with the moving image (ITK raises), ``initial`` with
    ``lost_overlap`` — reported by the stage, not hidden.
    """
    import SimpleITK as sitk

    try:
        with one_itk_thread():
            out = reg.Execute(fixed, moving)
    except RuntimeError as exc:
        if "outside moving image buffer" not in str(exc):
            raise
        return Executed(initial, True, LOST_OVERLAP, 0.0, int(reg.GetOptimizerIteration()))
    if out.GetName() == "CompositeTransform":  # Execute wraps the result
        out = sitk.CompositeTransform(out).GetBackTransform()
    return Executed(out, False, reg.GetOptimizerStopConditionDescription(),
                    float(reg.GetMetricValue()), int(reg.GetOptimizerIteration()))


def overlap_mask(fixed_vol: Volume, placement: Affine, moving_vol: Volume,
                 moving_margin_vox: Sequence[float]) -> np.ndarray:
    """Fixed voxels that ``placement`` maps inside the moving grid, off its border.

    ITK's Mattes MI averages over the samples that land inside the moving image, so an
    optimiser gains by moving samples out of the overlap wherever they carry little
    information — on an EM slab cut obliquely through a thin LM stack the affine stage
    tilted and squashed it (measured: 0.70 → 3.06 µm while our MI fell).  With the
    samples fixed to the start's overlap, that gain is gone; the margin keeps them off
    the border layers where the LoG is an artefact of padding.

    Parameters
    ----------
    fixed_vol, moving_vol : Volume
        The grids (data not read).
    placement : Affine
        Fixed → moving physical map, µm.
    moving_margin_vox : (z, y, x)
        Distance to keep from the moving grid's border, moving voxels.

    Returns
    -------
    ndarray of uint8
        Mask on the fixed grid (1 inside).
    """
    nz, ny, nx = fixed_vol.shape_zyx
    # fixed (i, j, k) → moving (i, j, k) is one affine map, so along each fixed x row
    # every moving index is linear in i: the row's inside part is one interval of i,
    # found per row (no per-voxel evaluation of the map)
    to_moving = (np.linalg.inv(moving_vol.index_to_physical_matrix()) @ placement.matrix
                 @ fixed_vol.index_to_physical_matrix())
    j = np.arange(ny, dtype=float)[None, :]
    k = np.arange(nz, dtype=float)[:, None]
    first = np.full((nz, ny), -np.inf)
    last = np.full((nz, ny), np.inf)
    # moving axis a (i, j, k) against its size and margin, given (z, y, x)
    for a, (n, m) in enumerate(zip(moving_vol.shape_zyx[::-1], list(moving_margin_vox)[::-1],
                                   strict=True)):
        c = to_moving[a]
        rest = c[1] * j + (c[2] * k + c[3])
        lo, hi = float(m), float(n - 1 - m)
        if c[0] != 0.0:
            ends = ((lo - rest) / c[0], (hi - rest) / c[0])
            lower, upper = (ends if c[0] > 0 else ends[::-1])
        else:  # this moving index does not change along the row: all in or all out
            inside = (rest >= lo) & (rest <= hi)
            lower = np.where(inside, -np.inf, np.inf)
            upper = np.where(inside, np.inf, -np.inf)
        first = np.maximum(first, lower)
        last = np.minimum(last, upper)
    i = np.arange(nx, dtype=float)
    mask = (i >= first[..., None]) & (i <= last[..., None])
    return mask.view(np.uint8)


def _optimise(model: Model, images: StageImages, start: Affine,
              config: Registration3DConfig, n_fixed: int, fixed_mask: Any = None,
              stop: threading.Event | None = None) -> StageResult:
    """One SimpleITK optimisation from ``start``, sampling inside ``fixed_mask`` if given
    (``n_fixed``: the voxels sampled from); ``stop`` set ends each level at its next
    iteration (the result is then of no use)."""
    import SimpleITK as sitk

    initial = _initial_transform(model, start, images.centre_xyz)
    iterations = config.rigid_iterations if model == "rigid" else config.affine_iterations
    t0 = time.perf_counter()
    reg = registration_method(config, n_fixed, iterations)
    if stop is not None:
        reg.AddCommand(sitk.sitkIterationEvent,
                       lambda: reg.StopRegistration() if stop.is_set() else None)
    if fixed_mask is not None:
        reg.SetMetricFixedMask(fixed_mask)
    held = HELD_TERMS.get(config.affine_z, ()) if model == "affine" else ()
    if held:  # a zero weight keeps a parameter at its start
        reg.SetOptimizerWeights([0.0 if p in held else 1.0 for p in AFFINE_PARAMETERS])
    reg.SetInitialTransform(initial, inPlace=False)
    run = execute(reg, images.fixed, images.moving, initial)
    return StageResult(model, _affine_from_sitk(run.transform),
                       tuple(run.transform.GetParameters()), run.metric, run.iterations,
                       run.stop_condition, time.perf_counter() - t0,
                       lost_overlap=run.lost_overlap, held=held)


def run_stage(model: Model, images: StageImages, start: Affine,
              config: Registration3DConfig, stop: threading.Event | None = None
              ) -> StageResult:
    """Optimise ``model`` from ``start`` by Mattes MI (SimpleITK).

    The rigid stage samples the whole fixed image; the affine stage only the fixed voxels
    that ``start`` maps inside the LM (see :func:`overlap_mask`), and does not run where
    they are fewer than ``config.min_overlap_fraction`` of the fixed image.  With
    ``config.affine_z`` other than ``"free"`` the affine stage holds those terms
    (:data:`~clemalign.registration.config.HELD_TERMS`) at ``start``
    (``"auto"`` is resolved by :func:`~clemalign.registration.register_3d`; here it
    means ``"free"``).

    Parameters
    ----------
    model : {"rigid", "affine"}
        Euler3D about ``images.centre_xyz`` or a 12-parameter affine.
    images : StageImages
        Fixed and moving images, in the fixed frame ``start`` is given in.
    start : Affine
        Starting fixed → moving map, µm (a proper rotation part for ``"rigid"``).
    config : Registration3DConfig
        Metric, optimiser and pyramid settings.
    stop : threading.Event, optional
        Set by another thread to end a stage whose result is no longer wanted (each
        pyramid level stops at its next iteration).

    Returns
    -------
    StageResult
        Its result in the same fixed frame; ``kept=False`` when the affine stage did not
        run, ``lost_overlap=True`` (and the start) when SimpleITK lost the overlap.
    """
    n_fixed = int(np.prod(images.fixed_vol.shape_zyx))
    if model == "rigid":
        return _optimise(model, images, start, config, n_fixed, stop=stop)
    mask = overlap_mask(images.fixed_vol, start, images.moving_vol, (1.0, 2.0, 2.0))
    inside = int(np.count_nonzero(mask))
    if inside < config.min_overlap_fraction * n_fixed:
        return StageResult(model, start, (), 0.0, 0, (
            f"not run: the rigid result maps {inside} of {n_fixed} EM working voxels "
            "inside the LM"), 0.0, kept=False)
    return _optimise(model, images, start, config, inside,
                     to_sitk(images.fixed_vol.with_data(mask)), stop)
