"""Reading volumes: one private reader per format, then one layout and one unit.

Each ``_read_<format>(path)`` returns the pixels with their axis letters, the voxel size
``(z, y, x)`` in µm (``None`` when the file records none), the origin ``(x, y, z)`` in µm
and the channel names; :func:`read_raw` turns that into ``(c, z, y, x)`` and
:func:`read_volume` into a :class:`~clemalign.volume.Volume`.  Uncompressed TIFF, MRC
and ``.npy`` pixels are memory-mapped, not read.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import numpy as np

from ..errors import InputError
from ..lazy import is_lazy
from ..volume import Volume, check_voxel_size
from .metadata import (
    file_format,
    imagej_names,
    imagej_sizes,
    nrrd_space_units,
    ome_sizes,
    unit_to_um,
)

__all__ = ["read_volume", "read_raw", "RawImage", "read_clem_pair", "override_voxel_size",
           "ome_zarr_levels", "choose_em_level", "roi_at_level", "LAZY_ABOVE_BYTES"]

# what a format reader returns: pixels, their axis letters (e.g. "ZCYX"), voxel size
# (z, y, x) µm or None, origin (x, y, z) µm, channel names or None
_Read: TypeAlias = tuple[np.ndarray, str, tuple[float, float, float] | None,
                         tuple[float, float, float], list[str] | None]


# more than any image codec achieves on real data: a file declaring more is corrupt
MAX_COMPRESSION = 2000
# compressed TIFF and OME-Zarr pixels larger than this are read on demand (a dask array
# over the file's chunks, see clemalign.lazy) unless read_volume(lazy=False); smaller
# ones are read whole, the fast path
LAZY_ABOVE_BYTES = 2**30
# a dask chunk spans whole file chunks and about this many bytes
_DASK_CHUNK_BYTES = 64 * 2**20


def _dask_chunks(shape: Sequence[int], file_chunks: Sequence[int], itemsize: int
                 ) -> tuple[int, ...]:
    """Chunks for a dask array over a chunked file: whole file chunks, grown along x, y,
    then z (the last three axes) to about :data:`_DASK_CHUNK_BYTES`."""
    chunks = [min(int(c), int(n)) for c, n in zip(file_chunks, shape, strict=True)]
    for axis in range(len(shape) - 1, max(len(shape) - 4, -1), -1):
        while chunks[axis] < shape[axis] and \
                np.prod(chunks) * itemsize * 2 <= _DASK_CHUNK_BYTES:
            chunks[axis] = min(chunks[axis] * 2, int(shape[axis]))
    return tuple(chunks)


def _lazy_array(array, lazy: bool | None):
    """A zarr array as a dask array (``lazy``, or above :data:`LAZY_ABOVE_BYTES` when
    None) or read whole."""
    nbytes = float(np.prod(array.shape)) * array.dtype.itemsize
    if lazy is False or (lazy is None and nbytes <= LAZY_ABOVE_BYTES):
        return np.asarray(array[...])
    import dask.array as da

    return da.from_zarr(array, chunks=_dask_chunks(array.shape, array.chunks,
                                                   array.dtype.itemsize))


def read_volume(path: str | os.PathLike, *, voxel_size_um: Sequence[float] | None = None,
                voxel_size_flag: str = "--voxel-size", lazy: bool | None = None,
                level: int = 0) -> Volume:
    """Read a 3D or 2D (optionally multi-channel) image with its voxel size in µm.

    Parameters
    ----------
    path : path-like
        File (or OME-Zarr folder) to read.
    voxel_size_um : sequence of 3 floats, optional
        ``(z, y, x)`` voxel size in µm; when given it replaces what the file says.  A NaN
        z means a 2D image's ``(y, x)`` pixel: the x pixel becomes the plane's nominal
        thickness, and a stack is refused.
    voxel_size_flag : str
        The command-line flag that sets ``voxel_size_um``, named in the error when
        the file has no usable voxel size (e.g. ``"--em-voxel-size"``).
    lazy : bool, optional
        Read a compressed TIFF or an OME-Zarr on demand (a dask array); None: when it
        is larger than :data:`LAZY_ABOVE_BYTES`.
    level : int
        Pyramid level of a multiscale OME-Zarr (0: full resolution).

    Returns
    -------
    Volume
        ``(z, y, x)`` or ``(c, z, y, x)`` data, voxel size ``(z, y, x)`` µm, origin.

    Raises
    ------
    InputError
        Missing or unreadable file, unsupported layout (time series, RGB), missing
        voxel size (never silently 1), invalid override.  A 2D image is read as a
        stack of one plane (its z size, when the file has none, is its x pixel).
    """
    path = Path(path)
    if voxel_size_um is not None:  # a bad flag is reported before the file is read
        size_zyx = override_voxel_size(voxel_size_um, flag=voxel_size_flag)
    raw = read_raw(path, lazy=lazy, level=level)
    if voxel_size_um is not None:  # now that the planes are known
        size_zyx = override_voxel_size(voxel_size_um, flag=voxel_size_flag,
                                       n_planes=raw.data.shape[1], path=path)
    elif raw.voxel_size_um is None:
        raise InputError(f"{path}: the file does not record a voxel size; pass "
                         f"{voxel_size_flag} Z Y X (in µm)")
    else:
        size_zyx = check_voxel_size(raw.voxel_size_um, what=f"{path}: voxel size",
                                    flag=voxel_size_flag)
    data, names = raw.data, raw.channel_names
    if data.shape[0] == 1:
        data = data[0]
        names = names[:1] if names else None
    return Volume(data, size_zyx, raw.origin_xyz_um, names, str(path))


@dataclass(frozen=True, eq=False)
class RawImage:
    """What a file holds before it becomes a :class:`Volume` (see :func:`read_raw`).

    ``data`` is ``(c, z, y, x)``; ``voxel_size_um`` is ``(z, y, x)`` µm or ``None`` when
    the file records none.
    """

    data: np.ndarray
    voxel_size_um: tuple[float, float, float] | None
    origin_xyz_um: tuple[float, float, float]
    channel_names: tuple[str, ...] | None
    format: str


def _plane_thickness(size_zyx: Sequence[float]) -> tuple[float, ...]:
    """A NaN z (a 2D image's pixel, no thickness given) as the x pixel."""
    size = tuple(float(v) for v in size_zyx)
    return (size[2], *size[1:]) if np.isnan(size[0]) else size


def override_voxel_size(voxel_size_um: Sequence[float], *, flag: str,
                        n_planes: int | None = None,
                        path: str | os.PathLike | None = None) -> tuple[float, float, float]:
    """A voxel size given on the command line, checked.

    Parameters
    ----------
    voxel_size_um : sequence of 3 floats
        ``(z, y, x)`` µm; a NaN z means a 2D image's ``(y, x)`` pixel (the CLI's two-number
        form), whose plane thickness is taken as the x pixel.
    flag : str
        The flag named in errors.
    n_planes, path : optional
        The image's planes and file, once read: a NaN z for a stack is refused.

    Raises
    ------
    InputError
        Not three finite positive values (after the NaN z), or two numbers for a stack.
    """
    try:
        values = _plane_thickness(voxel_size_um) if len(voxel_size_um) == 3 else voxel_size_um
    except (TypeError, ValueError):
        values = voxel_size_um  # check_voxel_size names what is wrong
    if n_planes is not None and n_planes > 1 and np.isnan(float(voxel_size_um[0])):
        raise InputError(f"{flag}: two numbers (Y X) are for a 2D image; {path} has "
                         f"{n_planes} planes: give Z Y X")
    return check_voxel_size(values, what=flag, flag=flag)


def read_raw(path: str | os.PathLike, *, lazy: bool | None = None, level: int = 0
             ) -> RawImage:
    """Read pixels and metadata without requiring a voxel size (used by ``clemalign info``).

    ``lazy``: read a compressed TIFF or an OME-Zarr on demand, as a dask array (None:
    when larger than :data:`LAZY_ABOVE_BYTES`); other formats are read whole or
    memory-mapped.  ``level``: the pyramid level of a multiscale OME-Zarr (0: full
    resolution).

    Raises
    ------
    InputError
        Missing or unreadable file, or a layout that is not a 3D (multi-channel) stack.
    """
    path = Path(path)
    _check_input_path(path)
    fmt = file_format(path)
    if level and fmt != "ome-zarr":
        raise InputError(f"{path}: only a multiscale OME-Zarr has pyramid levels; read "
                         "level 0")
    readers = {"ome-tiff": lambda p: _read_tiff(p, lazy), "tiff": lambda p: _read_tiff(p, lazy),
               "mrc": _read_mrc, "ome-zarr": lambda p: _read_ome_zarr(p, lazy, level),
               "nrrd": _read_nrrd, "npy": _read_npy, "png": _read_png, "vendor": _read_vendor}
    try:
        data, axes, size_zyx, origin_xyz, names = readers[fmt](path)
    except InputError:
        raise
    except Exception as exc:  # a corrupt file surfaces as many library-specific errors
        raise InputError(f"{path}: cannot read as {fmt} ({type(exc).__name__}: {exc})") from None
    data = _to_czyx(_check_dtype(data, path), axes, path)
    if names is not None and len(names) != data.shape[0]:
        names = None
    if size_zyx is not None and np.isnan(size_zyx[0]):
        # a single plane: its nominal thickness is the x pixel; a stack needs its z
        size_zyx = _plane_thickness(size_zyx) if data.shape[1] == 1 else None
    return RawImage(data, tuple(size_zyx) if size_zyx is not None else None,
                    tuple(float(v) for v in origin_xyz), tuple(names) if names else None, fmt)


def _to_czyx(data: np.ndarray, axes: str, path: Path) -> np.ndarray:
    """Reorder an array with named axes to ``(c, z, y, x)``."""
    axes = axes.upper().replace("Q", "Z").replace("I", "Z")
    if len(axes) != data.ndim:
        raise InputError(f"{path}: axes {axes!r} do not match the data shape {data.shape}")
    for ax, n in zip(axes, data.shape, strict=True):
        if ax == "T" and n > 1:
            raise InputError(f"{path}: time series (T={n}) are not supported; save one time "
                             "point as a 3D stack")
        if ax == "S" and n > 1:
            raise InputError(f"{path}: RGB/multi-sample pixels are not supported; save the "
                             "channels as separate planes (C axis)")
        if ax not in "CZYXTS":
            raise InputError(f"{path}: unsupported axis {ax!r} in {axes!r}")
    # drop singleton T/S axes
    keep = [i for i, ax in enumerate(axes) if ax not in "TS"]
    data = data.reshape([data.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    if "Y" not in axes or "X" not in axes:
        raise InputError(f"{path}: an image with y and x axes is needed, got axes {axes!r}")
    if "Z" not in axes:  # a 2D image: a stack of one plane
        data, axes = data[..., np.newaxis, :, :], axes[:-2] + "Z" + axes[-2:]
    if "C" not in axes:
        data, axes = data[np.newaxis], "C" + axes
    return np.transpose(data, [axes.index(a) for a in "CZYX"])


def _read_png(path: Path) -> _Read:
    import imageio.v3 as iio

    data = np.asarray(iio.imread(path))
    if data.ndim == 3:  # RGB(A): grey if the colour channels agree, else ambiguous
        rgb = data[..., :3]
        if not (np.array_equal(rgb[..., 0], rgb[..., 1])
                and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise InputError(f"{path}: a colour PNG; save the channel to register as a "
                             "grey image (or a multi-channel TIFF)")
        data = rgb[..., 0]
    return data, "YX", None, (0.0, 0.0, 0.0), None


def _read_tiff(path: Path, lazy: bool | None = None) -> _Read:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        _check_complete_tiff(tif, path)
        series = tif.series[0]
        axes = series.axes
        data = None
        if series.dataoffset is not None:  # uncompressed and contiguous: map, don't read
            try:
                data = tifffile.memmap(path, series=0, mode="r")
            except ValueError:
                data = None
        if data is None or data.shape != tuple(series.shape):
            _check_declared_size(path, int(series.nbytes), tuple(series.shape), series.dtype)
            if lazy or (lazy is None and series.nbytes > LAZY_ABOVE_BYTES):
                import zarr

                # tifffile's zarr view of the pages, decoded a chunk at a time (its store
                # keeps its own handle: this one closes below)
                store = tifffile.imread(path, aszarr=True, series=0, level=0)
                array = zarr.open(store, mode="r")
                # the file closes once no dask graph holds the array
                weakref.finalize(array, store.close)
                data = _lazy_array(array, True)
            else:
                data = series.asarray()
        if tif.is_ome and tif.ome_metadata:
            size, names = ome_sizes(tif.ome_metadata, path)
            return data, axes, size, (0.0, 0.0, 0.0), names
        if tif.is_imagej:
            size = imagej_sizes(tif, path)
            return data, axes, size, (0.0, 0.0, 0.0), imagej_names(tif.imagej_metadata)
        return data, axes, None, (0.0, 0.0, 0.0), None


def _check_input_path(path: Path) -> None:
    """A regular file (or an OME-Zarr folder): a pipe or device would block or never end."""
    import stat

    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be opened ({exc.strerror})") from None
    if stat.S_ISDIR(mode):
        if path.suffix.lower() != ".zarr":
            raise InputError(f"{path}: is a folder; give an image file (or an OME-Zarr .zarr "
                             "folder)")
    elif not stat.S_ISREG(mode):
        raise InputError(f"{path}: not a regular file (a pipe, socket or device); save the "
                         "image to a file first")


def _check_dtype(data: np.ndarray, path: Path) -> np.ndarray:
    """Real numbers only: complex, structured, text and object arrays are refused; a
    boolean mask is read as 0/1 bytes."""
    kind = data.dtype.kind
    if kind == "b":
        return data.view(np.uint8)
    if kind == "c":
        raise InputError(f"{path}: complex pixels ({data.dtype}); save the magnitude (or the "
                         "real part) as a real image")
    if kind not in "uif":
        raise InputError(f"{path}: pixels of type {data.dtype} are not numbers; save an "
                         "integer or floating-point image")
    return data


def _check_complete_tiff(tif, path: Path) -> None:
    """Refuse a TIFF cut short (a copy or download that stopped): its first image's data,
    or an OME-TIFF's metadata, lies beyond the end of the file."""
    size = path.stat().st_size
    page = tif.pages.first
    ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts, strict=False)]
    named_ome = path.name.lower().endswith((".ome.tif", ".ome.tiff"))
    if (ends and max(ends) > size) or (named_ome and not tif.is_ome):
        raise InputError(f"{path}: the TIFF is truncated or damaged (its data or OME metadata "
                         f"lies beyond the file's {size} bytes); copy or save it again")


def _check_declared_size(path: Path, nbytes: int, shape: tuple, dtype) -> None:
    """Refuse, before reading, a file whose declared pixels cannot be in it or in memory."""
    from ..resources import check_memory

    size = path.stat().st_size
    if nbytes > MAX_COMPRESSION * max(size, 1):
        raise InputError(f"{path}: declares {shape} {dtype} pixels ({nbytes / 2**30:.1f} GiB) "
                         f"in a {size}-byte file: it is truncated or corrupt")
    check_memory(nbytes, f"{path}: reading this compressed file ({shape} {dtype})",
                 "save it uncompressed (it is then read where needed) or as OME-Zarr, or "
                 "raise --max-memory")


def _read_mrc(path: Path) -> _Read:
    import mrcfile
    from mrcfile.utils import data_dtype_from_header, data_shape_from_header

    with mrcfile.open(path, mode="r", permissive=True, header_only=True) as mrc:
        header = mrc.header
        dtype = data_dtype_from_header(header)
        shape = data_shape_from_header(header)
        offset = header.nbytes + int(header.nsymbt)
        if int(np.prod(shape)) == 0 or path.stat().st_size < offset + int(
                np.prod(shape)) * dtype.itemsize:
            raise InputError(f"{path}: the MRC file holds no (or truncated) data")
        # a memory map of the data block (mrcfile's own map closes with its file)
        data = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
        vs = mrc.voxel_size  # Å, (x, y, z)
        origin = header.origin
        size = None
        if all(float(v) > 0 for v in (vs.x, vs.y, vs.z)):
            size = tuple(float(v) * 1e-4 for v in (vs.z, vs.y, vs.x))
        origin_xyz = tuple(float(origin[a]) * 1e-4 for a in ("x", "y", "z"))
    axes = "ZYX" if data.ndim == 3 else "YX"
    return data, axes, size, origin_xyz, None


def ome_zarr_levels(path: str | os.PathLike) -> list[tuple[tuple[int, ...], tuple[float, ...]]]:
    """Shape and voxel size ``(z, y, x)`` in µm of every level of a multiscale OME-Zarr,
    full resolution first (metadata only: the levels are opened, not read)."""
    path = Path(path)
    levels = []
    for level in range(len(_multiscales(path)[2]["datasets"])):
        data, _, size, _, _ = _read_ome_zarr(path, True, level)
        if size is None:
            raise InputError(f"{path}: its axes carry no units; the levels cannot be compared")
        levels.append((tuple(int(v) for v in data.shape[-3:]), tuple(size)))
    return levels


def choose_em_level(levels: Sequence[tuple[Sequence[int], Sequence[float]]],
                    lm_pixel_um: float) -> int:
    """Of an EM's pyramid levels (:func:`ome_zarr_levels`), the coarsest whose lateral
    voxel is no larger than the LM's lateral pixel (the registration's finest grid: the
    pre-alignment's common pixel)."""
    best = 0
    for level, (_, size) in enumerate(levels):
        if max(size[1], size[2]) <= lm_pixel_um * (1 + 1e-6):
            best = level
    return best


def _multiscales(path: Path):
    """The group, its attributes and its first ``multiscales`` entry (NGFF 0.4 or 0.5)."""
    import zarr

    group = zarr.open_group(str(path), mode="r")
    attrs = dict(group.attrs)
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if not multiscales:
        raise InputError(f"{path}: not an OME-Zarr image (no 'multiscales' metadata)")
    return group, attrs, multiscales[0]


def _read_ome_zarr(path: Path, lazy: bool | None = None, level: int = 0) -> _Read:
    group, attrs, ms = _multiscales(path)
    axes_meta = ms.get("axes") or [{"name": n} for n in "tczyx"]
    axes_meta = [a if isinstance(a, dict) else {"name": a} for a in axes_meta]
    axes = "".join(a["name"][0].upper() for a in axes_meta)
    if not 0 <= level < len(ms["datasets"]):
        raise InputError(f"{path}: no pyramid level {level} (it has {len(ms['datasets'])}: "
                         f"0 to {len(ms['datasets']) - 1})")
    dataset = ms["datasets"][level]
    data = _lazy_array(group[dataset["path"]], lazy)
    scale = np.ones(len(axes_meta))
    translation = np.zeros(len(axes_meta))
    # dataset transforms first, then the multiscale-wide ones
    for transforms in (dataset.get("coordinateTransformations", []),
                       ms.get("coordinateTransformations", [])):
        for tr in transforms:
            if tr.get("type") == "scale":
                scale = scale * np.asarray(tr["scale"], dtype=float)
                translation = translation * np.asarray(tr["scale"], dtype=float)
            elif tr.get("type") == "translation":
                translation = translation + np.asarray(tr["translation"], dtype=float)
    size, origin = {}, {}
    have_units = True
    for i, a in enumerate(axes_meta):
        name = a["name"].lower()
        if name in ("z", "y", "x"):
            unit = a.get("unit")
            if unit is None:
                have_units = False
                factor = 1.0
            else:
                factor = unit_to_um(unit, what=f"{path}: axis {name} unit")
            size[name] = scale[i] * factor
            origin[name] = translation[i] * factor
    if set(size) != set("zyx"):
        raise InputError(f"{path}: OME-Zarr axes {axes!r} lack one of z, y, x")
    names = None
    omero = attrs.get("omero") or attrs.get("ome", {}).get("omero")
    if omero and omero.get("channels"):
        names = [c.get("label") or f"C{i}" for i, c in enumerate(omero["channels"])]
    size_zyx = (size["z"], size["y"], size["x"]) if have_units else None
    return data, axes, size_zyx, (origin["x"], origin["y"], origin["z"]), names


def _read_vendor(path: Path) -> _Read:
    """A Zeiss/Leica/Nikon file through bioio (first scene, first time point): voxel
    sizes in µm and channel names from the vendor's metadata."""
    from ..resources import check_memory
    from .metadata import VENDOR_PLUGINS

    plugin = VENDOR_PLUGINS[path.suffix.lower()]
    try:
        from bioio import BioImage
        from bioio_base.exceptions import UnsupportedFileFormatError
    except ImportError:
        raise InputError(f"{path}: reading {path.suffix} files needs bioio: pip install "
                         f"\"clemalign[formats]\" (or bioio {plugin})") from None
    try:
        image = BioImage(path)
    except UnsupportedFileFormatError:
        raise InputError(f"{path}: no bioio reader for {path.suffix} is installed: pip "
                         f"install {plugin}") from None
    dims = image.dims
    if getattr(dims, "S", 1) > 1:
        raise InputError(f"{path}: RGB/multi-sample pixels are not supported; save the "
                         "channel to register as a grey image")
    shape = (dims.C, dims.Z, dims.Y, dims.X)
    check_memory(float(np.prod(shape)) * image.dtype.itemsize,
                 f"{path}: reading its first scene {shape}", "export the region needed")
    data = np.asarray(image.get_image_data("CZYX", T=0))
    sizes = image.physical_pixel_sizes
    size = None
    if sizes.X and sizes.Y:
        size = (float(sizes.Z) if sizes.Z else float("nan"), float(sizes.Y), float(sizes.X))
    names = [str(n) for n in image.channel_names] if image.channel_names else None
    return data, "CZYX", size, (0.0, 0.0, 0.0), names


def _read_nrrd(path: Path) -> _Read:
    """A NRRD through SimpleITK (several components → channels).  Its ``space units``
    give the unit; a file without them records no voxel size (ITK and 3D Slicer assume
    mm, microscopists write µm: guessing would be off by 1000)."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    if image.GetDimension() not in (2, 3):
        raise InputError(f"{path}: expected a 2D or 3D NRRD, got {image.GetDimension()}D")
    direction = np.asarray(image.GetDirection()).reshape(image.GetDimension(), -1)
    if not np.allclose(direction, np.eye(image.GetDimension())):
        raise InputError(f"{path}: the NRRD's axes are rotated (space directions not "
                         "diagonal); resample it onto an axis-aligned grid first")
    data = sitk.GetArrayFromImage(image)
    spatial = "ZYX"[3 - image.GetDimension():]
    axes = spatial + ("C" if image.GetNumberOfComponentsPerPixel() > 1 else "")
    units = nrrd_space_units(path)
    spacing = list(image.GetSpacing()) + [float("nan")] * (3 - image.GetDimension())
    origin = list(image.GetOrigin()) + [0.0] * (3 - image.GetDimension())
    size = None
    if units:
        scale = [unit_to_um(u, what=f"{path}: space units") for u in units]
        scale += [scale[-1]] * (3 - len(scale))
        spacing = [s * f for s, f in zip(spacing, scale, strict=True)]
        origin = [o * f for o, f in zip(origin, scale, strict=True)]
        size = (spacing[2], spacing[1], spacing[0])
    else:
        origin = [0.0, 0.0, 0.0]  # in an unknown unit
    names = None
    if "C" in axes and image.HasMetaDataKey("NRRD_labels[pixel]"):
        names = image.GetMetaData("NRRD_labels[pixel]").split(",")  # as we write them
    return data, axes, size, tuple(origin), names


def _read_npy(path: Path) -> _Read:
    data = np.load(path, allow_pickle=False, mmap_mode="r")
    axes = {2: "YX", 3: "ZYX", 4: "CZYX"}.get(data.ndim)
    if axes is None:
        raise InputError(f"{path}: expected a (y, x), (z, y, x) or (c, z, y, x) array, got "
                         f"shape {data.shape}")
    return data, axes, None, (0.0, 0.0, 0.0), None


def _same_file(a: Path, b: Path, max_bytes: int = 2**30) -> bool:
    """The same file, or two files with the same bytes (a copy; compared up to 1 GiB)."""
    import filecmp

    if os.path.samefile(a, b):
        return True
    if not (a.is_file() and b.is_file()) or a.stat().st_size != b.stat().st_size \
            or a.stat().st_size > max_bytes:
        return False
    return filecmp.cmp(a, b, shallow=False)


def read_clem_pair(em_path: str | os.PathLike, lm_path: str | os.PathLike, *,
                   em_voxel_size_um: Sequence[float] | None = None,
                   lm_voxel_size_um: Sequence[float] | None = None,
                   lm_channel: int | str | None = 0, em_roi: str | None = None,
                   em_level: int = 0) -> tuple[Volume, Volume, Volume]:
    """Read and check the two inputs of a registration.

    Parameters
    ----------
    em_path, lm_path : path-like
        EM (or microCT) stack and fluorescence stack.
    em_voxel_size_um, lm_voxel_size_um : sequence of 3 floats, optional
        ``(z, y, x)`` µm; replace the files' voxel sizes (``--em-voxel-size`` /
        ``--lm-voxel-size``).
    lm_channel : int, str or None
        LM channel used for alignment (index or name; ``--lm-channel``); None: all
        channels (the registration chooses).
    em_roi : str, optional
        ``--roi``: the EM's values are checked inside it only (a memory-mapped EM is
        then read only there).  Voxel indices of the level read (:func:`roi_at_level`
        converts full-resolution ones).
    em_level : int
        Pyramid level of a multiscale OME-Zarr EM to read (see :func:`choose_em_level`).

    Returns
    -------
    em : Volume
        The EM stack (first channel if it has several).
    lm : Volume
        The LM stack with all its channels (for resampled outputs).
    lm_aligned : Volume
        The chosen LM channel (all channels when ``lm_channel`` is None).

    Raises
    ------
    InputError
        Any problem with either file, voxel size, channel or image values.
    """
    from ..volume import check_image_values, parse_roi

    em = read_volume(em_path, voxel_size_um=em_voxel_size_um, voxel_size_flag="--em-voxel-size",
                     level=em_level)
    lm = read_volume(lm_path, voxel_size_um=lm_voxel_size_um, voxel_size_flag="--lm-voxel-size")
    if _same_file(Path(em_path), Path(lm_path)):
        raise InputError(f"{lm_path}: the same image as the EM ({em_path}); give the "
                         "fluorescence stack as LM")
    if em.n_channels > 1:
        em = em.channel(0)
    # no channel given: all are kept (the registration tries each)
    if lm_channel is None and lm.n_channels == 1:
        lm_channel = 0  # the only one
    lm_aligned = lm.channel(lm_channel) if lm_channel is not None else lm
    roi = parse_roi(em_roi, em.shape_zyx)
    box = roi.slices
    if is_lazy(em.data):  # 32 planes, not a whole pass over a file larger than memory
        # (the working grid is checked for NaN once it is built)
        box = (slice(roi.z0, roi.z1, max(1, -(-roi.shape[0] // 32))), *roi.slices[1:])
    check_image_values(em.data[box], what=str(em_path) + (f" (ROI {em_roi})"
                                                          if em_roi else ""))
    check_image_values(lm_aligned.data, what=f"{lm_path}" + (
        f" (channel {lm_channel!r})" if lm_channel is not None else ""))
    return em, lm, lm_aligned


def roi_at_level(roi: str, full_shape_zyx: Sequence[int], level_shape_zyx: Sequence[int]) -> str:
    """An ROI in full-resolution voxel indices as the indices of a pyramid level that
    covers it (each level an integer reduction of the one above: bounds widened)."""
    from ..volume import parse_roi

    full = parse_roi(roi, full_shape_zyx)
    f = [max(1, round(a / b)) for a, b in zip(full_shape_zyx, level_shape_zyx, strict=True)]
    lo = [full.z0 // f[0], full.y0 // f[1], full.x0 // f[2]]
    hi = [min(n, -(-e // k)) for n, e, k in
          zip(level_shape_zyx, (full.z1, full.y1, full.x1), f, strict=True)]
    return ",".join(f"{a}:{b}" for a, b in zip(lo, hi, strict=True))
