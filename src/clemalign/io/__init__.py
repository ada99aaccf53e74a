"""Reading and writing volumes with their physical voxel sizes.

This is the only package that knows about file formats and length units: every
size leaves it in micrometres, ``(z, y, x)`` order.

Supported for reading
    * OME-TIFF (``PhysicalSizeX/Y/Z`` with their units),
    * ImageJ hyperstack TIFF (``XResolution``/``YResolution`` + ``unit``, ``spacing`` for z),
    * MRC / REC / MAP / ST / ALI (voxel size in Å; header origin),
    * OME-Zarr (NGFF 0.4 and 0.5: the ``scale`` and ``translation`` of the first dataset),
    * NRRD (through SimpleITK; the unit from ``space units``, none without them),
    * ``.npy`` (no metadata: the voxel size must be given).

Uncompressed TIFF / OME-TIFF / BigTIFF, MRC and ``.npy`` are memory-mapped, not read:
pixels come from disk when they are used, so registering an ROI of a large volume reads
that ROI (plus what the figures show), not the file.  Compressed files are read whole.

Every writer writes to a temporary name beside the target and renames it into
place, and refuses to replace an existing file unless ``overwrite=True``.

Modules: :mod:`~clemalign.io.readers` (:func:`read_volume`, :func:`read_raw`,
:func:`read_clem_pair`, one private reader per format), :mod:`~clemalign.io.metadata`
(:func:`file_format`, :func:`unit_to_um`, OME and ImageJ physical sizes) and
:mod:`~clemalign.io.writers` (:func:`write_volume`, :func:`write_ome_tiff`, the atomic
text and JSON writers, :func:`ensure_writable`).
"""

from .metadata import file_format, unit_to_um
from .readers import RawImage, override_voxel_size, read_clem_pair, read_raw, read_volume
from .writers import (
    atomic_write,
    atomic_write_text,
    ensure_writable,
    write_json,
    write_ome_tiff,
    write_volume,
)

__all__ = ["read_volume", "read_raw", "RawImage", "read_clem_pair", "override_voxel_size",
           "write_volume", "write_ome_tiff", "file_format", "unit_to_um", "ensure_writable",
           "atomic_write", "atomic_write_text", "write_json"]
