"""Files a registration leaves behind: transform, LM resampled onto the EM, run record.

Fixed names inside one output folder (``OUTPUT_FILES``).  The files are written as a
whole (:func:`clemalign.io.output_folder.staged_output`): into a temporary folder, moved
into place when all are complete; nothing is replaced unless ``overwrite`` is set, and a
refused, failed or interrupted run leaves the folder as it was.
"""

from __future__ import annotations

import os
import platform
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ._threads import submit_in_context
from ._timing import StepTimer
from .errors import InputError
from .evaluation import Landmarks, tre_table
from .io import atomic_write_text, write_json
from .io.output_folder import staged_output
from .io.writers import write_nrrd_channels, write_ome_tiff_channels
from .lazy import as_numpy
from .pipeline import RegistrationResult
from .prealign3d import Prealign3DResult
from .resources import check_memory
from .transform_io import (
    EcclemImage,
    roi_points_um,
    write_bigwarp_csv,
    write_ecclem_xml,
    write_itk_tfm,
    write_napari_json,
    write_ngff_transform,
)
from .transforms import CONVENTION, Affine
from .volume import Roi, Volume, parse_roi, to_sitk

__all__ = ["OUTPUT_FILES", "OUTPUT_LEVELS", "LM_IN_EM_FILES", "FIGURE_FILES",
           "resample_lm_to_em", "lm_in_em_fits_in_memory", "write_lm_in_em_zarr",
           "figure_grid", "FiguresAhead", "prepare_figures", "write_overlay",
           "write_registration",
           "transform_record"]

FIGURE_FILES = ("prealign.png", "orientation.png", "scale_selection.png", "overlay_slices.png",
                "orthogonal_views.png", "projection_overlay.png", "checkerboard.png")
# the LM on the EM grid, per --volume-format: OME-TIFF (Fiji, napari) or NRRD (ITK, Slicer)
LM_IN_EM_FILES = {"ome-tiff": "lm_in_em.ome.tif", "nrrd": "lm_in_em.nrrd",
                  "ome-zarr": "lm_in_em.ome.zarr"}
# above this the LM on the EM grid is written as lm_in_em.ome.zarr, a slab at a time
# (also when memory would not hold it): a whole-grid file would not fit in memory
LM_IN_EM_IN_MEMORY_BYTES = 4 * 2**30
# the figures show the EM ROI reduced by the largest integer factor (block means) that
# keeps it at least this many pixels across: their panels are 420-650 px wide (100 dpi),
# and smaller data render faster (the publication's 903 px ROI: 452 px, 7 M voxels)
FIGURE_MIN_SIDE_PX = 450
# planes of the EM grid resampled at a time when lm_in_em is written without the overlay
_SLAB_PLANES = 16
OUTPUT_FILES = ("transform.json", "lm_in_em.ome.tif", "lm_in_em.nrrd", "lm_in_em.ome.zarr",
                "overlay.ome.tif", "run.json",
                "report.html", "transform.tfm", "ngff_transform.json", "bigwarp_landmarks.csv",
                "napari_affine.json", "ecclem_transform.xml") + FIGURE_FILES
_TRANSFORMS = frozenset({"transform.json", "run.json", "transform.tfm", "ngff_transform.json",
                         "bigwarp_landmarks.csv", "napari_affine.json", "ecclem_transform.xml"})
OutputLevel = Literal["all", "standard", "minimal"]
# the files of each --outputs level (figures only those that apply to the run)
OUTPUT_LEVELS: dict[str, frozenset[str]] = {
    "all": frozenset(OUTPUT_FILES),
    "standard": frozenset(OUTPUT_FILES) - {"overlay.ome.tif"},
    "minimal": _TRANSFORMS,
}


def transform_record(result: RegistrationResult, em: Volume, lm: Volume) -> dict:
    """The ``transform.json`` content: both directions, inputs, stages, timings."""
    from . import __version__

    pre = result.prealign
    return {
        "em_to_lm": result.em_to_lm.to_list(),
        "lm_to_em": result.lm_to_em.to_list(),
        "convention": CONVENTION,
        "em_voxel_size_um": list(em.voxel_size_um),
        "lm_voxel_size_um": list(lm.voxel_size_um),
        "em_source": em.source, "lm_source": lm.source,
        "lm_channel": result.lm_channel,
        "lm_channel_scores": [c.to_dict() for c in result.channel_scores],
        "scales": result.scales.to_dict() if result.scales else None,
        "roi": result.roi.to_str(),
        "prealign_choice": result.prealign_choice,
        "prealign": {k: v for k, v in pre.to_dict().items() if k != "candidates"},
        "stages": {s.name: s.to_dict() for s in result.fine.stages},
        "fine": {k: v for k, v in result.fine.to_dict().items() if k != "stages"},
        "confidence": result.confidence,
        # stage totals, and each stage's steps (the totals used to overwrite the steps)
        "timings_s": {**result.timings_s, "prealign_steps": pre.timings_s,
                      "fine_steps": result.fine.timings_s},
        "clemalign_version": __version__,
    }


def resample_lm_to_em(lm: Volume, em: Volume, em_to_lm: Affine, roi: Roi | None = None
                      ) -> Volume:
    """Every LM channel resampled onto the EM (ROI) grid, at the EM voxel size.

    SimpleITK's resampler maps each output (EM) point through the transform to the input
    (LM) — exactly ``em_to_lm`` — and interpolates linearly; outside the LM field is 0.

    Returns
    -------
    Volume
        ``(c, z, y, x)`` in the LM's dtype, EM voxel size, origin at the ROI's first voxel.
    """
    roi = roi or parse_roi(None, em.shape_zyx)
    # the resampled channels and their stacked copy
    _check_lm_in_em_memory(lm, em, roi, 2 * lm.n_channels)
    resampled = _ResampledChannels.of(lm, em, em_to_lm, roi, checked=True)
    return Volume(np.stack(resampled.channels), em.voxel_size_um, resampled.origin_xyz_um,
                  resampled.channel_names, lm.source)


class _Resampler:
    """SimpleITK's linear resampling of LM channels onto (z-slabs of) an EM grid through
    ``em_to_lm``; one LM channel converted for SimpleITK at a time (the last one kept)."""

    def __init__(self, lm: Volume, em: Volume, em_to_lm: Affine, roi: Roi | None = None):
        import SimpleITK as sitk

        self.lm, self.em = lm, em
        self.roi = roi or parse_roi(None, em.shape_zyx)
        self.origin_xyz_um = tuple(float(v) for v in em.index_to_physical(
            np.array([self.roi.z0, self.roi.y0, self.roi.x0], float)))
        self.transform = sitk.AffineTransform(3)
        self.transform.SetMatrix(tuple(float(v) for v in em_to_lm.linear.ravel()))
        self.transform.SetTranslation(tuple(float(v) for v in em_to_lm.translation_um))
        self.dtype = np.dtype(lm.data.dtype)
        self.channel_names = tuple(lm.channel_names
                                   or tuple(f"C{i}" for i in range(lm.n_channels)))
        self._image: tuple[int, object] | None = None
        self._lock = threading.Lock()

    def _channel_image(self, c: int):
        with self._lock:
            if self._image is None or self._image[0] != c:
                self._image = None  # the previous channel's copy goes first
                data = self.lm.data if self.lm.data.ndim == 3 else self.lm.data[c]
                self._image = (c, to_sitk(Volume(np.asarray(data), self.lm.voxel_size_um,
                                                 self.lm.origin_xyz_um)))
            return self._image[1]

    def slab(self, c: int, z0: int, z1: int):
        """Channel ``c`` on the ROI's planes ``z0:z1`` (relative to the ROI), as a
        SimpleITK image."""
        import SimpleITK as sitk

        roi = self.roi
        reference = sitk.Image([roi.shape[2], roi.shape[1], z1 - z0], sitk.sitkUInt8)
        reference.SetSpacing(tuple(float(s) for s in self.em.spacing_xyz_um))
        reference.SetOrigin(tuple(float(v) for v in self.em.index_to_physical(
            np.array([roi.z0 + z0, roi.y0, roi.x0], float))))
        image = self._channel_image(c)
        return sitk.Resample(image, reference, self.transform, sitk.sitkLinear, 0.0,
                             image.GetPixelID())


@dataclass(frozen=True, eq=False)
class _ResampledChannels:
    """The LM channels on an EM grid as SimpleITK resampled them: ``channels`` are
    ``(z, y, x)`` views of ``images``' buffers (kept alive with them), so the whole grid is
    never copied into one ``(c, z, y, x)`` array (at the publication's size that copy
    was 600 MB of fresh memory and 1.5 s)."""

    images: tuple
    channels: tuple[np.ndarray, ...]
    voxel_size_um: tuple[float, float, float]
    origin_xyz_um: tuple[float, float, float]
    channel_names: tuple[str, ...]

    @classmethod
    def of(cls, lm: Volume, em: Volume, em_to_lm: Affine, roi: Roi | None = None, *,
           checked: bool = False) -> _ResampledChannels:
        import SimpleITK as sitk

        roi = roi or parse_roi(None, em.shape_zyx)
        if not checked:
            _check_lm_in_em_memory(lm, em, roi, lm.n_channels)
        resampler = _Resampler(lm, em, em_to_lm, roi)
        images = tuple(resampler.slab(c, 0, roi.shape[0]) for c in range(lm.n_channels))
        return cls(images, tuple(sitk.GetArrayViewFromImage(im) for im in images),
                   tuple(float(v) for v in em.voxel_size_um), resampler.origin_xyz_um,
                   resampler.channel_names)


def _check_lm_in_em_memory(lm: Volume, em: Volume, roi: Roi, n_grids: float) -> None:
    """Refuse (one line) when ``n_grids`` single-channel arrays of the ROI's grid and a
    copy of one LM channel for SimpleITK would not fit in memory."""
    itemsize = lm.data.dtype.itemsize
    check_memory(float(np.prod(roi.shape)) * itemsize * n_grids
                 + float(np.prod(lm.shape_zyx)) * itemsize,
                 f"the LM on the EM grid ({lm.n_channels} channel(s) × {roi.shape} voxels "
                 f"of {em.voxel_size_um} µm)", "choose a smaller --roi")


class _Stopped(Exception):
    """The run failed elsewhere: a streamed file stops being written."""


class _StreamedChannel:
    """One LM channel on an EM grid for the plane-by-plane writers: ``[k]`` gives plane
    ``k`` (asked for in increasing order), resampled a z-slab at a time, the next slab
    on a thread while the writer writes this one.  Planes are views of SimpleITK's
    images; memory: up to three slabs (the one before, kept while the writer may still
    hold its last plane, this one and the next), not the grid (600 MB of fresh memory at
    the publication's size).  ``stop`` set makes the next slab raise :class:`_Stopped`."""

    def __init__(self, resampler: _Resampler, c: int, pool: ThreadPoolExecutor,
                 slab_planes: int, stop: threading.Event):
        self.resampler, self.c, self.pool, self.slab_planes = resampler, c, pool, slab_planes
        self.stop = stop
        self.shape = resampler.roi.shape
        self.dtype = resampler.dtype
        self._z0 = -1
        self._array: np.ndarray | None = None
        self._images: tuple = ()  # owners of this slab's and the one before's views
        self._next = None

    def _submit(self, z0: int):
        z1 = min(z0 + self.slab_planes, self.shape[0])
        return z0, submit_in_context(self.pool, self._resample, z0, z1)

    def _resample(self, z0: int, z1: int) -> tuple[object, np.ndarray]:
        import SimpleITK as sitk

        # a view of SimpleITK's buffer, not a copy (publication size: 600 MB copied in
        # all), returned with the image that owns it
        image = self.resampler.slab(self.c, z0, z1)
        return image, sitk.GetArrayViewFromImage(image)

    def __getitem__(self, k: int) -> np.ndarray:
        if not 0 <= k < self.shape[0]:
            raise IndexError(f"plane {k} of {self.shape[0]}")
        if self._array is None or not self._z0 <= k < self._z0 + len(self._array):
            if self.stop.is_set():
                raise _Stopped
            z0 = k - k % self.slab_planes
            if self._next is None or self._next[0] != z0:
                self._next = self._submit(z0)
            image, self._array = self._next[1].result()
            self._z0, self._images = self._next[0], (*self._images[-1:], image)
            after = z0 + self.slab_planes
            self._next = self._submit(after) if after < self.shape[0] else None
        return self._array[k - self._z0]


def lm_in_em_bytes(lm: Volume, em: Volume) -> float:
    """Size of the LM (every channel) resampled onto the whole EM grid, bytes."""
    return float(np.prod(em.shape_zyx)) * lm.n_channels * lm.data.dtype.itemsize


def lm_in_em_fits_in_memory(lm: Volume, em: Volume) -> bool:
    """Whether ``lm_in_em`` is resampled whole (≤ :data:`LM_IN_EM_IN_MEMORY_BYTES` and
    what memory allows) rather than written as OME-Zarr a slab at a time."""
    from .resources import available_memory_bytes

    need = lm_in_em_bytes(lm, em)
    return need <= LM_IN_EM_IN_MEMORY_BYTES and need * 2 < available_memory_bytes()


def write_lm_in_em_zarr(path: Path, lm: Volume, em: Volume, em_to_lm: Affine) -> Path:
    """Every LM channel resampled onto the whole EM grid as a multiscale OME-Zarr, a
    z-slab at a time (:func:`clemalign.io.writers.write_ome_zarr_slabs`): memory holds
    one slab, whatever the EM's size."""
    from .io.writers import write_ome_zarr_slabs

    nz, ny, nx = em.shape_zyx

    def slab(z0: int, z1: int) -> np.ndarray:
        return resample_lm_to_em(lm, em, em_to_lm, Roi(z0, z1, 0, ny, 0, nx)).data

    names = lm.channel_names or tuple(f"C{i}" for i in range(lm.n_channels))
    return write_ome_zarr_slabs(path, (lm.n_channels, nz, ny, nx), dtype=lm.data.dtype,
                                voxel_size_um=em.voxel_size_um, slab=slab,
                                origin_xyz_um=em.origin_xyz_um, channel_names=names)


def figure_grid(em: Volume, roi: Roi) -> Volume:
    """The EM ROI the figures show: as it is, or block means over the largest integer
    factor that keeps it :data:`FIGURE_MIN_SIDE_PX` across (z then by as much as keeps
    voxels no longer than wide), read a chunk at a time from a lazy EM."""
    from .registration.working import working_volume

    f = max(1, max(roi.shape[1], roi.shape[2]) // FIGURE_MIN_SIDE_PX)
    origin = tuple(float(v) for v in em.index_to_physical(
        np.array([roi.z0, roi.y0, roi.x0], float)))
    if f == 1:
        return Volume(as_numpy(em.data[roi.slices]), em.voxel_size_um, origin,
                      em.channel_names, em.source)
    sz, sy, sx = em.voxel_size_um
    fz = max(1, min(roi.shape[0], int(np.floor(f * min(sy, sx) / sz))))
    return working_volume(em, (sz * fz, sy * f, sx * f), roi.slices)


@dataclass(frozen=True, eq=False)
class FiguresAhead:
    """What the figures need before the registration's result (:func:`prepare_figures`).

    Attributes
    ----------
    grid : Volume
        ``figure_grid(em, roi)``.
    prealign : PrealignResult or Prealign3DResult or None
        The pre-alignment whose figures are in ``rendered``.
    rendered : dict
        Title → (file name, PNG bytes, caption) of the figures that show the
        pre-alignment alone (:func:`_prealign_figure_plans`).
    timings_s : dict
        Seconds of each step (the grid, each figure), for ``run.json``.
    """

    grid: Volume
    prealign: object = None
    rendered: dict = field(default_factory=dict)
    timings_s: dict = field(default_factory=dict)


def prepare_figures(em: Volume, roi: Roi, prealign=None) -> FiguresAhead:
    """What the figures need before the registration's result: :func:`figure_grid`,
    matplotlib imported with its font list loaded (otherwise the first figure's ~0.4 s)
    and, given the pre-alignment, its own figures rendered.

    Parameters
    ----------
    em : Volume
        The EM the registration runs on.
    roi : Roi
        Its ROI (``parse_roi(config.roi, em.shape_zyx)``, as the registration's).
    prealign : PrealignResult or Prealign3DResult, optional
        The registration's pre-alignment (see :func:`clemalign.pipeline.register`'s
        ``prealigned``).

    Returns
    -------
    FiguresAhead
        For :func:`write_registration`'s ``figures_ahead``.
    """
    timer = StepTimer()
    grid = figure_grid(em, roi)
    timer.tick("figure grid (EM)", 0.0)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rendered = {}
    if prealign is None:
        fig = Figure(figsize=(1, 1))
        fig.text(0.5, 0.5, "x (µm)")
        FigureCanvasAgg(fig).draw()
    else:
        for title, name, draw, caption in _prealign_figure_plans(prealign):
            rendered[title] = (name, _png_bytes(draw()), caption)
            timer.tick(name, 0.0)
    return FiguresAhead(grid, prealign, rendered, timer.timings)


def write_overlay(path: Path, em: Volume, lm_in_em: Volume) -> Path:
    """EM and the LM channels as one multi-channel OME-TIFF of one pixel type (EM first):
    Fiji opens it as a composite overlay, which it cannot merge from files of two bit
    depths.  Written plane by plane (no copy of the stack in memory)."""
    data = lm_in_em.data if lm_in_em.data.ndim == 4 else lm_in_em.data[np.newaxis]
    return _write_overlay(path, em, list(data), lm_in_em.channel_names)


def _write_overlay(path: Path, em: Volume, lm_channels: list[np.ndarray],
                   channel_names: tuple[str, ...] | None) -> Path:
    dtype = np.result_type(em.data.dtype, lm_channels[0].dtype)
    if dtype.kind == "f" or dtype.itemsize > 2:
        dtype = np.dtype(np.float32)
    return write_ome_tiff_channels(path, [em.data, *lm_channels], dtype=dtype,
                                   voxel_size_um=em.voxel_size_um,
                                   origin_xyz_um=em.origin_xyz_um,
                                   channel_names=("EM", *(channel_names or ())))


def _png_bytes(fig) -> bytes:
    """The figure as PNG bytes at 100 dpi: drawn once by Agg and encoded by Pillow.

    ``savefig`` draws a figure with a layout engine twice (a first pass without
    rendering, for the layout); one Agg draw lays it out the same: the pixels are
    ``savefig``'s (tested), 10–25 % sooner.
    """
    import io as _io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    fig.set_dpi(100)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    image = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba(),
                             "raw", "RGBA", 0, 1)
    buf = _io.BytesIO()
    # zlib level 1: half the encoding time of the default 6, files as small (±8 %)
    image.save(buf, format="png", compress_level=1)
    return buf.getvalue()


def _prealign_figure_plans(pre) -> list:
    """(title, file name, draw, caption) of the figures that show the pre-alignment alone
    (``pre``: a PrealignResult or Prealign3DResult)."""
    from .figures import plot_prealignment, plot_prealignment_3d, plot_scale_selection

    sel = pre.scale_selections
    selections = {"EM slices": sel.get("em"), "LM projection": sel.get("lm"),
                  "LM planes": sel.get("LM planes")}
    selections = {k: v for k, v in selections.items() if v}
    if isinstance(pre, Prealign3DResult):
        plot_pre = plot_prealignment_3d
        pre_caption = ("The EM ROI's box placed in the LM volume by the 3D pre-alignment, "
                       "over the LM blob response projected along z (left) and y (right).")
    else:
        plot_pre = plot_prealignment
        pre_caption = ("Candidate positions of the EM ROI centre over the LoG of the LM "
                       "projection; the fused ROI outline in yellow.")
    return [
        ("Pre-alignment", "prealign.png", lambda: plot_pre(pre), pre_caption),
        ("Scale selection", "scale_selection.png", lambda: plot_scale_selection(selections),
         "Scale-space blob count per LoG sigma; dashed: the selected scale."),
    ]


def _figure_plans(result: RegistrationResult, em_roi: Volume, overlay: Volume) -> list:
    """(title, file name, draw, caption) of every figure, in the report's order, ``draw()``
    returning the matplotlib figure; ``em_roi`` is the EM ROI on the figures' grid
    (:func:`figure_grid`) and ``overlay`` the LM on the same grid."""
    from .figures import (
        plot_checkerboard,
        plot_orientation,
        plot_orientation_3d,
        plot_orthogonal_views,
        plot_projection_overlay,
        plot_slice_overlays,
    )

    pre, starts = result.prealign, result.fine.starts
    if isinstance(pre, Prealign3DResult):
        plot_orient = plot_orientation_3d
        orient_caption = ("Best NCC over every 3D offset per in-plane angle, for the four "
                          "handednesses; the hypotheses refined and the mutual information "
                          "each reached in the 3D stage.")
    else:
        plot_orient = plot_orientation
        orient_caption = ("Best NCC over the LM field per in-plane angle, direct and mirrored "
                          "EM; the hypotheses passed on and the mutual information each "
                          "reached in the 3D stage.")
    prealign_plan, scale_plan = _prealign_figure_plans(pre)
    return [
        prealign_plan,
        ("Orientation", "orientation.png", lambda: plot_orient(pre, starts), orient_caption),
        scale_plan,
        ("Overlay slices", "overlay_slices.png", lambda: plot_slice_overlays(em_roi, overlay),
         "EM slices with the registered fluorescence (green)."),
        ("Orthogonal views", "orthogonal_views.png",
         lambda: plot_orthogonal_views(em_roi, overlay),
         "XY, XZ and YZ planes through the ROI centre, true aspect."),
        ("Projections", "projection_overlay.png",
         lambda: plot_projection_overlay(em_roi, overlay),
         "EM mean projection and fluorescence maximum projection over the ROI."),
        ("Checkerboard", "checkerboard.png", lambda: plot_checkerboard(em_roi, overlay),
         "Alternating tiles of EM and inverted fluorescence: structures should continue "
         "across tile edges."),
    ]


def _figures(result: RegistrationResult, em_roi: Volume, overlay: Volume,
             timer: StepTimer | None = None, rendered: dict | None = None) -> dict:
    """Title → (file name, PNG bytes, caption) of every figure (see :func:`_figure_plans`),
    those in ``rendered`` (title → the same, made ahead) taken from there; each one
    rendered here has its seconds ticked on ``timer`` under its file name."""
    rendered = rendered or {}
    out = {}
    for title, name, draw, caption in _figure_plans(result, em_roi, overlay):
        if title in rendered:
            out[title] = rendered[title]
            continue
        out[title] = (name, _png_bytes(draw()), caption)
        if timer is not None:
            timer.tick(name, 0.0)
    return out


def write_registration(outdir: str | os.PathLike, result: RegistrationResult, em: Volume,
                       lm: Volume, *, landmarks: Landmarks | None = None,
                       overwrite: bool = False, outputs: OutputLevel = "standard",
                       volume_format: Literal["ome-tiff", "nrrd", "ome-zarr"] = "ome-tiff",
                       em_grid: Volume | None = None,
                       input_timings_s: dict[str, float] | None = None,
                       figures_ahead: FiguresAhead | None = None) -> dict[str, Path]:
    """Write the transform, LM on the EM grid, run record, figure and tool exports.

    Files (:data:`OUTPUT_FILES`): ``transform.json``, ``lm_in_em.ome.tif`` (or ``.nrrd``,
    ``.ome.zarr``) and ``overlay.ome.tif`` (on the whole EM grid), ``run.json``,
    ``report.html``, the figures and, for other tools, ``transform.tfm`` (ITK/SimpleITK/
    elastix), ``ngff_transform.json`` (OME-NGFF), ``bigwarp_landmarks.csv`` (BigWarp),
    ``napari_affine.json`` and ``ecclem_transform.xml`` (see :mod:`clemalign.transform_io`).
    All are written as a whole (:func:`clemalign.io.output_folder.staged_output`).

    Parameters
    ----------
    outdir : path
        Output folder (created when missing).
    result : RegistrationResult
    em, lm : Volume
        The inputs (LM with all its channels).
    landmarks : Landmarks, optional
        Known point pairs: their errors go into ``transform.json`` and the report.
    overwrite : bool
        Replace existing files; otherwise refuse before writing anything.
    outputs : {"all", "standard", "minimal"}
        Which files (:data:`OUTPUT_LEVELS`): ``standard`` all but ``overlay.ome.tif``
        (``lm_in_em`` is then resampled a slab at a time as it is written); ``all`` also
        the overlay (a second copy of the LM on the EM grid: both are resampled whole);
        ``minimal``: the transform files and ``run.json`` only (batch runs; no image is
        resampled).
    volume_format : {"ome-tiff", "nrrd", "ome-zarr"}
        The LM on the EM grid as ``lm_in_em.ome.tif`` (Fiji, napari), ``lm_in_em.nrrd``
        (ITK, SimpleITK, 3D Slicer: spacing in µm, which they read as plain numbers) or
        ``lm_in_em.ome.zarr`` (multiscale, written a slab at a time; napari, MoBIE, Fiji's
        n5-viewer).  Above :data:`LM_IN_EM_IN_MEMORY_BYTES`, or when memory would not
        hold the whole grid, OME-Zarr is written whatever is chosen, and no overlay.
    em_grid : Volume, optional
        The EM whose grid ``lm_in_em`` and the overlay are on, when ``em`` is a reduced
        copy of it (a pyramid level; its data are read only for the overlay); default
        ``em``.
    input_timings_s : dict, optional
        Seconds spent before the registration (e.g. ``{"read": ...}``), recorded with
        the registration's and the outputs' own (per file) in ``run.json``.
    figures_ahead : FiguresAhead, optional
        ``prepare_figures(em, result.roi, result.prealign)`` when it was made ahead (it
        needs only the EM, the ROI and the pre-alignment: the CLI makes it while the 3D
        stage's optimisers run on one ITK thread); its rendered figures are used only if
        they are of ``result.prealign``.

    Returns
    -------
    dict
        File name → path written.
    """
    if outputs not in OUTPUT_LEVELS:
        raise InputError(f"outputs: expected one of {sorted(OUTPUT_LEVELS)}, got {outputs!r}")
    if volume_format not in LM_IN_EM_FILES:
        raise InputError(f"volume_format: expected one of {sorted(LM_IN_EM_FILES)}, got "
                         f"{volume_format!r}")
    names = OUTPUT_LEVELS[outputs] - (set(LM_IN_EM_FILES.values())
                                      - {LM_IN_EM_FILES[volume_format]})
    outdir = Path(outdir)
    # every name is checked and, with overwrite, an earlier run's files of other names go
    with staged_output(outdir, OUTPUT_FILES, overwrite=overwrite) as staging:
        written = _write_all(staging, result, em, lm, landmarks, names, em_grid or em,
                             input_timings_s or {}, figures_ahead)
    return {name: outdir / name for name in OUTPUT_FILES if name in written}


def _write_all(folder: Path, result: RegistrationResult, em: Volume, lm: Volume,
               landmarks: Landmarks | None, names: frozenset[str], em_grid: Volume,
               input_timings_s: dict[str, float], figures_ahead: FiguresAhead | None = None
               ) -> set[str]:
    """The chosen output files into an empty ``folder``; the names written."""
    from .report import build_report

    timer = StepTimer()
    evaluation = None
    if landmarks is not None:
        evaluation = tre_table(result.em_to_lm, landmarks, em_pixel_um=em.voxel_size_um[2])
    record = transform_record(result, em, lm)
    if evaluation is not None:
        record["evaluation"] = evaluation
    figures: dict = {}
    beside: dict = {}
    lm_name = next((n for n in LM_IN_EM_FILES.values() if n in names), None)
    if lm_name is not None:
        record["lm_in_em"], figures, beside = _write_images(folder, result, em, lm, names,
                                                            lm_name, em_grid, timer,
                                                            figures_ahead)
    write_json(folder / "transform.json", record, overwrite=False)
    _write_exports(folder, result, em, lm)
    timer.tick("transform files", 0.0)
    written = {p.name for p in folder.iterdir()} | {"run.json"}
    page = None
    if "report.html" in names:
        written.add("report.html")
        page = build_report(result, em, lm,
                            figures={title: (png, caption)
                                     for title, (_, png, caption) in figures.items()},
                            evaluation=evaluation, files=sorted(written))
        atomic_write_text(folder / "report.html", page, overwrite=False)
        timer.tick("report.html", 0.0)
    # the steps in turn (they add up to the total), then the files written beside them
    # and what was made ahead, while the registration ran
    outputs_s = timer.total()
    if beside:
        outputs_s["beside the figures"] = beside
    if figures_ahead is not None:
        outputs_s["made ahead"] = dict(figures_ahead.timings_s)
    timings = {**input_timings_s, **result.timings_s, "outputs": outputs_s}
    write_json(folder / "run.json", _run_record(result, em, lm, sorted(written), timings),
               overwrite=False)
    return written


def _write_images(folder: Path, result: RegistrationResult, em: Volume, lm: Volume,
                  names: frozenset[str], lm_name: str, grid: Volume, timer: StepTimer,
                  ahead: FiguresAhead | None = None) -> tuple[dict, dict, dict]:
    """``lm_in_em`` (as ``lm_name``; as OME-Zarr a slab at a time when the whole grid
    would not fit in memory), the overlay (when chosen and in memory) and the figures;
    the ``lm_in_em`` record, the figures (title → (file, PNG, caption)) and the seconds
    of the steps that ran beside the figures (step → s, not in ``timer``).

    The figures show the EM ROI on their own reduced grid (:func:`figure_grid`) with the
    LM resampled onto it, so the whole-grid resampling and its files need not wait: they
    run on a thread while the figures render (SimpleITK and file I/O release the GIL,
    matplotlib holds it).
    """
    if lm_name.endswith(".zarr") or not lm_in_em_fits_in_memory(lm, grid):
        lm_name = LM_IN_EM_FILES["ome-zarr"]
    stop = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        pending = submit_in_context(pool, _write_lm_in_em_files, folder, lm, grid,
                                    result.em_to_lm, names, lm_name, stop)
        try:
            em_fig = ahead.grid if ahead is not None else figure_grid(em, result.roi)
            lm_fig = resample_lm_to_em(lm, em_fig, result.em_to_lm)
            timer.tick("figure grid", 0.0)
            figures = _figures(result, em_fig, lm_fig, timer, ahead.rendered if ahead
                               is not None and ahead.prealign is result.prealign else None)
            for name, png, _ in figures.values():
                _write_bytes(folder / name, png, False)
            timer.tick("figure files", 0.0)
        except BaseException:
            stop.set()  # a streamed lm_in_em stops at its next slab instead of finishing
            raise
        beside = pending.result()  # re-raises a failed resampling or write
        timer.tick("image files (after the figures)", 0.0)
    record = {"file": lm_name, "grid": "em", "shape_zyx": list(grid.shape_zyx),
              "voxel_size_um": list(grid.voxel_size_um),
              "origin_xyz_um": list(grid.origin_xyz_um)}
    return record, figures, beside


def _write_lm_in_em_files(folder: Path, lm: Volume, grid: Volume, em_to_lm: Affine,
                          names: frozenset[str], lm_name: str,
                          stop: threading.Event | None = None) -> dict[str, float]:
    """The LM resampled onto ``grid`` (the EM) and written as ``lm_name`` (OME-TIFF,
    NRRD, or OME-Zarr a slab at a time) and, when chosen and in memory, the overlay;
    each step's seconds.  ``stop`` set stops a file resampled as it is written."""
    timer = StepTimer()
    if lm_name.endswith(".zarr"):
        write_lm_in_em_zarr(folder / lm_name, lm, grid, em_to_lm)
        timer.tick(lm_name, 0.0)
        return timer.timings
    write = write_nrrd_channels if lm_name.endswith(".nrrd") else write_ome_tiff_channels
    kwargs = {"dtype": lm.data.dtype, "voxel_size_um": grid.voxel_size_um,
              "origin_xyz_um": grid.origin_xyz_um,
              "channel_names": lm.channel_names or None}
    if "overlay.ome.tif" not in names:
        # resampled a slab at a time as the file is written: no whole-grid copy
        resampler = _Resampler(lm, grid, em_to_lm)
        slab = Roi(0, min(_SLAB_PLANES, grid.shape_zyx[0]), 0, grid.shape_zyx[1], 0,
                   grid.shape_zyx[2])
        _check_lm_in_em_memory(lm, grid, slab, 3)
        with ThreadPoolExecutor(1) as pool:
            stop = stop or threading.Event()
            write(folder / lm_name, [_StreamedChannel(resampler, c, pool, _SLAB_PLANES, stop)
                                     for c in range(lm.n_channels)], **kwargs)
        timer.tick(f"{lm_name} (resampled as written)", 0.0)
        return timer.timings
    # the overlay needs the channels again: resampled whole, once, for both files
    lm_in_em = _ResampledChannels.of(lm, grid, em_to_lm)
    timer.tick("lm_in_em resampling", 0.0)
    write(folder / lm_name, list(lm_in_em.channels), **kwargs)
    timer.tick(lm_name, 0.0)
    _write_overlay(folder / "overlay.ome.tif", grid, list(lm_in_em.channels),
                   lm_in_em.channel_names)
    timer.tick("overlay.ome.tif", 0.0)
    return timer.timings


def _write_exports(folder: Path, result: RegistrationResult, em: Volume, lm: Volume) -> None:
    """The transform for other tools; landmark-style files get the ROI corners and centre."""
    roi = result.roi
    lo = em.index_to_physical(np.array([roi.z0, roi.y0, roi.x0], float))
    hi = em.index_to_physical(np.array([roi.z1 - 1, roi.y1 - 1, roi.x1 - 1], float))
    points = roi_points_um(lo, hi)
    write_itk_tfm(folder / "transform.tfm", result.em_to_lm)
    write_ngff_transform(folder / "ngff_transform.json", result.em_to_lm)
    write_bigwarp_csv(folder / "bigwarp_landmarks.csv", result.em_to_lm, points)
    write_napari_json(folder / "napari_affine.json", result.em_to_lm, lm.voxel_size_um,
                      lm.origin_xyz_um, em.voxel_size_um, em.origin_xyz_um)
    write_ecclem_xml(folder / "ecclem_transform.xml", result.em_to_lm, points,
                     em=EcclemImage(em.shape_zyx, em.voxel_size_um, em.origin_xyz_um,
                                    Path(em.source or "").name),
                     lm=EcclemImage(lm.shape_zyx, lm.voxel_size_um, lm.origin_xyz_um,
                                    Path(lm.source or "").name))


def _run_record(result: RegistrationResult, em: Volume, lm: Volume, files: list[str],
                timings_s: dict) -> dict:
    from . import __version__

    return {"clemalign_version": __version__, "python": platform.python_version(),
            "inputs": {"em": em.source, "lm": lm.source,
                       "em_voxel_size_um": list(em.voxel_size_um),
                       "lm_voxel_size_um": list(lm.voxel_size_um),
                       "em_shape_zyx": list(em.shape_zyx), "lm_shape": list(lm.data.shape)},
            "config": result.config.to_dict(), "confidence": result.confidence,
            "timings_s": timings_s, "outputs": files}


def _write_bytes(path: Path, data: bytes, overwrite: bool) -> Path:
    from .io import atomic_write

    return atomic_write(path, overwrite, lambda tmp: tmp.write_bytes(data))
