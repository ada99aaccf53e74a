"""How far to trust a registration: evidence, a score in [0, 1] and a verdict.

Every piece of evidence is measured, none is assumed:

* **pre-alignment peak margin** — how far (robust z-units of NCC) the chosen placement
  stands above the best separate placement in the LM field;
* **orientation margin** — how far the chosen orientation stands above the best clearly
  different one (another handedness or more than 20° away);
* **mutual-information contrast** — the final mutual information of the LoG images
  minus the best MI after moving the result by a quarter of the ROI or rotating it by
  90°/180°/270° (:attr:`Registration3DResult.mutual_information_perturbed`): a right
  placement is a sharp maximum, a wrong one sits in a flat landscape;
* **plausibility** — principal scales within ``scale_range`` and shear below
  ``max_shear`` (a 12-parameter affine that drifted into a squashed or folded map).

Each margin is mapped linearly onto [0, 1] between a *fail* level (0) and a *sure*
level (1).  The score is the MI-contrast term, lowered by the two margins when they are
weak (each can pull it down to half), and set to 0 when the transform is implausible;
the verdict is ``ok`` at or above ``ok_above``, ``failed`` below ``failed_below``,
``uncertain`` in between.  The levels were calibrated on simulated pairs (full rotation
and mirroring, 40 pairs) against unrelated pairs (EM and LM of different samples, LM of
pure noise, LM without label): registered pairs reached an MI contrast of 0.26–0.51 nats,
unrelated ones at most 0.15 and wrong registrations at most 0.18
(``benchmarks/results/orientation_confidence.md``).  Since the 3D stage also searches
tilt and z direction for an XY start, one unrelated pair (EM and LM of different samples)
reached 0.27 nats with both margins at 0.85: the *sure* level of the contrast is 0.35, so
such a pair needs clear margins to pass (no registered pair changes verdict: contrast
≥ 0.26 with margins ≥ 2.4, or ≥ 0.36 with weaker ones).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .prealign import PrealignResult
from .prealign3d import Prealign3DResult
from .registration import Registration3DResult
from .transforms import decompose

__all__ = ["ConfidenceConfig", "assess"]


@dataclass(frozen=True)
class ConfidenceConfig:
    """Levels that turn the evidence into a score and a verdict.

    Attributes
    ----------
    mi_contrast_fail, mi_contrast_sure : float
        MI contrast (nats) scored 0 and 1.
    margin_fail, margin_sure : float
        Pre-alignment peak margin (robust z) scored 0 and 1.
    orientation_fail, orientation_sure : float
        Orientation margin (robust z) scored 0 and 1.
    scale_range : (float, float)
        Allowed principal scales of the linear part.
    max_shear : float
        Largest allowed shear (see :func:`clemalign.transforms.decompose`).
    ok_above, failed_below : float
        Verdict thresholds on the score.
    mi_contrast_fail_plane, mi_contrast_sure_plane : float
        The MI-contrast levels of an in-plane refinement (a section or a few planes:
        :func:`clemalign.registration.register_plane`).  One plane holds far fewer
        samples and structures than a volume: on DeepCLEM sections (real SEM and
        chromatin fluorescence) registered right the contrast was 0.03–0.09 nats, with an
        unrelated LM (another sample's nuclei, noise, no label) at most 0.003.  See
        ``benchmarks/results/sections_2d.md``.
    mi_contrast_fail_3d, mi_contrast_sure_3d, margin_fail_3d, margin_sure_3d : float
        The MI-contrast and peak-margin levels after a 3D pre-alignment (thick tissue):
        sparse nuclei in a textured volume share less information than a monolayer's
        cells and organelles (registered small thick pairs: 0.07–0.26 nats), and a peak
        among all 3D offsets is measured against many more placements (registered: ≥ 5.7
        robust z, unrelated ≤ 2.3).  See ``benchmarks/results/thick_tissue.md``.
    """

    mi_contrast_fail: float = 0.05
    mi_contrast_sure: float = 0.35
    margin_fail: float = 0.0
    margin_sure: float = 2.0
    orientation_fail: float = 0.0
    orientation_sure: float = 2.0
    scale_range: tuple[float, float] = (0.5, 2.0)
    max_shear: float = 0.2
    ok_above: float = 0.5
    failed_below: float = 0.2
    mi_contrast_fail_3d: float = 0.0
    mi_contrast_sure_3d: float = 0.1
    margin_fail_3d: float = 2.5
    margin_sure_3d: float = 5.0
    mi_contrast_fail_plane: float = 0.01
    mi_contrast_sure_plane: float = 0.04


def _ramp(value: float, fail: float, sure: float) -> float:
    if not np.isfinite(value):
        return 1.0  # evidence not available (e.g. no rival orientation searched)
    return float(np.clip((value - fail) / (sure - fail), 0.0, 1.0))


def assess(prealign: PrealignResult | Prealign3DResult, fine: Registration3DResult,
           config: ConfidenceConfig = ConfidenceConfig()) -> dict:
    """Confidence score, verdict and the evidence behind them.

    Parameters
    ----------
    prealign : PrealignResult or Prealign3DResult
        Its ``confidence`` margins; a 3D pre-alignment selects the ``_3d`` levels.
    fine : Registration3DResult
    config : ConfidenceConfig

    Returns
    -------
    dict
        ``score`` in [0, 1], ``verdict`` ("ok", "uncertain", "failed"), ``evidence``
        (the measurements), ``terms`` (each one's [0, 1] value), ``reasons`` (short
        sentences naming the weak evidence), ``thresholds`` (``config`` as a dict),
        ``levels`` (the fail and sure level each term used).
    """
    mi = float(-fine.metric_final)
    perturbed = np.asarray(fine.mutual_information_perturbed, float)
    mi_rival = float(perturbed.max()) if perturbed.size else float("nan")
    parts = decompose(fine.em_to_lm)
    scales = np.asarray(parts["scale"], float)
    evidence = {
        "prealign_margin": float(prealign.confidence.get("margin", float("nan"))),
        "orientation_margin": float(prealign.confidence.get("orientation_margin", float("nan"))),
        "inlier_fraction": float(prealign.confidence.get("inlier_fraction", float("nan"))),
        "mutual_information": mi,
        "mutual_information_perturbed_max": mi_rival,
        "mi_contrast": mi - mi_rival if np.isfinite(mi_rival) else float("nan"),
        "scales": scales.tolist(),
        "shear": float(parts["shear"]),
        "mirrored": bool(parts["mirror"]),
        "starts_tried": len(fine.starts),
    }
    lo, hi = config.scale_range
    plausible = bool(np.all((scales >= lo) & (scales <= hi)) and parts["shear"] <= config.max_shear)
    thick = isinstance(prealign, Prealign3DResult)
    plane = fine.z_search.get("mode") == "in-plane"
    mi_levels = ((config.mi_contrast_fail_3d, config.mi_contrast_sure_3d) if thick
                 else (config.mi_contrast_fail_plane, config.mi_contrast_sure_plane) if plane
                 else (config.mi_contrast_fail, config.mi_contrast_sure))
    margin_levels = ((config.margin_fail_3d, config.margin_sure_3d) if thick
                     else (config.margin_fail, config.margin_sure))
    terms = {
        "mi_contrast": _ramp(evidence["mi_contrast"], *mi_levels),
        "prealign_margin": _ramp(evidence["prealign_margin"], *margin_levels),
        "orientation_margin": _ramp(evidence["orientation_margin"], config.orientation_fail,
                                    config.orientation_sure),
        "plausible": 1.0 if plausible else 0.0,
    }
    if not np.isfinite(evidence["mi_contrast"]):
        terms["mi_contrast"] = 0.0
    score = (terms["mi_contrast"] * (0.5 + 0.5 * terms["prealign_margin"])
             * (0.5 + 0.5 * terms["orientation_margin"]) * terms["plausible"])
    verdict = ("ok" if score >= config.ok_above
               else "failed" if score < config.failed_below else "uncertain")
    reasons = []
    if terms["mi_contrast"] < 1:
        reasons.append(f"the final mutual information ({mi:.3f} nats) stands only "
                       f"{evidence['mi_contrast']:.3f} nats above nearby wrong placements")
    if terms["prealign_margin"] < 1:
        reasons.append(f"the pre-alignment peak is only {evidence['prealign_margin']:.2f} "
                       "robust z-units above the next placement")
    if terms["orientation_margin"] < 1:
        reasons.append(f"the orientation is only {evidence['orientation_margin']:.2f} robust "
                       "z-units above the next orientation")
    if not plausible:
        reasons.append(f"implausible transform: scales {np.round(scales, 2).tolist()}, "
                       f"shear {parts['shear']:.2f}")
    return {"score": float(score), "verdict": verdict, "evidence": evidence, "terms": terms,
            "reasons": reasons, "thresholds": asdict(config),
            "levels": {"mi_contrast": list(mi_levels), "prealign_margin": list(margin_levels),
                       "orientation_margin": [config.orientation_fail,
                                              config.orientation_sure]}}
