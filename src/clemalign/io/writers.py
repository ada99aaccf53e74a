"""Writing volumes and text outputs.

Every writer writes to a temporary name beside the target and renames it into place (a
crash leaves no half-written file), and refuses to replace an existing file unless
``overwrite=True``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..volume import Volume
from .metadata import file_format

__all__ = ["ensure_writable", "atomic_write", "atomic_write_text", "write_ome_tiff",
           "write_ome_tiff_channels",
           "write_volume", "write_json"]


def ensure_writable(path: str | os.PathLike, *, overwrite: bool) -> Path:
    """Refuse to replace an existing output unless ``overwrite``; create the parent folder.

    Raises
    ------
    InputError
        If ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    if os.path.lexists(path) and not overwrite:  # a dangling link counts: it names a target
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
    exactly.  The lateral pixel is also in the TIFF resolution tags (per cm, so ITK reads
    it in mm); a non-zero origin is written as every plane's OME position (µm).
    ``compression`` is passed to tifffile (e.g. ``"zlib"``).
    """
    data = volume.data if volume.data.ndim == 4 else volume.data[np.newaxis]
    return write_ome_tiff_channels(path, list(data), dtype=data.dtype,
                                   voxel_size_um=volume.voxel_size_um,
                                   origin_xyz_um=volume.origin_xyz_um,
                                   channel_names=volume.channel_names, overwrite=overwrite,
                                   compression=compression)


def write_ome_tiff_channels(path: str | os.PathLike, channels: Sequence[np.ndarray], *,
                            dtype: np.dtype, voxel_size_um: Sequence[float],
                            origin_xyz_um: Sequence[float] = (0.0, 0.0, 0.0),
                            channel_names: Sequence[str] | None = None,
                            overwrite: bool = False, compression: str | None = None) -> Path:
    """:func:`write_ome_tiff` of channels given separately (each ``(z, y, x)``, any
    array-like of one shape), converted to ``dtype`` one plane at a time: a stack of
    several sources is written without being assembled in memory."""
    import tifffile

    dtype = np.dtype(dtype)
    shape = (len(channels), *np.shape(channels[0]))
    sz, sy, sx = (float(v) for v in voxel_size_um)
    metadata = {
        "axes": "CZYX",
        "PhysicalSizeX": sx, "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": sy, "PhysicalSizeYUnit": "µm",
        "PhysicalSizeZ": sz, "PhysicalSizeZUnit": "µm",
        "Channel": {"Name": list(channel_names or [f"C{c}" for c in range(shape[0])])},
    }
    if any(origin_xyz_um):  # where Bio-Formats reads a stack's position
        n = shape[0] * shape[1]
        z = [float(origin_xyz_um[2]) + k * sz for _ in range(shape[0]) for k in range(shape[1])]
        metadata["Plane"] = {"PositionX": [float(origin_xyz_um[0])] * n,
                             "PositionXUnit": ["µm"] * n,
                             "PositionY": [float(origin_xyz_um[1])] * n,
                             "PositionYUnit": ["µm"] * n,
                             "PositionZ": z, "PositionZUnit": ["µm"] * n}
    nbytes = float(np.prod(shape)) * dtype.itemsize

    def pages():
        for channel in channels:
            for k in range(shape[1]):
                yield np.asarray(channel[k], dtype=dtype)

    def write(tmp: Path) -> None:
        # the TIFF resolution tags too (pixels per cm): readers without OME-XML (ITK,
        # 3D Slicer, ImageJ without Bio-Formats) then get the lateral pixel size
        tifffile.imwrite(tmp, pages(), shape=shape, dtype=dtype, ome=True,
                         photometric="minisblack", metadata=metadata, compression=compression,
                         bigtiff=nbytes > 2**31, resolution=(1e4 / sx, 1e4 / sy),
                         resolutionunit="CENTIMETER")

    return atomic_write(Path(path), overwrite, write)


_NRRD_TYPES = {"uint8": "uint8", "int8": "int8", "uint16": "uint16", "int16": "int16",
               "uint32": "uint32", "int32": "int32", "float32": "float", "float64": "double"}


def write_nrrd_channels(path: str | os.PathLike, channels: Sequence[np.ndarray], *,
                        dtype: np.dtype, voxel_size_um: Sequence[float],
                        origin_xyz_um: Sequence[float] = (0.0, 0.0, 0.0),
                        channel_names: Sequence[str] | None = None,
                        overwrite: bool = False) -> Path:
    """Write channels (each ``(z, y, x)``) as one NRRD, plane by plane, for ITK,
    SimpleITK and 3D Slicer: spacing and origin in µm with ``space units`` saying so,
    several channels as a ``list`` axis (ITK reads them as pixel components).

    ITK reads the numbers but not their unit, and 3D Slicer labels them mm: the
    ``transform.tfm`` we write is in the same µm numbers, so the two stay consistent.
    SimpleITK's own NRRD writer cannot record the unit, hence this header.
    """
    dtype = np.dtype(dtype)
    if dtype.name not in _NRRD_TYPES:
        raise InputError(f"{path}: NRRD cannot hold {dtype} pixels")
    nz, ny, nx = np.shape(channels[0])
    sz, sy, sx = (float(v) for v in voxel_size_um)
    ox, oy, oz = (float(v) for v in origin_xyz_um)
    multi = len(channels) > 1
    names = list(channel_names or [f"C{c}" for c in range(len(channels))])
    header = [
        "NRRD0004",
        "# clemalign: (x, y, z) in micrometres (see space units)",
        f"type: {_NRRD_TYPES[dtype.name]}",
        f"dimension: {4 if multi else 3}",
        "space: left-posterior-superior",  # ITK's physical frame, as transform.tfm
        f"sizes: {nx} {ny} {nz}" + (f" {len(channels)}" if multi else ""),
        f"space directions: ({sx!r},0,0) (0,{sy!r},0) (0,0,{sz!r})" + (" none" if multi else ""),
        "kinds: domain domain domain" + (" list" if multi else ""),
        'labels: "x" "y" "z"' + (' "' + ",".join(names).replace('"', "'") + '"'
                                  if multi else ""),
        "endian: little",
        "encoding: raw",
        f"space origin: ({ox!r},{oy!r},{oz!r})",
        'space units: "microns" "microns" "microns"',
    ]

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(("\n".join(header) + "\n\n").encode("ascii"))
            for channel in channels:  # x fastest, then y, z, channel: C order per channel
                for k in range(nz):
                    np.asarray(channel[k], dtype=dtype.newbyteorder("<")).tofile(f)

    return atomic_write(Path(path), overwrite, write)


def _write_nrrd(path: Path, volume: Volume, overwrite: bool) -> Path:
    if path.name.lower().endswith(".nhdr"):
        raise InputError(f"{path}: clemalign writes NRRD with its data attached; name it .nrrd")
    data = volume.data if volume.data.ndim == 4 else volume.data[np.newaxis]
    return write_nrrd_channels(path, list(data), dtype=data.dtype,
                               voxel_size_um=volume.voxel_size_um,
                               origin_xyz_um=volume.origin_xyz_um,
                               channel_names=volume.channel_names, overwrite=overwrite)


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


# a multiscale OME-Zarr's levels go down to about this many pixels across
_ZARR_MIN_LEVEL_SIDE_PX = 512


def write_ome_zarr_slabs(path: str | os.PathLike, shape_czyx: Sequence[int], *,
                         dtype: np.dtype, voxel_size_um: Sequence[float],
                         slab: Callable[[int, int], np.ndarray],
                         origin_xyz_um: Sequence[float] = (0.0, 0.0, 0.0),
                         channel_names: Sequence[str] | None = None,
                         overwrite: bool = False, slab_bytes: int = 256 * 2**20,
                         min_level_side_px: int | None = None) -> Path:
    """Write a multiscale OME-Zarr (NGFF 0.4) too large to hold, one z-slab at a time.

    ``slab(z0, z1)`` returns planes ``z0:z1`` of every channel, ``(c, z1 - z0, y, x)``;
    slabs of about ``slab_bytes`` are requested in order and written whole chunks at a
    time.  Lower levels halve y and x (and z while its voxel stays below the lateral
    one) by block means of the level above, read back a slab at a time, until the larger
    side is at most ``min_level_side_px`` (default 512).  napari, MoBIE / BigDataViewer
    (n5-viewer) and Fiji read it; :func:`clemalign.read_volume` reads the full-resolution
    level.
    """
    import zarr

    from ..lazy import block_mean, level_factors

    dtype = np.dtype(dtype)
    min_level_side_px = min_level_side_px or _ZARR_MIN_LEVEL_SIDE_PX
    c, nz, ny, nx = (int(v) for v in shape_czyx)
    size = np.asarray(voxel_size_um, float)
    plane_bytes = c * ny * nx * dtype.itemsize
    chunk_z = int(max(1, min(nz, 64, slab_bytes // (plane_bytes * 4) or 1)))
    step = chunk_z * max(1, int(slab_bytes // (plane_bytes * chunk_z)))
    levels = [(np.array([nz, ny, nx]), size)]
    while max(levels[-1][0][1:]) > min_level_side_px and len(levels) < 8:
        shape, vs = levels[-1]
        factor = np.array(level_factors(vs))
        factor[0] = factor[0] if shape[0] >= 2 else 1
        levels.append((shape // factor, vs * factor))
    ox, oy, oz = (float(v) for v in origin_xyz_um)
    axes = [{"name": "c", "type": "channel"}] + [
        {"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]
    datasets = []
    for i, (_, vs) in enumerate(levels):
        # a level's first voxel is the centre of the block it averages
        offset = (vs - size) / 2
        datasets.append({"path": str(i), "coordinateTransformations": [
            {"type": "scale", "scale": [1.0, *map(float, vs)]},
            {"type": "translation", "translation": [0.0, oz + offset[0], oy + offset[1],
                                                    ox + offset[2]]}]})
    names = list(channel_names or [f"C{i}" for i in range(c)])

    def write(tmp: Path) -> None:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        arrays = []
        for i, (shape, _) in enumerate(levels):
            chunks = (1, min(int(shape[0]), chunk_z), min(int(shape[1]), 512),
                      min(int(shape[2]), 512))
            arrays.append(group.create_array(str(i), shape=(c, *map(int, shape)), dtype=dtype,
                                             chunks=chunks, fill_value=0))
        for z0 in range(0, nz, step):
            z1 = min(nz, z0 + step)
            arrays[0][:, z0:z1] = np.asarray(slab(z0, z1), dtype=dtype)
        for i in range(1, len(levels)):
            above, below = arrays[i - 1], arrays[i]
            f = [a // b for a, b in zip(above.shape[1:], below.shape[1:], strict=True)]
            zstep = max(f[0], (step // f[0]) * f[0])
            for z0 in range(0, below.shape[1] * f[0], zstep):
                z1 = min(below.shape[1] * f[0], z0 + zstep)
                part = above[:, z0:z1, :below.shape[2] * f[1], :below.shape[3] * f[2]]
                means = [block_mean(ch, f) for ch in part]
                if dtype.kind in "ui":
                    means = [np.rint(m) for m in means]
                below[:, z0 // f[0]:z1 // f[0]] = np.stack(means).astype(dtype)
        group.attrs["multiscales"] = [{"version": "0.4", "name": Path(path).name,
                                       "axes": axes, "datasets": datasets}]
        group.attrs["omero"] = {"channels": [{"label": n} for n in names]}

    return atomic_write(Path(path), overwrite, write)


def _write_npy(path: Path, volume: Volume, overwrite: bool) -> Path:
    return atomic_write(path, overwrite, lambda tmp: np.save(tmp, volume.data))


def write_volume(path: str | os.PathLike, volume: Volume, *, overwrite: bool = False) -> Path:
    """Write a volume in the format given by the file name (see :func:`file_format`).

    ``.ome.tif`` → OME-TIFF, ``.tif`` → ImageJ hyperstack, ``.mrc`` → MRC (Å),
    ``.zarr`` → OME-Zarr (NGFF 0.4), ``.nrrd`` → NRRD in µm (ITK, 3D Slicer),
    ``.npy`` → bare array (the voxel size is lost).
    """
    path = Path(path)
    fmt = file_format(path)
    if fmt == "ome-tiff":
        return write_ome_tiff(path, volume, overwrite=overwrite)
    writers = {"tiff": _write_imagej_tiff, "mrc": _write_mrc, "ome-zarr": _write_ome_zarr,
               "nrrd": _write_nrrd, "npy": _write_npy}
    if fmt not in writers:
        raise InputError(f"{path}: clemalign does not write {fmt} files; use .ome.tif, .tif, "
                         ".mrc, .zarr, .nrrd or .npy")
    return writers[fmt](path, volume, overwrite)


def write_json(path: str | os.PathLike, obj: object, *, overwrite: bool) -> Path:
    """Write JSON atomically (indented, UTF-8)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n",
                             overwrite=overwrite)
