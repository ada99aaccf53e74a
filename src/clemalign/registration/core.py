"""3D fine registration: mutual information between LoG-EM and LoG-LM, rigid then affine.

Fixed image: the 3D LoG of the EM ROI on a working grid; moving image: the 3D LoG of the
LM around the pre-aligned position.  Each start (orientation hypothesis) is placed in z
by our metric and refined by SimpleITK's rigid stage; the best one goes on to the affine
stage, which is kept only when it raises the mutual information.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np

from .._threads import resolve_workers, submit_in_background, submit_in_context
from .._timing import StepTimer
from ..errors import InputError
from ..representation import Polarity
from ..transforms import Affine
from ..volume import Volume, to_sitk
from .config import Registration3DConfig, Registration3DResult, StageResult
from .metric import MetricContext, Samples
from .stages import StageImages, run_stage
from .starts import StartTrial, ZSearch, ZSearchPlan, perturbation_mi, z_search
from .working import WorkingGrid, lm_crop_box, mirror_x, working_image, working_volume

__all__ = ["register_3d"]

_DEFAULT_CONFIG = Registration3DConfig()  # frozen: safe to share as the default


@dataclass(frozen=True, eq=False)
class _Frame:
    """The fixed image in one handedness: ``pre`` maps it to the EM (identity, or the
    x mirror); transforms estimated in it are ``em_to_lm ∘ pre``."""

    mirrored: bool
    pre: Affine
    arr: np.ndarray
    images: StageImages


class _Countdown:
    """An event set once ``n`` ticks have come (or by :meth:`release`)."""

    def __init__(self, n: int) -> None:
        self._left, self._lock, self.done = n, threading.Lock(), threading.Event()
        if n <= 0:
            self.done.set()

    def tick(self) -> None:
        with self._lock:
            self._left -= 1
            if self._left <= 0:
                self.done.set()

    def release(self) -> None:
        self.done.set()


def _after(event: threading.Event, fn: Callable, /, *args):
    """``fn(*args)`` once ``event`` is set."""
    event.wait()
    return fn(*args)


class _Guess(NamedTuple):
    """A final level run ahead (``stage``) from ``start`` (the result before the level
    above it); ``stop`` ends it."""

    start: Affine
    stop: threading.Event
    stage: Future


class _FixedSide(NamedTuple):
    """The EM's representation on a working grid and the metric's samples of it."""

    arr: np.ndarray
    samples: Samples


@dataclass(frozen=True, eq=False)
class _FinalFixed:
    """The final levels' EM side, which needs nothing the stages before them find: the
    EM ROI on their working grid, and per level its representation and the samples.

    Computed on a thread while the rigid and affine stages run (each optimiser on one
    ITK thread; the publication-size pair: ~1.5 s of filtering that no longer waits for
    them).  Memory: the fine-grid EM and one float image per level, held from then.
    """

    levels: tuple[tuple[float, float], ...]
    grid: WorkingGrid
    em_w: Volume
    sides: tuple[_FixedSide, ...]

    @staticmethod
    def plan(em: Volume, lm: Volume, grid: WorkingGrid, config: Registration3DConfig
             ) -> tuple[tuple[tuple[float, float], ...], WorkingGrid] | None:
        """The final levels that apply and their working grid, or None (see
        :func:`_final_levels`)."""
        if not config.final_levels_um or config.model != "affine":
            return None
        floor = 2.0 * max(float(lm.voxel_size_um[2]), float(em.voxel_size_um[2]))
        levels = tuple((z, lateral) for z, lateral in config.final_levels_um
                       if floor <= lateral < grid.sigma_um)
        if not levels:
            return None
        finest = min(lateral for _, lateral in levels)
        return levels, WorkingGrid(finest, grid.z_um,
                                   max(float(lm.voxel_size_um[2]), finest / 2.25))

    @classmethod
    def compute(cls, em: Volume, roi: tuple[slice, slice, slice],
                levels: tuple[tuple[float, float], ...], fine: WorkingGrid,
                config: Registration3DConfig, polarity: tuple[Polarity, Polarity],
                workers: int | None = None) -> _FinalFixed:
        """The EM ROI on ``fine``, the samples, and its representation at each of
        ``levels`` (:meth:`plan`'s), as :func:`_workspace` would make them."""
        em_w = working_volume(em, (fine.z_um, fine.pixel_um, fine.pixel_um), roi,
                              workers=workers)
        samples = Samples.draw(em_w, config.final_samples or config.samples, config.seed)
        return cls(levels, fine, em_w, tuple(
            _FixedSide(working_image(em_w, (sz, s, s), config.representation, polarity[0]),
                       samples) for sz, s in levels))


@dataclass(eq=False)
class _Workspace:
    """The working images of one :func:`register_3d` call and their two fixed frames."""

    em_w: Volume
    lm_w: Volume
    fixed_arr: np.ndarray
    moving: object  # SimpleITK image of the moving working array
    centre: np.ndarray  # ROI centre, EM physical µm
    metric: MetricContext
    frames: dict[bool, _Frame] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)  # starts run in threads

    def frame(self, mirrored: bool) -> _Frame:
        """The (cached) fixed frame, x-reversed when ``mirrored``."""
        with self.lock:
            return self._frame(mirrored)

    def _frame(self, mirrored: bool) -> _Frame:
        if mirrored not in self.frames:
            pre = mirror_x(self.em_w) if mirrored else Affine.identity()
            arr = np.ascontiguousarray(self.fixed_arr[:, :, ::-1] if mirrored
                                       else self.fixed_arr, dtype=np.float32)
            images = StageImages(to_sitk(self.em_w.with_data(arr)), self.moving, self.em_w,
                                 self.lm_w, pre.apply(self.centre[None])[0])
            self.frames[mirrored] = _Frame(mirrored, pre, arr, images)
        return self.frames[mirrored]


def _prepare(em: Volume, lm: Volume, roi: tuple[slice, slice, slice],
             starts: Sequence[Affine], grid: WorkingGrid, z_range_um: float | None,
             try_reversed_z: bool, config: Registration3DConfig, timer: StepTimer,
             polarity: tuple[Polarity, Polarity], workers: int | None = None) -> _Workspace:
    """Resample the EM ROI and the LM crop onto the working grid, filter, draw samples."""
    em_w, lm_w = _working_pair(em, lm, roi, starts, grid, z_range_um, try_reversed_z, config,
                               workers)
    timer.tick("resample", 0.1)
    ws = _workspace(em, roi, em_w, lm_w, grid.sigma_um, config, polarity,
                    workers=resolve_workers(workers))
    timer.tick("representation", 0.2)
    return ws


def _working_pair(em: Volume, lm: Volume, roi: tuple[slice, slice, slice],
                  starts: Sequence[Affine], grid: WorkingGrid, z_range_um: float | None,
                  try_reversed_z: bool, config: Registration3DConfig,
                  workers: int | None = None) -> tuple[Volume, Volume]:
    """The EM ROI and the LM crop around ``starts`` on the working grid."""
    em_w = working_volume(em, (grid.z_um, grid.pixel_um, grid.pixel_um), roi, workers=workers)
    box = lm_crop_box(em, lm, roi, starts, margin_um=config.margin_um,
                      z_range_um=z_range_um, reversed_too=try_reversed_z)
    # the LM also goes onto the working pixel (never finer than its own voxels)
    lm_w = working_volume(lm, (lm.voxel_size_um[0], grid.pixel_um, grid.pixel_um), box)
    return em_w, lm_w


def _workspace(em: Volume, roi: tuple[slice, slice, slice], em_w: Volume, lm_w: Volume,
               sigma_um: float | tuple[float, float, float], config: Registration3DConfig,
               polarity: tuple[Polarity, Polarity], fixed: _FixedSide | None = None, *,
               workers: int = 1) -> _Workspace:
    """The representations of the working pair at ``sigma_um`` (scalar or z, y, x), the
    metric's samples and the moving image; the EM's representation and the samples are
    ``fixed``'s when given (computed ahead, see :class:`_FinalFixed`).  Our metric
    scores placements on ``workers`` threads."""
    if fixed is None:
        fixed = _FixedSide(working_image(em_w, sigma_um, config.representation, polarity[0]),
                           Samples.draw(em_w, config.samples, config.seed))
    fixed_arr, samples = fixed
    moving_arr = working_image(lm_w, sigma_um, config.representation, polarity[1])
    moving = to_sitk(lm_w.with_data(np.ascontiguousarray(moving_arr, dtype=np.float32)))
    metric = MetricContext(samples, samples.head(3), lm_w, moving_arr, config.histogram_bins,
                           workers)
    centre = em.index_to_physical(np.array([(s.start + s.stop - 1) / 2.0 for s in roi]))
    return _Workspace(em_w, lm_w, fixed_arr, moving, centre, metric)


def _try_start(index: int, start_em: Affine, ws: _Workspace, plan: ZSearchPlan | None,
               config: Registration3DConfig, searched: _Countdown | None = None
               ) -> StartTrial:
    """z search and rigid stage of one start, in the fixed frame where it is proper;
    ``searched`` is counted down after the z search.

    The transform estimated there is G = em_to_lm ∘ F for the x flip F (an involution)
    when the start is mirrored.
    """
    mirrored = bool(np.linalg.det(start_em.linear) < 0)
    frame = ws.frame(mirrored)
    g_start = start_em @ frame.pre
    found = (ZSearch(g_start) if plan is None else
             z_search(g_start, frame.images.centre_xyz, frame.arr, ws.metric, plan))
    if searched is not None:
        searched.tick()
    g_start = found.start
    if found.reversed_z:  # reversing z flips handedness: the other fixed frame
        frame = ws.frame(not mirrored)
        g_start = g_start @ mirror_x(ws.em_w)  # pre_old ∘ pre_new = F in both cases
    rigid = run_stage("rigid", frame.images, g_start, config)
    return StartTrial(index, frame.mirrored, found.reversed_z, found, g_start, rigid,
                      -ws.metric.metric(frame.arr, rigid.em_to_lm))


def _affine_if_better(ws: _Workspace, frame: _Frame, start: Affine,
                      config: Registration3DConfig, before: str = "after rigid",
                      stop: threading.Event | None = None) -> StageResult:
    """The affine stage from ``start``, ``kept`` only if it raises our MI over it
    (``stop``: see :func:`~clemalign.registration.stages.run_stage`).

    Both are scored together (same samples, equal count, overlap-weighted): 12 free
    parameters can trade information for overlap on a thin oblique slab.
    """
    affine = run_stage("affine", frame.images, start, config, stop)
    # not run (too little overlap), or stopped: its result is not wanted, nor scored
    if not affine.kept or (stop is not None and stop.is_set()):
        return affine
    mi_start, mi_affine = -ws.metric.profile(frame.arr, [start, affine.em_to_lm])
    if mi_affine > mi_start:
        return affine
    return replace(affine, kept=False, stop_condition=(
        f"not kept: MI {mi_affine:.4f} ≤ {mi_start:.4f} {before}; "
        + affine.stop_condition))


def _finish(ws: _Workspace, tried: Sequence[StartTrial], starts: Sequence[Affine],
            grid: WorkingGrid, z_known: bool, config: Registration3DConfig,
            timer: StepTimer) -> Registration3DResult:
    """The best start's affine stage, the perturbations and the result in the EM frame."""
    best = max(tried, key=lambda t: t.mi_rigid)
    frame = ws.frame(best.mirrored)
    stages = [best.rigid]
    if config.model == "affine":
        stages.append(_affine_if_better(ws, frame, best.rigid.em_to_lm, config))
        timer.tick("affine", 0.9)
    # the rigid stage is always kept; the affine one only when it raised the MI
    g_final = stages[-1].em_to_lm if stages[-1].kept else best.rigid.em_to_lm
    # the same metric at clearly wrong placements near the result: how much the found
    # placement stands out is evidence that it is right (see clemalign.confidence)
    perturbed = perturbation_mi(g_final, frame.images.centre_xyz, ws.em_w.extent_um,
                                z_known, frame.arr, ws.metric)
    pre = frame.pre
    return Registration3DResult(
        em_to_lm=g_final @ pre, initial_em_to_lm=best.start @ pre,
        z_offset_um=best.search.offset_um, z_search=best.search.info,
        stages=tuple(replace(st, em_to_lm=st.em_to_lm @ pre) for st in stages),
        metric_initial=ws.metric.metric(frame.arr, best.start),
        metric_final=ws.metric.metric(frame.arr, g_final),
        log_sigma_um=grid.sigma_um,
        working_spacing_um=tuple(float(v) for v in ws.em_w.voxel_size_um),
        timings_s=timer.total(),
        starts=tuple(t.to_dict(starts[t.index], t is best) for t in tried),
        mirrored=best.mirrored, reversed_z=best.reversed_z,
        mutual_information_perturbed=perturbed)


def register_3d(em: Volume, lm: Volume, initial_em_to_lm: Affine, *,
                roi_kji: tuple[slice, slice, slice] | None = None,
                lm_sigma_um: float | None = None,
                alternatives: Sequence[Affine] = (),
                z_range_um: float | None = None,
                try_reversed_z: bool = False,
                config: Registration3DConfig = _DEFAULT_CONFIG,
                progress: Callable[[str, float], None] | None = None,
                polarity: tuple[Polarity, Polarity] = ("dark", "bright"),
                workers: int | None = None) -> Registration3DResult:
    """Estimate ``em_to_lm`` by mutual information, rigid then affine (SimpleITK).

    Parameters
    ----------
    em : Volume
        EM volume, one channel ``(z, y, x)``, physical µm.
    lm : Volume
        LM volume, the channel to register ``(z, y, x)``, physical µm.
    initial_em_to_lm : Affine
        Start from the pre-alignment, µm → µm.  A mirrored start (negative determinant)
        is registered on the EM with its x axis reversed — a rigid transform cannot flip
        handedness — and composed back.
    roi_kji : tuple of slices, optional
        EM ROI in voxel indices (default: the whole EM volume).
    lm_sigma_um : float, optional
        Scale of the LM's structures, µm: the LoG scale is that, at least
        :data:`~clemalign.registration.working.MIN_LOG_SIGMA_UM`, unless
        ``config.log_sigma_um`` is set.
    alternatives : sequence of Affine
        Other starts (orientation hypotheses).  Each start gets its own z search and rigid
        stage; the one with the highest mutual information afterwards (on one common set
        of samples) goes on to the affine stage.
    z_range_um : float, optional
        The starts' z is known to about this much, µm (a 3D pre-alignment): the z search
        spans ±``z_range_um`` and the LM is cropped in z too.  Default: the start's z is
        unknown (an XY pre-alignment), every z offset over the LM depth is searched.
    try_reversed_z : bool
        Also search each start with z reversed about the ROI centre (a stack seen from
        the other side); the direction with the higher MI after the z search is kept.
    config : Registration3DConfig
        Grid, metric, optimiser and search settings.
    progress : callable, optional
        Called with (step name, fraction done).
    polarity : (EM polarity, LM polarity)
        Blob polarities found by stage 1 (the metric does not depend on them).
    workers : int, optional
        Starts registered side by side, one ITK thread each (ITK's multi-threaded
        Mattes MI is not reproducible); default: the machine's cores, at most 4.

    Returns
    -------
    Registration3DResult

    Raises
    ------
    InputError
        ``em`` or ``lm`` is not a single-channel 3D volume.
    """
    timer = StepTimer(progress)
    if em.data.ndim != 3 or lm.data.ndim != 3:
        raise InputError("register_3d: em and lm must be single-channel 3D volumes")
    if config.affine_z == "auto":  # z terms fixed by the data only after a 3D pre-alignment
        config = replace(config, affine_z="em_z" if z_range_um is None else "free")
    roi = roi_kji or tuple(slice(0, n) for n in em.shape_zyx)
    starts = [initial_em_to_lm, *alternatives]
    grid = WorkingGrid.choose(em, lm, roi, lm_sigma_um, config)
    ws = _prepare(em, lm, roi, starts, grid, z_range_um, try_reversed_z, config, timer,
                  polarity, workers)
    # with one worker (e.g. a batch's --threads-per-worker 1) nothing runs ahead: the
    # final levels compute their EM side themselves
    final_plan = (_FinalFixed.plan(em, lm, grid, config) if resolve_workers(workers) > 1
                  else None)
    # with several, the EM side is computed once the z searches are done: they score on
    # every core, the optimisers after them on one ITK thread (publication-size pair:
    # z search and rigid stage 2.4 → 1.3 s)
    searched = _Countdown(len(starts))
    with ThreadPoolExecutor(1) as ahead:
        final_fixed = None if final_plan is None else submit_in_background(
            ahead, _after, searched.done, _FinalFixed.compute, em, roi, *final_plan, config,
            polarity, workers, lower_by=10)
        try:
            result = _stages(em, lm, roi, starts, ws, grid, z_range_um, try_reversed_z,
                             config, timer, polarity, workers, final_fixed, searched)
        finally:  # never leave the thread waiting (a failed start, Ctrl-C)
            searched.release()
    return result


def _stages(em: Volume, lm: Volume, roi: tuple[slice, slice, slice], starts: list[Affine],
            ws: _Workspace, grid: WorkingGrid, z_range_um: float | None,
            try_reversed_z: bool, config: Registration3DConfig, timer: StepTimer,
            polarity: tuple[Polarity, Polarity], workers: int | None,
            final_fixed: Future | None, searched: _Countdown | None = None
            ) -> Registration3DResult:
    """z search and rigid stage of every start (``searched`` counted down after each
    z search), the best one's affine stage, the final levels (their EM side from
    ``final_fixed``)."""
    plan = None if not config.z_search else ZSearchPlan(
        lm, ws.em_w.extent_um[0], z_range_um, float(config.z_step_um or lm.voxel_size_um[0] / 2),
        try_reversed_z, config.max_tilt_deg if z_range_um is None else 0.0)
    tried = []
    n_threads = min(resolve_workers(workers), len(starts))
    with ThreadPoolExecutor(n_threads) as pool:  # SimpleITK releases the GIL
        trials = [submit_in_context(pool, _try_start, k, start, ws, plan, config, searched)
                  for k, start in enumerate(starts)]
        for k, trial in enumerate(trials):
            tried.append(trial.result())
            timer.tick("rigid", 0.2 + 0.4 * (k + 1) / len(starts))
    result = _finish(ws, tried, starts, grid, z_range_um is not None, config, timer)
    # not after an affine stage that did not run (too little overlap to refine)
    if config.final_levels_um and config.model == "affine" and result.stages[-1].parameters:
        result = _final_levels(em, lm, roi, result, grid, config, polarity,
                               None if final_fixed is None else final_fixed.result(),
                               workers=workers)
        timer.tick("final levels", 1.0)
        result = replace(result, timings_s=timer.total())
    return result


def _final_levels(em: Volume, lm: Volume, roi: tuple[slice, slice, slice],
                  result: Registration3DResult, grid: WorkingGrid,
                  config: Registration3DConfig, polarity: tuple[Polarity, Polarity],
                  fixed: _FinalFixed | None = None, *, workers: int | None = None
                  ) -> Registration3DResult:
    """The affine levels of ``config.final_levels_um`` in turn from the result, each kept
    only if it raises the MI at its own scale (the evidence stays the stages above's).

    One working grid for all (lateral pixel from the finest σ); only the LoG differs.  A
    level whose lateral σ is under two pixels of the LM or the EM (a LoG finer than the
    data resolve: thick tissue's 1 µm microCT voxels), or not finer than the stages'
    own σ (``grid``), is skipped (:meth:`_FinalFixed.plan`).  The EM side is ``fixed``
    when :func:`register_3d` computed it ahead for this ``config``, else computed here
    (block means on ``workers`` threads); the LM is cropped around the result.
    """
    if fixed is None:
        plan = _FinalFixed.plan(em, lm, grid, config)
        if plan is None:
            return result
        fixed = _FinalFixed.compute(em, roi, *plan, config, polarity, workers)
    if config.final_affine_z != "auto":
        config = replace(config, affine_z=config.final_affine_z)
    if config.final_samples:  # SimpleITK's (ours are the fixed side's)
        config = replace(config, samples=config.final_samples)
    if not config.final_smoothing:
        config = replace(config, smoothing_sigmas_um=(0.0,) * len(config.shrink_factors))
    fine, em_w = fixed.grid, fixed.em_w
    box = lm_crop_box(em, lm, roi, [result.em_to_lm], margin_um=config.margin_um,
                      z_range_um=None, reversed_too=False)
    lm_w = working_volume(lm, (lm.voxel_size_um[0], fine.pixel_um, fine.pixel_um), box)
    n_threads, mirrored = resolve_workers(workers), result.mirrored

    def space(k: int) -> _Workspace:
        sigma_z, sigma = fixed.levels[k]
        ws = _workspace(em, roi, em_w, lm_w, (sigma_z, sigma, sigma), config, polarity,
                        fixed.sides[k], workers=n_threads)
        ws.frame(mirrored)  # the levels keep the handedness: its image made here too
        return ws

    def level(k: int, ws: _Workspace, start: Affine,
              stop: threading.Event | None = None) -> StageResult:
        """Level ``k`` from ``start`` (EM frame), its result in the level's frame."""
        sigma_z, sigma = fixed.levels[k]
        frame = ws.frame(mirrored)
        name = (f"affine at σ {sigma:g} µm" if sigma_z == sigma else
                f"affine at σ {sigma:g} µm (z {sigma_z:g} µm)")
        # the frame's flip is its own inverse
        return replace(_affine_if_better(ws, frame, start @ frame.pre, config,
                                         before="before it", stop=stop), name=name)

    # While a level runs on one ITK thread, the next level's workspace is made on a
    # thread and that level is run there too, from the same start: it is the next
    # level's result whenever this one is not kept (publication-size pair: ~1 s), and is
    # stopped when it is
    def level_ahead(k: int, ws: Future, start: Affine, stop: threading.Event) -> StageResult:
        return level(k, ws.result(), start, stop)

    with ThreadPoolExecutor(1) as ahead:
        upcoming: Future | None = None
        guess: _Guess | None = None
        try:
            for k in range(len(fixed.levels)):
                made, upcoming = upcoming, None  # this level's workspace, made ahead
                if guess is not None and guess.start is result.em_to_lm:
                    stage, guess = guess.stage.result(), None
                    ws = made.result()
                else:
                    if guess is not None:  # its start was replaced: stop it, let it end
                        guess.stop.set()
                        wait([guess.stage])
                    guess = None
                    # the next level's workspace is made on the thread while this one's
                    # is made here (publication-size pair: its run ahead starts ~0.5 s
                    # sooner)
                    if n_threads > 1 and k + 1 < len(fixed.levels):
                        upcoming = submit_in_background(ahead, space, k + 1, lower_by=5)
                        stop = threading.Event()
                        guess = _Guess(result.em_to_lm, stop, submit_in_background(
                            ahead, level_ahead, k + 1, upcoming, result.em_to_lm, stop,
                            lower_by=5))
                    ws = space(k) if made is None else made.result()
                    stage = level(k, ws, result.em_to_lm)
                frame = ws.frame(mirrored)
                final = stage.em_to_lm @ frame.pre if stage.kept else result.em_to_lm
                result = replace(result, em_to_lm=final, stages=(
                    *result.stages, replace(stage, em_to_lm=stage.em_to_lm @ frame.pre)))
        finally:  # an error or Ctrl-C: a level still running ahead stops soon
            if guess is not None:
                guess.stop.set()
    return result
