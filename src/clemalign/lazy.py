"""Volumes larger than memory: dask arrays, read a chunk at a time.

A file too large to hold (an OME-Zarr or a compressed (Big)TIFF above
:data:`clemalign.io.readers.LAZY_ABOVE_BYTES`) is read as a dask array over its chunks.
The pipeline touches the EM only through a few reductions — a crop's depth mean, a few
planes, block means onto the working grid, the value checks — and each is computed here
chunk by chunk (dask's threaded scheduler), so memory is bounded by the results, not by
the file.  In-memory numpy arrays take the same functions' plain numpy path.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["is_lazy", "as_numpy", "depth_mean", "block_mean", "value_summary"]


def is_lazy(data) -> bool:
    """Whether ``data`` is a dask array (read on demand) rather than a numpy array."""
    return type(data).__module__.split(".")[0] == "dask"


def _compute(*arrays):
    import dask

    return dask.compute(*arrays, scheduler="threads")


def as_numpy(data, dtype=None) -> np.ndarray:
    """``data`` (a crop of a lazy array, or any array) in memory."""
    if is_lazy(data):
        data = _compute(data)[0]
    return np.asarray(data, dtype=dtype)


def depth_mean(data, box: tuple[slice, slice, slice] | None = None) -> np.ndarray:
    """Mean over z of ``data[box]``, float32, without a float copy of the crop (numpy:
    accumulated in float32; dask: chunk by chunk)."""
    part = data if box is None else data[box]
    if is_lazy(part):
        return np.asarray(_compute(part.mean(axis=0, dtype=np.float64))[0], np.float32)
    return np.mean(part, axis=0, dtype=np.float32)


def block_mean(data, block: Sequence[int]) -> np.ndarray:
    """Means of ``block``-sized blocks (z, y, x) of a 3D array whose shape is a multiple
    of ``block``, float32; a dask array is reduced chunk by chunk."""
    b = [int(v) for v in block]
    if is_lazy(data):
        import dask.array as da

        out = da.coarsen(np.mean, data, {0: b[0], 1: b[1], 2: b[2]}, trim_excess=True,
                         dtype=np.float64)
        return np.asarray(_compute(out)[0], np.float32)
    z, y, x = data.shape
    return np.asarray(data).reshape(z // b[0], b[0], y // b[1], b[1], x // b[2], b[2]).mean(
        axis=(1, 3, 5), dtype=np.float32)


def value_summary(data) -> tuple[int, float, float]:
    """``(number of NaN/Inf values, min, max)`` of the finite values, in one pass (a dask
    array chunk by chunk)."""
    floating = np.issubdtype(data.dtype, np.floating) or \
        np.issubdtype(data.dtype, np.complexfloating)
    if is_lazy(data):
        import dask.array as da

        bad = (~da.isfinite(data)).sum() if floating else da.zeros((), dtype=int)
        lo, hi = (da.nanmin(data), da.nanmax(data)) if floating else (data.min(), data.max())
        n_bad, lo, hi = _compute(bad, lo, hi)
        return int(n_bad), float(lo), float(hi)
    n_bad = int(np.count_nonzero(~np.isfinite(data))) if floating else 0
    return n_bad, float(np.min(data)), float(np.max(data))
