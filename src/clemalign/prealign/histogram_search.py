"""Part A, the published search: rotation-invariant patch histograms compared everywhere.

Steps 5–8 of the method: for every EM slice, the histograms of its blob response (LoG
values, LDP codes, rotation-invariant LDP codes) are compared by cosine and histogram
intersection with the histograms of every LM patch of the ROI's size (integral
histograms, :func:`clemalign.descriptors.patch_histograms`); each map's best peaks are
candidate positions of the ROI centre.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from skimage.feature import peak_local_max

from .. import descriptors as dsc
from .config import LDP_K, LOG_BINS, LOG_CLIP_SD, PEAKS_PER_MAP, SearchConfig
from .result import Candidate

__all__ = ["histogram_candidates", "patch_stride"]


def patch_stride(patch: Sequence[int], search: SearchConfig) -> list[int]:
    """Distance (pixels, per axis) between the tested patch positions."""
    return [max(1, int(round(search.stride_fraction * n))) for n in patch]


def _bin_maps(image: np.ndarray, descriptors: Sequence[str],
              ldp_codes: np.ndarray | None = None) -> dict[str, tuple[np.ndarray, int]]:
    """Bin-index image and bin count of each descriptor."""
    maps = {}
    if "log" in descriptors:
        maps["log"] = (dsc.log_value_bins(image, LOG_BINS, clip_sd=LOG_CLIP_SD), LOG_BINS)
    if "ldp" in descriptors or "ldp_ri" in descriptors:
        codes = dsc.ldp_codes(image, LDP_K) if ldp_codes is None else ldp_codes
        if "ldp" in descriptors:
            maps["ldp"] = (dsc.ldp_bins(codes, LDP_K), len(dsc.ldp_code_table(LDP_K)))
        if "ldp_ri" in descriptors:
            maps["ldp_ri"] = (dsc.ldp_rotation_invariant(codes, LDP_K),
                              dsc.ldp_rotation_classes(LDP_K))
    return maps


def histogram_candidates(mip_resp: np.ndarray, em_resp: np.ndarray, z_list: Sequence[int],
                         search: SearchConfig, pixel_um: float, origin_xy_um: np.ndarray,
                         patch_offset_px: np.ndarray, *, signs: Sequence[int] = (1,)
                         ) -> dict[int, list[Candidate]]:
    """Part A's candidates: one set per EM slice × descriptor × similarity.

    Parameters
    ----------
    mip_resp : ndarray (y, x)
        LM-MIP blob response at the common pixel.
    em_resp : ndarray (n, y, x)
        Blob responses of the EM slices ``z_list`` at the common pixel.
    z_list : sequence of int
    search : SearchConfig
        Descriptors, similarities and stride.
    pixel_um : float
        The common pixel.
    origin_xy_um : (2,) array
        LM physical position of pixel (0, 0).
    patch_offset_px : (2,) array
        ROI centre (x, y) inside the patch, in common pixels.
    signs : sequence of {1, -1}
        EM response signs to search (−1: the EM's polarity opposite to the one assumed).
        LDP codes use absolute Kirsch responses, so only the LoG-value histogram changes.

    Returns
    -------
    dict
        Sign → candidates.
    """
    patch = em_resp.shape[1:]
    stride = patch_stride(patch, search)
    rows, cols = dsc.search_positions(mip_resp.shape, patch, stride)
    lm_hist = {name: dsc.patch_histograms(b, n, patch, rows, cols)
               for name, (b, n) in _bin_maps(mip_resp, search.descriptors).items()}
    dist = max(1, int(np.ceil(0.25 * min(patch) / max(stride))))
    out: dict[int, list[Candidate]] = {s: [] for s in signs}

    def peaks_of(em_bins: np.ndarray, name: str, n: int, z: int) -> list[Candidate]:
        found = []
        em_h = dsc.histogram(em_bins, n)
        for sim in search.similarities:
            score = dsc.histogram_similarity(em_h, lm_hist[name], sim)
            peaks = peak_local_max(score, min_distance=dist, num_peaks=PEAKS_PER_MAP,
                                   exclude_border=False)
            if len(peaks) == 0:  # flat map: take the argmax
                peaks = np.array([np.unravel_index(np.argmax(score), score.shape)])
            for rank, (i, j) in enumerate(peaks):
                xy = origin_xy_um + (np.array([cols[j], rows[i]]) + patch_offset_px) * pixel_um
                found.append(Candidate("histogram", rank, (xy[0], xy[1]), (xy[0], xy[1]),
                                       float(score[i, j]), float("nan"), 0.0, slice_z=int(z),
                                       descriptor=name, similarity=sim))
        return found

    for z, em_img in zip(z_list, em_resp, strict=True):
        for name, (b, n) in _bin_maps(em_img, search.descriptors).items():
            shared = None if name == "log" else peaks_of(b, name, n, z)
            for sign in signs:
                if shared is not None:
                    out[sign] += shared
                else:  # the LoG-value histogram is the one descriptor that sees the sign
                    bins = b if sign > 0 else _bin_maps(-em_img, ("log",))["log"][0]
                    out[sign] += peaks_of(bins, name, n, z)
    return out
