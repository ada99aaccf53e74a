"""Masked normalised cross-correlation of an image with templates, by FFT.

The spatial score of the pre-alignment: the normalised cross-correlation (NCC) between
the LM image and a rotated EM template, at every offset at once.  A rotated template is
a rotated rectangle inside a larger canvas, and near the LM border it hangs partly
outside the image, so the NCC is computed over the overlap of the two masks only
(Padfield, "Masked object registration in the Fourier domain", IEEE TIP 2012): every
windowed sum it needs is one FFT correlation of masked images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import fft as sfft

from .errors import InputError

__all__ = ["masked_ncc"]


def _spectrum(values: np.ndarray, shape: tuple[int, int], workers: int) -> np.ndarray:
    return sfft.rfft2(values, s=shape, workers=workers)


def masked_ncc(image: np.ndarray, templates: Sequence[np.ndarray],
               template_masks: Sequence[np.ndarray], *, image_mask: np.ndarray | None = None,
               min_overlap_fraction: float = 0.5, weight_by_overlap: bool = False,
               workers: int = -1) -> np.ndarray:
    """NCC of ``image`` with each template at every offset, over the masks' overlap.

    For an offset ``(r, c)`` the template's top-left pixel lies on image pixel ``(r, c)``;
    offsets run over the *full* range ``r = -(h-1) .. H-1`` and ``c = -(w-1) .. W-1``, so
    templates that hang over the border are scored too (on the overlap only).

    Parameters
    ----------
    image : ndarray, shape (H, W)
    templates : sequence of ndarray, each (h, w)
        All of the same shape (e.g. one per rotation angle, on one canvas).
    template_masks : sequence of ndarray of bool, each (h, w)
        Valid template pixels.
    image_mask : ndarray of bool, shape (H, W), optional
        Valid image pixels (default: all).
    min_overlap_fraction : float
        Offsets where the overlap holds less than this fraction of the template's valid
        pixels get NCC 0 (few pixels give meaningless high correlations).
    weight_by_overlap : bool
        Multiply the NCC by ``sqrt(overlap / valid template pixels)``.  An NCC over fewer
        pixels is noisier (its chance level grows as ``1/sqrt(n)``), so this keeps partial
        overlaps at the border from winning by chance while a true partial match keeps
        most of its score.
    workers : int
        FFT threads (scipy.fft; -1 = all cores).

    Returns
    -------
    ndarray of float32, shape (n_templates, H + h - 1, W + w - 1)
        NCC in [-1, 1]; element ``[t, i, j]`` is the offset ``(i - (h-1), j - (w-1))``.
    """
    # float32 FFTs are twice as fast; the sums are of zero-mean-ish responses, so the
    # cancellation in Σf² − (Σf)²/n stays far above float32 round-off
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2 or len(templates) == 0 or len(templates) != len(template_masks):
        raise InputError("masked_ncc: need a 2D image and as many masks as templates (≥ 1)")
    h, w = np.asarray(templates[0]).shape
    H, W = image.shape
    shape = (sfft.next_fast_len(H + h - 1, real=True), sfft.next_fast_len(W + w - 1, real=True))
    f_mask = (np.ones(image.shape, bool) if image_mask is None
              else np.asarray(image_mask, bool)).astype(np.float32)
    f = image * f_mask
    spec_fm = _spectrum(f_mask, shape, workers)
    spec_f = _spectrum(f, shape, workers)
    spec_f2 = _spectrum(f * f, shape, workers)
    out_shape = (H + h - 1, W + w - 1)

    def corr(spec_a: np.ndarray, spec_flipped_b: np.ndarray) -> np.ndarray:
        # Σ_x a(x+u)·b(x) = (a * b flipped)(u + (h-1, w-1)): a linear convolution, so
        # the "full" output starts at index 0 with no wrap-around (shape ≥ H+h-1)
        full = sfft.irfft2(spec_a * spec_flipped_b, s=shape, workers=workers)
        return full[:out_shape[0], :out_shape[1]]

    out = np.zeros((len(templates),) + out_shape, dtype=np.float32)
    for i, (t, m) in enumerate(zip(templates, template_masks, strict=True)):
        t = np.asarray(t, dtype=np.float32)
        m = np.asarray(m, bool)
        if t.shape != (h, w) or m.shape != (h, w):
            raise InputError("masked_ncc: all templates and masks must have the same shape")
        tm = m.astype(np.float32)
        tv = t * tm
        flip = (slice(None, None, -1), slice(None, None, -1))
        spec_tm = _spectrum(tm[flip], shape, workers)
        spec_t = _spectrum(tv[flip], shape, workers)
        spec_t2 = _spectrum((tv * tv)[flip], shape, workers)
        n = np.rint(corr(spec_fm, spec_tm))
        sum_f, sum_f2 = corr(spec_f, spec_tm), corr(spec_f2, spec_tm)
        sum_t, sum_t2 = corr(spec_fm, spec_t), corr(spec_fm, spec_t2)
        sum_ft = corr(spec_f, spec_t)
        enough = n >= max(2.0, min_overlap_fraction * tm.sum())
        n_safe = np.where(enough, n, 1.0)
        var_f = sum_f2 - sum_f * sum_f / n_safe
        var_t = sum_t2 - sum_t * sum_t / n_safe
        cov = sum_ft - sum_f * sum_t / n_safe
        # relative floor: float32 FFT round-off leaves ~1e-7 of the energy in flat regions
        floor_f = 1e-5 * max(float(np.abs(sum_f2).max()), 1e-300)
        floor_t = 1e-5 * max(float(np.abs(sum_t2).max()), 1e-300)
        valid = enough & (var_f > floor_f) & (var_t > floor_t)
        denom = np.sqrt(np.where(valid, var_f * var_t, 1.0))
        ncc = np.clip(cov / denom, -1.0, 1.0)
        if weight_by_overlap:
            ncc = ncc * np.sqrt(np.clip(n / tm.sum(), 0.0, 1.0))
        out[i] = np.where(valid, ncc, 0.0)
    return out
