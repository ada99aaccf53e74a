"""Our mutual-information metric: fixed samples, equal counts, overlap weighting.

SimpleITK's Mattes MI drives each optimisation; this metric compares placements with one
another (z search, choice of start, affine vs rigid, perturbations) on one fixed set of
samples, which SimpleITK's per-stage values cannot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from scipy import ndimage as ndi

from .._threads import map_in_threads
from ..transforms import Affine
from ..volume import Volume, inside_grid, regular_sample

__all__ = ["MetricContext", "Samples", "mi_profile", "mutual_information"]


def mutual_information(a: np.ndarray, b: np.ndarray, bins: int,
                       range_a: Sequence[float], range_b: Sequence[float]) -> float:
    """Mutual information of paired samples by a joint histogram.

    Parameters
    ----------
    a, b : ndarray
        Paired sample values, same length.
    bins : int
        Bins per axis of the joint histogram (``bins``² in all).
    range_a, range_b : (low, high)
        Value ranges binned; values outside go to the end bins.

    Returns
    -------
    float
        Mutual information, nats (0 for an empty range).
    """
    if range_a[0] >= range_a[1] or range_b[0] >= range_b[1]:
        return 0.0

    def bin_of(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
        return np.clip(((v - lo) * (bins / (hi - lo))).astype(np.intp), 0, bins - 1)

    joint = np.bincount(bin_of(a, *range_a) * bins + bin_of(b, *range_b),
                        minlength=bins * bins).reshape(bins, bins).astype(float)
    p = joint / joint.sum()
    pa, pb = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
    nz = p > 0
    return float((p[nz] * np.log(p[nz] / (pa @ pb)[nz])).sum())


def _robust_range(values: np.ndarray) -> tuple[float, float]:
    """The [0.5, 99.5] percentiles (from a regular subsample)."""
    sample = regular_sample(values)
    lo, hi = np.percentile(sample, [0.5, 99.5])
    return float(lo), float(hi)


@dataclass(frozen=True, eq=False)
class Samples:
    """Fixed metric samples of a grid, in random order.

    Attributes
    ----------
    points : ndarray, shape (n, 3)
        Physical points (x, y, z), µm.
    flat : ndarray, shape (n,)
        Their flat indices into the grid's ``(z, y, x)`` array.
    """

    points: np.ndarray
    flat: np.ndarray

    @classmethod
    def draw(cls, fixed_vol: Volume, n: int, seed: int) -> Samples:
        """``n`` distinct voxels of ``fixed_vol`` (all of them if it has fewer)."""
        rng = np.random.default_rng(seed)
        size = int(np.prod(fixed_vol.shape_zyx))
        flat = rng.choice(size, size=min(n, size), replace=False)
        kji = np.stack(np.unravel_index(flat, fixed_vol.shape_zyx), axis=1).astype(float)
        return cls(fixed_vol.index_to_physical(kji), flat)

    def head(self, fraction: int) -> Samples:
        """The first ``1/fraction`` of the samples (still a random subset)."""
        n = len(self.flat) // fraction
        return Samples(self.points[:n], self.flat[:n])


def mi_profile(samples: Samples, fixed_arr: np.ndarray, moving_vol: Volume,
               moving_arr: np.ndarray, placements: Sequence[Affine], bins: int,
               workers: int = 1, ranges: tuple[tuple[float, float], tuple[float, float]]
               | None = None) -> np.ndarray:
    """Negative MI of each placement, at an equal number of samples, overlap-weighted.

    The same fixed samples are mapped through each placement and read from the moving
    image by linear interpolation.  Placements where fewer than a fifth of the samples
    (or less than half the best placement's share) land inside the LM give 0 (no
    evidence).  Every other one is scored on the same number of samples, its first
    inside ones (the samples are in random order): the plug-in MI estimate is biased
    upwards by about ``(bins − 1)² / 2n``, so on fewer samples a placement that barely
    overlaps the LM beats the true one by bias alone (measured on a 60 µm block in a
    321 µm stack).  And the MI, an average over the overlap, is multiplied by the overlap
    relative to the best placement's: half an EM block over the LM's most informative
    layer (near the coverslip) otherwise outscores the whole block in place (measured on
    monolayers seen from the other side: 0.455 vs 0.409 nats).  Vectorised numpy.

    Parameters
    ----------
    samples : Samples
        Points of the fixed grid.
    fixed_arr : ndarray
        Fixed image on that grid.
    moving_vol : Volume
        Grid of the moving image (its data is not read).
    moving_arr : ndarray
        Moving image.
    placements : sequence of Affine
        Fixed → moving physical maps (µm) to score together.
    bins : int
        Histogram bins per axis.
    workers : int
        Placements scored on this many threads (the interpolation releases the GIL;
        each placement is computed as alone, so the values do not depend on it).
    ranges : ((low, high), (low, high)), optional
        The binned ranges of the fixed samples' and the moving image's values, when
        known (:meth:`MetricContext.ranges`); by default computed here: the robust range
        of each.

    Returns
    -------
    ndarray
        Minus the weighted MI (nats) per placement — like SimpleITK's metric, lower is
        better.  The values depend on which placements are scored together.
    """
    values_fixed = fixed_arr.reshape(-1)[samples.flat]
    n = len(samples.flat)
    # one binning for every placement: MI values of different placements compare
    range_fixed, range_moving = ranges or (_robust_range(values_fixed),
                                           _robust_range(moving_arr))
    points_t = np.ascontiguousarray(samples.points.T)
    to_index = np.linalg.inv(moving_vol.index_to_physical_matrix())[[2, 1, 0]]  # rows k, j, i

    def mapped(placement: Affine) -> tuple[np.ndarray, np.ndarray]:
        # fixed µm → moving voxel (k, j, i) as rows: one product, the layout map_coordinates reads
        m = to_index @ placement.matrix
        idx = m[:, :3] @ points_t + m[:, 3:]
        return idx, inside_grid(idx.T, moving_arr.shape)

    inside = map_in_threads(mapped, placements, workers)
    counts = np.array([m.sum() for _, m in inside])
    valid = counts >= max(0.2 * n, 0.5 * counts.max(), 2)
    out = np.zeros(len(placements))
    if not valid.any():
        return out
    n_equal = int(counts[valid].min())

    def score(k: int) -> float:
        idx, mask = inside[k]
        take = np.flatnonzero(mask)[:n_equal]
        sampled = ndi.map_coordinates(moving_arr, idx[:, take], order=1)
        mi = mutual_information(values_fixed[take], sampled, bins, range_fixed, range_moving)
        return -mi * counts[k] / counts.max()

    keep = np.flatnonzero(valid)
    out[keep] = map_in_threads(score, list(keep), workers)
    return out


@dataclass(frozen=True, eq=False)
class MetricContext:
    """Everything :func:`mi_profile` needs but the fixed image and the placements.

    Attributes
    ----------
    samples : Samples
        The fixed samples.
    coarse_samples : Samples
        Their first third (the coarse pass of the tilt search).
    moving_vol : Volume
        Grid of the moving (LM) working image.
    moving_arr : ndarray
        The moving working image.
    bins : int
        Histogram bins per axis.
    workers : int
        Threads that score the placements of one profile.
    """

    samples: Samples
    coarse_samples: Samples
    moving_vol: Volume
    moving_arr: np.ndarray
    bins: int
    workers: int = 1
    # (fixed array, coarse) → (that array, its ranges): the same numbers every profile
    # of a context would compute again (a percentile of 500 000 moving values each)
    _ranges: dict = field(default_factory=dict, repr=False)

    @cached_property
    def moving_range(self) -> tuple[float, float]:
        """The binned range of the moving image's values."""
        return _robust_range(self.moving_arr)

    def ranges(self, fixed_arr: np.ndarray, coarse: bool = False
               ) -> tuple[tuple[float, float], tuple[float, float]]:
        """The binned ranges of ``fixed_arr`` at the (coarse) samples and of the moving
        image, as :func:`mi_profile` computes them, once per fixed array."""
        key = (id(fixed_arr), coarse)
        known = self._ranges.get(key)
        if known is None or known[0] is not fixed_arr:
            samples = self.coarse_samples if coarse else self.samples
            known = (fixed_arr, (_robust_range(fixed_arr.reshape(-1)[samples.flat]),
                                 self.moving_range))
            self._ranges[key] = known  # threads may both compute it: the same numbers
        return known[1]

    def profile(self, fixed_arr: np.ndarray, placements: Sequence[Affine],
                coarse: bool = False) -> np.ndarray:
        """Minus the MI (nats) of each placement, scored together (see :func:`mi_profile`)."""
        return mi_profile(self.coarse_samples if coarse else self.samples, fixed_arr,
                          self.moving_vol, self.moving_arr, placements, self.bins,
                          self.workers, self.ranges(fixed_arr, coarse))

    def metric(self, fixed_arr: np.ndarray, placement: Affine) -> float:
        """Minus the MI (nats) of one placement scored alone."""
        return float(self.profile(fixed_arr, [placement])[0])
