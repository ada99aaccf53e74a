"""The working grid of the 3D registration: resampling, LM crop, representations, mirror map.

Why a working grid: the LM holds no detail finer than its own voxels, so matching the
EM at its native 0.14 × 0.14 × 0.05 µm only costs time (a default EM ROI has ~150 M
voxels).  The EM ROI is low-pass filtered and resampled to a grid near the LM's lateral
pixel (block means along z, Gaussian anti-aliasing in-plane) before the LoG and the
metric; the LM is cropped to the pre-aligned ROI plus a margin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .._threads import resolve_workers
from ..errors import InputError
from ..lazy import block_mean, is_lazy
from ..representation import Polarity, blob_response
from ..transforms import Affine
from ..volume import Volume, regular_sample, scale_axes
from .config import Registration3DConfig

__all__ = ["WorkingGrid", "clip_tails", "lm_crop_box", "mirror_x", "working_image",
           "working_images", "working_volume", "MIN_LOG_SIGMA_UM"]

# the 3D stage's LoG scale is the LM's structure scale but never finer: at 1 µm the
# working grid (σ/2.25 ≈ 0.44 µm, z half the LM's 0.6 µm voxel) stays cheap, and the
# LM's axial blur leaves little finer detail shared in 3D (issue 21 revisits this)
MIN_LOG_SIGMA_UM = 1.0

Box = tuple[slice, slice, slice]


def working_volume(volume: Volume, spacing_um: Sequence[float],
                   box_kji: Box | None = None, *, workers: int | None = None) -> Volume:
    """Low-pass filter and resample a (cropped) volume onto a coarser grid.

    Integer factors along an axis are done by block means (a box anti-alias filter that
    also reads the data once); the remaining factor by a Gaussian of ``(f - 1)/2`` input
    voxels and linear interpolation.  The grid keeps physical positions exact: output
    voxel centres are placed at the block centres.

    Parameters
    ----------
    volume : Volume
        Single-channel volume.
    spacing_um : (z, y, x)
        Target voxel size, µm; axes already at least this coarse are left alone.
    box_kji : tuple of slices, optional
        Crop (voxel indices) applied first.
    workers : int, optional
        Threads of the block means (default: the machine's cores, at most 4); the
        result does not depend on it.

    Returns
    -------
    Volume
        float32 data, the new spacing and origin (µm).
    """
    data = volume.data if box_kji is None else volume.data[box_kji]
    start = np.zeros(3) if box_kji is None else np.array([s.start or 0 for s in box_kji], float)
    spacing = np.asarray(volume.voxel_size_um, float)
    target = np.maximum(np.asarray(spacing_um, float), spacing)
    factor = target / spacing
    block = np.maximum(1, np.floor(factor + 1e-9)).astype(int)
    # block means; the first voxel of block b is b·n, its centre b·n + (n-1)/2
    shape = [(s // b) * b for s, b in zip(data.shape, block, strict=True)]
    # mean straight from the stored dtype (accumulating in float32): no full-size copy;
    # a lazy (dask) volume chunk by chunk
    binned = block_mean(data[:shape[0], :shape[1], :shape[2]], block,
                        workers=resolve_workers(workers))
    if is_lazy(data) and not np.isfinite(binned).all():  # its values were not all checked
        raise InputError(f"{volume.source or 'volume'}: NaN or infinite values; replace them "
                         "(e.g. with the background value) before registration")
    offset_idx = start + (block - 1) / 2.0
    b_spacing = spacing * block
    rest = target / b_spacing
    if np.any(rest > 1.0 + 1e-6):
        sigma = np.maximum(0.0, (rest - 1.0) / 2.0)
        smooth = ndi.gaussian_filter(binned, sigma, mode="nearest")
        out_shape = [int(np.floor((n - 1) / r)) + 1
                     for n, r in zip(binned.shape, rest, strict=True)]
        binned = scale_axes(smooth, rest, output_shape=out_shape, mode="nearest",
                            output=np.float32, workers=resolve_workers(workers))
        b_spacing = b_spacing * rest
    origin_kji = offset_idx
    origin_xyz = np.asarray(volume.origin_xyz_um) + origin_kji[::-1] * spacing[::-1]
    return Volume(binned, tuple(float(v) for v in b_spacing),
                  tuple(float(v) for v in origin_xyz), volume.channel_names, volume.source)


@dataclass(frozen=True)
class WorkingGrid:
    """LoG scale and working spacing of one registration (all in µm).

    Attributes
    ----------
    sigma_um : float
        LoG scale.
    z_um : float
        Working z spacing of the EM ROI.
    pixel_um : float
        Lateral working pixel of the EM ROI and the LM crop.
    """

    sigma_um: float
    z_um: float
    pixel_um: float

    @classmethod
    def choose(cls, em: Volume, lm: Volume, roi: Box, lm_sigma_um: float | None,
               config: Registration3DConfig) -> WorkingGrid:
        """The grid for an EM ROI (voxel slices) and the LM, from ``config`` or defaults.

        The LoG scale is ``config.log_sigma_um`` or else the LM's structure scale, at
        least :data:`MIN_LOG_SIGMA_UM`.
        """
        lm_sz, _, lm_sx = lm.voxel_size_um
        # a LoG at sigma carries nothing finer than ~sigma/2: work at that pixel, not finer
        # than the LM's (measured: 0.44 µm instead of 0.22 µm changes TRE by < 0.06 µm),
        # and coarse enough that the EM ROI holds at most ``working_voxels``
        sigma = float(config.log_sigma_um or max(MIN_LOG_SIGMA_UM, lm_sigma_um or 0.0))
        z_work = float(config.working_z_um or max(lm_sz / 2.0, em.voxel_size_um[0]))
        roi_um = np.array([s.stop - s.start for s in roi]) * np.asarray(em.voxel_size_um)
        budget_pixel = float(np.sqrt(np.prod(roi_um) / (z_work * config.working_voxels)))
        pixel = float(config.working_pixel_um or max(lm_sx, sigma / 2.25, budget_pixel))
        return cls(sigma, z_work, pixel)


def lm_crop_box(em: Volume, lm: Volume, roi: Box, starts: Sequence[Affine], *,
                margin_um: float, z_range_um: float | None, reversed_too: bool) -> Box:
    """LM voxel box that holds the EM ROI's corners mapped by every start, plus a margin.

    Parameters
    ----------
    em, lm : Volume
        The EM and the (single-channel) LM.
    roi : tuple of slices
        EM ROI, voxel indices.
    starts : sequence of Affine
        Candidate ``em_to_lm`` transforms.
    margin_um : float
        Margin in x and y, µm.
    z_range_um : float, optional
        The starts' z is known to about this much, µm: the box is cut in z too, with this
        plus ``margin_um`` (plus the ROI depth when ``reversed_too``).  None: the whole LM
        depth (z is searched).
    reversed_too : bool
        z reversal about the ROI centre will be searched.

    Returns
    -------
    tuple of slices
        ``(z, y, x)`` voxel slices of the LM.
    """
    corners = np.array([[i, j, k] for k in (roi[0].start, roi[0].stop - 1)
                        for j in (roi[1].start, roi[1].stop - 1)
                        for i in (roi[2].start, roi[2].stop - 1)], float)
    em_corners = em.index_to_physical(corners[:, ::-1])
    lm_corners = np.vstack([s.apply(em_corners) for s in starts])
    margin_z = None if z_range_um is None else z_range_um + margin_um
    if margin_z is not None and reversed_too:
        roi_depth_um = float((roi[0].stop - roi[0].start) * em.voxel_size_um[0])
        margin_z += roi_depth_um
    box = lm.index_box(lm_corners, [margin_um, margin_um, margin_z or 0.0])
    if margin_z is None:  # keep the whole LM depth: z is searched
        box = (slice(0, lm.shape_zyx[0]),) + box[1:]
    return box


def clip_tails(values: np.ndarray, percent: float = 1.0) -> np.ndarray:
    """Clip to the [percent, 100 − percent] percentiles (from a regular subsample).

    LoG values are heavy-tailed: Mattes MI spreads its bins over the full range, so a few
    extreme voxels would squeeze almost every sample into the central bins.
    """
    sample = regular_sample(values)
    lo, hi = np.percentile(sample, [percent, 100.0 - percent])
    return np.clip(values, lo, hi)


def working_images(em_w: Volume, lm_w: Volume, sigma_um: float, representation: str,
                   polarity: tuple[Polarity, Polarity] = ("dark", "bright")
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The fixed (EM) and moving (LM) arrays the metric compares.

    Parameters
    ----------
    em_w, lm_w : Volume
        EM ROI and LM crop on their working grids.
    sigma_um : float
        LoG scale, µm.
    representation : {"log", "raw"}
        LoG responses with clipped tails, or the raw intensities (EM inverted).
    polarity : (EM polarity, LM polarity)
        Blob polarities (stage 1); the metric (mutual information) does not depend on
        them, but the images written out for inspection do.

    Returns
    -------
    fixed, moving : ndarray
        Same shapes as the volumes' data.
    """
    return (working_image(em_w, sigma_um, representation, polarity[0]),
            working_image(lm_w, sigma_um, representation, polarity[1]))


def working_image(volume: Volume, sigma_um: float | tuple[float, float, float],
                  representation: str, polarity: Polarity) -> np.ndarray:
    """One side of :func:`working_images`.

    Parameters
    ----------
    volume : Volume
        The EM ROI or the LM crop on its working grid.
    sigma_um : float or (z, y, x)
        LoG scale, µm.
    representation : {"log", "raw"}
    polarity : {"bright", "dark"}
        The volume's blob polarity.

    Returns
    -------
    ndarray
        The LoG made positive on blobs of ``polarity`` with clipped tails, or
        (``"raw"``) the intensities, negated for dark blobs.
    """
    if representation == "log":
        # sigma is a few working pixels: full-resolution filtering is cheaper than the
        # pyramid's 3D spline upsampling here
        return clip_tails(blob_response(volume.data, sigma_um, volume.voxel_size_um,
                                        polarity, fast=False))
    return -volume.data if polarity == "dark" else volume.data


def mirror_x(volume: Volume) -> Affine:
    """Physical map between a volume and its copy with the x axis reversed.

    A rigid transform cannot flip handedness, so a mirrored start is registered on the
    EM with its x axis reversed (``data[:, :, ::-1]`` on the same grid) and composed back
    with this map.  Voxel ``i'`` of the reversed copy holds voxel ``nx - 1 - i'``: the
    point at ``x'`` (µm) in the copy is the point ``2·ox + (nx − 1)·sx − x'`` of the
    original.

    Parameters
    ----------
    volume : Volume
        Any volume; only its grid (origin, spacing, shape) is used.

    Returns
    -------
    Affine
        The map, an involution (its own inverse), µm → µm.
    """
    ox = float(volume.origin_xyz_um[0])
    width = (volume.shape_zyx[2] - 1) * float(volume.voxel_size_um[2])
    m = np.diag([-1.0, 1.0, 1.0, 1.0])
    m[0, 3] = 2 * ox + width
    return Affine(m)
