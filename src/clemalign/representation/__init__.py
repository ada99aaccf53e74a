"""The common representation: Laplacian of Gaussian with automatic scale selection.

EM and fluorescence images look nothing alike, but both show blob-like objects
(organelles, nuclei, cells).  The Laplacian of Gaussian

    L_s(I) = ∇²(G_s * I)

at a scale ``s`` enhances blobs of radius about ``s·√d`` (``d`` = 2 or 3 dimensions) and
removes local linear intensity trends, so the LoG images of the two modalities are far
more alike than the raw images.  :func:`select_log_scale` picks ``s`` per image as the
scale at which Lindeberg's scale-normalised LoG, ``s²·L_s``, has the most blobs (finer
maxima nested inside a stronger, coarser blob, such as the pixel staircase along a hard
edge, are not counted).

Modules: :mod:`~clemalign.representation.log` (the filter and the blob response),
:mod:`~clemalign.representation.scale_selection` (blob counting).  Stage 1 of the
method, which applies them to a registration's images, is :mod:`clemalign.scales`.

All lengths are in µm and converted per axis from the voxel size, so anisotropic voxels
(EM: 0.14 × 0.14 × 0.05 µm) and different pixel sizes give the same physical filter.
"""

from .log import Polarity, PolarityChoice, blob_response, default_polarity, log_transform
from .scale_selection import ScaleSelection, default_sigmas_um, estimate_noise_sd, select_log_scale

__all__ = ["log_transform", "blob_response", "default_polarity", "Polarity", "PolarityChoice",
           "ScaleSelection", "select_log_scale", "default_sigmas_um", "estimate_noise_sd"]
