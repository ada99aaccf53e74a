"""LDP codes against hand-computed cases; integral-histogram search against a naive one."""

import numpy as np
import pytest

from clemalign import InputError
from clemalign.descriptors import (
    histogram,
    histogram_similarity,
    kirsch_responses,
    ldp_bins,
    ldp_code_table,
    ldp_codes,
    ldp_rotation_invariant,
    log_value_bins,
    patch_histograms,
    search_positions,
)


def _centre_code(neighbours: dict[str, float]) -> int:
    """LDP code of the centre of a 3×3 image whose neighbours are given by direction."""
    offsets = {"E": (1, 2), "NE": (0, 2), "N": (0, 1), "NW": (0, 0), "W": (1, 0),
               "SW": (2, 0), "S": (2, 1), "SE": (2, 2)}
    img = np.zeros((3, 3))
    for name, value in neighbours.items():
        img[offsets[name]] = value
    return int(ldp_codes(img)[1, 1])


def test_kirsch_by_hand():
    img = np.zeros((3, 3))
    img[2, 2] = 9.0  # south-east neighbour
    m = kirsch_responses(img)[:, 1, 1]
    # directions whose three neighbours include SE (E, S, SE): 5·9; others: -3·9
    np.testing.assert_allclose(m, [45, -27, -27, -27, -27, -27, 45, 45])


@pytest.mark.parametrize("neighbours, code", [
    # strongest |m| at E (bit 0), S (bit 6), SE (bit 7): 1 + 64 + 128
    ({"SE": 9.0}, 0b11000001),
    # N and S bright: |m| = 60 for E and W (the only masks missing both), 20 for the
    # rest; the third bit goes to the lowest tied index (NE = bit 1): 1 + 2 + 16.
    # A signed ranking would pick the 20s instead — this checks the absolute value.
    ({"N": 10.0, "S": 10.0}, 0b00010011),
    # one dark neighbour at W: the masks around W (NW, W, SW) give |−8·5+3·5| = 25,
    # the others 15 → bits 3, 4, 5
    ({"W": -5.0}, 0b00111000),
    # flat: all responses 0, ties → the three lowest directions
    ({}, 0b00000111),
])
def test_ldp_codes_by_hand(neighbours, code):
    assert _centre_code(neighbours) == code


def test_ldp_table_and_bins():
    table = ldp_code_table(3)
    assert len(table) == 56 and all(bin(int(c)).count("1") == 3 for c in table)
    codes = ldp_codes(np.random.default_rng(0).standard_normal((30, 30)))
    assert np.all(table[ldp_bins(codes)] == codes)
    with pytest.raises(InputError, match="k"):
        ldp_code_table(0)


def test_ldp_rotation():
    img = np.random.default_rng(1).standard_normal((40, 40))
    codes = ldp_codes(img)
    rotated = ldp_codes(np.rot90(img))  # E → N: direction d becomes d + 2
    inner = (slice(1, -1), slice(1, -1))
    expected = ((codes.astype(int) << 2) | (codes.astype(int) >> 6)) & 0xFF
    np.testing.assert_array_equal(rotated[inner], np.rot90(expected)[inner])
    ri = ldp_rotation_invariant(codes)
    assert ri.max() == 6  # 56 codes fall into 7 rotation classes
    np.testing.assert_array_equal(ldp_rotation_invariant(rotated)[inner], np.rot90(ri)[inner])


def test_log_value_bins_shared_edges():
    rng = np.random.default_rng(2)
    a = rng.standard_normal(10_000)
    b = 50.0 * a + 7.0  # other units, same shape: same bins after normalisation
    np.testing.assert_array_equal(log_value_bins(a, 16), log_value_bins(b, 16))
    bins = log_value_bins(a, 16, clip_sd=4.0)
    assert bins.min() == 0 and bins.max() == 15
    assert abs(np.mean(bins >= 8) - 0.5) < 0.02  # median sits on the middle edge


def test_patch_histograms_equal_naive():
    rng = np.random.default_rng(3)
    bins = rng.integers(0, 7, (37, 53))
    patch = (11, 16)
    rows, cols = search_positions(bins.shape, patch, (3, 5))
    assert rows[-1] == 37 - 11 and cols[-1] == 53 - 16  # last patch flush with the edge
    fast = patch_histograms(bins, 7, patch, rows, cols)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            naive = np.bincount(bins[r:r + 11, c:c + 16].ravel(), minlength=7)
            np.testing.assert_array_equal(fast[:, i, j], naive)


def test_similarities():
    h = np.array([1.0, 2.0, 3.0, 0.0])
    patches = np.stack([h * 5, [3.0, 2.0, 1.0, 0.0], [0.0, 0.0, 0.0, 4.0]], axis=1)
    cos = histogram_similarity(h, patches, "cosine")
    inter = histogram_similarity(h, patches, "intersection")
    np.testing.assert_allclose(cos, [1.0, 10 / 14, 0.0])
    np.testing.assert_allclose(inter, [1.0, (1 + 2 + 1) / 6, 0.0])
    assert histogram(np.array([[0, 1], [1, 3]]), 4).tolist() == [1, 2, 0, 1]
    with pytest.raises(InputError, match="similarity"):
        histogram_similarity(h, patches, "euclid")
