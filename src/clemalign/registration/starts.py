"""Starts of the 3D registration: z search (direction, tilt), start trials, perturbations.

A pre-alignment gives one or more starts (orientation hypotheses).  Each is placed in z
(and, when its z is unknown, given a z direction and a tilt) by our metric over many
placements before SimpleITK's rigid stage; the trials are compared afterwards on one set
of samples.  Perturbations of the result (clearly wrong placements near it) measure how
much it stands out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from .._threads import map_in_threads
from ..transforms import Affine, rotation_matrix_xyz
from ..volume import Volume
from .config import StageResult
from .metric import MetricContext

__all__ = ["StartTrial", "ZSearch", "ZSearchPlan", "flip_z_about", "perturbation_mi",
           "perturbations", "tilted", "z_search"]


def flip_z_about(centre_xyz: np.ndarray) -> Affine:
    """Reverse z about a point (µm); an involution."""
    m = np.diag([1.0, 1.0, -1.0, 1.0])
    m[2, 3] = 2.0 * float(centre_xyz[2])
    return Affine(m)


def tilted(start: Affine, centre_fixed: np.ndarray, tilt_deg: Sequence[float], dz_um: float
           ) -> Affine:
    """``start`` tilted about the LM x and y axes (degrees) through the image of the ROI
    centre ``centre_fixed`` (fixed frame, µm), then moved by ``dz_um`` along z."""
    c = start.apply(centre_fixed)
    turn = rotation_matrix_xyz([tilt_deg[0], tilt_deg[1], 0.0])
    # translate(c + dz) · turn · translate(−c), as one matrix (this runs ~1,000× per start)
    m = np.eye(4)
    m[:3, :3] = turn
    m[:3, 3] = c + [0.0, 0.0, dz_um] - turn @ c
    return Affine(m @ start.matrix)


@dataclass(frozen=True, eq=False)
class ZSearchPlan:
    """What the z search of every start shares.

    Attributes
    ----------
    lm : Volume
        The LM (its whole depth bounds the offsets when ``z_range_um`` is None).
    em_depth_um : float
        Depth of the EM ROI, µm.
    z_range_um : float, optional
        The starts' z is known to ± this, µm; None: unknown, every offset is searched.
    step_um : float
        Step of the z offsets, µm.
    reversed_too : bool
        Also search z reversed about the ROI centre (a stack seen from the other side).
    max_tilt_deg : float
        Tilt ``T`` searched about x and y, degrees (0: none).
    """

    lm: Volume
    em_depth_um: float
    z_range_um: float | None
    step_um: float
    reversed_too: bool
    max_tilt_deg: float

    def offsets(self, start: Affine, centre: np.ndarray, step_um: float) -> np.ndarray:
        """z offsets (µm) searched: ±``z_range_um`` around the start, or (None) every offset
        that keeps the ROI centre within the LM depth ± half the EM depth."""
        if self.z_range_um is not None:
            n = int(np.ceil(self.z_range_um / step_um))
            return np.arange(-n, n + 1) * step_um
        lm_z0 = self.lm.origin_xyz_um[2]
        centre_lm_z = start.apply(centre[None])[0, 2]
        lo = lm_z0 - self.em_depth_um / 2 - centre_lm_z
        hi = lm_z0 + self.lm.extent_um[0] + self.em_depth_um / 2 - centre_lm_z
        return np.arange(lo, hi + 1e-9, step_um)


@dataclass(frozen=True, eq=False)
class ZSearch:
    """Outcome of :func:`z_search`.

    Attributes
    ----------
    start : Affine
        The start placed (tilted, moved in z, possibly z-reversed), fixed frame, µm.
    reversed_z : bool
        z was reversed about the ROI centre (handedness flipped).
    info : dict
        The record reported as ``Registration3DResult.z_search`` (offsets and metric of
        the untilted profile, ``best_um``, ``reversed_z``, ``tilt_deg``,
        ``best_mi_by_direction``); empty when no search ran.
    """

    start: Affine
    reversed_z: bool = False
    info: dict = field(default_factory=dict)

    @property
    def offset_um(self) -> float:
        """The z offset chosen, µm (0 without a search)."""
        return float(self.info.get("best_um", 0.0))


class _Candidate(NamedTuple):
    """One placement of the first pass: z direction, tilt about x and y (°), z offset (µm)."""

    reversed_z: bool
    tilt_deg: np.ndarray
    dz_um: float


def _first_pass(variants: dict[bool, Affine], centre: np.ndarray, fixed_arr: np.ndarray,
                metric: MetricContext, plan: ZSearchPlan, step_um: float
                ) -> tuple[list[_Candidate], np.ndarray]:
    """Every direction × tilt ``{−T, 0, T}²`` × z offset at ``step_um``, scored together
    (on the coarse samples when tilts are searched)."""
    T = float(plan.max_tilt_deg)
    tilts = [(0.0, 0.0)] + ([(tx, ty) for tx in (-T, 0.0, T) for ty in (-T, 0.0, T)
                             if (tx, ty) != (0.0, 0.0)] if T > 0 else [])
    grid = [_Candidate(rev, np.array(t), float(dz)) for rev, v in variants.items()
            for t in tilts for dz in plan.offsets(v, centre, step_um)]
    values = metric.profile(fixed_arr, [tilted(variants[c.reversed_z], centre, c.tilt_deg,
                                               c.dz_um) for c in grid], T > 0)
    return grid, values


def z_search(start: Affine, centre: np.ndarray, fixed_arr: np.ndarray,
             metric: MetricContext, plan: ZSearchPlan) -> ZSearch:
    """z offset, z direction and tilt of a start, by the metric of many placements.

    Without tilt (``max_tilt_deg`` 0): every z offset of each direction.  With tilt: each
    direction × tilts ``{−T, 0, T}²`` about x and y × z offsets at 1 µm (at most ~60
    steps over a deep stack, on a third of the samples); around the best, tilts ``±T/2``
    × z ± 3 half steps of that, then ``±T/4`` × z ± 2 steps and ``±T/8`` × z ± 1 step
    (the rigid stage left ~1 µm from a start 2° off).  The direction is decided on the
    tilted fits: an EM block cut 5–10° off the coverslip plane fits neither direction
    untilted (measured: MI 0.24 for both), and the best untilted z lies up to 4.5 µm off.

    Parameters
    ----------
    start : Affine
        Start in the fixed frame of ``fixed_arr``, µm → µm.
    centre : ndarray, shape (3,)
        ROI centre in that frame, µm (tilt and z reversal pivot).
    fixed_arr : ndarray
        Fixed working image in that frame.
    metric : MetricContext
        Our metric.
    plan : ZSearchPlan
        Offsets, step, direction and tilt settings.

    Returns
    -------
    ZSearch
    """
    variants = {False: start}
    if plan.reversed_too:
        variants[True] = start @ flip_z_about(centre)
    T = float(plan.max_tilt_deg)
    coarse, step = T > 0, plan.step_um
    first_step = step
    if coarse:  # 1 µm steps, at most ~60 of them over a deep stack
        span = np.ptp(plan.offsets(start, centre, step))
        first_step = max(step, 1.0, span / 60.0)
    grid, values = _first_pass(variants, centre, fixed_arr, metric, plan, first_step)
    by_direction = {("reversed_z" if rev else "direct"):
                    float(-min(v for c, v in zip(grid, values, strict=True)
                               if c.reversed_z == rev)) for rev in variants}
    rev, tilt, dz = grid[int(np.argmin(values))]
    untilted = [(c.dz_um, v) for c, v in zip(grid, values, strict=True)
                if c.reversed_z == rev and not c.tilt_deg.any()]
    if coarse:  # refine the tilt and z around the best, halving the tilt step each time
        for half, dzs in ((T / 2.0, np.arange(-3, 4) * 0.5 * first_step),
                          (T / 4.0, np.arange(-2, 3) * step),
                          (T / 8.0, np.arange(-1, 2) * step)):
            near = [(tilt + [tx, ty], dz + d) for tx in (-half, 0.0, half)
                    for ty in (-half, 0.0, half) for d in dzs]
            values = metric.profile(fixed_arr, [tilted(variants[rev], centre, t, d)
                                                for t, d in near], False)
            tilt, dz = near[int(np.argmin(values))]
    info = {"offsets_um": [float(o) for o, _ in untilted],
            "metric": [float(v) for _, v in untilted], "best_um": float(dz),
            "reversed_z": bool(rev)}
    if coarse:
        info["tilt_deg"] = [float(v) for v in tilt]
    if plan.reversed_too:
        info["best_mi_by_direction"] = by_direction
    return ZSearch(tilted(variants[rev], centre, tilt, dz), bool(rev), info)


@dataclass(frozen=True, eq=False)
class StartTrial:
    """One start of the 3D stage after its z search and rigid stage.

    Attributes
    ----------
    index : int
        Position among the starts (0: the pre-alignment's own).
    mirrored : bool
        Registered on the x-reversed EM (the start, after any z reversal, flips
        handedness).
    reversed_z : bool
        The z search reversed z.
    search : ZSearch
        The z search (``ZSearch(start)`` when none ran).
    start : Affine
        Start of the rigid stage in the fixed frame of ``mirrored``, µm.
    rigid : StageResult
        The rigid stage, in that frame.
    mi_rigid : float
        Our MI (nats) after the rigid stage, on the common samples.
    """

    index: int
    mirrored: bool
    reversed_z: bool
    search: ZSearch
    start: Affine
    rigid: StageResult
    mi_rigid: float

    def to_dict(self, start_em_to_lm: Affine, chosen: bool) -> dict:
        """The record in ``Registration3DResult.starts``."""
        info = self.search.info
        return {"start_em_to_lm": start_em_to_lm.to_list(), "mirrored": self.mirrored,
                "reversed_z": self.reversed_z, "z_offset_um": self.search.offset_um,
                "mutual_information_rigid": self.mi_rigid, "chosen": chosen,
                **({"mi_by_z_direction": info["best_mi_by_direction"]}
                   if "best_mi_by_direction" in info else {})}


def perturbations(centre: np.ndarray, extent_zyx_um: Sequence[float], with_z: bool
                  ) -> list[Affine]:
    """Clearly wrong placements near a result, as maps to compose on its right.

    Parameters
    ----------
    centre : ndarray, shape (3,)
        Pivot of the rotations (ROI centre, fixed frame), µm.
    extent_zyx_um : (z, y, x)
        ROI extent, µm.
    with_z : bool
        Also shift by ±¼ of the ROI depth.

    Returns
    -------
    list of Affine
        Shifts by ±¼ of the smaller lateral extent in x and y (and ±¼ depth in z), and
        rotations by 90°, 180° and 270° about z through ``centre``.
    """
    shift = 0.25 * min(extent_zyx_um[1:])
    moves = [(shift, 0, 0, 0), (-shift, 0, 0, 0), (0, shift, 0, 0), (0, -shift, 0, 0),
             (0, 0, 0, 90), (0, 0, 0, 180), (0, 0, 0, 270)]
    if with_z:
        dz = 0.25 * float(extent_zyx_um[0])
        moves += [(0, 0, dz, 0), (0, 0, -dz, 0)]
    return [Affine.from_translation(centre + [dx, dy, dz])
            @ Affine.from_linear_translation(rotation_matrix_xyz((0.0, 0.0, angle)),
                                             [0.0, 0.0, 0.0])
            @ Affine.from_translation(-centre) for dx, dy, dz, angle in moves]


def perturbation_mi(result: Affine, centre: np.ndarray, extent_zyx_um: Sequence[float],
                    with_z: bool, fixed_arr: np.ndarray, metric: MetricContext
                    ) -> tuple[float, ...]:
    """Our MI (nats) at each of :func:`perturbations` of ``result``, each scored alone.

    How much the found placement stands out from these is evidence that it is right
    (see :mod:`clemalign.confidence`).  Scored on the metric's threads, each as alone.
    """
    return tuple(map_in_threads(lambda p: -metric.metric(fixed_arr, result @ p),
                                perturbations(centre, extent_zyx_um, with_z), metric.workers))
