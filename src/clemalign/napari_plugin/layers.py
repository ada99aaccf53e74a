"""napari layers ↔ clemalign volumes and transforms (no Qt; used by the widget, reader
and sample data, and testable on their own).

A layer's world coordinates are ``(z, y, x)`` µm: ``scale`` is the voxel size and
``translate`` the origin in ``(z, y, x)``.  The registered LM keeps its own scale and
translate; its ``affine`` (applied after them, as napari composes) is ``lm_to_em`` in
napari's ``(z, y, x)`` order (:func:`clemalign.transform_io.lm_to_em_zyx`), so the LM
lands on the EM without being resampled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from ..volume import Roi, Volume

__all__ = ["LayerData", "layer_data", "volume_from_layer", "roi_from_box", "roi_outline_zyx",
           "METADATA_KEY"]

# what the reader and the widget record in a layer's metadata
METADATA_KEY = "clemalign"
LayerData = tuple[Any, dict, str]


def layer_data(volume: Volume, *, name: str, role: str) -> list[LayerData]:
    """napari layer-data tuples for every channel of ``volume`` with its voxel size and
    origin; ``role`` (``"em"``, ``"lm"`` or ``"volume"``) and the source go into the
    metadata, so the widget can tell an LM's channels belong together."""
    channels = [volume.data] if volume.data.ndim == 3 else list(volume.data)
    names = volume.channel_names or tuple(f"C{i}" for i in range(len(channels)))
    colours = ["gray"] if role == "em" else ["green", "magenta", "cyan", "yellow", "red"]
    layers = []
    for c, data in enumerate(channels):
        meta = {"role": role, "source": volume.source, "channel": names[c],
                "voxel_size_um": list(volume.voxel_size_um)}
        kwargs = {"name": name if len(channels) == 1 else f"{name} [{names[c]}]",
                  "scale": tuple(float(v) for v in volume.voxel_size_um),
                  "translate": tuple(float(v) for v in volume.origin_xyz_um[::-1]),
                  "colormap": colours[c % len(colours)],
                  "blending": "translucent" if role == "em" else "additive",
                  "metadata": {METADATA_KEY: meta}}
        layers.append((data, kwargs, "image"))
    return layers


def volume_from_layer(layer, voxel_size_um: Sequence[float] | None = None, *,
                      what: str = "layer") -> Volume:
    """The layer's pixels as a :class:`Volume` in µm.

    Parameters
    ----------
    layer : napari.layers.Image
        A 2D ``(y, x)`` or 3D ``(z, y, x)`` grey image (multiscale: the full resolution).
    voxel_size_um : sequence of 3 floats, optional
        ``(z, y, x)`` µm; default: the layer's ``scale`` (a 2D layer's plane gets the x
        pixel as its thickness).
    what : str
        Names the layer in errors (e.g. ``"EM layer"``).

    Raises
    ------
    InputError
        RGB, 4D or empty layers, or a voxel size that is not positive.
    """
    if getattr(layer, "rgb", False):
        raise InputError(f"{what} {layer.name!r} is RGB; register a grey channel")
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    if data.ndim not in (2, 3):
        raise InputError(f"{what} {layer.name!r} has {data.ndim} dimensions; give a 2D or 3D "
                         "grey image (split channels into layers)")
    scale = [float(v) for v in layer.scale]
    translate = [float(v) for v in layer.translate]
    if data.ndim == 2:
        data = data[np.newaxis]
        scale = [scale[-1]] + scale
        translate = [0.0] + translate
    size = tuple(float(v) for v in (voxel_size_um if voxel_size_um is not None else scale))
    if len(size) != 3 or not all(np.isfinite(size)) or min(size) <= 0:
        raise InputError(f"{what} {layer.name!r}: the voxel size (z, y, x) must be three "
                         f"positive numbers in µm, got {size}")
    meta = layer.metadata.get(METADATA_KEY, {}) if hasattr(layer, "metadata") else {}
    source = meta.get("source") or layer.name
    return Volume(np.asarray(data), size, tuple(translate[::-1]), (str(meta.get("channel",
                                                                        layer.name)),),
                  source)


def roi_from_box(corners_zyx_um: np.ndarray, em: Volume) -> Roi:
    """The EM voxels inside the bounding box of points in world ``(z, y, x)`` µm (shape
    vertices): points on one plane (or 2D points) stand for every EM plane, points on
    several planes bound z too.

    Raises
    ------
    InputError
        When the box misses the EM.
    """
    pts = np.asarray(corners_zyx_um, float)
    if pts.shape[1] == 2:  # drawn on a 2D view: the whole depth
        pts = np.column_stack([np.zeros(len(pts)), pts])
    origin_zyx = np.asarray(em.origin_xyz_um[::-1], float)
    size = np.asarray(em.voxel_size_um, float)
    index = (pts - origin_zyx) / size
    lo = np.floor(index.min(axis=0) + 0.5).astype(int)
    hi = np.floor(index.max(axis=0) + 0.5).astype(int) + 1
    shape = np.asarray(em.shape_zyx)
    if np.ptp(pts[:, 0]) == 0:  # a flat rectangle: every EM plane
        lo[0], hi[0] = 0, shape[0]
    lo, hi = np.maximum(lo, 0), np.minimum(hi, shape)
    if np.any(hi <= lo):
        raise InputError("the ROI rectangle lies outside the EM layer; draw it on the EM")
    return Roi(int(lo[0]), int(hi[0]), int(lo[1]), int(hi[1]), int(lo[2]), int(hi[2]))


def roi_outline_zyx(roi: Roi, em: Volume, plane: float | None = None) -> np.ndarray:
    """The ROI as a rectangle in world ``(z, y, x)`` µm on EM plane ``plane`` (default:
    its middle plane), for a shapes layer."""
    corners = np.array([[roi.y0, roi.x0], [roi.y0, roi.x1 - 1], [roi.y1 - 1, roi.x1 - 1],
                        [roi.y1 - 1, roi.x0]], float)
    k = (roi.z0 + roi.z1 - 1) / 2 if plane is None else plane
    index = np.column_stack([np.full(4, k), corners])
    return index * np.asarray(em.voxel_size_um) + np.asarray(em.origin_xyz_um[::-1])
