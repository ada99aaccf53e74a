"""Parameters of the XY pre-alignment: the knobs a user or a benchmark turns, grouped.

Everything else the stage uses is a named constant below; the reasons behind the
values are in ``docs/method.md`` (section 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .. import descriptors as dsc
from ..errors import InputError
from ..representation import PolarityChoice

__all__ = ["PrealignConfig", "SliceConfig", "SearchConfig", "OrientationConfig", "Method",
           "Descriptor"]

Method = Literal["combined", "histogram", "ncc"]
Descriptor = Literal["log", "ldp", "ldp_ri"]

# --- Part A (the published histogram search)
SCALE_SLICES = 4           # EM slices on which the EM LoG scale is selected
LOG_BINS = 32              # bins of the LoG-value histogram ...
LOG_CLIP_SD = 4.0          # ... over ± this many robust SDs
LDP_K = 3                  # strongest Kirsch directions setting an LDP bit (56 codes)
PEAKS_PER_MAP = 3          # separate peaks kept per (slice × descriptor × similarity) map
# --- Part B (the spatial NCC score)
DEFAULT_WINDOW_DEG = (-30.0, 30.0, 5.0)  # always searched, unmirrored (start, stop, default step)
CELL_SCALES_UM = (1.0, 2.0, 3.0)  # coarse scales (nuclei, cells), up to a tenth of the ROI
WIDE_SCAN_SCALE_UM = 5.0   # extra orientation-scan scale where the ROI is ≥ 10× larger
NCC_MAX_MAP_PX = 512       # the working pixel is at least the LM field over this many pixels
# the EM's contrast is taken as reversed only when that sign's peak margin beats the
# assumed one's by this much (robust z): measured, an inverted small pair 0.78, a weak
# real-appearance case where the reversed sign wins wrongly 0.17, an unrelated pair 0.24
SIGN_SWITCH_MARGIN = 0.5
# ... and a sign whose orientation scan peaks this far (robust z) below the other's
# proposes no orientations of its own (saves its search)
SIGN_SCAN_GAP = 3.0
N_NCC_PEAKS = 5            # separate Part B peaks kept as candidates
WEIGHT_BY_OVERLAP = True   # NCC × √overlap: small overlaps (noisier) do not win by chance
SCORE_TOLERANCE = 0.05     # candidates within 5 % of the best spatial score are fused
ORIENTATION_WINDOW_DEG = 10.0  # half-width searched around each orientation hypothesis
REFINE_RANGE_DEG = 3.0     # final local search: angles ± this ...
REFINE_STEP_DEG = 0.5      # ... in these steps ...
REFINE_RADIUS_UM = 2.0     # ... and positions within this radius


@dataclass(frozen=True)
class SliceConfig:
    """Which EM slices the pre-alignment uses.

    Attributes
    ----------
    n_slices : int
        Number of EM slices (Part A) when ``em_slices`` is not given.
    span : float
        Fraction of the ROI depth that the default slices span, centred on its middle.
    em_slices : tuple of int, optional
        EM z indices (of the whole volume) to use instead; each must lie in the ROI.
        When given, Part B matches their mean instead of the mean over the ROI depth.
    """

    n_slices: int = 12
    span: float = 0.5
    em_slices: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.n_slices < 1:
            raise InputError(f"n_slices: need at least one EM slice, got {self.n_slices}")
        if self.em_slices is not None and len(self.em_slices) == 0:
            raise InputError("em_slices: the list of EM slices is empty; give at least one")
        if not 0 <= self.span <= 1:
            raise InputError(f"span: expected a fraction in [0, 1], got {self.span}")


@dataclass(frozen=True)
class SearchConfig:
    """How the placements are searched and fused.

    Attributes
    ----------
    pixel_um : float, optional
        Common pixel size of Part A (default: the LM's lateral pixel size).
    descriptors : tuple of {"log", "ldp", "ldp_ri"}
        Part A descriptors: LoG-value histogram, LDP histogram, rotation-invariant LDP.
    similarities : tuple of {"cosine", "intersection"}
    stride_fraction : float
        Distance between tested Part A patch positions as a fraction of the patch
        (0.1 = 90 % overlap); any stride down to one pixel works, cost grows with it.
    ncc_sigmas_um : tuple of float, optional
        LoG scales of Part B.  Default: a fine scale (the LM's selected scale, at least
        two working pixels) plus :data:`CELL_SCALES_UM` up to a tenth of the ROI side.
    min_overlap_fraction : float
        Part B also scores EM fields hanging over the LM border, on at least this
        fraction of the ROI.
    mad_c : float
        Candidates farther than ``mad_c`` × MAD from the median are outliers.
    refine : bool
        After fusion, search angles ±3° in 0.5° steps and positions within 2 µm at the
        kept NCC scale (not with ``method="histogram"``).
    """

    pixel_um: float | None = None
    descriptors: tuple[Descriptor, ...] = ("log", "ldp", "ldp_ri")
    similarities: tuple[dsc.Similarity, ...] = ("cosine", "intersection")
    stride_fraction: float = 0.1
    ncc_sigmas_um: tuple[float, ...] | None = None
    min_overlap_fraction: float = 0.6
    mad_c: float = 3.0
    refine: bool = True

    def __post_init__(self) -> None:
        for name in ("descriptors", "similarities"):
            if not getattr(self, name):
                raise InputError(f"{name}: choose at least one")
        bad = set(self.descriptors) - {"log", "ldp", "ldp_ri"}
        if bad:
            raise InputError(f"descriptors: unknown {sorted(bad)}; use log, ldp, ldp_ri")
        if not 0 < self.stride_fraction <= 1:
            raise InputError(f"stride_fraction: must be in (0, 1], got {self.stride_fraction}")
        if not 0 < self.min_overlap_fraction <= 1:
            raise InputError(f"min_overlap_fraction: must be in (0, 1], got "
                             f"{self.min_overlap_fraction}")
        if self.pixel_um is not None and not self.pixel_um > 0:
            raise InputError(f"pixel_um: must be positive, got {self.pixel_um}")


@dataclass(frozen=True)
class OrientationConfig:
    """Which orientations are considered.

    Attributes
    ----------
    max_rotation_deg : float
        Largest in-plane rotation considered (180 = the full circle).  Within
        :data:`DEFAULT_WINDOW_DEG` only that window is searched; beyond it an
        orientation scan at coarse scales proposes hypotheses.
    mirror : bool
        Also consider a mirrored EM (inverted LM seen from below, block face from above).
    step_deg : float
        Angle step of the orientation scan over ``±max_rotation_deg`` × handedness.
    scan_sigmas_um : tuple of float, optional
        Scales of the orientation scan, each proposing its own hypotheses.  Default: the
        coarsest Part B scale, plus :data:`WIDE_SCAN_SCALE_UM` where the ROI allows.
    n_hypotheses : int
        Best separate orientations of each scan scale that Part B then searches at every
        scale, ±:data:`ORIENTATION_WINDOW_DEG` around each.
    window_step_deg : float
        Angle step of Part B within the default window and around each hypothesis.  The
        CLI's in-plane path halves it (:attr:`clemalign.pipeline.RegistrationConfig.
        plane_window_step_deg`): there the pre-alignment's orientation is final.
    """

    max_rotation_deg: float = 180.0
    mirror: bool = True
    step_deg: float = 10.0
    scan_sigmas_um: tuple[float, ...] | None = None
    n_hypotheses: int = 2
    window_step_deg: float = DEFAULT_WINDOW_DEG[2]

    def __post_init__(self) -> None:
        if not 0 <= self.max_rotation_deg <= 180:
            raise InputError(f"max_rotation_deg: expected a value in [0, 180], got "
                             f"{self.max_rotation_deg}")
        if not 0 < self.step_deg <= 90:
            raise InputError(f"step_deg: expected (0, 90], got {self.step_deg}")
        if self.scan_sigmas_um is not None and (
                not self.scan_sigmas_um or min(self.scan_sigmas_um) <= 0):
            raise InputError(f"scan_sigmas_um: expected one or more positive scales (µm), "
                             f"got {self.scan_sigmas_um}")
        if self.n_hypotheses < 1:
            raise InputError(f"n_hypotheses: expected at least 1, got {self.n_hypotheses}")
        if not 0 < self.window_step_deg <= ORIENTATION_WINDOW_DEG:
            raise InputError(f"window_step_deg: expected (0, {ORIENTATION_WINDOW_DEG:g}], got "
                             f"{self.window_step_deg}")


@dataclass(frozen=True)
class PrealignConfig:
    """Parameters of :func:`clemalign.prealign.prealign_xy` (defaults are benchmarked).

    Attributes
    ----------
    method : {"combined", "histogram", "ncc"}
        Part A + B (default), Part A only (the published method), or Part B only.
    em_polarity, lm_polarity : {"auto", "dark", "bright"}
        Polarity of the structures to match.  ``auto``: the LM's from its intensity
        distribution, the EM's from the sign of the spatial match (both signs are
        scored; with ``method="histogram"`` the EM's modality default, dark).
    slices : SliceConfig
    search : SearchConfig
    orientation : OrientationConfig
    """

    method: Method = "combined"
    em_polarity: PolarityChoice = "auto"
    lm_polarity: PolarityChoice = "auto"
    slices: SliceConfig = field(default_factory=SliceConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    orientation: OrientationConfig = field(default_factory=OrientationConfig)

    def __post_init__(self) -> None:
        if self.method not in ("combined", "histogram", "ncc"):
            raise InputError(f"method: expected combined, histogram or ncc, got {self.method!r}")
        for name in ("em_polarity", "lm_polarity"):
            if getattr(self, name) not in ("auto", "dark", "bright"):
                raise InputError(f"{name}: expected auto, dark or bright, got "
                                 f"{getattr(self, name)!r}")
