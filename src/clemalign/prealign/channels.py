"""Which LM channel holds the label that matches the EM (when the user does not say).

Every channel is scored by Part B's spatial search at the cell scales (coarse pixels, so
cheaper than the pre-alignment: no fine scale, no Part A).  A channel's
clarity is its peak margin: how far its best placement stands above the best separate
rival, in robust z-units — the same evidence the verdict uses.  The clearest channel is
registered; channels that match nothing or only weakly (margin below
:data:`MATCH_MARGIN`, or below :data:`MATCH_FRACTION` of the clearest channel's) are
named in the report.  Measured on simulated pairs (1–3 µm scales; 4 pairs): the label
1.8–7.6 z, cell-shaped channels (autofluorescence, transmitted light) 2.7–23, another
sample's label 0.5–3.1 (at most 0.24 of the clearest), noise 0.4–0.8.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import InputError
from ..lazy import depth_mean
from ..scales import lm_polarity
from ..volume import Roi, Volume, check_image_values
from .config import CELL_SCALES_UM, PrealignConfig
from .ncc_search import ncc_search
from .planes import lm_mip

__all__ = ["ChannelScore", "rank_channels", "MATCH_MARGIN", "MATCH_FRACTION"]

# a channel whose best placement stands less than this far above its best rival
# (robust z) matches nothing
MATCH_MARGIN = 1.0
# ... or less than this fraction of the clearest channel's margin
MATCH_FRACTION = 0.3


@dataclass(frozen=True)
class ChannelScore:
    """One LM channel's match: its peak margin (robust z) and the scale that gave it."""

    channel: int
    name: str
    margin: float
    sigma_um: float
    matches: bool
    note: str = ""

    def to_dict(self) -> dict:
        return {"channel": self.channel, "name": self.name, "margin": self.margin,
                "sigma_um": self.sigma_um, "matches": self.matches, "note": self.note}


def rank_channels(em: Volume, lm: Volume, roi: Roi, config: PrealignConfig, *,
                  workers: int | None = None) -> tuple[ChannelScore, ...]:
    """Score every LM channel against the EM ROI; best first.

    Parameters
    ----------
    em : Volume
        EM stack (one channel).
    lm : Volume
        LM stack ``(c, z, y, x)``.
    roi : Roi
    config : PrealignConfig
        Orientations and overlap as for the pre-alignment; the scales searched are
        :data:`CELL_SCALES_UM` up to a tenth of the ROI side (at least the finest).
    workers : int, optional
        Threads of the filters and FFTs.

    Raises
    ------
    InputError
        When no channel has any contrast.
    """
    em_sy, em_sx = em.voxel_size_um[1:]
    roi_size = (roi.shape[2] * em_sx, roi.shape[1] * em_sy)
    em_image = depth_mean(em.data, roi.slices)
    check_image_values(em_image, what=f"EM {em.source or ''} ROI")
    sigmas = tuple(s for s in CELL_SCALES_UM if s <= min(roi_size) / 10.0) or CELL_SCALES_UM[:1]
    search = replace(config.search, ncc_sigmas_um=sigmas)
    orientation = replace(config.orientation, scan_sigmas_um=(sigmas[-1],))
    signs = (1, -1) if config.em_polarity == "auto" else (1,)
    em_pol = "dark" if config.em_polarity == "auto" else config.em_polarity
    scores = []
    for c in range(lm.data.shape[0]):
        name = lm.channel_names[c] if c < len(lm.channel_names) else str(c)
        mip = lm_mip(lm, c)
        try:
            check_image_values(mip, what=f"LM channel {c}")
        except InputError as err:
            scores.append(ChannelScore(c, name, float("nan"), float("nan"), False, str(err)))
            continue
        lm_pol = lm_polarity(config.lm_polarity, mip)[0]
        found = ncc_search(mip, lm.voxel_size_um[1:], em_image, (em_sy, em_sx),
                           roi_size_um=roi_size, origin_xy_um=np.zeros(2), fine_sigma_um=sigmas[0],
                           search=search, orientation=orientation, polarity=(em_pol, lm_pol),
                           signs=signs, workers=workers)
        margin = float(max(found.summary.margins))
        scores.append(ChannelScore(c, name, margin, found.summary.chosen_sigma_um,
                                   margin >= MATCH_MARGIN))
    if all(not np.isfinite(s.margin) for s in scores):
        raise InputError(f"LM {lm.source or ''}: no channel has any contrast")
    best = max(s.margin for s in scores if np.isfinite(s.margin))
    scores = [replace(s, matches=s.matches and s.margin >= MATCH_FRACTION * best)
              for s in scores]
    return tuple(sorted(scores, key=lambda s: -s.margin if np.isfinite(s.margin) else np.inf))
