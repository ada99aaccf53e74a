"""napari reader: the files :func:`clemalign.read_volume` reads, as scaled layers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import InputError
from .layers import LayerData, layer_data

# napari offers this reader for these names (the manifest lists them too)
SUFFIXES = (".ome.tif", ".ome.tiff", ".tif", ".tiff", ".mrc", ".rec", ".map", ".zarr",
            ".nrrd", ".nhdr", ".czi", ".lif", ".nd2")


def get_reader(path: str | list[str]) -> Callable[[str], list[LayerData]] | None:
    """The reader for ``path`` when clemalign reads it (one path; else ``None``)."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    if not str(path).lower().rstrip("/").endswith(SUFFIXES):
        return None
    return read_layers


def read_layers(path: str | list[str]) -> list[LayerData]:
    """Every channel of the file as an image layer with ``scale`` = voxel size (µm) and
    ``translate`` = origin; a file without a voxel size opens at 1 µm per voxel with a
    warning, so its size must be entered in the widget."""
    import warnings

    from ..io import read_raw
    from ..io.metadata import file_format
    from ..io.readers import ome_zarr_levels
    from ..volume import Volume

    path = Path(path[0] if isinstance(path, list) else path)
    n_levels = len(ome_zarr_levels(path)) if file_format(path) == "ome-zarr" else 1
    # a pyramid is read on demand, level by level, as napari asks for it
    raw = read_raw(path, lazy=True if n_levels > 1 else None)
    size = raw.voxel_size_um
    if size is None:
        warnings.warn(f"{path}: the file records no voxel size; enter it (µm) in the "
                      "clemalign widget", stacklevel=2)
        size = (1.0, 1.0, 1.0)
    try:
        volume = Volume(raw.data if raw.data.shape[0] > 1 else raw.data[0], size,
                        raw.origin_xyz_um, raw.channel_names, str(path))
    except InputError as exc:
        raise ValueError(str(exc)) from None  # napari shows a reader's ValueError
    name = path.name.split(".")[0]
    layers = layer_data(volume, name=name, role="volume")
    if n_levels > 1:  # napari shows the level the zoom needs (e.g. a lm_in_em.ome.zarr)
        levels = [raw.data] + [read_raw(path, lazy=True, level=i).data
                               for i in range(1, n_levels)]
        layers = [([level[c] for level in levels], {**kwargs, "multiscale": True}, kind)
                  for c, (_, kwargs, kind) in enumerate(layers)]
    return layers
