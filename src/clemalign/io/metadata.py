"""What a file name and a file's metadata say: the format, length units, physical sizes.

Every length leaves this module in micrometres, sizes in ``(z, y, x)`` order.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:  # tifffile is imported where a TIFF is read, not with the package
    import tifffile

__all__ = ["unit_to_um", "file_format", "ome_sizes", "imagej_sizes", "imagej_names",
           "nrrd_space_units"]


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


# microscope vendors' files, read through bioio and its plugins (the ``formats`` extra)
VENDOR_SUFFIXES = (".czi", ".lif", ".nd2")
VENDOR_PLUGINS = {".czi": "bioio-czi", ".lif": "bioio-lif", ".nd2": "bioio-nd2"}


def file_format(path: str | os.PathLike) -> str:
    """Name of the format :func:`read_volume` / :func:`write_volume` uses for ``path``.

    One of ``"ome-tiff"``, ``"tiff"`` (ImageJ or plain; decided by content when
    reading), ``"mrc"``, ``"ome-zarr"``, ``"nrrd"`` (ITK, 3D Slicer), ``"npy"``, ``"png"``
    (a single 2D image, no metadata; read only), ``"vendor"`` (Zeiss, Leica, Nikon files
    through bioio; read only, with the ``formats`` extra).
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
    if name.endswith((".nrrd", ".nhdr")):
        return "nrrd"
    if name.endswith(".npy"):
        return "npy"
    if name.endswith(".png"):
        return "png"
    if name.endswith(VENDOR_SUFFIXES):
        return "vendor"
    raise InputError(f"{path}: unsupported file type; use OME-TIFF, ImageJ TIFF, MRC/REC, "
                     "OME-Zarr, NRRD, .npy, (2D) PNG, or Zeiss .czi / Leica .lif / Nikon .nd2 with "
                     "pip install \"clemalign[formats]\"")


def ome_sizes(xml: str, path: Path) -> tuple[tuple[float, float, float] | None, list[str]]:
    """Voxel size ``(z, y, x)`` in µm and channel names from OME-XML; ``path`` only names
    the file in errors.  The size is ``None`` unless y and x are given; a missing z is NaN
    (a single plane needs none)."""
    root = ET.fromstring(xml)
    pixels = next((el for el in root.iter() if el.tag.endswith("}Pixels") or el.tag == "Pixels"),
                  None)
    if pixels is None:
        return None, []
    sizes = []
    for ax in "ZYX":
        value = pixels.get(f"PhysicalSize{ax}")
        if value is None and ax == "Z":
            sizes.append(float("nan"))
            continue
        if value is None:
            return None, _ome_channel_names(pixels)
        unit = pixels.get(f"PhysicalSize{ax}Unit", "µm")  # OME's default unit is µm
        sizes.append(float(value) * unit_to_um(unit, what=f"{path}: PhysicalSize{ax}Unit"))
    return tuple(sizes), _ome_channel_names(pixels)  # type: ignore[return-value]


def _ome_channel_names(pixels: ET.Element) -> list[str]:
    """``Name`` of each ``Channel`` of an OME ``Pixels`` element (``C<i>`` if unnamed)."""
    return [ch.get("Name") or f"C{i}" for i, ch in
            enumerate(el for el in pixels if el.tag.endswith("Channel"))]


def imagej_sizes(tif: tifffile.TiffFile, path: Path) -> tuple[float, float, float] | None:
    """Voxel size ``(z, y, x)`` in µm of an ImageJ TIFF, or ``None`` if uncalibrated.

    x and y come from ``XResolution``/``YResolution`` (pixels per unit) and ``unit``, z
    from ``spacing`` (in ``zunit`` if given, else ``unit``; NaN when absent — a single
    plane needs none).
    """
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
        return (float("nan"), sizes[0], sizes[1])
    zscale = unit_to_um(str(meta["zunit"]), what=f"{path}: ImageJ zunit") if "zunit" in meta \
        else scale
    return (float(spacing) * zscale, sizes[0], sizes[1])


def imagej_names(meta: dict | None) -> list[str] | None:
    """Channel names from ImageJ ``Labels`` (one per channel), or ``None``."""
    labels = (meta or {}).get("Labels")
    channels = int((meta or {}).get("channels", 1))
    if labels and channels > 1 and len(labels) >= channels:
        return [str(label) for label in labels[:channels]]
    return None


def nrrd_space_units(path: Path) -> list[str] | None:
    """The ``space units`` field of a NRRD header (``None`` when absent): ITK reads the
    spacing but drops its unit, and without it the numbers could be mm (ITK's and 3D
    Slicer's assumption) or µm."""
    units = None
    with open(path, "rb") as f:
        for raw in f:
            line = raw.decode("latin-1").strip()
            if not line:  # the blank line ends the header
                break
            key, sep, value = line.partition(":")
            if sep and key.strip() == "space units":
                units = re.findall(r'"([^"]*)"', value)
    return units
