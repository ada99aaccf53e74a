"""Stage 2, XY pre-alignment: find the EM region of interest inside the LM field.

Part A, the published method
    1. maximum-intensity projection (MIP) of the LM channel along z;
    2. ``n`` EM slices inside the ROI, cropped to it;
    3. both at a common pixel size (the LM's by default), anti-aliased
       (:mod:`~clemalign.prealign.planes`);
    4. LoG of each at its automatically selected scale (stage 1, :mod:`clemalign.scales`),
       as a *blob response* positive on the structures of the polarity matched;
    5. patch descriptors: histogram of LoG values and histograms of LDP codes (plain and
       rotation-invariant), :mod:`clemalign.descriptors`;
    6. similarities: cosine and histogram intersection;
    7. exhaustive search of every EM slice's histograms over all LM patches of the ROI's
       size, by integral histograms (:mod:`~clemalign.prealign.histogram_search`);
    8. every (slice × descriptor × similarity) map gives candidate centres, fused by
       median, MAD outlier rejection and an inverse-distance-weighted mean
       (:mod:`~clemalign.prealign.fusion`).

Part B, the spatial score (beyond the publication)
    9. masked FFT normalised cross-correlation of the EM blob response (mean over the ROI
       depth) over orientations against the LM-MIP blob response, at a fine and at coarse
       scales; the clearest scale (and EM contrast sign) is kept
       (:mod:`~clemalign.prealign.ncc_search`, orientations in
       :mod:`~clemalign.prealign.orientation`);
   10. Part A's peaks re-scored by that score and fused with Part B's; a local search of
       finer angles and positions then removes the coarse grid's bias.

``method`` chooses ``"histogram"`` (Part A alone, as published), ``"ncc"`` (Part B alone)
or ``"combined"`` (default); ``benchmarks/prealign_ablation.py`` compares them.  The
stage function is :func:`prealign_xy` (:mod:`~clemalign.prealign.stage`).
"""

from .config import OrientationConfig, PrealignConfig, SearchConfig, SliceConfig
from .fusion import robust_fuse
from .planes import em_slice_indices, lm_mip, placement_transform
from .result import Candidate, NccSummary, Placement, PolarityFinding, PrealignResult
from .stage import XYImages, prealign_xy, xy_images

__all__ = ["PrealignConfig", "SliceConfig", "SearchConfig", "OrientationConfig",
           "PrealignResult", "Candidate", "Placement", "NccSummary", "PolarityFinding",
           "prealign_xy", "xy_images", "XYImages", "lm_mip", "em_slice_indices", "robust_fuse",
           "placement_transform"]
