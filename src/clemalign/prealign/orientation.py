"""Orientations: rotated (and mirrored) EM templates, and the coarse orientation scan.

An orientation is an in-plane angle (EM → LM, anticlockwise in x-y) and a handedness
(``mirrored``: the EM x axis flipped about the ROI centre).  The default window of
angles is always searched; when the allowed rotations reach beyond it, or mirroring is
allowed, a scan over the whole range at coarse scales proposes the other orientations
Part B searches (:func:`orientation_scan`, :func:`search_orientations`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from ..correlation import masked_ncc
from ..transforms import angle_distance, wrap_deg
from .config import DEFAULT_WINDOW_DEG, ORIENTATION_WINDOW_DEG, WEIGHT_BY_OVERLAP, OrientationConfig
from .planes import robust_z

__all__ = ["Orientation", "rotated_templates", "oriented_templates", "default_window",
           "orientation_scan", "search_orientations"]

Orientation = tuple[float, bool]  # (angle_deg, mirrored)


def rotated_templates(image: np.ndarray, centre_rc: Sequence[float], angles_deg: np.ndarray
                      ) -> tuple[list[np.ndarray], list[np.ndarray], tuple[float, float]]:
    """The image rotated about ``centre_rc`` by each angle (x-y anticlockwise) onto one
    square canvas.

    Returns templates, masks and the canvas pixel (row, col) of the rotation centre.
    """
    h, w = image.shape
    diag = int(np.ceil(np.hypot(h, w))) + 2
    centre_in = np.asarray(centre_rc, dtype=float)
    centre_out = np.array([(diag - 1) / 2.0, (diag - 1) / 2.0])
    rows, cols = np.mgrid[0:diag, 0:diag].astype(np.float32)
    templates, masks = [], []
    for angle in angles_deg:
        c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
        # canvas offset (dy, dx) in the LM frame comes from EM offset R(-angle)·(dx, dy):
        # em_x = c·dx + s·dy, em_y = -s·dx + c·dy, written in (row, col) order
        matrix = np.array([[c, -s], [s, c]])
        offset = centre_in - matrix @ centre_out
        templates.append(ndi.affine_transform(image, matrix, offset, output_shape=(diag, diag),
                                              order=1, mode="constant", cval=0.0,
                                              output=np.float32))
        # valid where the source position lies inside the image (bilinear needs no border)
        src_r = matrix[0, 0] * rows + matrix[0, 1] * cols + offset[0]
        src_c = matrix[1, 0] * rows + matrix[1, 1] * cols + offset[1]
        masks.append((src_r >= 0) & (src_r <= h - 1) & (src_c >= 0) & (src_c <= w - 1))
    return templates, masks, (float(centre_out[0]), float(centre_out[1]))


def oriented_templates(image: np.ndarray, centre_rc: np.ndarray,
                       orientations: Sequence[Orientation]):
    """Rotated (and, where asked, mirrored: x flipped about the centre) templates.

    Returns templates, masks and the canvas pixel (row, col) of the ROI centre.
    """
    out_t: list[np.ndarray] = [None] * len(orientations)  # type: ignore[list-item]
    out_m: list[np.ndarray] = [None] * len(orientations)  # type: ignore[list-item]
    centre = (0.0, 0.0)
    for mirrored in (False, True):
        idx = [k for k, (_, m) in enumerate(orientations) if m == mirrored]
        if not idx:
            continue
        img, c_rc = image, np.asarray(centre_rc, float)
        if mirrored:
            img = image[:, ::-1]
            c_rc = np.array([c_rc[0], image.shape[1] - 1 - c_rc[1]])
        t, m, centre = rotated_templates(img, c_rc, np.array([orientations[k][0] for k in idx]))
        for k, tk, mk in zip(idx, t, m, strict=True):
            out_t[k], out_m[k] = tk, mk
    return out_t, out_m, centre


def default_window(config: OrientationConfig) -> list[Orientation]:
    """The always-searched unmirrored window (:data:`DEFAULT_WINDOW_DEG` within
    ±``max_rotation_deg``, in steps of ``config.window_step_deg``)."""
    start, stop, _ = DEFAULT_WINDOW_DEG
    angles = np.arange(start, stop + 1e-9, config.window_step_deg)
    angles = angles[np.abs(angles) <= config.max_rotation_deg + 1e-9]
    return [(float(a), False) for a in (angles if angles.size else [0.0])]


def needs_scan(config: OrientationConfig) -> bool:
    """Whether orientations outside the default window are allowed."""
    return config.mirror or config.max_rotation_deg > max(abs(v) for v in DEFAULT_WINDOW_DEG[:2])


def _local_maxima(curve: np.ndarray, angles: np.ndarray, full: bool) -> list[int]:
    """Indices of the angles whose score is a local maximum (circular on the full circle)."""
    out = []
    for k in range(len(angles)):
        left = curve[k - 1] if (k > 0 or full) else -np.inf
        right = curve[(k + 1) % len(angles)] if (k + 1 < len(angles) or full) else -np.inf
        if curve[k] >= left and curve[k] >= right:
            out.append(k)
    return out


def orientation_scan(responses: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                     config: OrientationConfig, window: list[Orientation], *,
                     min_overlap_fraction: float, signs: Sequence[int] = (1,),
                     workers: int | None = None) -> dict:
    """Best robust NCC z-score over positions for each angle × handedness (× EM sign).

    Parameters
    ----------
    responses : sequence of (LM response, EM response, EM centre (row, col))
        One per scan scale, each at its own working pixel.
    config : OrientationConfig
    window : list of Orientation
        The default window (its orientations are searched anyway: not proposed).
    min_overlap_fraction : float
    signs : sequence of {1, -1}
        EM response signs scored (−1 negates the NCC: no extra correlation).
    workers : int, optional
        FFT threads.

    Returns
    -------
    dict
        ``angles_deg``; ``scores`` per handedness (mean over scales) and
        ``scores_per_scale``, ``best`` (the highest score) and ``hypotheses`` for each
        sign under ``"+1"`` / ``"-1"`` in ``by_sign`` (the first sign's also at the top
        level); ``hypotheses``: at each scale the best ``n_hypotheses`` local maxima over
        both handednesses (outside the window), pooled (a repeat keeps its higher score).
        Scales disagree on hard pairs (cells seen from the top match at 5 µm, nuclei and
        membranes at 3 µm), so no single curve, nor their mean, ranks the truth first on
        all of them.
    """
    step = config.step_deg
    half = config.max_rotation_deg
    full = half >= 180.0 - 1e-9
    angles = (np.arange(-180.0, 180.0 - 1e-9, step) if full
              else np.arange(-half, half + 1e-9, step))
    hands = (False, True) if config.mirror else (False,)
    orientations = [(float(a), m) for m in hands for a in angles]
    w_lo = min(a for a, _ in window) - 0.5 * step
    w_hi = max(a for a, _ in window) + 0.5 * step
    curves: dict[int, list[np.ndarray]] = {s: [] for s in signs}
    pooled: dict[int, dict[Orientation, float]] = {s: {} for s in signs}
    for lm_resp, em_resp, centre_rc in responses:
        templates, masks, _ = oriented_templates(em_resp, centre_rc, orientations)
        z = robust_z(masked_ncc(lm_resp, templates, masks,
                                min_overlap_fraction=min_overlap_fraction,
                                weight_by_overlap=WEIGHT_BY_OVERLAP, workers=workers),
                     overwrite=True).reshape(len(orientations), -1)
        for sign in signs:
            best = (z.max(axis=1) if sign > 0 else -z.min(axis=1)).reshape(len(hands), len(angles))
            curves[sign].append(best)
            found = []
            for h, mirrored in enumerate(hands):
                for k in _local_maxima(best[h], angles, full):
                    if not mirrored and w_lo <= angles[k] <= w_hi:
                        continue  # the default window searches it at every scale
                    found.append((float(best[h, k]), float(angles[k]), mirrored))
            for score, angle, mirrored in sorted(found, reverse=True)[:config.n_hypotheses]:
                key = (angle, mirrored)
                pooled[sign][key] = max(pooled[sign].get(key, -np.inf), score)

    def named(curve: np.ndarray) -> dict:
        return {("mirrored" if m else "direct"): [float(v) for v in curve[h]]
                for h, m in enumerate(hands)}

    by_sign = {f"{s:+d}": {
        "scores": named(np.mean(curves[s], axis=0)),
        "scores_per_scale": [named(c) for c in curves[s]],
        "best": float(max(c.max() for c in curves[s])),
        "hypotheses": [{"angle_deg": a, "mirrored": m, "score": v}
                       for (a, m), v in sorted(pooled[s].items(), key=lambda kv: -kv[1])]}
        for s in signs}
    return {"angles_deg": [float(a) for a in angles], **by_sign[f"{signs[0]:+d}"],
            "by_sign": by_sign}


def search_orientations(window: list[Orientation], scan: dict, step_deg: float
                        ) -> tuple[list[Orientation], list[int]]:
    """The default window plus ±:data:`ORIENTATION_WINDOW_DEG` around each scan hypothesis.

    Returns the orientations and, for each, the index of its group (0 = default window).
    """
    orientations, groups = list(window), [0] * len(window)
    offsets = np.arange(-ORIENTATION_WINDOW_DEG, ORIENTATION_WINDOW_DEG + 1e-9, step_deg)
    for g, hyp in enumerate(scan.get("hypotheses", []), start=1):
        for off in offsets:
            o = (wrap_deg(hyp["angle_deg"] + off), bool(hyp["mirrored"]))
            if not any(angle_distance(o[0], a) < 1e-6 and o[1] == m for a, m in orientations):
                orientations.append(o)
                groups.append(g)
    return orientations, groups
