"""What the XY pre-alignment finds: candidates, placements and the stage result."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from ..scales import Scales
from ..transforms import Affine
from ..volume import Roi

__all__ = ["Candidate", "Placement", "NccSummary", "PolarityFinding", "PrealignResult"]

Part = Literal["histogram", "ncc"]


@dataclass(frozen=True)
class Candidate:
    """One candidate position of the EM ROI centre in the LM field.

    Attributes
    ----------
    part : {"histogram", "ncc"}
        Part A (a histogram-similarity map) or Part B (the spatial NCC).
    rank : int
        Peak rank within its map (0 = the map's best).
    centre_xy_um : (float, float)
        Where the source put the ROI centre (LM µm).
    snapped_xy_um : (float, float)
        Where the spatial score is best near it (equal when not scored).
    source_score, spatial_score : float
        The score of the source map, and the spatial (NCC robust z) score.
    angle_deg : float
        In-plane angle at the snapped position.
    inlier : bool
        Kept by the fusion.
    mirrored : bool
    slice_z, descriptor, similarity : optional
        Part A: the EM slice, descriptor and similarity of the map.
    """

    part: Part
    rank: int
    centre_xy_um: tuple[float, float]
    snapped_xy_um: tuple[float, float]
    source_score: float
    spatial_score: float
    angle_deg: float
    inlier: bool = False
    mirrored: bool = False
    slice_z: int | None = None
    descriptor: str | None = None
    similarity: str | None = None

    @property
    def label(self) -> str:
        """Short human-readable name of the candidate's source."""
        if self.part == "ncc":
            return f"ncc #{self.rank}"
        return f"z{self.slice_z} {self.descriptor}/{self.similarity} #{self.rank}"


@dataclass(frozen=True)
class Placement:
    """A placement of the EM ROI in the LM field: position, angle, handedness, score.

    ``score`` is the robust z of the spatial NCC at the kept scale; ``initial_em_to_lm``
    the corresponding EM → LM transform (z kept).
    """

    angle_deg: float
    mirrored: bool
    centre_xy_um: tuple[float, float]
    score: float
    initial_em_to_lm: Affine

    def to_dict(self) -> dict:
        return {"angle_deg": self.angle_deg, "mirrored": self.mirrored,
                "centre_xy_um": list(self.centre_xy_um), "score": self.score,
                "initial_em_to_lm": self.initial_em_to_lm.to_list()}


@dataclass(frozen=True)
class NccSummary:
    """Part B's scales: each one's peak margin (robust z) and the one kept."""

    sigmas_um: tuple[float, ...]
    margins: tuple[float, ...]
    chosen_sigma_um: float
    n_orientations: int
    orientation_margin: float

    def to_dict(self) -> dict:
        return {"sigmas_um": list(self.sigmas_um), "margins": list(self.margins),
                "chosen_sigma_um": self.chosen_sigma_um, "n_orientations": self.n_orientations,
                "orientation_margin": self.orientation_margin}


@dataclass(frozen=True)
class PolarityFinding:
    """The blob polarity used for each modality and how it was decided.

    ``em_how`` / ``lm_how``: ``"given"``, ``"found"`` (from the data) or ``"assumed"``
    (the modality default, when nothing could decide); ``em_margin``: the kept sign's
    peak margin minus the other sign's (robust z; NaN when only one sign was scored;
    negative when the assumed sign was kept because the other was not clearer by
    :data:`~clemalign.prealign.config.SIGN_SWITCH_MARGIN`).
    """

    em: str
    lm: str
    em_how: str
    lm_how: str
    em_margin: float = float("nan")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class PrealignResult:
    """Result of :func:`clemalign.prealign.prealign_xy`.

    Attributes
    ----------
    shift_xy_um : (float, float)
        Fused LM centre minus EM ROI centre (both physical µm, x and y).
    centre_lm_xy_um : (float, float)
        Fused position of the EM ROI centre in the LM field (µm).
    em_roi_centre_xyz_um : (float, float, float)
        EM ROI centre (µm, EM physical).
    angle_deg : float
        In-plane rotation EM → LM (anticlockwise in x-y); 0 for ``method="histogram"``.
    mirrored : bool
        The EM x axis is flipped (about the ROI centre) before the rotation.
    initial_em_to_lm : Affine
        (Mirror,) rotation about z by ``angle_deg`` around the ROI centre, plus the XY
        shift; z is left unchanged (the 3D stage searches it).
    hypotheses : tuple of Placement
        The best placement of each searched orientation group (the default window and
        each scan hypothesis), best first; the 3D stage may choose among them.
    orientation : dict
        The orientation scan (``angles_deg``, ``scores`` per handedness, ``hypotheses``,
        ``sigmas_um``) or ``{}`` when only the default window was searched.
    candidates : tuple of Candidate
    confidence : dict
        ``best_score`` (robust z), ``rival_score`` (best separate peak farther than a
        quarter of the ROI), ``margin`` (their difference), ``inlier_fraction``,
        ``orientation_margin`` (best score minus the best at another orientation: more
        than 20° away or the other handedness).
    sigmas_um : dict
        LoG scales of Part A: ``em`` and ``lm`` (selected).
    ncc : NccSummary or None
        Part B's scales and margins (None with ``method="histogram"``).
    polarity : PolarityFinding
    roi : Roi
    em_slices : tuple of int
    method : str
    timings_s : dict
    mip_log : ndarray
        LM-MIP blob response at the common pixel (for figures).
    pixel_um : float
        Pixel of ``mip_log``; its pixel (0, 0) is at ``mip_origin_xy_um``.
    mip_origin_xy_um : (float, float)
    patch_size_um : (float, float)
        EM ROI width and height (x, y).
    scale_selections : dict
        ``em`` and ``lm``: :meth:`ScaleSelection.to_dict` of the two automatic scale
        selections (blob count per sigma), for the report.
    scales : Scales
        Stage 1's scales and polarities as used, the EM's polarity (and its scale) as
        the match found it.
    """

    shift_xy_um: tuple[float, float]
    centre_lm_xy_um: tuple[float, float]
    em_roi_centre_xyz_um: tuple[float, float, float]
    angle_deg: float
    initial_em_to_lm: Affine
    candidates: tuple[Candidate, ...]
    confidence: dict
    sigmas_um: dict
    roi: Roi
    em_slices: tuple[int, ...]
    method: str
    timings_s: dict
    mip_log: np.ndarray
    pixel_um: float
    mip_origin_xy_um: tuple[float, float]
    patch_size_um: tuple[float, float]
    polarity: PolarityFinding
    scale_selections: dict = field(default_factory=dict)
    mirrored: bool = False
    hypotheses: tuple[Placement, ...] = ()
    orientation: dict = field(default_factory=dict)
    ncc: NccSummary | None = None
    scales: Scales | None = None

    def to_dict(self) -> dict:
        """JSON-ready summary (without the image)."""
        return {
            "shift_xy_um": list(self.shift_xy_um),
            "centre_lm_xy_um": list(self.centre_lm_xy_um),
            "em_roi_centre_xyz_um": list(self.em_roi_centre_xyz_um),
            "angle_deg": self.angle_deg,
            "mirrored": self.mirrored,
            "initial_em_to_lm": self.initial_em_to_lm.to_list(),
            "hypotheses": [h.to_dict() for h in self.hypotheses],
            "orientation": self.orientation,
            "confidence": self.confidence,
            "sigmas_um": self.sigmas_um,
            "ncc": self.ncc.to_dict() if self.ncc else None,
            "polarity": self.polarity.to_dict(),
            "roi": self.roi.to_str(),
            "em_slices": list(self.em_slices),
            "method": self.method,
            "timings_s": self.timings_s,
            "candidates": [asdict(c) for c in self.candidates],
            "scale_selections": self.scale_selections,
        }
