"""The XY pre-alignment stage: the steps of :mod:`clemalign.prealign` in order."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from .._threads import resolve_workers, submit_in_context
from .._timing import StepTimer
from ..errors import InputError
from ..lazy import as_numpy, depth_mean
from ..representation import blob_response
from ..scales import Scales, lm_polarity, select_scales_xy, with_found_em_polarity
from ..volume import Roi, Volume, check_image_values, parse_roi
from .config import PrealignConfig
from .fusion import Fusion, fuse, snap
from .histogram_search import histogram_candidates, patch_stride
from .ncc_search import NccSearch, ncc_search, refine
from .planes import em_slice_indices, lm_mip, placement_transform, resample_plane
from .result import Placement, PolarityFinding, PrealignResult

__all__ = ["prealign_xy", "XYImages", "xy_images", "check_roi_spans_lm_pixels"]

MIN_ROI_LM_PIXELS = 4  # an EM ROI narrower than this many LM pixels holds nothing to match


@dataclass(frozen=True, eq=False)
class XYImages:
    """Steps 1–3: the LM projection and the EM ROI slices, at their own and the common pixel.

    ``em_centre_xyz_um`` is the ROI centre (EM µm); ``patch_offset_px`` the ROI centre
    (x, y) inside the EM patch at the common pixel (exact, not (n-1)/2).
    """

    mip: np.ndarray
    mip_common: np.ndarray
    em_slices: np.ndarray
    em_common: np.ndarray
    z_list: tuple[int, ...]
    pixel_um: float
    roi: Roi
    roi_size_um: tuple[float, float]
    em_centre_xyz_um: np.ndarray
    lm_origin_xy_um: np.ndarray
    patch_offset_px: np.ndarray


def check_roi_spans_lm_pixels(em: Volume, lm: Volume, roi: Roi) -> None:
    """Refuse an EM ROI narrower than :data:`MIN_ROI_LM_PIXELS` LM pixels: nothing in it
    can be matched (usually a voxel size in the wrong unit).

    Raises
    ------
    InputError
    """
    width_um, height_um = roi.shape[2] * em.voxel_size_um[2], roi.shape[1] * em.voxel_size_um[1]
    lm_sy, lm_sx = lm.voxel_size_um[1:]
    if min(width_um / lm_sx, height_um / lm_sy) < MIN_ROI_LM_PIXELS:
        raise InputError(f"the EM ROI ({width_um:.3g} × {height_um:.3g} µm) spans fewer than "
                         f"{MIN_ROI_LM_PIXELS} LM pixels ({lm_sx:.3g} µm): nothing to match; "
                         "check both voxel sizes, or choose a larger ROI")


def xy_images(em: Volume, lm: Volume, roi: str | Roi | None, config: PrealignConfig,
              lm_channel: int | str = 0, *, workers: int | None = None) -> XYImages:
    """Steps 1–3: MIP of the LM channel, EM slices in the ROI, both at the common pixel
    (the EM slices resampled on ``workers`` threads: default the machine's cores, at most
    4; the result does not depend on it).

    Raises
    ------
    InputError
        Not one EM channel, bad LM channel, ROI outside the EM or larger than the LM
        field, empty/constant/NaN images.
    """
    if em.data.ndim != 3:
        raise InputError(f"EM {em.source or ''}: expected one channel (z, y, x), got shape "
                         f"{em.data.shape}; pick the EM channel first")
    if lm.data.ndim not in (3, 4):
        raise InputError(f"LM {lm.source or ''}: expected (z, y, x) or (c, z, y, x), got "
                         f"shape {lm.data.shape}")
    roi = parse_roi(roi, em.shape_zyx)
    z_list = em_slice_indices(roi, config.slices)
    em_sz, em_sy, em_sx = em.voxel_size_um
    lm_sy, lm_sx = lm.voxel_size_um[1:]
    pixel = float(config.search.pixel_um or lm_sx)
    roi_w_um, roi_h_um = roi.shape[2] * em_sx, roi.shape[1] * em_sy
    lm_h_um, lm_w_um = lm.shape_zyx[1] * lm_sy, lm.shape_zyx[2] * lm_sx
    check_roi_spans_lm_pixels(em, lm, roi)
    if roi_w_um > lm_w_um or roi_h_um > lm_h_um:
        raise InputError(f"the EM ROI ({roi_w_um:.1f} × {roi_h_um:.1f} µm) is larger than the LM "
                         f"field ({lm_w_um:.1f} × {lm_h_um:.1f} µm); check both voxel sizes, or "
                         "choose a smaller ROI")
    mip = lm_mip(lm, lm_channel)  # raises a clear error for a channel out of range
    check_image_values(mip, what=f"LM {lm.source or ''} channel {lm_channel}")
    em_stack = as_numpy(em.data[list(z_list), roi.slices[1], roi.slices[2]], np.float32)
    check_image_values(em_stack, what=f"EM {em.source or ''} ROI slices")
    centre_kji = np.array([(roi.z0 + roi.z1 - 1) / 2.0, (roi.y0 + roi.y1 - 1) / 2.0,
                           (roi.x0 + roi.x1 - 1) / 2.0])
    patch_offset = np.array([(roi.shape[2] - 1) * em_sx, (roi.shape[1] - 1) * em_sy]) / (2 * pixel)
    return XYImages(mip, resample_plane(mip, (lm_sy, lm_sx), pixel), em_stack,
                    resample_plane(em_stack, (em_sy, em_sx), pixel,
                                   workers=resolve_workers(workers)), z_list, pixel, roi,
                    (roi_w_um, roi_h_um), em.index_to_physical(centre_kji),
                    np.asarray(lm.origin_xyz_um[:2], float), patch_offset)


def _xy_scales(images: XYImages, config: PrealignConfig, workers: int) -> Scales:
    """Stage 1 for the XY pre-alignment when the caller did not run it."""
    lm_pol, lm_how = lm_polarity(config.lm_polarity, images.mip)
    return select_scales_xy(images.em_common, images.mip_common, images.pixel_um,
                            em_polarity=config.em_polarity, lm_polarity=lm_pol,
                            lm_polarity_how=lm_how, workers=workers)


def prealign_xy(em: Volume, lm: Volume, *, lm_channel: int | str = 0,
                roi: str | Roi | None = None, config: PrealignConfig = PrealignConfig(),
                scales: Scales | None = None, images: XYImages | None = None,
                progress: Callable[[str, float], None] | None = None,
                workers: int | None = None) -> PrealignResult:
    """Find the XY position, in-plane angle and handedness of the EM ROI in the LM field.

    Parameters
    ----------
    em : Volume
        EM stack ``(z, y, x)`` (a single 2D image is a stack of one slice).
    lm : Volume
        LM stack ``(z, y, x)`` or ``(c, z, y, x)``.
    lm_channel : int or str
        LM channel whose MIP is searched.
    roi : str or Roi, optional
        ``"z0:z1,y0:y1,x0:x1"`` in EM voxel indices (default: the whole EM volume).
    config : PrealignConfig
    scales : Scales, optional
        Stage 1's scales and polarities (:func:`clemalign.scales.select_xy_scales`);
        selected here when not given.
    images : XYImages, optional
        Steps 1–3 already computed by :func:`xy_images` (with the same ROI and config).
    progress : callable, optional
        Called with (step name, fraction of the stage done).
    workers : int, optional
        Threads for the whole stage (default: the machine's cores, at most 4); the
        result does not depend on it.

    Returns
    -------
    PrealignResult

    Raises
    ------
    InputError
        ROI outside the EM volume or larger than the LM field, no EM slice, bad channel,
        empty/constant/NaN images.
    """
    timer = StepTimer(progress)
    threads = resolve_workers(workers)
    im = images or xy_images(em, lm, roi, config, lm_channel, workers=threads)
    timer.tick("resample", 0.1)
    scales = scales or _xy_scales(im, config, threads)
    pixel = im.pixel_um
    mip_resp = blob_response(im.mip_common, scales.lm_sigma_um, pixel, scales.lm_polarity,
                             workers=threads)
    em_resp = blob_response(im.em_common, scales.em_sigma_um, pixel, scales.em_polarity,
                            axes=(1, 2), workers=threads)
    timer.tick("scale_selection", 0.3)

    # the EM sign is searched where Part B can decide it (the NCC of a negated template
    # is the negated NCC: both signs cost one correlation)
    signs = (1, -1) if config.method != "histogram" and config.em_polarity == "auto" else (1,)
    part_a, part_b = _run_parts(im, config, mip_resp, em_resp, signs, scales, em, lm,
                                timer.timings, threads)
    timer.tick("search", 0.9)

    sign = part_b.sign if part_b else 1
    candidates = list(part_a.get(sign, []))
    if sign < 0:  # the EM's contrast is the other one: its scale is selected on it
        scales, candidates = _reversed_em(im, config, scales, mip_resp, candidates,
                                          timer.timings, threads)
    if part_b is not None:  # 10: Part A's candidates re-scored by the spatial score
        snap_um = 0.5 * max(patch_stride(im.em_common.shape[1:], config.search)) * pixel
        candidates = [snap(c, part_b.score_map, snap_um) for c in candidates]
        candidates += part_b.candidates
    fused = fuse(candidates, spatial=part_b is not None, mad_c=config.search.mad_c,
                 pixel_um=part_b.score_map.pixel_um if part_b else pixel,
                 roi_size_um=im.roi_size_um)
    centre, angle, confidence = fused.centre_xy_um, fused.angle_deg, fused.confidence
    timer.tick("fusion", 0.95)
    if part_b is not None:
        confidence["orientation_margin"] = part_b.summary.orientation_margin
        if config.search.refine:
            before = centre
            centre, angle, refined_ncc = refine(
                centre, angle, part_b.kept, im.lm_origin_xy_um,
                min_overlap_fraction=config.search.min_overlap_fraction,
                mirrored=fused.mirrored, sign=sign, workers=threads)
            confidence.update(refined_ncc=refined_ncc,
                              refine_shift_um=float(np.hypot(*(centre - before))))
            timer.tick("refine", 1.0)
    timer.total()
    return _result(im, config, scales, part_b, mip_resp, fused, centre, angle, confidence,
                   timer.timings)


def _run_parts(im: XYImages, config: PrealignConfig, mip_resp: np.ndarray, em_resp: np.ndarray,
               signs: tuple[int, ...], scales: Scales, em: Volume, lm: Volume, timings: dict,
               workers: int) -> tuple[dict, NccSearch | None]:
    """Parts A and B side by side when there are threads for both (independent;
    numpy/scipy release the GIL).  Part A (single-threaded, about a fifth of Part B's
    time) overlaps the start of Part B, which keeps every thread: measured, giving it
    one thread fewer made the stage 1.7× slower on 2 cores."""
    run_a, run_b = config.method != "ncc", config.method != "histogram"
    side_by_side = run_a and run_b and workers >= 2

    def part_a() -> dict:
        return histogram_candidates(mip_resp, em_resp, im.z_list, config.search, im.pixel_um,
                                    im.lm_origin_xy_um, im.patch_offset_px, signs=signs)

    def part_b() -> NccSearch:
        if config.slices.em_slices is None:
            # Part B matches the mean over the whole ROI depth, as the MIP integrates the
            # whole LM depth (accumulated in float32 slice by slice: no float copy)
            em_image = depth_mean(em.data, im.roi.slices)
        else:
            em_image = im.em_slices.mean(axis=0)
        return ncc_search(im.mip, lm.voxel_size_um[1:], em_image, em.voxel_size_um[1:],
                          roi_size_um=im.roi_size_um, origin_xy_um=im.lm_origin_xy_um,
                          fine_sigma_um=scales.lm_sigma_um, search=config.search,
                          orientation=config.orientation,
                          polarity=(scales.em_polarity, scales.lm_polarity), signs=signs,
                          workers=workers)

    def timed(fn: Callable):
        def run():
            t = time.perf_counter()
            out = fn()
            return out, time.perf_counter() - t
        return run

    if side_by_side:
        with ThreadPoolExecutor(max_workers=2) as pool:
            fa, fb = (submit_in_context(pool, timed(part_a)),
                      submit_in_context(pool, timed(part_b)))
            (a, ta), (b, tb) = fa.result(), fb.result()
    else:
        a, ta = timed(part_a)() if run_a else ({}, 0.0)
        b, tb = timed(part_b)() if run_b else (None, 0.0)
    # per-part seconds (they overlap: their sum exceeds the wall time of the step)
    timings["histogram_search_s"], timings["ncc_search_s"] = ta, tb
    return a, b


def _reversed_em(im: XYImages, config: PrealignConfig, scales: Scales, mip_resp: np.ndarray,
                 candidates: list, timings: dict, workers: int) -> tuple[Scales, list]:
    """Stage 1's EM scale selected again on the polarity Part B found, and Part A's
    candidates searched again at it when it differs (only then: both signs were
    searched at the assumed polarity's scale)."""
    found = with_found_em_polarity(scales, im.em_common, im.pixel_um, workers)
    if np.isclose(found.em_sigma_um, scales.em_sigma_um, rtol=1e-3) or config.method == "ncc":
        return found, candidates
    t = time.perf_counter()
    em_resp = blob_response(im.em_common, found.em_sigma_um, im.pixel_um, found.em_polarity,
                            axes=(1, 2), workers=workers)
    part_a = histogram_candidates(mip_resp, em_resp, im.z_list, config.search, im.pixel_um,
                                  im.lm_origin_xy_um, im.patch_offset_px)
    timings["histogram_search_s"] += time.perf_counter() - t
    return found, part_a[1]


def _result(im: XYImages, config: PrealignConfig, scales: Scales, part_b: NccSearch | None,
            mip_resp: np.ndarray, fused: Fusion, centre: np.ndarray, angle: float,
            confidence: dict, timings: dict) -> PrealignResult:
    """The stage's result, with the placements of every orientation group."""
    em_centre = im.em_centre_xyz_um
    shift = centre - em_centre[:2]
    hypotheses = tuple(
        Placement(c.angle_deg, c.mirrored, c.snapped_xy_um, c.spatial_score,
                  placement_transform(em_centre, np.asarray(c.snapped_xy_um), c.angle_deg,
                                      c.mirrored))
        for c in (part_b.group_best if part_b else ()))
    em_how = scales.em_polarity_how if scales.em_polarity_how == "given" or part_b is None \
        else "found"
    scales = replace(scales, em_polarity_how=em_how)
    polarity = PolarityFinding(scales.em_polarity, scales.lm_polarity, em_how,
                               scales.lm_polarity_how,
                               part_b.sign_margin if part_b else float("nan"))
    return PrealignResult(
        shift_xy_um=(float(shift[0]), float(shift[1])),
        centre_lm_xy_um=(float(centre[0]), float(centre[1])),
        em_roi_centre_xyz_um=tuple(float(v) for v in em_centre),
        angle_deg=float(angle),
        initial_em_to_lm=placement_transform(em_centre, centre, angle, fused.mirrored),
        candidates=tuple(fused.candidates), confidence=confidence,
        sigmas_um={"em": scales.em_sigma_um, "lm": scales.lm_sigma_um}, roi=im.roi,
        em_slices=im.z_list, method=config.method, timings_s=timings,
        mip_log=mip_resp, pixel_um=im.pixel_um,
        mip_origin_xy_um=(float(im.lm_origin_xy_um[0]), float(im.lm_origin_xy_um[1])),
        patch_size_um=im.roi_size_um, polarity=polarity, scale_selections=scales.selections,
        mirrored=fused.mirrored, hypotheses=hypotheses, orientation=part_b.scan if part_b else {},
        ncc=part_b.summary if part_b else None, scales=scales)
