"""The orchestrator: representation → pre-alignment (XY or 3D) → 3D fine registration.

:func:`register` is the only place that sequences the stages; the CLI, the demo and any
GUI call it.  Each stage's algorithm lives in its own module (``representation``,
``prealign`` (XY), ``prealign3d``, ``registration``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import numpy as np

from .confidence import ConfidenceConfig, assess
from .errors import InputError
from .prealign import (
    PrealignConfig,
    PrealignResult,
    XYImages,
    lm_mip,
    prealign_xy,
    xy_images,
)
from .prealign.channels import ChannelScore, rank_channels
from .prealign.stage import check_roi_spans_lm_pixels
from .prealign3d import Prealign3DConfig, Prealign3DResult, lm_structure_scale, prealign_3d
from .registration import (
    Registration3DConfig,
    Registration3DResult,
    register_3d,
    register_plane,
    too_thin_for_3d,
)
from .scales import Scales, lm_polarity, select_scales_xy
from .transforms import Affine, angle_distance
from .volume import Roi, Volume, parse_roi

__all__ = ["RegistrationConfig", "RegistrationResult", "register", "choose_prealignment"]

PrealignMode = Literal["auto", "xy", "3d"]

# A cell layer: what a stack must hold beyond the EM block's depth before its projection
# mixes structures that the EM block does not contain (see choose_prealignment).
_CELL_LAYER_UM = 10.0





@dataclass(frozen=True)
class RegistrationConfig:
    """Everything :func:`register` needs besides the images (recorded in ``run.json``).

    Attributes
    ----------
    lm_channel : int or str, optional
        LM channel to register (index or name); None (default): every channel is tried
        at the pre-alignment and the clearest match is registered
        (:func:`clemalign.prealign.channels.rank_channels`).
    roi : str, optional
        EM ROI ``"z0:z1,y0:y1,x0:x1"`` in EM voxel indices (default: the whole EM).
    prealign_mode : {"auto", "xy", "3d"}
        Pre-alignment: the XY search of the LM projection (monolayers, sections), the
        3D search of the LM volume (thick specimens), or ``auto``: chosen by
        :func:`choose_prealignment`.
    prealign : PrealignConfig
        XY pre-alignment parameters.
    prealign3d : Prealign3DConfig
        3D pre-alignment parameters.
    flip_z : bool
        Search both z directions (a stack seen from the other side): the 3D search's
        orientations, or each XY start's z search in the 3D stage.
    fine : Registration3DConfig
    confidence : ConfidenceConfig
    max_starts : int
        Most orientation hypotheses handed to the 3D stage (the pre-alignment's result
        included); each costs a z search and a rigid stage.
    start_score_gap : float
        Hypotheses scoring within this many robust z-units of the best are tried by the
        3D stage, which keeps the one with the highest mutual information.
    plane_window_step_deg : float
        The XY pre-alignment's angle step (``prealign.orientation.window_step_deg``, at
        most) where the in-plane refinement follows: no 3D starts choose among its
        hypotheses, so its orientation is final.  Measured on the DeepCLEM sections:
        5° placed 18/20 (two corner ROIs at a wrong angle whose grid point happened to
        lie nearer than the truth's), 2.5° 20/20.
    """

    lm_channel: int | str | None = None
    roi: str | None = None
    prealign_mode: PrealignMode = "auto"
    flip_z: bool = True
    confidence: ConfidenceConfig = field(default_factory=ConfidenceConfig)
    max_starts: int = 3
    start_score_gap: float = 3.0
    plane_window_step_deg: float = 2.5
    prealign: PrealignConfig = field(default_factory=PrealignConfig)
    prealign3d: Prealign3DConfig = field(default_factory=Prealign3DConfig)
    fine: Registration3DConfig = field(default_factory=Registration3DConfig)

    def __post_init__(self) -> None:
        if self.prealign_mode not in ("auto", "xy", "3d"):
            raise InputError(f"prealign_mode: expected auto, xy or 3d, got "
                             f"{self.prealign_mode!r}")
        if not 0 < self.plane_window_step_deg <= 10:
            raise InputError(f"plane_window_step_deg: expected (0, 10], got "
                             f"{self.plane_window_step_deg}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_options(cls, *, lm_channel: int | str | None = None, roi: str | None = None,
                     model: Literal["rigid", "affine"] = "affine",
                     max_rotation_deg: float = 180.0, mirror: bool = True, flip_z: bool = True,
                     em_polarity: Literal["auto", "dark", "bright"] = "auto",
                     lm_polarity: Literal["auto", "dark", "bright"] = "auto",
                     prealign_mode: PrealignMode = "auto",
                     em_slices: tuple[int, ...] | None = None) -> RegistrationConfig:
        """The configuration the user-facing options describe (``clemalign register``'s
        flags, the napari widget's fields); everything else at its default."""
        base = cls()
        prealign = replace(
            base.prealign, em_polarity=em_polarity, lm_polarity=lm_polarity,
            slices=replace(base.prealign.slices, em_slices=em_slices),
            orientation=replace(base.prealign.orientation, max_rotation_deg=max_rotation_deg,
                                mirror=mirror))
        return cls(lm_channel=lm_channel, roi=roi, prealign_mode=prealign_mode, flip_z=flip_z,
                   prealign=prealign,
                   prealign3d=replace(base.prealign3d, max_rotation_deg=max_rotation_deg,
                                      mirror=mirror),
                   fine=replace(base.fine, model=model))


@dataclass(frozen=True, eq=False)
class RegistrationResult:
    """Result of :func:`register`.

    Attributes
    ----------
    em_to_lm : Affine
        EM physical µm → LM physical µm (see :data:`clemalign.transforms.CONVENTION`).
    prealign : PrealignResult or Prealign3DResult
        The pre-alignment that ran (see ``prealign_choice``).
    fine : Registration3DResult
    roi : Roi
    confidence : dict
        ``score`` in [0, 1], ``verdict`` ("ok", "uncertain" or "failed"), the
        ``evidence`` and ``reasons`` behind them (:func:`clemalign.confidence.assess`).
    timings_s : dict
    config : RegistrationConfig
    prealign_choice : dict
        Which pre-alignment ran and why (:func:`choose_prealignment`).
    scales : Scales
        Stage 1: the scales and polarities used (:mod:`clemalign.scales`).
    lm_channel : int or str
        The LM channel registered.
    channel_scores : tuple of ChannelScore
        Every channel's match clarity, best first, when the channel was chosen here.
    """

    em_to_lm: Affine
    prealign: PrealignResult | Prealign3DResult
    fine: Registration3DResult
    roi: Roi
    confidence: dict
    timings_s: dict
    config: RegistrationConfig
    prealign_choice: dict = field(default_factory=dict)
    scales: Scales | None = None
    lm_channel: int | str = 0
    channel_scores: tuple[ChannelScore, ...] = ()

    @property
    def lm_to_em(self) -> Affine:
        return self.em_to_lm.inverse()


def _alternative_starts(pre: PrealignResult, config: RegistrationConfig) -> list[Affine]:
    """Orientation hypotheses close in score to the pre-alignment's own result."""
    if not pre.hypotheses or config.max_starts <= 1:
        return []
    top = max(h.score for h in pre.hypotheses)
    out = []
    for h in pre.hypotheses:
        same = h.mirrored == pre.mirrored and angle_distance(h.angle_deg, pre.angle_deg) < 10.0
        if not same and h.score >= top - config.start_score_gap:
            out.append(h.initial_em_to_lm)
    return out[:config.max_starts - 1]


def choose_prealignment(em: Volume, lm: Volume, roi: Roi, mode: PrealignMode = "auto", *,
                        structure_sigma_um: float | None = None) -> dict:
    """Which pre-alignment to run, and why.

    The XY search matches the LM's maximum-intensity projection, right when the LM
    stack holds about what the EM block holds (a monolayer, a section).  When the LM
    is deeper than the EM block by more than a cell layer (10 µm, or two structure
    diameters if larger), its projection mixes structures the EM does not contain — in
    thick tissue a uniform carpet of nuclei — and ``auto`` chooses the 3D search.

    Returns
    -------
    dict
        ``mode`` ("xy" or "3d"), ``requested``, ``reason``, ``lm_depth_um``,
        ``em_roi_depth_um``, ``structure_sigma_um`` (3D LoG scale of the LM's
        structures, :func:`clemalign.prealign3d.lm_structure_scale`; with ``auto``).
    """
    lm_depth = float(lm.extent_um[0])
    em_depth = float((roi.z1 - roi.z0) * em.voxel_size_um[0])
    out = {"requested": mode, "lm_depth_um": lm_depth, "em_roi_depth_um": em_depth}
    if mode == "3d" and min(lm.shape_zyx[0], roi.z1 - roi.z0) < 3:
        which = "LM" if lm.shape_zyx[0] < 3 else "EM ROI"
        n = lm.shape_zyx[0] if which == "LM" else roi.z1 - roi.z0
        raise InputError(f"prealign_mode='3d': the {which} has {n} plane(s); a 3D search "
                         "needs at least 3 — use 'auto' or 'xy' for sections and thin stacks")
    if mode != "auto":
        return {**out, "mode": mode, "reason": f"prealign_mode={mode!r} was given"}
    if lm.shape_zyx[0] == 1 or roi.z1 - roi.z0 == 1:
        which = "the LM" if lm.shape_zyx[0] == 1 else "the EM ROI"
        return {**out, "mode": "xy", "reason": f"{which} is a single plane (a section)",
                "structure_sigma_um": float("nan")}
    sigma = (structure_sigma_um if structure_sigma_um is not None
             else lm_structure_scale(lm)[0] if lm.shape_zyx[0] > 1 else float("nan"))
    diameter = 2.0 * np.sqrt(3.0) * sigma if np.isfinite(sigma) else 0.0
    extra = max(_CELL_LAYER_UM, 2.0 * diameter)
    thick = lm_depth > em_depth + extra
    reason = (f"the LM stack ({lm_depth:.0f} µm deep) is deeper than the EM ROI "
              f"({em_depth:.1f} µm) by {'more' if thick else 'no more'} than "
              f"{extra:.0f} µm (a cell layer or two structure diameters of "
              f"{diameter:.1f} µm): its projection "
              + ("mixes layers the EM does not hold" if thick else "shows what the EM holds"))
    return {**out, "mode": "3d" if thick else "xy", "reason": reason,
            "structure_sigma_um": sigma}


def register(em: Volume, lm: Volume, *, config: RegistrationConfig = RegistrationConfig(),
             progress: Callable[[str, float], None] | None = None,
             workers: int | None = None,
             prealigned: Callable[[PrealignResult | Prealign3DResult], None] | None = None
             ) -> RegistrationResult:
    """Register an EM stack to an LM stack, stage by stage as in the method.

    1. representation: the LM channel (when not given), the scales and polarities
       (:mod:`clemalign.scales`);
    2. pre-alignment: XY (:func:`clemalign.prealign.prealign_xy`) or 3D
       (:func:`clemalign.prealign3d.prealign_3d`), chosen by :func:`choose_prealignment`;
    3. 3D fine registration (:func:`clemalign.registration.register_3d`);
    4. confidence (:func:`clemalign.confidence.assess`).

    Parameters
    ----------
    em : Volume
        EM stack ``(z, y, x)`` (one channel).
    lm : Volume
        LM stack ``(z, y, x)`` or ``(c, z, y, x)``; ``config.lm_channel`` is registered
        (all channels are tried when it is None).
    config : RegistrationConfig
    progress : callable, optional
        Called with (stage, fraction of the stage done); stages are ``"prealign"`` and
        ``"fine"``.
    workers : int, optional
        Threads for every step (default: the machine's cores, at most 4); the result
        does not depend on it.
    prealigned : callable, optional
        Called with the pre-alignment's result as the 3D stage starts (the CLI renders
        its figures meanwhile).

    Returns
    -------
    RegistrationResult

    Raises
    ------
    InputError
        Invalid inputs (see :func:`clemalign.prealign.prealign_xy`); a step's own
        precondition that fails on these inputs is reported naming the inputs, not the
        step's function.
    """
    try:
        return _register(em, lm, config, progress, workers, prealigned)
    except InputError as exc:
        name, sep, rest = str(exc).partition(": ")
        # a parameter's name stays (the CLI names its flag); a function's is replaced
        if sep and name.isidentifier() and name not in _parameter_names(RegistrationConfig):
            raise InputError(f"EM {em.source or '(array)'} with LM {lm.source or '(array)'}: "
                             f"{rest}; check both voxel sizes and the --roi") from exc
        raise


def _parameter_names(cls) -> set[str]:
    """Every field name of a configuration dataclass and of those nested in it."""
    import dataclasses
    import typing

    names = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        names.add(f.name)
        if dataclasses.is_dataclass(hints.get(f.name)):
            names |= _parameter_names(hints[f.name])
    return names


def _register(em: Volume, lm: Volume, config: RegistrationConfig,
              progress: Callable[[str, float], None] | None,
              workers: int | None,
              prealigned: Callable[[PrealignResult | Prealign3DResult], None] | None = None
              ) -> RegistrationResult:
    t0 = time.perf_counter()
    if em.data.ndim != 3:
        raise InputError(f"EM {em.source or ''}: expected a single-channel (z, y, x) stack, "
                         f"got shape {em.data.shape}")
    roi = parse_roi(config.roi, em.shape_zyx)
    check_roi_spans_lm_pixels(em, lm, roi)

    def stage(name: str):
        return None if progress is None else (lambda step, f: progress(name, f))

    # 1. representation: the LM channel, the polarities and the scales
    channel, channels = _lm_channel(em, lm, roi, config, workers)
    lm_chan = lm.channel(channel) if lm.data.ndim == 4 else lm
    scales, choice, images, structure = _representation(em, lm_chan, roi, config, workers)
    # 2. pre-alignment, XY or 3D
    if choice["mode"] == "3d":
        pre = prealign_3d(em, lm_chan, roi=roi.slices,
                          config=replace(config.prealign3d, flip_z=config.flip_z),
                          structure=structure, progress=stage("prealign"))
        starts = [h.em_to_lm(pre.em_roi_centre_xyz_um) for h in pre.hypotheses]
        fine_kwargs = {"lm_sigma_um": scales.structure_sigma_um,
                       "alternatives": starts[1:config.max_starts],
                       # the refinement's last grid leaves z within about one LM z voxel
                       "z_range_um": 2.0 * lm_chan.voxel_size_um[0]}
    else:
        pre = prealign_xy(em, lm_chan, roi=roi, config=_xy_config(em, lm_chan, roi, scales, config),
                          scales=scales, images=images, progress=stage("prealign"),
                          workers=workers)
        scales = pre.scales  # with the EM's polarity (and its scale) as the match found it
        fine_kwargs = {"lm_sigma_um": scales.lm_sigma_um,
                       "alternatives": _alternative_starts(pre, config),
                       "try_reversed_z": config.flip_z}
    t1 = time.perf_counter()
    if prealigned is not None:
        prealigned(pre)
    # 3. 3D fine registration
    # the EM's polarity as the pre-alignment's match found it
    polarity = (scales.em_polarity if isinstance(pre, PrealignResult)
                else pre.scan.get("em_polarity", scales.em_polarity), scales.lm_polarity)
    thin = too_thin_for_3d(em, lm_chan, roi.slices, fine_kwargs["lm_sigma_um"], config.fine)
    if thin:  # a section or a few planes: refined in the plane, z kept
        fine = register_plane(em, lm_chan, pre.initial_em_to_lm, roi_kji=roi.slices,
                              lm_sigma_um=fine_kwargs["lm_sigma_um"], config=config.fine,
                              polarity=polarity, reason=thin, progress=stage("fine"))
    else:
        fine = register_3d(em, lm_chan, pre.initial_em_to_lm, roi_kji=roi.slices,
                           config=config.fine, progress=stage("fine"), polarity=polarity,
                           workers=workers, **fine_kwargs)
    t2 = time.perf_counter()
    # 4. confidence
    confidence = assess(pre, fine, config.confidence)
    timings = {"prealign": t1 - t0, "fine": t2 - t1, "total": t2 - t0}
    return RegistrationResult(fine.em_to_lm, pre, fine, roi, confidence, timings, config,
                              choice, scales, channel, channels)


def _xy_config(em: Volume, lm: Volume, roi: Roi, scales: Scales,
               config: RegistrationConfig) -> PrealignConfig:
    """The XY pre-alignment's parameters: finer angles where the in-plane path follows."""
    orientation = config.prealign.orientation
    step = min(orientation.window_step_deg, config.plane_window_step_deg)
    if step == orientation.window_step_deg or \
            not too_thin_for_3d(em, lm, roi.slices, scales.lm_sigma_um, config.fine):
        return config.prealign
    return replace(config.prealign, orientation=replace(orientation, window_step_deg=step))


def _representation(em: Volume, lm: Volume, roi: Roi, config: RegistrationConfig,
                    workers: int | None) -> tuple[Scales, dict, XYImages | None, tuple | None]:
    """Stage 1: polarities and scales, and with them the choice of pre-alignment.

    The LM's 3D structure scale (when the LM is a stack and 3D is possible) decides
    between XY and 3D; the XY path then selects the EM and LM scales at the common pixel.
    Returns the scales, the choice, the XY images (XY path) and the structure scale.
    """
    lm_pol, lm_how = lm_polarity(config.prealign.lm_polarity, lm_mip(lm))
    structure = (lm_structure_scale(lm, polarity=lm_pol)
                 if config.prealign_mode != "xy" and lm.shape_zyx[0] > 1 else None)
    choice = choose_prealignment(em, lm, roi, config.prealign_mode,
                                 structure_sigma_um=structure[0] if structure else None)
    if choice["mode"] == "3d":
        # the 3D search scores both EM contrast signs itself
        scales = Scales("dark", lm_pol, "searched", lm_how, structure_sigma_um=structure[0],
                        selections={"lm structure": structure[1].to_dict()})
        return scales, choice, None, structure
    images = xy_images(em, lm, roi, config.prealign, workers=workers)
    scales = select_scales_xy(images.em_common, images.mip_common, images.pixel_um,
                              em_polarity=config.prealign.em_polarity, lm_polarity=lm_pol,
                              lm_polarity_how=lm_how, workers=workers)
    return scales, choice, images, structure


def _lm_channel(em: Volume, lm: Volume, roi: Roi, config: RegistrationConfig,
                workers: int | None) -> tuple[int | str, tuple[ChannelScore, ...]]:
    """The LM channel to register: the given one, or the clearest match of all."""
    if config.lm_channel is not None:
        if lm.data.ndim == 4:
            lm.channel(config.lm_channel)  # raises a clear error when out of range
        return config.lm_channel, ()
    if lm.data.ndim == 3 or lm.data.shape[0] == 1:
        return 0, ()
    scores = rank_channels(em, lm, roi, config.prealign, workers=workers)
    return scores[0].channel, scores
