"""Stage 1 of the method: the scale (and polarity) at which each modality is compared.

The common representation is the Laplacian of Gaussian ``L_s(I) = ∇²(G_s * I)``
(:mod:`clemalign.representation`); this module decides ``s`` for each image, by
scale-space blob counting (the scale with the most blobs, :func:`select_log_scale`),
and the polarity of the structures to match:

* XY pre-alignment: the EM slices and the LM maximum-intensity projection at the common
  pixel each get their own scale (:func:`select_xy_scales`);
* thick specimens: the LM's 3D structure scale (:func:`clemalign.prealign3d.
  lm_structure_scale`) decides between the XY and 3D pre-alignment and sets the 3D
  search's scale;
* the 3D fine registration works at the LM's scale (floored by its own constant).

Polarity: the LM's from its intensity distribution (:func:`intensity_polarity`), the
EM's from the sign of the spatial match in the pre-alignment (the EM default, dark, is
only the starting assumption); either can be given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ._threads import map_in_threads, resolve_workers
from .representation import Polarity, PolarityChoice, ScaleSelection, select_log_scale
from .volume import regular_sample

__all__ = ["Scales", "intensity_polarity", "lm_polarity", "select_scales_xy",
           "with_found_em_polarity"]

# the EM slices (evenly spread among the used ones) on which the EM scale is selected:
# the blob-count curve is stable across slices, a few suffice
SCALE_SLICES = 4
# the LM is called dark-on-bright only when its lower tail is this much longer
_TAIL_RATIO = 1.5


@dataclass(frozen=True)
class Scales:
    """The representation's scales and polarities, as selected (stage 1).

    Attributes
    ----------
    em_sigma_um, lm_sigma_um : float or None
        LoG scales (µm) of the EM slices and the LM projection at the common pixel (XY
        pre-alignment); None when the XY pre-alignment does not run.
    structure_sigma_um : float or None
        3D LoG scale (µm) of the LM's structures (thick specimens); None when not needed.
    em_polarity, lm_polarity : {"dark", "bright"}
        Polarity of the structures matched (the EM's may still be reversed by the
        pre-alignment's match, see :class:`clemalign.prealign.PolarityFinding`).
    em_polarity_how, lm_polarity_how : str
        ``"given"``, ``"found"`` or ``"assumed"``.
    selections : dict
        Name → :meth:`ScaleSelection.to_dict` (blob count per sigma), for the report.
    """

    em_polarity: Polarity
    lm_polarity: Polarity
    em_polarity_how: str
    lm_polarity_how: str
    em_sigma_um: float | None = None
    lm_sigma_um: float | None = None
    structure_sigma_um: float | None = None
    selections: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"em_sigma_um": self.em_sigma_um, "lm_sigma_um": self.lm_sigma_um,
                "structure_sigma_um": self.structure_sigma_um,
                "em_polarity": self.em_polarity, "lm_polarity": self.lm_polarity,
                "em_polarity_how": self.em_polarity_how,
                "lm_polarity_how": self.lm_polarity_how}


def intensity_polarity(image: np.ndarray) -> Polarity:
    """Polarity of the objects of an image from its intensity distribution.

    Labelled structures are the minority of pixels: in fluorescence they are bright on a
    dark background (a long upper tail), in transmitted light or inverted contrast dark
    on a bright one (a long lower tail).  The tails are measured from the median to the
    0.5th and 99.5th percentiles of a regular subsample; "dark" needs the lower tail
    :data:`_TAIL_RATIO` times longer (fluorescence is the common case).
    """
    sample = regular_sample(image, 1_000_000)
    lo, mid, hi = np.percentile(sample.astype(np.float64), [0.5, 50.0, 99.5])
    return "dark" if (mid - lo) > _TAIL_RATIO * (hi - mid) else "bright"


def lm_polarity(choice: PolarityChoice, lm_image: np.ndarray) -> tuple[Polarity, str]:
    """The LM polarity: given, or found from its intensities; and how it was set."""
    if choice == "auto":
        return intensity_polarity(lm_image), "found"
    return choice, "given"


def select_scales_xy(em_planes: np.ndarray, lm_plane: np.ndarray, pixel_um: float, *,
                     em_polarity: PolarityChoice, lm_polarity: Polarity, lm_polarity_how: str,
                     workers: int | None = None) -> Scales:
    """Stage 1 for the XY pre-alignment: LoG scales of the EM slices and of the LM
    projection at the common pixel.

    Parameters
    ----------
    em_planes : ndarray (n, y, x)
        The EM slices used by the pre-alignment; the scale is selected on
        :data:`SCALE_SLICES` of them, evenly spread.
    lm_plane : ndarray (y, x)
        The LM maximum-intensity projection.
    pixel_um : float
        The common pixel of both.
    em_polarity : {"auto", "dark", "bright"}
        ``auto`` starts from the EM default (dark); the pre-alignment's match decides.
    lm_polarity : {"dark", "bright"}
    lm_polarity_how : str
        How the LM polarity was set (reported).
    workers : int, optional
        Threads of the blob counting.

    Returns
    -------
    Scales
    """
    em_pol: Polarity = "dark" if em_polarity == "auto" else em_polarity
    # side by side when there are threads: each filters small images
    lm_sel, em_sel = map_in_threads(lambda select: select(), [
        lambda: select_log_scale(lm_plane, pixel_um, polarity=lm_polarity, workers=workers),
        lambda: _em_selection(em_planes, pixel_um, em_pol, workers)],
        min(2, resolve_workers(workers)))
    return Scales(em_pol, lm_polarity, "assumed" if em_polarity == "auto" else "given",
                  lm_polarity_how, em_sel.sigma_um, lm_sel.sigma_um,
                  selections={"em": em_sel.to_dict(), "lm": lm_sel.to_dict()})


def with_found_em_polarity(scales: Scales, em_planes: np.ndarray, pixel_um: float,
                           workers: int | None = None) -> Scales:
    """The scales once the pre-alignment found the EM's polarity opposite to the one
    assumed: the EM scale is selected again on the structures of that polarity (the
    blob count of the other sign peaks elsewhere, e.g. on the gaps between organelles).

    Parameters
    ----------
    scales : Scales
        Stage 1's scales, selected with the assumed EM polarity.
    em_planes : ndarray (n, y, x)
        The same EM slices as :func:`select_scales_xy` was given.
    pixel_um : float
        Their pixel.
    workers : int, optional

    Returns
    -------
    Scales
        The EM polarity reversed and ``"found"``, its scale and selection replaced.
    """
    found: Polarity = "bright" if scales.em_polarity == "dark" else "dark"
    em_sel = _em_selection(em_planes, pixel_um, found, workers)
    return replace(scales, em_polarity=found, em_polarity_how="found",
                   em_sigma_um=em_sel.sigma_um,
                   selections={**scales.selections, "em": em_sel.to_dict()})


def _em_selection(em_planes: np.ndarray, pixel_um: float, polarity: Polarity,
                  workers: int | None) -> ScaleSelection:
    """The EM scale, selected per slice on :data:`SCALE_SLICES` of the slices."""
    pick = _spread(em_planes.shape[0], SCALE_SLICES)
    return select_log_scale(em_planes[pick], (1.0, pixel_um, pixel_um), polarity=polarity,
                            per_slice=True, workers=workers)


def _spread(n: int, k: int) -> Sequence[int]:
    """At most ``k`` indices evenly spread over ``range(n)``."""
    return np.unique(np.linspace(0, n - 1, min(k, n)).round().astype(int))
