"""Patch descriptors for the pre-alignment search and their fast exhaustive evaluation.

Two histogram descriptors of a LoG image (the published method):

* the histogram of LoG values, after a robust per-image normalisation so that the bin
  edges can be shared by EM and fluorescence (:func:`log_value_bins`);
* the histogram of Local Directional Pattern codes (:func:`ldp_codes`): at each pixel the
  8 Kirsch compass responses, their absolute values, and a bit set for each of the ``k``
  strongest directions; with ``k = 3`` there are C(8, 3) = 56 codes.  The
  rotation-invariant variant (:func:`ldp_rotation_invariant`) maps each code to the
  smallest value among its 8 circular bit rotations (7 classes for ``k = 3``).

Both are per-pixel bin indices, so the histogram of every axis-aligned patch of the LM
image comes from integral images, one per bin (:func:`patch_histograms`), and patch
similarities for all positions are array operations (:func:`histogram_similarity`):
no Python loop over positions, so a stride of 1 pixel stays affordable.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from itertools import combinations
from typing import Literal

import numpy as np

from .errors import InputError
from .volume import regular_sample

__all__ = ["KIRSCH_DIRECTIONS", "kirsch_responses", "ldp_codes", "ldp_code_table",
           "ldp_rotation_invariant", "ldp_rotation_classes", "ldp_bins", "log_value_bins",
           "patch_histograms", "histogram", "histogram_similarity", "search_positions",
           "Similarity"]

Similarity = Literal["cosine", "intersection"]

# Kirsch compass masks, direction d = 0..7 anticlockwise from east (E, NE, N, NW, W, SW,
# S, SE) with rows pointing down (image convention): the mask for direction d has 5 on
# the three neighbours centred on d and -3 on the other five; the centre is 0.
KIRSCH_DIRECTIONS = ("E", "NE", "N", "NW", "W", "SW", "S", "SE")
# neighbour (dy, dx) for each direction, in the order above
_NEIGHBOURS = ((0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1))


def kirsch_responses(image: np.ndarray) -> np.ndarray:
    """The 8 Kirsch compass responses of a 2D image.

    Parameters
    ----------
    image : ndarray, shape (y, x)

    Returns
    -------
    ndarray of float32, shape (8, y, x)
        Response ``m_d`` for direction ``d`` in :data:`KIRSCH_DIRECTIONS` order (signed;
        borders by reflection).  Mask ``d`` weighs the neighbour at ``(y+dy, x+dx)``
        with 5 when it is one of the three neighbours centred on ``d``, else with -3.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise InputError(f"kirsch_responses: expected a 2D image, got shape {image.shape}")
    padded = np.pad(image, 1, mode="reflect")
    h, w = image.shape
    neighbour = [np.ascontiguousarray(padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w])
                 for dy, dx in _NEIGHBOURS]
    ring3 = neighbour[0] + neighbour[1]
    for v in neighbour[2:]:
        ring3 += v
    ring3 *= 3.0
    # 5·(three around d) − 3·(other five) = 8·(three around d) − 3·(all eight);
    # in-place arithmetic: this runs on every LM and EM pixel
    out = np.empty((8, h, w), dtype=np.float32)
    for d in range(8):
        o = out[d]
        np.add(neighbour[(d - 1) % 8], neighbour[d], out=o)
        o += neighbour[(d + 1) % 8]
        o *= 8.0
        o -= ring3
    return out


@lru_cache(maxsize=8)
def ldp_code_table(k: int = 3) -> np.ndarray:
    """The valid LDP codes for ``k`` set bits, ascending (56 codes for ``k = 3``).

    The histogram bin of a code is its index in this table.
    """
    if not 1 <= k <= 7:
        raise InputError(f"LDP k: must be between 1 and 7, got {k}")
    codes = sorted(sum(1 << b for b in bits) for bits in combinations(range(8), k))
    table = np.array(codes, dtype=np.int64)
    table.setflags(write=False)
    return table


def ldp_codes(image: np.ndarray, k: int = 3) -> np.ndarray:
    """Local Directional Pattern code of every pixel of a 2D image.

    Bit ``d`` (value ``2**d``) is set when ``|m_d|`` is among the ``k`` largest of the 8
    absolute Kirsch responses at that pixel.  Ties go to the lower direction index, so
    every pixel gets exactly ``k`` bits.

    Parameters
    ----------
    image : ndarray, shape (y, x)
    k : int
        Number of strongest directions that set a bit (3 in the published method).

    Returns
    -------
    ndarray of uint8, shape (y, x)
        The 8-bit code (e.g. strongest directions E, N, W → ``0b00010101`` = 21).
    """
    ldp_code_table(k)  # validates k
    magnitude = np.abs(kirsch_responses(image))
    # rank of each direction = number of stronger directions (ties: lower index first)
    rank = np.zeros(magnitude.shape, dtype=np.uint8)
    for d in range(8):
        for e in range(d):
            e_first = (magnitude[e] >= magnitude[d]).view(np.uint8)
            rank[d] += e_first
            rank[e] += 1 - e_first
    codes = np.zeros(magnitude.shape[1:], dtype=np.uint8)
    for d in range(8):
        codes |= (rank[d] < k).view(np.uint8) << d
    return codes.astype(np.uint8)


def _rotate_left8(code: np.ndarray | int, r: int) -> np.ndarray | int:
    return ((code << r) | (code >> (8 - r))) & 0xFF


@lru_cache(maxsize=8)
def _rotation_invariant_lookup(k: int) -> tuple[np.ndarray, np.ndarray]:
    """(classes, lookup): lookup[code] = index of the code's rotation class."""
    table = ldp_code_table(k)
    canonical = np.array([min(_rotate_left8(int(c), r) for r in range(8)) for c in table])
    classes = np.unique(canonical)
    lookup = np.full(256, -1, dtype=np.int64)
    lookup[table] = np.searchsorted(classes, canonical)
    return classes, lookup


def ldp_rotation_classes(k: int = 3) -> int:
    """Number of rotation-invariant LDP classes for ``k`` set bits (7 for ``k = 3``)."""
    return len(_rotation_invariant_lookup(k)[0])


def ldp_rotation_invariant(codes: np.ndarray, k: int = 3) -> np.ndarray:
    """Map LDP codes to rotation-invariant class indices.

    Rotating the image by a multiple of 45° rotates the code's bits circularly; each
    class holds a code and its 8 rotations and is named by the smallest of them.

    Parameters
    ----------
    codes : ndarray of uint8
        Codes from :func:`ldp_codes` with the same ``k``.
    k : int

    Returns
    -------
    ndarray of int64
        Class index in ``0 .. n_classes-1`` (7 classes for ``k = 3``).
    """
    _, lookup = _rotation_invariant_lookup(k)
    out = lookup[np.asarray(codes, dtype=np.int64)]
    if np.any(out < 0):
        raise InputError(f"ldp_rotation_invariant: codes do not have exactly k={k} bits set")
    return out


def ldp_bins(codes: np.ndarray, k: int = 3) -> np.ndarray:
    """Histogram bin (index into :func:`ldp_code_table`) of each LDP code."""
    lookup = np.full(256, -1, dtype=np.int64)
    lookup[ldp_code_table(k)] = np.arange(len(ldp_code_table(k)))
    index = lookup[np.asarray(codes, dtype=np.uint8)]
    if np.any(index < 0):
        raise InputError(f"ldp_bins: codes do not have exactly k={k} bits set")
    return index


def log_value_bins(log_image: np.ndarray, n_bins: int = 32, *, clip_sd: float = 4.0
                   ) -> np.ndarray:
    """Bin index of every LoG value after a robust normalisation.

    Values are centred on the median and divided by 1.4826·MAD (a robust standard
    deviation), then binned on edges shared by any image: ``n_bins`` equal bins over
    ``[-clip_sd, clip_sd]``, values outside going to the end bins.  The normalisation
    removes the modalities' different intensity units, so EM and LM histograms can be
    compared bin by bin.

    Returns
    -------
    ndarray of int64
        Bin index in ``0 .. n_bins-1``, same shape as ``log_image``.
    """
    values = np.asarray(log_image, dtype=np.float32)
    # median and MAD from a regular subsample of at most ~250k values (deterministic)
    sample = regular_sample(values, 250_000)
    centre = np.median(sample)
    spread = 1.4826 * np.median(np.abs(sample - centre))
    if not spread > 0:
        spread = float(values.std()) or 1.0
    width = 2.0 * clip_sd / n_bins
    index = np.floor((values - centre) * np.float32(1.0 / (spread * width))
                     + np.float32(n_bins / 2.0))
    return np.clip(index, 0, n_bins - 1).astype(np.int64)


def histogram(bins: np.ndarray, n_bins: int, mask: np.ndarray | None = None) -> np.ndarray:
    """Counts per bin of a bin-index image, optionally over a mask only (float64)."""
    values = bins[mask] if mask is not None else bins.ravel()
    return np.bincount(values.ravel(), minlength=n_bins).astype(np.float64)


def search_positions(image_shape: Sequence[int], patch_shape: Sequence[int],
                     stride_px: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners (rows, cols) of the patches tested, on a regular grid.

    The last row/column of positions is placed flush with the image edge so the whole
    image is covered whatever the stride.
    """
    axes = []
    for n, p, s in zip(image_shape, patch_shape, stride_px, strict=True):
        if p > n:
            raise InputError(f"patch of {p} px does not fit in an image of {n} px")
        pos = np.arange(0, n - p + 1, max(1, int(s)))
        if pos[-1] != n - p:
            pos = np.append(pos, n - p)
        axes.append(pos)
    return axes[0], axes[1]


def patch_histograms(bins: np.ndarray, n_bins: int, patch_shape: Sequence[int],
                     rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Histogram of every patch with top-left corner on the grid ``rows × cols``.

    One integral image per bin gives each patch's count in that bin from four look-ups
    (``S[r+h, c+w] − S[r, c+w] − S[r+h, c] + S[r, c]``).

    Parameters
    ----------
    bins : ndarray of int, shape (y, x)
        Bin index of each pixel.
    n_bins : int
    patch_shape : (h, w) in pixels
    rows, cols : 1D arrays of int
        Top-left corners to evaluate.

    Returns
    -------
    ndarray of float64, shape (n_bins, len(rows), len(cols))
    """
    h, w = (int(v) for v in patch_shape)
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    # only the integral image's rows r and r+h are needed: count each bin in the bands
    # between consecutive needed rows, then accumulate over bands and columns
    needed = np.unique(np.concatenate([[0], rows, rows + h]))
    top, bottom = np.searchsorted(needed, rows), np.searchsorted(needed, rows + h)
    starts = needed[:-1]
    out = np.empty((n_bins, rows.size, cols.size), dtype=np.float64)
    integral = np.zeros((needed.size, bins.shape[1] + 1), dtype=np.int64)
    for b in range(n_bins):
        band_counts = np.add.reduceat((bins == b).view(np.uint8), starts, axis=0, dtype=np.int32)
        np.cumsum(np.cumsum(band_counts, axis=0), axis=1, out=integral[1:, 1:])
        out[b] = (integral[bottom][:, cols + w] - integral[top][:, cols + w]
                  - integral[bottom][:, cols] + integral[top][:, cols])
    return out


def histogram_similarity(template: np.ndarray, patches: np.ndarray,
                         similarity: Similarity) -> np.ndarray:
    """Similarity of one histogram to many, for every position at once.

    Parameters
    ----------
    template : ndarray, shape (n_bins,)
    patches : ndarray, shape (n_bins, ...)
    similarity : {"cosine", "intersection"}
        ``cosine``: ``h·g / (|h| |g|)``; ``intersection``: ``Σ min(h, g)`` of the
        L1-normalised histograms.  Both are 1 for identical histograms.

    Returns
    -------
    ndarray, shape ``patches.shape[1:]``
    """
    t = np.asarray(template, dtype=np.float64)
    flat = patches.reshape(patches.shape[0], -1)
    if similarity == "cosine":
        norm = np.linalg.norm(flat, axis=0) * np.linalg.norm(t)
        score = np.divide(t @ flat, norm, out=np.zeros(flat.shape[1]), where=norm > 0)
    elif similarity == "intersection":
        total = flat.sum(axis=0)
        g = np.divide(flat, total, out=np.zeros_like(flat), where=total > 0)
        score = np.minimum(g, (t / t.sum())[:, None]).sum(axis=0)
    else:
        raise InputError(f"similarity: expected 'cosine' or 'intersection', got {similarity!r}")
    return score.reshape(patches.shape[1:])
