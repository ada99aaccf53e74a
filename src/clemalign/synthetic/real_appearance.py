"""Real-appearance 2D cases: known-answer pre-alignment tests built from real images.

An expert-aligned EM/fluorescence image pair (the DeepCLEM examples) gives one answer,
the overlay it came with.  :func:`degrade_fluorescence` turns its fluorescence into an
LM-like image at a chosen rotation and shift, so the truth is known while the EM keeps
its real appearance; :func:`real_appearance_cases` draws many such cases from one pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..errors import InputError
from ..transforms import Affine, rotation_matrix_xyz
from ..volume import Volume

__all__ = ["DegradedCase", "degrade_fluorescence", "real_appearance_cases"]


@dataclass(frozen=True, eq=False)
class DegradedCase:
    """An EM image with a known-answer LM made from its aligned fluorescence.

    Attributes
    ----------
    em : Volume
        The EM image as a one-slice stack (origin 0).
    lm : Volume
        The degraded fluorescence as a one-slice stack.
    em_to_lm : Affine
        Truth: EM physical (x, y, z) → LM physical (x, y, z).
    """

    em: Volume
    lm: Volume
    em_to_lm: Affine


def degrade_fluorescence(em_image: np.ndarray, fm_image: np.ndarray, *, em_pixel_um: float,
                         rotation_deg: float = 0.0, shift_xy_um: tuple[float, float] = (0.0, 0.0),
                         downsample: int = 4, psf_sigma_um: float = 0.15,
                         peak_photons: float = 200.0, seed: int = 0) -> DegradedCase:
    """Make an LM-like image from fluorescence aligned to an EM image, with a known truth.

    The fluorescence (same grid as the EM) is rotated by ``rotation_deg`` (anticlockwise
    in x-y) about the image centre and shifted by ``shift_xy_um``, blurred by a Gaussian
    PSF, block-averaged ``downsample``× and given Poisson noise with ``peak_photons`` at
    the brightest pixel.  Used to build real-appearance pre-alignment cases from expert-
    aligned 2D CLEM pairs.

    Parameters
    ----------
    em_image, fm_image : ndarray, shape (y, x)
        Registered EM and fluorescence images of the same shape.
    em_pixel_um : float
        EM pixel size (µm); the LM pixel is ``downsample`` times larger.

    Returns
    -------
    DegradedCase
    """
    em_image = np.asarray(em_image)
    fm = np.asarray(fm_image, dtype=np.float64)
    if em_image.ndim != 2 or em_image.shape != fm.shape:
        raise InputError(f"degrade_fluorescence: need two 2D images of one shape, got "
                         f"{em_image.shape} and {fm.shape}")
    rng = np.random.default_rng(seed)
    h, w = fm.shape
    centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0]) * em_pixel_um
    linear = rotation_matrix_xyz((0.0, 0.0, rotation_deg))
    shift = np.array([shift_xy_um[0], shift_xy_um[1], 0.0])
    # EM point p -> LM point R (p - c) + c + shift, with c the image centre
    c3 = np.array([centre[0], centre[1], 0.0])
    em_to_lm = Affine.from_linear_translation(linear, c3 - linear @ c3 + shift)
    # render on the EM grid: output pixel q (LM frame, EM pixel size) shows the fluorescence at
    # em_to_lm⁻¹(q); in (row, col) order the inverse linear part is R(-angle)
    inverse = em_to_lm.inverse()
    m = inverse.matrix
    matrix_rc = np.array([[m[1, 1], m[1, 0]], [m[0, 1], m[0, 0]]])
    offset_rc = np.array([m[1, 3], m[0, 3]]) / em_pixel_um
    rotated = ndi.affine_transform(fm, matrix_rc, offset_rc, order=1, mode="constant", cval=0.0)
    blurred = ndi.gaussian_filter(rotated, psf_sigma_um / em_pixel_um)
    f = int(downsample)
    hh, ww = (h // f) * f, (w // f) * f
    binned = blurred[:hh, :ww].reshape(hh // f, f, ww // f, f).mean(axis=(1, 3))
    scale = peak_photons / max(float(binned.max()), 1e-12)
    noisy = rng.poisson(binned * scale + 2.0).astype(np.uint16)
    lm_pixel = em_pixel_um * f
    # LM pixel i averages EM-grid pixels f·i .. f·i+f-1: its centre is at (f·i + (f-1)/2)
    origin = (f - 1) / 2.0 * em_pixel_um
    em = Volume(em_image[None], (0.05, em_pixel_um, em_pixel_um), (0.0, 0.0, 0.0), ("EM",))
    lm = Volume(noisy[None], (0.5, lm_pixel, lm_pixel), (origin, origin, 0.0), ("fluorescence",))
    return DegradedCase(em, lm, em_to_lm)


def real_appearance_cases(em_image: np.ndarray, fm_image: np.ndarray, *, em_pixel_um: float,
                          n_cases: int, roi_width_um: tuple[float, float] = (15.0, 20.0),
                          max_rotation_deg: float = 15.0, max_shift_um: float = 2.0,
                          seed: int = 0, **degrade: float) -> list[tuple[DegradedCase, str]]:
    """Known-answer pre-alignment cases from one expert-aligned 2D EM/fluorescence pair.

    Each case is an EM ROI (square, ``roi_width_um`` wide, inside the image) centred near
    a fluorescent object — so it contains one — and an LM made with
    :func:`degrade_fluorescence` at a random rotation (±``max_rotation_deg``) and shift.

    Returns
    -------
    list of (DegradedCase, roi)
        ``roi`` is the ``"z0:z1,y0:y1,x0:x1"`` string for the EM ROI.
    """
    fm = np.asarray(fm_image, dtype=np.float64)
    h, w = fm.shape
    rng = np.random.default_rng(seed)
    # fluorescent objects: smoothed signal above half its 99.5th percentile
    smooth = ndi.gaussian_filter(fm, 1.0 / em_pixel_um)
    labels, n = ndi.label(smooth > 0.5 * np.percentile(smooth, 99.5))
    if n == 0:
        raise InputError("real_appearance_cases: the fluorescence image shows no object")
    sizes = ndi.sum_labels(np.ones_like(fm), labels, np.arange(1, n + 1))
    keep = np.arange(1, n + 1)[sizes >= 0.25 * sizes.max()]
    centres = np.array(ndi.center_of_mass(smooth, labels, keep))  # (row, col)
    cases = []
    for k in range(n_cases):
        side = int(round(rng.uniform(*roi_width_um) / em_pixel_um))
        if side >= min(h, w):
            raise InputError(f"real_appearance_cases: ROI of {side} px does not fit the image")
        r, c = centres[k % len(centres)] + rng.uniform(-0.25, 0.25, 2) * side
        r0 = int(np.clip(round(r - side / 2), 0, h - side))
        c0 = int(np.clip(round(c - side / 2), 0, w - side))
        case = degrade_fluorescence(
            em_image, fm_image, em_pixel_um=em_pixel_um,
            rotation_deg=float(rng.uniform(-max_rotation_deg, max_rotation_deg)),
            shift_xy_um=tuple(rng.uniform(-max_shift_um, max_shift_um, 2)),
            seed=int(rng.integers(2**31)), **degrade)
        cases.append((case, f"0:1,{r0}:{r0 + side},{c0}:{c0 + side}"))
    return cases
