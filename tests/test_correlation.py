"""Masked FFT NCC against a direct computation."""

import numpy as np

from clemalign.correlation import masked_ncc


def test_masked_ncc_equals_direct():
    rng = np.random.default_rng(1)
    img = rng.standard_normal((17, 23))
    tpl = rng.standard_normal((6, 8))
    tmask = rng.random((6, 8)) > 0.3
    imask = np.ones(img.shape, bool)
    imask[:3] = False
    fast = masked_ncc(img, [tpl], [tmask], image_mask=imask, min_overlap_fraction=0.3)[0]
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
            direct = np.corrcoef(a, b)[0, 1] if len(a) >= max(2, 0.3 * tmask.sum()) else 0.0
            worst = max(worst, abs(direct - fast[i, j]))
    assert worst < 1e-4  # float32 FFTs


def test_masked_ncc_finds_embedded_template():
    rng = np.random.default_rng(2)
    img = rng.standard_normal((60, 70)).astype(np.float32)
    tpl = img[20:35, 30:48].copy()
    out = masked_ncc(img, [tpl * 3 + 5, -tpl], [np.ones(tpl.shape, bool)] * 2)
    i, j = np.unravel_index(np.argmax(out[0]), out[0].shape)
    assert (i - 14, j - 17) == (20, 30) and out[0, i, j] > 0.999
    assert out[1, i, j] < -0.999  # inverted contrast anti-correlates
