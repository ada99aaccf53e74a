"""Masked normalised cross-correlation of an image with templates, by FFT (2D or 3D).

The spatial score of the pre-alignment: the normalised cross-correlation (NCC) between
the LM image and a rotated EM template, at every offset at once.  A rotated template is
a rotated rectangle inside a larger canvas, and near the LM border it hangs partly
outside the image, so the NCC is computed over the overlap of the two masks only
(Padfield, "Masked object registration in the Fourier domain", IEEE TIP 2012): every
windowed sum it needs is one FFT correlation of masked images.

:func:`shared_support_ncc` is the fast path for many templates on one support (the 3D
orientation scan: a cylinder is the same after any turn about its axis, a mirror or a
reversal of z): the image's windowed sums over the support are computed once, and each
template then costs one forward and one inverse FFT instead of three and six.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import fft as sfft

from ._threads import map_in_threads, resolve_workers
from .errors import InputError

__all__ = ["masked_ncc", "shared_support_ncc"]


def _spectrum(values: np.ndarray, shape: tuple[int, ...], workers: int) -> np.ndarray:
    """``rfftn`` of ``values`` zero-padded to ``shape``.

    In 2D as pocketfft's own two passes (along x, then along y), the first over the rows
    that hold values only: the padding rows are zeros (a template fills 40 % of them),
    and the numbers are ``rfftn``'s, bit for bit.
    """
    if values.ndim != 2:
        return sfft.rfftn(values, s=shape, workers=workers)
    along_x = sfft.rfft(values, n=shape[1], axis=1, workers=workers)
    return sfft.fft(along_x, n=shape[0], axis=0, workers=workers, overwrite_x=True)


def _inverse_rows(spectrum: np.ndarray, shape: tuple[int, int], rows: slice,
                  workers: int) -> np.ndarray:
    """``irfftn(spectrum, s=shape)[rows]`` (2D): pocketfft's two passes, the second (along
    x) over ``rows`` only, with ``irfftn``'s one scaling at the end: the same numbers."""
    along_y = sfft.ifft(spectrum, axis=0, norm="forward", workers=workers)
    out = sfft.irfft(along_y[rows], n=shape[1], axis=1, norm="forward", workers=workers)
    out *= out.dtype.type(1.0 / (shape[0] * shape[1]))
    return out


def _full_shape(image_shape: Sequence[int], template_shape: Sequence[int]) -> tuple[int, ...]:
    """FFT shape for a linear (not circular) correlation over every offset."""
    return tuple(sfft.next_fast_len(a + b - 1, real=True)
                 for a, b in zip(image_shape, template_shape, strict=True))


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding every True element of ``mask`` (None: none)."""
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hit.size == 0:
            return None
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def masked_ncc(image: np.ndarray, templates: Sequence[np.ndarray],
               template_masks: Sequence[np.ndarray], *, image_mask: np.ndarray | None = None,
               min_overlap_fraction: float = 0.5, weight_by_overlap: bool = False,
               workers: int | None = None) -> np.ndarray:
    """NCC of ``image`` with each template at every offset, over the masks' overlap.

    For an offset ``(r, c)`` the template's top-left pixel lies on image pixel ``(r, c)``;
    offsets run over the *full* range ``r = -(h-1) .. H-1`` and ``c = -(w-1) .. W-1``, so
    templates that hang over the border are scored too (on the overlap only).

    Parameters
    ----------
    image : ndarray, shape (H, W) or (D, H, W)
    templates : sequence of ndarray, each (h, w) or (d, h, w)
        All of the same shape (e.g. one per rotation angle, on one canvas).
    template_masks : sequence of ndarray of bool, each (h, w) or (d, h, w)
        Valid template pixels.
    image_mask : ndarray of bool, same shape as ``image``, optional
        Valid image pixels (default: all).
    min_overlap_fraction : float
        Offsets where the overlap holds less than this fraction of the template's valid
        pixels get NCC 0 (few pixels give meaningless high correlations).
    weight_by_overlap : bool
        Multiply the NCC by ``sqrt(overlap / valid template pixels)``.  An NCC over fewer
        pixels is noisier (its chance level grows as ``1/sqrt(n)``), so this keeps partial
        overlaps at the border from winning by chance while a true partial match keeps
        most of its score.
    workers : int, optional
        FFT threads (scipy.fft; default: the machine's cores, at most 4).

    Returns
    -------
    ndarray of float32, shape (n_templates, H + h - 1, W + w - 1) (3D: one more axis)
        NCC in [-1, 1]; element ``[t, i, j]`` is the offset ``(i - (h-1), j - (w-1))``.
    """
    # float32 FFTs are twice as fast; the sums are of zero-mean-ish responses, so the
    # cancellation in Σf² − (Σf)²/n stays far above float32 round-off
    image = np.asarray(image, dtype=np.float32)
    if image.ndim not in (2, 3) or len(templates) == 0 or len(templates) != len(template_masks):
        raise InputError("masked_ncc: need a 2D or 3D image and as many masks as templates "
                         "(≥ 1)")
    t_shape = np.asarray(templates[0]).shape
    if len(t_shape) != image.ndim:
        raise InputError("masked_ncc: templates must have the image's number of dimensions")
    templates = [np.asarray(t, dtype=np.float32) for t in templates]
    template_masks = [np.asarray(m, bool) for m in template_masks]
    if any(t.shape != t_shape or m.shape != t_shape
           for t, m in zip(templates, template_masks, strict=True)):
        raise InputError("masked_ncc: all templates and masks must have the same shape")
    shape = _full_shape(image.shape, t_shape)
    workers = resolve_workers(workers)
    f_mask = (np.ones(image.shape, bool) if image_mask is None
              else np.asarray(image_mask, bool)).astype(np.float32)
    f = image * f_mask
    spec_fm = _spectrum(f_mask, shape, workers)
    spec_f = _spectrum(f, shape, workers)
    spec_f2 = _spectrum(f * f, shape, workers)
    out_shape = tuple(a + b - 1 for a, b in zip(image.shape, t_shape, strict=True))
    crop = tuple(slice(0, n) for n in out_shape)
    flip = (slice(None, None, -1),) * image.ndim
    # templates side by side, each on its share of the threads: their element-wise
    # arithmetic runs in parallel too (pocketfft splits a transform into 1D lines,
    # computed the same whatever the thread count: the scores do not depend on it)
    parallel = min(workers, len(templates))
    inner = max(1, workers // parallel)

    def corr(spec_a: np.ndarray, spec_flipped_b: np.ndarray,
             box: tuple[slice, ...] = crop) -> np.ndarray:
        # Σ_x a(x+u)·b(x) = (a * b flipped)(u + (h-1, w-1)): a linear convolution, so
        # the "full" output starts at index 0 with no wrap-around (shape ≥ H+h-1);
        # ``box`` of it (in 2D only its rows are transformed along x)
        product = spec_a * spec_flipped_b
        if image.ndim == 2:
            return _inverse_rows(product, shape, box[0], inner)[:, box[1]]
        return sfft.irfftn(product, s=shape, workers=inner)[box]

    out = np.zeros((len(templates),) + out_shape, dtype=np.float32)

    def score(i: int) -> None:
        tm = template_masks[i].astype(np.float32)
        tv = templates[i] * tm
        spec_tm = _spectrum(tm[flip], shape, inner)
        spec_t = _spectrum(tv[flip], shape, inner)
        spec_t2 = _spectrum((tv * tv)[flip], shape, inner)
        n = np.rint(corr(spec_fm, spec_tm))
        enough = n >= max(2.0, min_overlap_fraction * tm.sum())
        box = _bounding_box(enough)
        if box is None:  # no offset overlaps enough: all 0
            return
        sum_f2, sum_t2 = corr(spec_f2, spec_tm), corr(spec_fm, spec_t2)
        # relative floor: float32 FFT round-off leaves ~1e-7 of the energy in flat regions
        # (of the whole map: max |x| as max(max x, -min x), no temporary)
        floor_f = 1e-5 * max(float(sum_f2.max()), -float(sum_f2.min()), 1e-300)
        floor_t = 1e-5 * max(float(sum_t2.max()), -float(sum_t2.min()), 1e-300)
        # the rest only where some offset overlaps enough (about half the map)
        n, enough, sum_f2, sum_t2 = n[box], enough[box], sum_f2[box], sum_t2[box]
        sum_f, sum_t = corr(spec_f, spec_tm, box), corr(spec_fm, spec_t, box)
        sum_ft = corr(spec_f, spec_t, box)
        n_safe = np.where(enough, n, 1.0)
        var_f = sum_f2 - sum_f * sum_f / n_safe
        var_t = sum_t2 - sum_t * sum_t / n_safe
        cov = sum_ft - sum_f * sum_t / n_safe
        valid = enough & (var_f > floor_f) & (var_t > floor_t)
        denom = np.sqrt(np.where(valid, var_f * var_t, 1.0))
        ncc = np.clip(cov / denom, -1.0, 1.0)
        if weight_by_overlap:
            ncc = ncc * np.sqrt(np.clip(n / tm.sum(), 0.0, 1.0))
        out[i][box] = np.where(valid, ncc, 0.0)

    map_in_threads(score, range(len(templates)), parallel)
    return out


def shared_support_ncc(image: np.ndarray, support: np.ndarray, *,
                       min_overlap_fraction: float = 0.5, workers: int | None = None
                       ) -> Callable[[np.ndarray], np.ndarray]:
    """A scorer of many templates that share one support, at every offset (2D or 3D).

    The image's windowed count, sum and sum of squares over the support are computed
    once.  Each template is then made zero-mean with unit energy over the support, and
    its score costs one forward and one inverse FFT:

        score(u) = Σ_O f(x+u)·t(x) / sqrt(Σ_O f² − (Σ_O f)²/n)

    over the overlap ``O`` (``n`` pixels) of the support placed at ``u`` with the image.
    Where the support lies wholly inside the image (``n = N``) this is the NCC exactly;
    over a partial overlap it is the NCC times ``sqrt(n/N)`` if the template's values
    on the overlap have zero mean and ``n/N`` of its energy (true on average), the
    overlap weighting of :func:`masked_ncc`.  Offsets with ``n`` below
    ``min_overlap_fraction·N`` score 0.

    Parameters
    ----------
    image : ndarray (2D or 3D)
    support : ndarray of bool
        The templates' common valid pixels (same dimensions as ``image``).
    min_overlap_fraction : float
    workers : int, optional
        FFT threads (scipy.fft; default: the machine's cores, at most 4).

    Returns
    -------
    callable
        ``score(template)`` → float32 array of shape ``image.shape + support.shape - 1``,
        element ``[i, j, ...]`` being the offset ``(i - (h-1), j - (w-1), ...)`` as in
        :func:`masked_ncc`.
    """
    f = np.asarray(image, dtype=np.float32)
    m = np.asarray(support, bool)
    if f.ndim not in (2, 3) or m.ndim != f.ndim:
        raise InputError("shared_support_ncc: need a 2D or 3D image and a support of the "
                         "same dimensions")
    n_support = int(m.sum())
    if n_support < 2:
        raise InputError("shared_support_ncc: the support holds fewer than two pixels")
    shape = _full_shape(f.shape, m.shape)
    workers = resolve_workers(workers)
    crop = tuple(slice(0, a + b - 1) for a, b in zip(f.shape, m.shape, strict=True))
    flip = (slice(None, None, -1),) * f.ndim
    spec_m = _spectrum(m[flip].astype(np.float32), shape, workers)
    spec_f = _spectrum(f, shape, workers)

    def corr(spec_a: np.ndarray, spec_flipped_b: np.ndarray) -> np.ndarray:
        return sfft.irfftn(spec_a * spec_flipped_b, s=shape, workers=workers)[crop]

    n = np.rint(corr(_spectrum(np.ones(f.shape, np.float32), shape, workers), spec_m))
    sum_f = corr(spec_f, spec_m)
    var_f = corr(_spectrum(f * f, shape, workers), spec_m)
    enough = n >= max(2.0, min_overlap_fraction * n_support)
    var_f -= sum_f * sum_f / np.where(enough, n, 1.0)
    del sum_f, n
    floor = 1e-5 * max(float(np.abs(var_f).max()), 1e-30)
    valid = enough & (var_f > floor)
    inv_sd = np.where(valid, 1.0 / np.sqrt(np.where(valid, var_f, 1.0)), 0.0).astype(np.float32)
    del var_f, valid, enough

    def score(template: np.ndarray) -> np.ndarray:
        t = np.asarray(template, dtype=np.float32)
        if t.shape != m.shape:
            raise InputError("shared_support_ncc: the template's shape differs from the "
                             "support's")
        t = np.where(m, t - t[m].mean(), 0.0).astype(np.float32)
        energy = float((t * t).sum())
        if energy <= 0:
            return np.zeros(inv_sd.shape, np.float32)
        t /= np.float32(np.sqrt(energy))
        return np.clip(corr(spec_f, _spectrum(t[flip], shape, workers)) * inv_sd, -1.0, 1.0)

    return score
