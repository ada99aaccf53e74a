"""The tools users would run instead of clemalign, wrapped to return ``em_to_lm``.

Every peer registers the EM (fixed) to one LM channel (moving) with intensity-based
mutual information on the raw intensities and returns an :class:`clemalign.Affine`
mapping EM physical µm to LM physical µm (the package's convention), so that one TRE
function scores them all.  Transforms are read back by mapping points through the
peer's own transform object, not by reinterpreting its parameters.

Inputs handed to the peers: the LM channel as stored, and the EM block-averaged to the
LM voxel size (an anti-aliased downsampling with :func:`clemalign.registration.working_volume`).
The LM cannot resolve finer detail, and full-resolution EM only makes the peers slower
(their pyramids start by smoothing it to this scale anyway).

The peers are optional (``pip install -e ".[bench]"``): itk-elastix, antspyx.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from clemalign import Affine, Volume
from clemalign.registration import working_volume
from clemalign.volume import to_sitk

__all__ = ["PEERS", "peer_inputs", "affine_from_point_map", "sitk_mi_affine",
           "elastix_affine", "ants_affine"]


def peer_inputs(em: Volume, lm: Volume, box_kji: tuple[slice, ...] | None = None
                ) -> tuple[Volume, Volume]:
    """EM (cropped to ``box_kji``) averaged down to the LM voxel size, and the LM, float32."""
    target = list(lm.voxel_size_um)
    if _dim(em) == 2:
        target[0] = em.voxel_size_um[0]  # one slice: nothing to average in z
    em_w = working_volume(em, target, box_kji)
    return em_w, lm.with_data(np.asarray(lm.data, np.float32))


def _dim(vol: Volume) -> int:
    """2 for one-slice stacks (registered as 2D images), else 3."""
    return 2 if vol.shape_zyx[0] == 1 else 3


def _centre(vol: Volume) -> np.ndarray:
    """Physical centre of the volume, (x, y) or (x, y, z) as the image dimension says."""
    n = np.asarray(vol.shape_zyx[::-1], float)
    c = np.asarray(vol.origin_xyz_um, float) + (n - 1) / 2 * vol.spacing_xyz_um
    return c[:_dim(vol)]


def affine_from_point_map(transform_point: Callable[[np.ndarray], np.ndarray],
                          centre: np.ndarray, radius_um: float = 10.0) -> Affine:
    """Least-squares 4×4 of a 2D or 3D point map sampled around a centre.

    For 2D maps z passes through unchanged.
    """
    d = len(centre)
    corners = np.array(np.meshgrid(*[(-1.0, 1.0)] * d, indexing="ij")).reshape(d, -1).T
    src = centre + np.vstack([corners, np.zeros(d)]) * radius_um
    dst = np.array([transform_point(p) for p in src], float)
    coef, *_ = np.linalg.lstsq(np.c_[src, np.ones(len(src))], dst, rcond=None)
    m = np.eye(4)
    m[:d, :d] = coef[:d].T
    m[:d, 3] = coef[d]
    return Affine(m)


def _matrix_centre_translation(initial: Affine, centre: np.ndarray):
    """Matrix, centre and translation of ITK's y = A(x - c) + c + t for a 4×4."""
    d = len(centre)
    a = initial.linear[:d, :d]
    b = initial.translation_um[:d]
    return a, centre, b - centre + a @ centre


def _sitk_affine(initial: Affine, centre: np.ndarray) -> sitk.AffineTransform:
    a, c, t = _matrix_centre_translation(initial, centre)
    tx = sitk.AffineTransform(len(c))
    tx.SetCenter(tuple(float(v) for v in c))
    tx.SetMatrix(tuple(float(v) for v in a.ravel()))
    tx.SetTranslation(tuple(float(v) for v in t))
    return tx


def _sitk_image(vol: Volume) -> sitk.Image:
    image = to_sitk(vol)
    return image[:, :, 0] if _dim(vol) == 2 else image


def sitk_mi_affine(em: Volume, lm: Volume, initial: Affine | None = None, *,
                   seed: int = 1) -> Affine:
    """SimpleITK Mattes MI affine registration in the style of its tutorials.

    Centred (geometric) initialisation unless ``initial`` is given; 50 bins, 10 %
    random samples (``seed`` must not be 0: SimpleITK reads 0 as "seed from the wall
    clock"), gradient descent with physical-shift scales, shrink 4/2/1 with smoothing
    2/1/0 µm.
    """
    if seed == 0:
        raise ValueError("sitk_mi_affine: seed 0 means a wall-clock seed in SimpleITK")
    fixed, moving = _sitk_image(em), _sitk_image(lm)
    if initial is None:
        tx = sitk.CenteredTransformInitializer(
            fixed, moving, sitk.AffineTransform(_dim(em)),
            sitk.CenteredTransformInitializerFilter.GEOMETRY)
    else:
        tx = _sitk_affine(initial, _centre(em))
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(50)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.1, seed)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsGradientDescent(learningRate=1.0, numberOfIterations=100,
                                      convergenceMinimumValue=1e-6, convergenceWindowSize=10)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2, 1, 0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(tx, inPlace=True)
    reg.Execute(fixed, moving)
    return affine_from_point_map(lambda p: np.asarray(tx.TransformPoint(tuple(p))),
                                 _centre(em))


def _itk_image(vol: Volume):
    import itk

    d = _dim(vol)
    data = vol.data[0] if d == 2 else vol.data
    image = itk.image_from_array(np.ascontiguousarray(data, np.float32))
    image.SetSpacing([float(v) for v in vol.spacing_xyz_um[:d]])
    image.SetOrigin([float(v) for v in vol.origin_xyz_um[:d]])
    return image


def elastix_affine(em: Volume, lm: Volume, initial: Affine | None = None) -> Affine:
    """itk-elastix with the default affine parameter map (AdvancedMattesMutualInformation).

    One change to the default map: ``AutomaticTransformInitialization true`` (geometric
    centres) when no initial transform is given, since otherwise the EM's corner is
    placed on the LM's corner.  ``initial`` is passed as elastix's initial transform.
    """
    import itk

    fixed, moving = _itk_image(em), _itk_image(lm)
    params = itk.ParameterObject.New()
    pmap = params.GetDefaultParameterMap("affine")
    pmap["WriteResultImage"] = ("false",)
    pmap["AutomaticTransformInitialization"] = ("false" if initial is not None else "true",)
    params.AddParameterMap(pmap)
    method = itk.ElastixRegistrationMethod.New(fixed, moving)
    method.SetParameterObject(params)
    method.SetLogToConsole(False)
    if initial is not None:
        a, c, t = _matrix_centre_translation(initial, _centre(em))
        init = itk.AffineTransform[itk.D, len(c)].New()
        init.SetCenter([float(v) for v in c])
        init.SetMatrix(itk.matrix_from_array(np.ascontiguousarray(a, float)))
        init.SetTranslation([float(v) for v in t])
        method.SetInitialTransform(init)
    with tempfile.TemporaryDirectory() as tmp:
        method.SetOutputDirectory(tmp)
        method.UpdateLargestPossibleRegion()
    combined = method.GetCombinationTransform()
    return affine_from_point_map(
        lambda p: np.asarray(combined.TransformPoint([float(v) for v in p]), float),
        _centre(em))


def _ants_image(vol: Volume):
    import ants

    # ANTsPy arrays are indexed (x, y[, z])
    d = _dim(vol)
    data = vol.data[0].T if d == 2 else vol.data.transpose(2, 1, 0)
    return ants.from_numpy(np.ascontiguousarray(data, np.float32),
                           origin=[float(v) for v in vol.origin_xyz_um[:d]],
                           spacing=[float(v) for v in vol.spacing_xyz_um[:d]])


def ants_affine(em: Volume, lm: Volume, initial: Affine | None = None, *,
                initializer: bool = False) -> Affine:
    """antspyx ``registration(type_of_transform="Affine", aff_metric="mattes")``.

    Starts from ANTs' default (centres of mass), or from ``ants.affine_initializer``
    (multi-start search, default arguments) with ``initializer``, or from ``initial``.
    """
    import ants

    fixed, moving = _ants_image(em), _ants_image(lm)
    with tempfile.TemporaryDirectory() as tmp:
        init = None
        if initializer:
            init = [ants.affine_initializer(fixed, moving, txfn=str(Path(tmp) / "init.mat"))]
        elif initial is not None:
            init = [str(Path(tmp) / "init.mat")]
            sitk.WriteTransform(_sitk_affine(initial, _centre(em)), init[0])
        out = ants.registration(fixed, moving, type_of_transform="Affine",
                                aff_metric="mattes", initial_transform=init,
                                outprefix=str(Path(tmp) / "reg_"))
        tx = ants.read_transform(out["fwdtransforms"][0])
        # the forward transform resamples the moving image onto the fixed grid, i.e. it
        # maps fixed (EM) physical points to moving (LM) physical points
        return affine_from_point_map(lambda p: np.asarray(tx.apply_to_point(list(p)), float),
                                     _centre(em))


PEERS: dict[str, Callable] = {
    "sitk_mi_centred": lambda em, lm, pre: sitk_mi_affine(em, lm),
    "elastix_centred": lambda em, lm, pre: elastix_affine(em, lm),
    "ants_affine": lambda em, lm, pre: ants_affine(em, lm, initializer=False),
    "ants_affine_initializer": lambda em, lm, pre: ants_affine(em, lm, initializer=True),
    "sitk_mi_from_prealign": lambda em, lm, pre: sitk_mi_affine(em, lm, pre),
    "elastix_from_prealign": lambda em, lm, pre: elastix_affine(em, lm, pre),
    "ants_from_prealign": lambda em, lm, pre: ants_affine(em, lm, pre),
}
"""Peer name → ``f(em_working, lm_channel, prealign_em_to_lm) -> em_to_lm``."""


def timed(fn: Callable, *args) -> tuple[Affine | None, float, str | None]:
    """Run a peer; return (transform or None, seconds, error message or None)."""
    t0 = time.perf_counter()
    try:
        out = fn(*args)
        return out, time.perf_counter() - t0, None
    except Exception as exc:  # a peer that crashes counts as a failure, not a benchmark abort
        return None, time.perf_counter() - t0, f"{type(exc).__name__}: {exc}"[:200]
