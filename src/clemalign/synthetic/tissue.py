"""Simulated thick-tissue pairs: microCT of stained tissue + a two-photon stack.

The publication's second experiment registers a microCT volume (1 µm voxels) of stained
tissue with a two-photon stack (0.59 × 0.59 × 3 µm voxels) that lies deep inside it.  This
module renders such pairs with a known answer:

* **scene** — nuclei packed in 3D (a hard-core random process, no lattice: real tissue has
  no long-range order, and a lattice would make false matches), spheres of radius
  2.8–4.5 µm, and a few blood vessels (random tubes of radius 3–8 µm) with no nuclei in
  their lumen.  The scene lives in the microCT's physical frame (microCT is metrically
  true);
* **microCT** (the ``em`` volume) — attenuation contrast: tissue grey, nuclei brighter
  with chromatin texture, vessel lumens dark, slow density variation, fine texture, a
  slight blur and detector noise; ``em_contrast="dark"`` stores the inverted display;
* **two-photon LM** — channel ``nuclei``: a nuclear label in a random 60–80 % of the
  nuclei (brightness varying per nucleus), channel ``vessels``: dextran in the lumens;
  both blurred by an anisotropic PSF, sampled in optical sections every ``3 µm``, dimmed
  with depth (scattering), Poisson and read noise.  The LM's axial scale differs from the
  truth by 0.85–1.1 (refractive-index mismatch);
* **truth** — ``em_to_lm = T(c_lm) · diag(s, s, s_z) · Rz(angle) · Ry(tilt_y) · Rx(tilt_x)
  · F · T(−c_em)`` with ``F`` an optional x mirror and/or z reversal (a stack imaged from
  the other side is a 180° turn about an in-plane axis: mirror and reversed z); ``c_em``
  is the centre of the region of interest (``roi``), a box of the microCT that lies inside
  the LM field, as a user marks it with ``--roi``.

Landmarks are labelled nucleus centres inside the ROI.  Everything is deterministic for a
given :class:`~clemalign.synthetic.config.TissueConfig`.  The scene is drawn in
:mod:`~clemalign.synthetic.tissue_scene` and rendered by
:mod:`~clemalign.synthetic.tissue_render`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from ..errors import InputError
from ..transforms import Affine, rotation_matrix_xyz
from ..volume import Volume
from .config import TissueConfig
from .pair import SimulatedPair
from .tissue_render import Grid, render_microct, render_two_photon
from .tissue_scene import make_scene

__all__ = ["simulate_tissue_pair"]


def _draw_truth(rng: np.random.Generator, cfg: TissueConfig) -> tuple[Affine, dict, tuple]:
    """The EM → LM transform and the ROI (voxel box of the microCT) it maps inside the LM.

    Random orientations are redrawn (up to 100 times) until the mapped ROI fits inside
    the LM field; a tilted, rotated ROI can need more room than the field has.
    """
    em_sp = np.asarray(cfg.em_voxel_size_um[::-1], float)  # x, y, z
    lm_sp = np.asarray(cfg.lm_voxel_size_um[::-1], float)
    roi_n = np.asarray(cfg.roi_shape_zyx[::-1])
    em_n = np.asarray(cfg.em_shape_zyx[::-1])
    lm_extent = (np.asarray(cfg.lm_shape_zyx[::-1]) - 1) * lm_sp
    flip = np.diag([-1.0 if cfg.mirror else 1.0, 1.0, -1.0 if cfg.flip_z else 1.0])
    for _ in range(100):
        angle = float(cfg.rotation_deg if cfg.rotation_deg is not None
                      else rng.uniform(-180.0, 180.0))
        tilt = (np.asarray(cfg.tilt_deg, float) if cfg.tilt_deg is not None
                else rng.uniform(-cfg.max_tilt_deg, cfg.max_tilt_deg, 2))
        s_lat = 1.0 + rng.uniform(-cfg.lateral_scale_change, cfg.lateral_scale_change)
        s_z = float(rng.uniform(*cfg.z_scale_range))
        linear = (np.diag([s_lat, s_lat, s_z])
                  @ rotation_matrix_xyz([tilt[0], tilt[1], angle]) @ flip)
        half = np.abs(linear) @ ((roi_n - 1) / 2.0 * em_sp)
        lo, hi = half + cfg.roi_margin_um, lm_extent - half - cfg.roi_margin_um
        if np.all(hi >= lo):
            break
    else:
        raise InputError("the ROI does not fit inside the LM field at this orientation; "
                         "make roi_shape_zyx smaller or the LM larger")
    roi_start = np.array([rng.integers(0, e - r + 1) for e, r in zip(em_n, roi_n, strict=True)])
    c_em = (roi_start + (roi_n - 1) / 2.0) * em_sp
    c_lm = rng.uniform(lo, hi)
    truth = Affine.from_linear_translation(linear, c_lm - linear @ c_em)
    roi = tuple(slice(int(s), int(s + n)) for s, n in zip(roi_start[::-1], roi_n[::-1],
                                                          strict=True))
    params = {"rotation_deg": angle, "tilt_x_deg": float(tilt[0]), "tilt_y_deg": float(tilt[1]),
              "mirror": bool(cfg.mirror), "flip_z": bool(cfg.flip_z),
              "lateral_scale": float(s_lat), "z_scale": s_z,
              "roi_centre_em_xyz_um": c_em.tolist(), "roi_centre_lm_xyz_um": c_lm.tolist()}
    return truth, params, roi


def simulate_tissue_pair(config: TissueConfig | None = None, *,
                         progress: Callable[[str], None] | None = None,
                         **overrides) -> SimulatedPair:
    """Render a microCT + two-photon pair of thick tissue with its ground truth.

    Parameters
    ----------
    config : TissueConfig, optional
        All parameters (default: the small size).
    progress : callable, optional
        Called with the name of each rendering step as it starts.
    **overrides
        Fields of :class:`TissueConfig` to replace.

    Returns
    -------
    SimulatedPair
        ``em`` (microCT, uint8), ``lm`` (uint16, channels ``nuclei`` and ``vessels``), the
        truth, landmark pairs (labelled nucleus centres inside the ROI) and ``roi`` (the
        ``--roi`` string of the region that lies inside the LM field).
    """
    cfg = replace(config or TissueConfig(), **overrides)
    report = progress or (lambda step: None)
    report("scene")
    rng = np.random.default_rng([cfg.seed, 14])
    truth, params, roi = _draw_truth(rng, cfg)
    lm_to_em = truth.inverse()
    em_sp = np.asarray(cfg.em_voxel_size_um[::-1], float)
    lm_sp = np.asarray(cfg.lm_voxel_size_um[::-1], float)
    em_extent = (np.asarray(cfg.em_shape_zyx[::-1]) - 1) * em_sp
    lm_extent = (np.asarray(cfg.lm_shape_zyx[::-1]) - 1) * lm_sp
    corners = np.array([[x, y, z] for x in (0, lm_extent[0]) for y in (0, lm_extent[1])
                        for z in (0, lm_extent[2])])
    lm_in_scene = lm_to_em.apply(corners)
    margin = 12.0
    lo = np.minimum(lm_in_scene.min(0), 0.0) - margin
    hi = np.maximum(lm_in_scene.max(0), em_extent) + margin
    labelled_fraction = float(rng.uniform(*cfg.labelled_fraction_range))
    attenuation = float(rng.uniform(*cfg.attenuation_length_um))
    scene = make_scene(rng, lo, hi, cfg, labelled_fraction)
    report("microCT")
    em_grid = Grid(cfg.em_shape_zyx, cfg.em_voxel_size_um, np.eye(4))
    em_data = render_microct(scene, em_grid, cfg, np.random.default_rng([cfg.seed, 15]))
    report("two-photon")
    lm_grid = Grid(cfg.lm_shape_zyx, cfg.lm_voxel_size_um, lm_to_em.matrix)
    lm_data = render_two_photon(scene, lm_grid, cfg, attenuation,
                                np.random.default_rng([cfg.seed, 16]))
    # landmarks: labelled nuclei well inside the ROI and the LM field
    roi_lo = np.array([s.start for s in roi[::-1]]) * em_sp + 2.0
    roi_hi = (np.array([s.stop for s in roi[::-1]]) - 1) * em_sp - 2.0
    in_roi = np.all((scene.centres >= roi_lo) & (scene.centres <= roi_hi), axis=1)
    lm_pts = truth.apply(scene.centres)
    in_lm = np.all((lm_pts >= 1.0) & (lm_pts <= lm_extent - 1.0), axis=1)
    chosen = np.flatnonzero(in_roi & in_lm & (scene.label > 0))
    if len(chosen) > cfg.max_landmarks:
        chosen = np.sort(np.random.default_rng([cfg.seed, 17]).choice(
            chosen, cfg.max_landmarks, replace=False))
    em = Volume(em_data, cfg.em_voxel_size_um, channel_names=("microCT",),
                source="simulated microCT")
    lm = Volume(lm_data, cfg.lm_voxel_size_um, channel_names=("nuclei", "vessels"),
                source="simulated two-photon")
    params.update(labelled_fraction=labelled_fraction, attenuation_length_um=attenuation,
                  n_nuclei=int(len(scene.centres)), n_vessel_segments=int(len(
                      scene.vessel_segments)), n_landmarks=int(len(chosen)))
    roi_text = ",".join(f"{s.start}:{s.stop}" for s in roi)
    return SimulatedPair(em, lm, truth, scene.centres[chosen], lm_pts[chosen], cfg, params,
                         roi=roi_text, scene="tissue")
