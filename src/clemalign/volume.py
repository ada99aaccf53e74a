"""Volumes with physical voxel sizes, and the one place where axes flip for SimpleITK.

Conventions (see ``docs/conventions.md``):

* arrays are ``(z, y, x)``; multi-channel arrays are ``(c, z, y, x)``;
* ``voxel_size_um`` is ``(z, y, x)`` in micrometres;
* physical points are ``(x, y, z)`` in micrometres; voxel ``(k, j, i)`` has its
  centre at ``origin_xyz_um + (i*sx, j*sy, k*sz)``.

SimpleITK images are indexed ``(x, y, z)``; :func:`to_sitk` and :func:`from_sitk`
are the only functions in the package that translate between the two orders.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ._threads import map_in_threads, spans
from .errors import InputError

__all__ = ["Roi", "parse_roi", "regular_sample", "Volume", "to_sitk", "from_sitk",
           "check_voxel_size", "check_image_values", "scale_axes", "inside_grid"]


def regular_sample(values: np.ndarray, max_count: int = 500_000) -> np.ndarray:
    """Every n-th value of an array (flattened), about ``max_count`` of them.

    Robust statistics (median, MAD, percentiles) of large images from a deterministic
    subsample: the same image always gives the same numbers.
    """
    values = np.asarray(values)
    return values.ravel()[::max(1, values.size // max_count)]


# 0.1 Å (below any EM pixel) to 1 cm: outside, the unit is wrong, and grids become absurd
PLAUSIBLE_VOXEL_UM = (1e-5, 1e4)


def check_voxel_size(voxel_size_um: Sequence[float], *, what: str = "voxel size",
                     flag: str | None = None) -> tuple[float, float, float]:
    """Validate a ``(z, y, x)`` voxel size in µm and return it as a float tuple.

    Parameters
    ----------
    voxel_size_um : sequence of 3 floats
        Voxel size ``(z, y, x)`` in micrometres.
    what : str
        Name of the thing being checked, used in the error message.
    flag : str, optional
        Command-line flag that sets this value, named in the error message.

    Raises
    ------
    InputError
        If there are not exactly three finite, positive values within
        :data:`PLAUSIBLE_VOXEL_UM` (a wrong unit would otherwise make absurd grids).
    """
    hint = f" (set it with {flag} Z Y X, in µm)" if flag else ""
    try:
        values = tuple(float(v) for v in voxel_size_um)
    except (TypeError, ValueError):
        raise InputError(f"{what}: expected three numbers (z, y, x) in µm, got "
                         f"{voxel_size_um!r}{hint}") from None
    if len(values) != 3:
        raise InputError(f"{what}: expected three values (z, y, x) in µm, got "
                         f"{len(values)}{hint}")
    if not all(np.isfinite(v) and v > 0 for v in values):
        raise InputError(f"{what}: voxel sizes must be finite and positive, got "
                         f"{values} µm{hint}")
    lo, hi = PLAUSIBLE_VOXEL_UM
    if not all(lo <= v <= hi for v in values):
        raise InputError(f"{what}: {values} µm is outside the range of microscopes "
                         f"({lo:g}–{hi:g} µm); check the unit (µm, not nm or m){hint}")
    return values  # type: ignore[return-value]


def check_image_values(data: np.ndarray, *, what: str) -> None:
    """Refuse arrays that no registration can use: empty, NaN/Inf, or constant.

    Parameters
    ----------
    data : ndarray
        Image values (any shape).
    what : str
        Name of the image (e.g. the file path), used in the error message.

    Raises
    ------
    InputError
        If the array is empty, contains NaN or infinite values, or is constant.
    """
    from .lazy import value_summary

    if data.size == 0:
        raise InputError(f"{what}: the image is empty (shape {data.shape})")
    n_bad, lo, hi = value_summary(data)  # one pass (a lazy array chunk by chunk)
    if n_bad:
        unit = "pixels" if data.ndim <= 2 else "voxels"
        raise InputError(f"{what}: {n_bad} {unit} are NaN or infinite; replace them "
                         "(e.g. with the background value) before registration")
    if lo == hi:
        raise InputError(f"{what}: the image is constant (every voxel is {lo:g}); "
                         "there is nothing to align")


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D image (one or several channels) placed in physical space.

    Parameters
    ----------
    data : ndarray or dask array
        Voxel values, shape ``(z, y, x)`` or ``(c, z, y, x)``; a dask array (a file too
        large to hold) is read on demand (:mod:`clemalign.lazy`).
    voxel_size_um : tuple of 3 floats
        Voxel size ``(z, y, x)`` in µm.
    origin_xyz_um : tuple of 3 floats
        Physical position ``(x, y, z)`` in µm of the centre of voxel ``(0, 0, 0)``.
    channel_names : tuple of str, optional
        One name per channel for 4D data; default ``("C0", "C1", ...)``.
    source : str, optional
        Where the volume came from (a file path), used in messages.
    """

    data: np.ndarray
    voxel_size_um: tuple[float, float, float]
    origin_xyz_um: tuple[float, float, float] = (0.0, 0.0, 0.0)
    channel_names: tuple[str, ...] | None = None
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        from .lazy import is_lazy

        what = self.source or "volume"
        data = self.data if is_lazy(self.data) else np.asarray(self.data)
        if data.ndim not in (3, 4):
            kind = "2D" if data.ndim == 2 else f"{data.ndim}D"
            raise InputError(f"{what}: a 3D stack is needed (z, y, x), got a {kind} image "
                             f"of shape {data.shape}")
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "voxel_size_um",
                           check_voxel_size(self.voxel_size_um, what=f"{what}: voxel size"))
        origin = tuple(float(v) for v in self.origin_xyz_um)
        if len(origin) != 3 or not all(np.isfinite(origin)):
            raise InputError(f"{what}: origin must be three finite numbers (x, y, z) in µm, "
                             f"got {self.origin_xyz_um!r}")
        object.__setattr__(self, "origin_xyz_um", origin)
        if data.ndim == 4:
            names = self.channel_names or tuple(f"C{c}" for c in range(data.shape[0]))
            if len(names) != data.shape[0]:
                raise InputError(f"{what}: {len(names)} channel names for "
                                 f"{data.shape[0]} channels")
            object.__setattr__(self, "channel_names", tuple(str(n) for n in names))
        elif self.channel_names is not None and len(self.channel_names) != 1:
            raise InputError(f"{what}: single-channel data but channel names "
                             f"{self.channel_names!r}")

    # ------------------------------------------------------------------ shape
    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        """Spatial shape ``(z, y, x)`` in voxels."""
        return tuple(self.data.shape[-3:])  # type: ignore[return-value]

    @property
    def n_channels(self) -> int:
        """Number of channels (1 for 3D data)."""
        return 1 if self.data.ndim == 3 else int(self.data.shape[0])

    @property
    def extent_um(self) -> tuple[float, float, float]:
        """Size ``(z, y, x)`` in µm covered by the voxels (shape times voxel size)."""
        return tuple(n * s for n, s in zip(self.shape_zyx, self.voxel_size_um, strict=True))  # type: ignore[return-value]

    @property
    def spacing_xyz_um(self) -> np.ndarray:
        """Voxel size in ``(x, y, z)`` order, the order of physical points."""
        return np.asarray(self.voxel_size_um[::-1], dtype=float)

    def channel(self, which: int | str) -> Volume:
        """Return one channel as a 3D volume.

        Parameters
        ----------
        which : int or str
            Channel index (0-based) or channel name.

        Raises
        ------
        InputError
            If the channel does not exist; the message lists those that do.
        """
        what = self.source or "volume"
        names = self.channel_names if self.data.ndim == 4 else (self.channel_names or ("C0",))
        index: int | None = None
        if isinstance(which, str) and not which.lstrip("-").isdigit():
            if which in names:
                index = names.index(which)
        else:
            index = int(which)
            if not 0 <= index < len(names):
                index = None
        if index is None:
            listing = ", ".join(f"{i}={n}" for i, n in enumerate(names))
            raise InputError(f"{what}: channel {which!r} not found; available channels: "
                             f"{listing} (choose with --lm-channel)")
        data = self.data if self.data.ndim == 3 else self.data[index]
        return Volume(data, self.voxel_size_um, self.origin_xyz_um, (names[index],),
                      self.source)

    def channels(self) -> list[Volume]:
        """All channels as a list of 3D volumes."""
        return [self.channel(i) for i in range(self.n_channels)]

    # ------------------------------------------------------------ coordinates
    def index_to_physical(self, index_kji: np.ndarray | Sequence[float]) -> np.ndarray:
        """Map voxel indices ``(k, j, i)`` (z, y, x order) to physical points ``(x, y, z)`` µm.

        Accepts one index of shape ``(3,)`` or many of shape ``(n, 3)``; fractional
        indices are allowed.
        """
        kji = np.asarray(index_kji, dtype=float)
        return np.asarray(self.origin_xyz_um) + kji[..., ::-1] * self.spacing_xyz_um

    def physical_to_index(self, points_xyz_um: np.ndarray | Sequence[float]) -> np.ndarray:
        """Map physical points ``(x, y, z)`` µm to fractional voxel indices ``(k, j, i)``."""
        xyz = np.asarray(points_xyz_um, dtype=float)
        return ((xyz - np.asarray(self.origin_xyz_um)) / self.spacing_xyz_um)[..., ::-1]

    def index_to_physical_matrix(self) -> np.ndarray:
        """4×4 matrix taking homogeneous ``(i, j, k, 1)`` (x-index first) to ``(x, y, z, 1)`` µm."""
        m = np.eye(4)
        m[:3, :3] = np.diag(self.spacing_xyz_um)
        m[:3, 3] = self.origin_xyz_um
        return m

    def index_box(self, points_xyz_um: np.ndarray, margin_xyz_um: Sequence[float] | float = 0.0
                  ) -> tuple[slice, slice, slice]:
        """Voxel box ``(z, y, x)`` slices holding physical points plus a margin (µm),
        clipped to the volume (at least one voxel per axis)."""
        pts = np.asarray(points_xyz_um, float).reshape(-1, 3)
        pad = np.broadcast_to(np.asarray(margin_xyz_um, float), (3,))
        lo = self.physical_to_index(pts.min(0) - pad)
        hi = self.physical_to_index(pts.max(0) + pad)
        box = []
        for axis, n in enumerate(self.shape_zyx):
            a = int(np.clip(np.floor(min(lo[axis], hi[axis])), 0, n - 1))
            b = int(np.clip(np.ceil(max(lo[axis], hi[axis])) + 1, a + 1, n))
            box.append(slice(a, b))
        return tuple(box)  # type: ignore[return-value]

    def with_data(self, data: np.ndarray, channel_names: tuple[str, ...] | None = None) -> Volume:
        """Same geometry, other voxel values (same spatial shape)."""
        if tuple(data.shape[-3:]) != self.shape_zyx:
            raise InputError(f"data: spatial shape {data.shape[-3:]} differs from {self.shape_zyx}")
        names = channel_names if channel_names is not None else (
            self.channel_names if data.ndim == self.data.ndim else None)
        return Volume(data, self.voxel_size_um, self.origin_xyz_um, names, self.source)

    def __repr__(self) -> str:
        return (f"Volume(shape={self.data.shape}, dtype={self.data.dtype}, "
                f"voxel_size_um(z,y,x)={self.voxel_size_um}, origin_xyz_um={self.origin_xyz_um}"
                + (f", channels={self.channel_names}" if self.data.ndim == 4 else "") + ")")


def to_sitk(volume: Volume):
    """Convert a single-channel :class:`Volume` to a ``SimpleITK.Image``.

    The array stays ``(z, y, x)`` in memory; SimpleITK sees size, spacing and origin
    in ``(x, y, z)`` order.  Direction is the identity.
    """
    import SimpleITK as sitk

    if volume.data.ndim != 3:
        raise InputError("to_sitk needs a single-channel volume; use volume.channel(c) first")
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.data))
    image.SetSpacing(tuple(float(s) for s in volume.spacing_xyz_um))
    image.SetOrigin(tuple(float(o) for o in volume.origin_xyz_um))
    return image


def from_sitk(image, *, source: str | None = None) -> Volume:
    """Convert a 3D ``SimpleITK.Image`` (identity direction) to a :class:`Volume`."""
    import SimpleITK as sitk

    if image.GetDimension() != 3:
        raise InputError(f"from_sitk needs a 3D image, got {image.GetDimension()}D")
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    if not np.allclose(direction, np.eye(3)):
        raise InputError("from_sitk: only images with identity direction are supported; "
                         "resample onto an axis-aligned grid first")
    data = sitk.GetArrayFromImage(image)
    spacing_xyz = image.GetSpacing()
    return Volume(data, tuple(spacing_xyz[::-1]), tuple(image.GetOrigin()), source=source)


def scale_axes(data: np.ndarray, factors: Sequence[float], offset: Sequence[float] | float = 0.0,
               *, output_shape: Sequence[int], mode: str = "nearest", cval: float = 0.0,
               output=None, workers: int = 1) -> np.ndarray:
    """Linear resampling where output index ``o`` reads input index ``factors·o + offset``.

    ``scipy.ndimage.affine_transform`` with a diagonal given as a 1-D array (its fast
    separable path); some SciPy versions warn that this form changed meaning in 0.18 —
    the meaning used here is the current one, so that warning is silenced.  When the
    first axis is kept as it is (factor 1, offset 0: planes of a stack), ``workers``
    threads resample slabs of planes (each output voxel reads the same input position
    as in one call: the result is the same bit for bit).
    """
    import warnings

    from scipy import ndimage as ndi

    factors = [float(f) for f in factors]
    offsets = [float(v) for v in np.broadcast_to(np.asarray(offset, float), (len(factors),))]
    shape = tuple(int(n) for n in output_shape)

    def run(z0: int, z1: int, out) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The behavior of affine_transform",
                                    category=UserWarning)
            return ndi.affine_transform(data, factors, [offsets[0] + z0] + offsets[1:],
                                        output_shape=(z1 - z0,) + shape[1:], order=1,
                                        mode=mode, cval=cval, output=out)

    parts = min(int(workers), shape[0]) if factors[0] == 1.0 and offsets[0] == 0.0 else 1
    if parts <= 1:
        return run(0, shape[0], output)
    if isinstance(output, np.ndarray):
        out = output
    else:
        out = np.empty(shape, dtype=data.dtype if output is None else output)
    map_in_threads(lambda span: run(*span, out[span[0]:span[1]]), spans(shape[0], parts), parts)
    return out


def inside_grid(index_kji: np.ndarray, shape_zyx: Sequence[int]) -> np.ndarray:
    """Which fractional indices ``(n, 3)`` lie within ``[0, n − 1]`` on every axis (where
    linear interpolation needs no border)."""
    idx = np.asarray(index_kji)
    inside = np.ones(len(idx), bool)
    for a, n in enumerate(shape_zyx):  # per axis: a reduction over a length-3 axis is slow
        inside &= (idx[:, a] >= 0) & (idx[:, a] <= n - 1)
    return inside


@dataclass(frozen=True)
class Roi:
    """EM region of interest in voxel indices, half-open: ``z0 <= z < z1`` etc."""

    z0: int
    z1: int
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return slice(self.z0, self.z1), slice(self.y0, self.y1), slice(self.x0, self.x1)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.z1 - self.z0, self.y1 - self.y0, self.x1 - self.x0

    def to_str(self) -> str:
        return f"{self.z0}:{self.z1},{self.y0}:{self.y1},{self.x0}:{self.x1}"


def parse_roi(text: str | Roi | None, shape_zyx: Sequence[int], *, name: str = "roi") -> Roi:
    """Parse ``"z0:z1,y0:y1,x0:x1"`` (EM voxel indices, half-open; empty bounds = ends).

    Parameters
    ----------
    text : str, Roi or None
        The ROI (None: the whole volume).
    shape_zyx : sequence of 3 int
        Shape of the EM volume.
    name : str
        Name of the parameter, used in error messages.

    Raises
    ------
    InputError
        Malformed text, empty range, or a range outside the EM volume.
    """
    nz, ny, nx = (int(v) for v in shape_zyx)
    if text is None:
        return Roi(0, nz, 0, ny, 0, nx)
    if isinstance(text, Roi):
        parts = [(text.z0, text.z1), (text.y0, text.y1), (text.x0, text.x1)]
    else:
        fields = str(text).split(",")
        if len(fields) != 3 or any(f.count(":") != 1 for f in fields):
            raise InputError(f"{name}: expected z0:z1,y0:y1,x0:x1 in EM voxel indices, "
                             f"got {text!r}")
        parts = []
        for f, n in zip(fields, (nz, ny, nx), strict=True):
            lo, hi = f.split(":")
            try:
                parts.append((int(lo) if lo.strip() else 0, int(hi) if hi.strip() else n))
            except ValueError:
                raise InputError(f"{name}: bounds must be integers, got {text!r}") from None
    for (lo, hi), n, axis in zip(parts, (nz, ny, nx), "zyx", strict=True):
        if not (0 <= lo < hi <= n):
            raise InputError(f"{name}: {axis} range {lo}:{hi} is outside the EM volume "
                             f"(0:{n}) or empty; pick a range inside it")
    return Roi(*(v for pair in parts for v in pair))
