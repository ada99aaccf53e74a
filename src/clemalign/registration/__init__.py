"""3D fine registration (stage 3): mutual information between LoG-EM and LoG-LM.

SimpleITK maximises Mattes mutual information between the 3D LoG of the EM ROI (fixed)
and of the LM around the pre-aligned position (moving), first over a rigid transform,
then over a 12-parameter affine initialised from the rigid result.  The transform found
maps EM physical points to LM physical points (µm) — exactly ``em_to_lm``.

Modules
-------
config
    :class:`Registration3DConfig`, :class:`StageResult`, :class:`Registration3DResult`.
working
    Working grid: resampling (:func:`working_volume`), LM crop, LoG images, x mirror.
metric
    Our mutual-information metric on fixed samples (compares placements).
stages
    One SimpleITK stage, rigid or affine (:func:`~clemalign.registration.stages.run_stage`).
starts
    z search (direction, tilt), start trials, perturbations of the result.
core
    :func:`register_3d`, which puts them together.
plane
    :func:`register_plane`: sections and stacks too thin for a 3D fit, refined in-plane.
"""

from .config import Registration3DConfig, Registration3DResult, StageResult
from .core import register_3d
from .plane import register_plane, too_thin_for_3d
from .working import mirror_x, working_volume

__all__ = ["Registration3DConfig", "Registration3DResult", "StageResult", "mirror_x",
           "register_3d", "register_plane", "too_thin_for_3d", "working_volume"]
