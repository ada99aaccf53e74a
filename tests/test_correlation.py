"""Masked FFT NCC against a direct computation."""

import numpy as np
import pytest

from clemalign.correlation import masked_ncc


# 0.9: only the offsets near full overlap count (the scores are computed in their box)
@pytest.mark.parametrize("fraction", [0.3, 0.9])
def test_masked_ncc_equals_direct(fraction):
    rng = np.random.default_rng(1)
    img = rng.standard_normal((17, 23))
    tpl = rng.standard_normal((6, 8))
    tmask = rng.random((6, 8)) > 0.3
    imask = np.ones(img.shape, bool)
    imask[:3] = False
    fast = masked_ncc(img, [tpl], [tmask], image_mask=imask, min_overlap_fraction=fraction)[0]
    h, w = tpl.shape
    worst = 0.0
    for i in range(img.shape[0] + h - 1):
        for j in range(img.shape[1] + w - 1):
            r, c = i - (h - 1), j - (w - 1)
            a, b = [], []
            for y in range(h):
                for x in range(w):
                    yy, xx = r + y, c + x
                    if tmask[y, x] and 0 <= yy < img.shape[0] and 0 <= xx < img.shape[1] \
                            and imask[yy, xx]:
                        a.append(img[yy, xx])
                        b.append(tpl[y, x])
            enough = len(a) >= max(2, fraction * tmask.sum())
            direct = np.corrcoef(a, b)[0, 1] if enough else 0.0
            worst = max(worst, abs(direct - fast[i, j]))
    assert worst < 1e-4  # float32 FFTs
    assert np.count_nonzero(fast) > 0


def test_masked_ncc_is_zero_where_no_offset_overlaps_enough():
    rng = np.random.default_rng(3)
    img, tpl = rng.standard_normal((12, 12)), rng.standard_normal((5, 5))
    out = masked_ncc(img, [tpl, tpl], [np.ones((5, 5), bool), np.eye(5, dtype=bool)],
                     min_overlap_fraction=1.5)
    assert out.shape == (2, 16, 16) and not out.any()


def test_masked_ncc_finds_embedded_template():
    rng = np.random.default_rng(2)
    img = rng.standard_normal((60, 70)).astype(np.float32)
    tpl = img[20:35, 30:48].copy()
    out = masked_ncc(img, [tpl * 3 + 5, -tpl], [np.ones(tpl.shape, bool)] * 2)
    i, j = np.unravel_index(np.argmax(out[0]), out[0].shape)
    assert (i - 14, j - 17) == (20, 30) and out[0, i, j] > 0.999
    assert out[1, i, j] < -0.999  # inverted contrast anti-correlates


def _direct_ncc(img, tpl, tmask, offset):
    """NCC over the overlap of a template placed with its corner at ``offset`` (any dims)."""
    a, b = [], []
    for idx in np.ndindex(*tpl.shape):
        pos = tuple(o + i for o, i in zip(offset, idx, strict=True))
        if tmask[idx] and all(0 <= p < n for p, n in zip(pos, img.shape, strict=True)):
            a.append(img[pos])
            b.append(tpl[idx])
    return np.corrcoef(a, b)[0, 1] if len(a) >= 2 else 0.0


def test_masked_ncc_3d_equals_direct():
    rng = np.random.default_rng(3)
    img = rng.standard_normal((6, 9, 8))
    tpl = rng.standard_normal((3, 4, 3))
    tmask = rng.random(tpl.shape) > 0.2
    fast = masked_ncc(img, [tpl], [tmask], min_overlap_fraction=0.5)[0]
    worst = 0.0
    for i in np.ndindex(*fast.shape):
        offset = tuple(k - (n - 1) for k, n in zip(i, tpl.shape, strict=True))
        overlap = sum(tmask[idx] and all(0 <= o + j < n for o, j, n in
                                         zip(offset, idx, img.shape, strict=True))
                      for idx in np.ndindex(*tpl.shape))
        direct = _direct_ncc(img, tpl, tmask, offset) if overlap >= 0.5 * tmask.sum() else 0.0
        worst = max(worst, abs(direct - fast[i]))
    assert worst < 1e-4


def test_shared_support_ncc_is_exact_inside_and_finds_the_template():
    from clemalign.correlation import shared_support_ncc

    rng = np.random.default_rng(4)
    img = rng.standard_normal((20, 30, 28)).astype(np.float32)
    zz, yy, xx = np.mgrid[-3:4, -5:6, -5:6]
    support = (yy**2 + xx**2 <= 25) & (np.abs(zz) <= 3)  # a cylinder
    score = shared_support_ncc(img, support, min_overlap_fraction=0.5)
    truth = img[6:13, 10:21, 9:20].copy()
    other = rng.standard_normal(support.shape).astype(np.float32)
    for tpl in (truth * 2 + 7, other):
        fast = score(tpl)
        reference = masked_ncc(img, [tpl], [support], min_overlap_fraction=0.5)[0]
        # every placement wholly inside the image: the NCC itself
        inside = tuple(slice(n - 1, s) for n, s in zip(support.shape, img.shape, strict=True))
        np.testing.assert_allclose(fast[inside], reference[inside], atol=2e-4)
    best = np.unravel_index(np.argmax(score(truth)), fast.shape)
    assert tuple(int(b) - (n - 1) for b, n in zip(best, support.shape, strict=True)) == (6, 10, 9)
    assert score(truth).max() > 0.999


def test_masked_ncc_scores_do_not_depend_on_the_thread_count():
    """Templates are scored side by side on the threads (issue 22); each is computed as
    alone, so the scores are the same bit for bit."""
    rng = np.random.default_rng(4)
    img = rng.standard_normal((60, 70)).astype(np.float32)
    templates = [rng.standard_normal((20, 24)) for _ in range(5)]
    masks = [rng.random((20, 24)) > 0.2 for _ in range(5)]
    one = masked_ncc(img, templates, masks, workers=1, weight_by_overlap=True)
    for workers in (2, 3, 8):
        np.testing.assert_array_equal(
            masked_ncc(img, templates, masks, workers=workers, weight_by_overlap=True), one)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_two_pass_transforms_are_rfftn_and_irfftn_bit_for_bit(dtype):
    """The 2D transforms of masked_ncc skip zero rows (forward) and unneeded rows
    (inverse); they must give scipy's rfftn / irfftn numbers exactly (same pocketfft
    passes, one scaling), or the scores would depend on the shortcut."""
    from scipy import fft as sfft

    from clemalign.correlation import _inverse_rows, _spectrum

    rng = np.random.default_rng(4)
    for values_shape, shape in [((36, 36), (90, 90)), ((17, 40), (45, 64)),
                                ((50, 7), (81, 75)), ((12, 12), (12, 12))]:
        values = rng.standard_normal(values_shape).astype(dtype)
        spec = _spectrum(values, shape, 2)
        expected = sfft.rfftn(values, s=shape)
        assert spec.dtype == expected.dtype
        assert np.array_equal(spec.view(np.uint8), expected.view(np.uint8))
        product = spec * sfft.rfftn(rng.standard_normal(shape).astype(dtype))
        full = sfft.irfftn(product, s=shape)
        for rows in (slice(0, shape[0]), slice(3, shape[0] // 2)):
            part = _inverse_rows(product, shape, rows, 1)
            assert np.array_equal(part.view(np.uint8), full[rows].view(np.uint8))
