"""Reading and writing volumes with their physical voxel sizes (see :mod:`.readers`)."""

from .readers import (
    RawImage,
    atomic_write,
    atomic_write_text,
    ensure_writable,
    file_format,
    read_clem_pair,
    read_raw,
    read_volume,
    unit_to_um,
    write_json,
    write_ome_tiff,
    write_volume,
)

__all__ = ["read_volume", "read_raw", "RawImage", "read_clem_pair", "write_volume",
           "write_ome_tiff", "file_format", "unit_to_um", "ensure_writable",
           "atomic_write", "atomic_write_text", "write_json"]
