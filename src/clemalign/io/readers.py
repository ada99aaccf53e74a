"""Reading and writing volumes with their physical voxel sizes.

This is the only module that knows about file formats and length units: every
size leaves it in micrometres, ``(z, y, x)`` order.

Supported for reading
    * OME-TIFF (``PhysicalSizeX/Y/Z`` with their units),
    * ImageJ hyperstack TIFF (``XResolution``/``YResolution`` + ``unit``, ``spacing`` for z),
    * MRC / REC / MAP / ST / ALI (voxel size in Å; header origin),
    * OME-Zarr (NGFF 0.4 and 0.5: the ``scale`` and ``translation`` of the first dataset),
    * ``.npy`` (no metadata: the voxel size must be given).

Uncompressed TIFF / OME-TIFF / BigTIFF, MRC and ``.npy`` are memory-mapped, not read:
pixels come from disk when they are used, so registering an ROI of a large volume reads
that ROI (plus what the figures show), not the file.  Compressed files are read whole.

Every writer writes to a temporary name beside the target and renames it into
place, and refuses to replace an existing file unless ``overwrite=True``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..volume import Volume, check_voxel_size

__all__ = ["read_volume", "read_raw", "RawImage", "read_clem_pair", "write_volume",
           "write_ome_tiff", "file_format", "unit_to_um", "ensure_writable",
           "atomic_write", "atomic_write_text", "write_json"]

# Length units as they appear in OME, ImageJ, NGFF (UDUNITS) and MRC, in µm.
_UNIT_UM = {
    "m": 1e6, "meter": 1e6, "metre": 1e6,
    "cm": 1e4, "centimeter": 1e4,
    "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3,
    "µm": 1.0, "μm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0,
    "micrometre": 1.0, "\\u00b5m": 1.0,
    "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3,
    "å": 1e-4, "a": 1e-4, "angstrom": 1e-4, "ångström": 1e-4,
    "pm": 1e-6, "picometer": 1e-6,
}


def unit_to_um(unit: str, *, what: str) -> float:
    """Return how many µm one ``unit`` is (``"nm"`` → 1e-3).

    Raises
    ------
    InputError
        For an unknown or non-length unit (e.g. ``"pixel"``, ``"inch"``).
    """
    key = unit.strip().lower()
    if key not in _UNIT_UM:
        raise InputError(f"{what}: unknown length unit {unit!r}")
    return _UNIT_UM[key]


def file_format(path: str | os.PathLike) -> str:
    """Name of the format :func:`read_volume` / :func:`write_volume` uses for ``path``.

    One of ``"ome-tiff"``, ``"tiff"`` (ImageJ or plain; decided by content when
    reading), ``"mrc"``, ``"ome-zarr"``, ``"npy"``.
    """
    name = Path(path).name.lower().rstrip("/")
    if name.endswith((".ome.tif", ".ome.tiff", ".ome.btf")):
        return "ome-tiff"
    if name.endswith((".tif", ".tiff", ".btf")):
        return "tiff"
    if name.endswith((".mrc", ".rec", ".map", ".st", ".ali", ".mrcs")):
        return "mrc"
    if name.endswith((".zarr", ".ome.zarr")):
        return "ome-zarr"
    if name.endswith(".npy"):
        return "npy"
    raise InputError(f"{path}: unsupported file type; use OME-TIFF, ImageJ TIFF, MRC/REC, "
                     "OME-Zarr or .npy")


# --------------------------------------------------------------------- reading
def read_volume(path: str | os.PathLike, *, voxel_size_um: Sequence[float] | None = None,
                voxel_size_flag: str = "--voxel-size") -> Volume:
    """Read a 3D (optionally multi-channel) image with its voxel size in µm.

    Parameters
    ----------
    path : path-like
        File (or OME-Zarr folder) to read.
    voxel_size_um : sequence of 3 floats, optional
        ``(z, y, x)`` voxel size in µm; when given it replaces what the file says.
    voxel_size_flag : str
        The command-line flag that sets ``voxel_size_um``, named in the error when
        the file has no usable voxel size (e.g. ``"--em-voxel-size"``).

    Returns
    -------
    Volume
        ``(z, y, x)`` or ``(c, z, y, x)`` data, voxel size ``(z, y, x)`` µm, origin.

    Raises
    ------
    InputError
        Missing or unreadable file, unsupported layout (2D, time series, RGB),
        missing voxel size (never silently 1), invalid override.
    """
    path = Path(path)
    if voxel_size_um is not None:  # a bad flag is reported before the file is read
        size_zyx = check_voxel_size(voxel_size_um, what=voxel_size_flag, flag=voxel_size_flag)
    raw = read_raw(path)
    if voxel_size_um is None:
        if raw.voxel_size_um is None:
            raise InputError(f"{path}: the file does not record a voxel size; pass "
                             f"{voxel_size_flag} Z Y X (in µm)")
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


def read_raw(path: str | os.PathLike) -> RawImage:
    """Read pixels and metadata without requiring a voxel size (used by ``clemalign info``).

    Raises
    ------
    InputError
        Missing or unreadable file, or a layout that is not a 3D (multi-channel) stack.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    fmt = file_format(path)
    readers = {"ome-tiff": _read_tiff, "tiff": _read_tiff, "mrc": _read_mrc,
               "ome-zarr": _read_ome_zarr, "npy": _read_npy}
    try:
        data, axes, size_zyx, origin_xyz, names = readers[fmt](path)
    except InputError:
        raise
    except Exception as exc:  # a corrupt file surfaces as many library-specific errors
        raise InputError(f"{path}: cannot read as {fmt} ({type(exc).__name__}: {exc})") from None
    data = _to_czyx(data, axes, path)
    if names is not None and len(names) != data.shape[0]:
        names = None
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
    if "Z" not in axes or data.shape[axes.index("Z")] < 2:
        shape = tuple(n for a, n in zip(axes, data.shape, strict=True) if a != "C")
        raise InputError(f"{path}: a 3D stack is needed (z, y, x), got a 2D image of shape "
                         f"{shape}")
    if "C" not in axes:
        data, axes = data[np.newaxis], "C" + axes
    return np.transpose(data, [axes.index(a) for a in "CZYX"])


def _read_tiff(path: Path):
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        axes = series.axes
        data = None
        if series.dataoffset is not None:  # uncompressed and contiguous: map, don't read
            try:
                data = tifffile.memmap(path, series=0, mode="r")
            except ValueError:
                data = None
        if data is None or data.shape != tuple(series.shape):
            data = series.asarray()
        if tif.is_ome and tif.ome_metadata:
            size, names = _ome_sizes(tif.ome_metadata, path)
            return data, axes, size, (0.0, 0.0, 0.0), names
        if tif.is_imagej:
            size = _imagej_sizes(tif, path)
            return data, axes, size, (0.0, 0.0, 0.0), _imagej_names(tif.imagej_metadata)
        return data, axes, None, (0.0, 0.0, 0.0), None


def _ome_sizes(xml: str, path: Path) -> tuple[tuple[float, float, float] | None, list[str]]:
    root = ET.fromstring(xml)
    pixels = next((el for el in root.iter() if el.tag.endswith("}Pixels") or el.tag == "Pixels"),
                  None)
    if pixels is None:
        return None, []
    sizes = []
    for ax in "ZYX":
        value = pixels.get(f"PhysicalSize{ax}")
        if value is None:
            return None, _ome_channel_names(pixels)
        unit = pixels.get(f"PhysicalSize{ax}Unit", "µm")  # OME's default unit is µm
        sizes.append(float(value) * unit_to_um(unit, what=f"{path}: PhysicalSize{ax}Unit"))
    return tuple(sizes), _ome_channel_names(pixels)  # type: ignore[return-value]


def _ome_channel_names(pixels) -> list[str]:
    return [ch.get("Name") or f"C{i}" for i, ch in
            enumerate(el for el in pixels if el.tag.endswith("Channel"))]


def _imagej_sizes(tif, path: Path) -> tuple[float, float, float] | None:
    meta = tif.imagej_metadata or {}
    page = tif.pages[0]
    unit = meta.get("unit")
    if unit is None:
        res_unit = page.tags.get("ResolutionUnit")
        # without an ImageJ unit only centimetres are a real calibration (inch means 72 dpi)
        if res_unit is None or int(res_unit.value) != 3:
            return None
        unit = "cm"
    if str(unit).lower() in ("pixel", "pixels", ""):
        return None
    scale = unit_to_um(str(unit), what=f"{path}: ImageJ unit")
    sizes = []
    for tag in ("YResolution", "XResolution"):
        value = page.tags.get(tag)
        if value is None:
            return None
        num, den = value.value
        if num == 0:
            return None
        sizes.append(den / num * scale)
    spacing = meta.get("spacing")
    if spacing is None:
        return None
    zscale = unit_to_um(str(meta["zunit"]), what=f"{path}: ImageJ zunit") if "zunit" in meta \
        else scale
    return (float(spacing) * zscale, sizes[0], sizes[1])


def _imagej_names(meta: dict | None) -> list[str] | None:
    labels = (meta or {}).get("Labels")
    channels = int((meta or {}).get("channels", 1))
    if labels and channels > 1 and len(labels) >= channels:
        return [str(label) for label in labels[:channels]]
    return None


def _read_mrc(path: Path):
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


def _read_ome_zarr(path: Path):
    import zarr

    group = zarr.open_group(str(path), mode="r")
    attrs = dict(group.attrs)
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if not multiscales:
        raise InputError(f"{path}: not an OME-Zarr image (no 'multiscales' metadata)")
    ms = multiscales[0]
    axes_meta = ms.get("axes") or [{"name": n} for n in "tczyx"]
    axes_meta = [a if isinstance(a, dict) else {"name": a} for a in axes_meta]
    axes = "".join(a["name"][0].upper() for a in axes_meta)
    dataset = ms["datasets"][0]
    data = np.asarray(group[dataset["path"]][...])
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


def _read_npy(path: Path):
    data = np.load(path, allow_pickle=False, mmap_mode="r")
    axes = {2: "YX", 3: "ZYX", 4: "CZYX"}.get(data.ndim)
    if axes is None:
        raise InputError(f"{path}: expected a (z, y, x) or (c, z, y, x) array, got shape "
                         f"{data.shape}")
    return data, axes, None, (0.0, 0.0, 0.0), None


def read_clem_pair(em_path: str | os.PathLike, lm_path: str | os.PathLike, *,
                   em_voxel_size_um: Sequence[float] | None = None,
                   lm_voxel_size_um: Sequence[float] | None = None,
                   lm_channel: int | str | None = 0, em_roi: str | None = None
                   ) -> tuple[Volume, Volume, Volume]:
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
        then read only there).

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

    em = read_volume(em_path, voxel_size_um=em_voxel_size_um, voxel_size_flag="--em-voxel-size")
    lm = read_volume(lm_path, voxel_size_um=lm_voxel_size_um, voxel_size_flag="--lm-voxel-size")
    if em.n_channels > 1:
        em = em.channel(0)
    # no channel given: all are kept (the registration tries each)
    lm_aligned = lm.channel(lm_channel) if lm_channel is not None or lm.n_channels == 1 else lm
    roi = parse_roi(em_roi, em.shape_zyx)
    check_image_values(em.data[roi.slices], what=str(em_path) + (f" (ROI {em_roi})"
                                                                 if em_roi else ""))
    check_image_values(lm_aligned.data, what=f"{lm_path}" + (
        f" (channel {lm_channel!r})" if lm_channel is not None else ""))
    return em, lm, lm_aligned


# --------------------------------------------------------------------- writing
def ensure_writable(path: str | os.PathLike, *, overwrite: bool) -> Path:
    """Refuse to replace an existing output unless ``overwrite``; create the parent folder.

    Raises
    ------
    InputError
        If ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"{path}: already exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write(path: Path, overwrite: bool, write: Callable[[Path], None]) -> Path:
    """Write through ``write(tmp)`` to a temporary name beside ``path``, then rename.

    Refuses an existing ``path`` unless ``overwrite``; ``tmp`` keeps ``path``'s name and
    suffix (some libraries choose the format from it) inside a temporary folder.
    """
    path = ensure_writable(path, overwrite=overwrite)
    # keep the real suffix: some libraries pick the format from it
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    tmp = tmp_dir / path.name
    try:
        write(tmp)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, *, overwrite: bool) -> Path:
    """Write a text file atomically (temporary name, then rename)."""
    return atomic_write(Path(path), overwrite, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_ome_tiff(path: str | os.PathLike, volume: Volume, *, overwrite: bool = False,
                   compression: str | None = None) -> Path:
    """Write a volume as OME-TIFF with physical sizes in µm and channel names.

    Fiji (Bio-Formats) and napari read the sizes; :func:`read_volume` reads them back
    exactly.  ``compression`` is passed to tifffile (e.g. ``"zlib"``).
    """
    import tifffile

    data = volume.data if volume.data.ndim == 4 else volume.data[np.newaxis]
    sz, sy, sx = volume.voxel_size_um
    metadata = {
        "axes": "CZYX",
        "PhysicalSizeX": sx, "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": sy, "PhysicalSizeYUnit": "µm",
        "PhysicalSizeZ": sz, "PhysicalSizeZUnit": "µm",
        "Channel": {"Name": list(volume.channel_names or ("C0",))},
    }

    def write(tmp: Path) -> None:
        tifffile.imwrite(tmp, data, ome=True, photometric="minisblack", metadata=metadata,
                         compression=compression, bigtiff=data.nbytes > 2**31)

    return atomic_write(Path(path), overwrite, write)


def _write_imagej_tiff(path: Path, volume: Volume, overwrite: bool) -> Path:
    import tifffile

    data = volume.data if volume.data.ndim == 4 else volume.data[np.newaxis]
    sz, sy, sx = volume.voxel_size_um
    meta = {"axes": "ZCYX", "spacing": sz, "unit": "um"}
    if volume.data.ndim == 4:
        meta["Labels"] = list(volume.channel_names)

    def write(tmp: Path) -> None:
        tifffile.imwrite(tmp, np.ascontiguousarray(data.transpose(1, 0, 2, 3)), imagej=True,
                         resolution=(1.0 / sx, 1.0 / sy), metadata=meta)

    return atomic_write(path, overwrite, write)


def _write_mrc(path: Path, volume: Volume, overwrite: bool) -> Path:
    import mrcfile

    if volume.data.ndim != 3:
        raise InputError(f"{path}: MRC holds one channel; write channels separately")
    sz, sy, sx = volume.voxel_size_um
    ox, oy, oz = volume.origin_xyz_um

    def write(tmp: Path) -> None:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            data = volume.data
            if data.dtype == np.uint8:  # MRC has no unsigned 8-bit mode
                data = data.astype(np.uint16)
            mrc.set_data(np.ascontiguousarray(data))
            mrc.voxel_size = (sx * 1e4, sy * 1e4, sz * 1e4)  # Å
            mrc.header.origin = (ox * 1e4, oy * 1e4, oz * 1e4)

    return atomic_write(path, overwrite, write)


def _write_ome_zarr(path: Path, volume: Volume, overwrite: bool) -> Path:
    import zarr

    data = volume.data if volume.data.ndim == 4 else volume.data[np.newaxis]
    sz, sy, sx = volume.voxel_size_um
    ox, oy, oz = volume.origin_xyz_um
    axes = [{"name": "c", "type": "channel"}] + [
        {"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]
    multiscales = [{
        "version": "0.4", "name": Path(path).name, "axes": axes,
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [1.0, sz, sy, sx]},
            {"type": "translation", "translation": [0.0, oz, oy, ox]}]}],
    }]
    omero = {"channels": [{"label": n} for n in (volume.channel_names or ("C0",))]}

    def write(tmp: Path) -> None:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        chunks = (1, min(data.shape[1], 64), min(data.shape[2], 256), min(data.shape[3], 256))
        array = group.create_array("0", shape=data.shape, dtype=data.dtype, chunks=chunks)
        array[...] = data
        group.attrs["multiscales"] = multiscales
        group.attrs["omero"] = omero

    return atomic_write(path, overwrite, write)


def _write_npy(path: Path, volume: Volume, overwrite: bool) -> Path:
    return atomic_write(path, overwrite, lambda tmp: np.save(tmp, volume.data))


def write_volume(path: str | os.PathLike, volume: Volume, *, overwrite: bool = False) -> Path:
    """Write a volume in the format given by the file name (see :func:`file_format`).

    ``.ome.tif`` → OME-TIFF, ``.tif`` → ImageJ hyperstack, ``.mrc`` → MRC (Å),
    ``.zarr`` → OME-Zarr (NGFF 0.4), ``.npy`` → bare array (the voxel size is lost).
    """
    path = Path(path)
    fmt = file_format(path)
    if fmt == "ome-tiff":
        return write_ome_tiff(path, volume, overwrite=overwrite)
    writers = {"tiff": _write_imagej_tiff, "mrc": _write_mrc, "ome-zarr": _write_ome_zarr,
               "npy": _write_npy}
    return writers[fmt](path, volume, overwrite)


def write_json(path: str | os.PathLike, obj: object, *, overwrite: bool) -> Path:
    """Write JSON atomically (indented, UTF-8)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n",
                             overwrite=overwrite)

