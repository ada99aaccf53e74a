"""Files a registration leaves behind: transform, LM resampled onto the EM, run record.

Fixed names inside one output folder (``OUTPUT_FILES``).  Every file is written
atomically, and nothing is replaced unless ``overwrite`` is set — checked for all files
before any is written, so a refused run leaves the folder as it was.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np

from .io import ensure_writable, write_json, write_ome_tiff
from .pipeline import RegistrationResult, transform_record
from .prealign import Roi
from .transforms import Affine
from .volume import Volume, to_sitk

__all__ = ["OUTPUT_FILES", "resample_lm_to_em", "write_registration"]

OUTPUT_FILES = ("transform.json", "lm_in_em.ome.tif", "run.json", "prealign.png")


def resample_lm_to_em(lm: Volume, em: Volume, em_to_lm: Affine, roi: Roi | None = None
                      ) -> Volume:
    """Every LM channel resampled onto the EM (ROI) grid, at the EM voxel size.

    SimpleITK's resampler maps each output (EM) point through the transform to the input
    (LM) — exactly ``em_to_lm`` — and interpolates linearly; outside the LM field is 0.

    Returns
    -------
    Volume
        ``(c, z, y, x)`` in the LM's dtype, EM voxel size, origin at the ROI's first voxel.
    """
    import SimpleITK as sitk

    roi = roi or Roi(0, em.shape_zyx[0], 0, em.shape_zyx[1], 0, em.shape_zyx[2])
    origin = em.index_to_physical(np.array([roi.z0, roi.y0, roi.x0], float))
    reference = sitk.Image([roi.shape[2], roi.shape[1], roi.shape[0]], sitk.sitkUInt8)
    reference.SetSpacing(tuple(float(s) for s in em.spacing_xyz_um))
    reference.SetOrigin(tuple(float(o) for o in origin))
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(tuple(float(v) for v in em_to_lm.linear.ravel()))
    transform.SetTranslation(tuple(float(v) for v in em_to_lm.translation_um))
    channels = [lm.data] if lm.data.ndim == 3 else list(lm.data)
    out = None
    for c, data in enumerate(channels):
        image = to_sitk(Volume(np.asarray(data), lm.voxel_size_um, lm.origin_xyz_um))
        resampled = sitk.Resample(image, reference, transform, sitk.sitkLinear, 0.0,
                                  image.GetPixelID())
        array = sitk.GetArrayViewFromImage(resampled)
        if out is None:
            out = np.empty((len(channels),) + array.shape, dtype=array.dtype)
        out[c] = array
    names = lm.channel_names or tuple(f"C{i}" for i in range(len(channels)))
    return Volume(out, em.voxel_size_um, tuple(float(v) for v in origin), names, lm.source)


def write_registration(outdir: str | os.PathLike, result: RegistrationResult, em: Volume,
                       lm: Volume, *, overwrite: bool = False) -> dict[str, Path]:
    """Write ``transform.json``, ``lm_in_em.ome.tif``, ``run.json`` and ``prealign.png``.

    Parameters
    ----------
    outdir : path
        Output folder (created when missing).
    result : RegistrationResult
    em, lm : Volume
        The inputs (LM with all its channels).
    overwrite : bool
        Replace existing files; otherwise refuse before writing anything.

    Returns
    -------
    dict
        File name → path written.
    """
    from . import __version__
    from .figures import plot_prealignment, save_figure

    outdir = Path(outdir)
    paths = {name: ensure_writable(outdir / name, overwrite=overwrite) for name in OUTPUT_FILES}
    written = {}
    written["transform.json"] = write_json(paths["transform.json"],
                                           transform_record(result, em, lm), overwrite=overwrite)
    overlay = resample_lm_to_em(lm, em, result.em_to_lm, result.roi)
    written["lm_in_em.ome.tif"] = write_ome_tiff(paths["lm_in_em.ome.tif"], overlay,
                                                 overwrite=overwrite)
    del overlay
    save_figure(plot_prealignment(result.prealign), paths["prealign.png"])
    written["prealign.png"] = paths["prealign.png"]
    run = {"clemalign_version": __version__, "python": platform.python_version(),
           "inputs": {"em": em.source, "lm": lm.source,
                      "em_voxel_size_um": list(em.voxel_size_um),
                      "lm_voxel_size_um": list(lm.voxel_size_um),
                      "em_shape_zyx": list(em.shape_zyx), "lm_shape": list(lm.data.shape)},
           "config": result.config.to_dict(), "confidence": result.confidence,
           "timings_s": result.timings_s, "outputs": sorted(OUTPUT_FILES)}
    written["run.json"] = write_json(paths["run.json"], run, overwrite=overwrite)
    return written
