"""The result of both simulators and the files it is written to.

:class:`SimulatedPair` holds the two volumes and their ground truth;
:func:`write_simulated_pair` writes them as the inputs of ``clemalign register``
(``em.ome.tif``, ``lm.ome.tif``) and the answer: ``truth.json`` (the transforms, drawn
parameters and config) and ``landmarks.csv`` (corresponding points in µm).
"""

from __future__ import annotations

import csv
import io as _io
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..transforms import Affine
from ..volume import Volume

__all__ = ["SimulatedPair", "write_simulated_pair", "landmarks_csv_text", "SIMULATED_FILES",
           "LANDMARK_COLUMNS"]

SIMULATED_FILES = ("em.ome.tif", "lm.ome.tif", "truth.json", "landmarks.csv")
LANDMARK_COLUMNS = ("name", "em_x_um", "em_y_um", "em_z_um", "lm_x_um", "lm_y_um", "lm_z_um")


@dataclass(frozen=True, eq=False)
class SimulatedPair:
    """A simulated EM/LM pair and its ground truth.

    Attributes
    ----------
    em : Volume
        EM volume, uint8, ``(z, y, x)``.
    lm : Volume
        LM volume, uint16, ``(c, z, y, x)`` with channels ``("mito", "autofluorescence")``.
    em_to_lm : Affine
        True transform from EM physical points to LM physical points (µm).
    landmarks_em_um, landmarks_lm_um : ndarray, shape (n, 3)
        Corresponding ``(x, y, z)`` points (mitochondrion centres inside the EM field);
        ``landmarks_lm_um == em_to_lm.apply(landmarks_em_um)``.
    config : SimulationConfig or TissueConfig
        The configuration that produced the pair.
    parameters : dict
        The drawn truth parameters (rotation, mirror, tilts, scales, field centres).
    roi : str, optional
        ``"z0:z1,y0:y1,x0:x1"`` EM region to register (the ``--roi`` a user would give);
        ``None``: the whole EM.
    scene : {"monolayer", "tissue"}
        Which simulator made the pair (:func:`simulate_pair` or
        :func:`~clemalign.synthetic.simulate_tissue_pair`).
    """

    em: Volume
    lm: Volume
    em_to_lm: Affine
    landmarks_em_um: np.ndarray
    landmarks_lm_um: np.ndarray
    config: object
    parameters: dict = field(default_factory=dict)
    roi: str | None = None
    scene: str = "monolayer"


def landmarks_csv_text(em_points_um: np.ndarray, lm_points_um: np.ndarray,
                       names: list[str] | None = None) -> str:
    """Landmark pairs as CSV text with the columns of :data:`LANDMARK_COLUMNS`.

    Parameters
    ----------
    em_points_um, lm_points_um : ndarray, shape (n, 3)
        Corresponding physical ``(x, y, z)`` points (µm) in the EM and the LM.
    names : list of str, optional
        One name per pair; default ``L1``, ``L2``, ...

    Returns
    -------
    str
        A header row and one row per pair; values written with ``repr`` so that they
        read back exactly.
    """
    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(LANDMARK_COLUMNS)
    for n, (e, m) in enumerate(zip(em_points_um, lm_points_um, strict=True)):
        name = names[n] if names else f"L{n + 1}"
        writer.writerow([name] + [repr(float(v)) for v in (*e, *m)])
    return buf.getvalue()


def write_simulated_pair(outdir: str | os.PathLike, pair: SimulatedPair, *,
                         overwrite: bool = False) -> dict[str, Path]:
    """Write ``em.ome.tif``, ``lm.ome.tif``, ``truth.json`` and ``landmarks.csv``.

    Parameters
    ----------
    outdir : path-like
        Folder to write into (created if missing).
    pair : SimulatedPair
        The pair and its truth.
    overwrite : bool
        Replace existing files; otherwise nothing is written if any of them exists.

    Returns
    -------
    dict of str to Path
        The path of each file of :data:`SIMULATED_FILES`.

    Raises
    ------
    InputError
        If a file exists and ``overwrite`` is false.
    """
    # imported here: the package imports this module while it initialises
    from .. import __version__
    from ..io.output_folder import staged_output

    outdir = Path(outdir)
    with staged_output(outdir, SIMULATED_FILES, overwrite=overwrite) as staging:
        _write_files(staging, pair, __version__)
    return {name: outdir / name for name in SIMULATED_FILES}


def _write_files(folder: Path, pair: SimulatedPair, version: str) -> None:
    from ..io import atomic_write_text, write_json, write_ome_tiff

    paths = {name: folder / name for name in SIMULATED_FILES}
    write_ome_tiff(paths["em.ome.tif"], pair.em)
    write_ome_tiff(paths["lm.ome.tif"], pair.lm)
    truth = {
        "em_to_lm": pair.em_to_lm.to_list(),
        "lm_to_em": pair.em_to_lm.inverse().to_list(),
        "convention": ("4x4 matrices act on physical (x, y, z, 1) in micrometres; em_to_lm maps "
                       "an EM physical point to the LM physical point showing the same place"),
        "em_voxel_size_um": list(pair.em.voxel_size_um),
        "lm_voxel_size_um": list(pair.lm.voxel_size_um),
        "parameters": pair.parameters,
        "scene": pair.scene,
        "roi": pair.roi,
        "config": asdict(pair.config),
        "clemalign_version": version,
    }
    write_json(paths["truth.json"], truth, overwrite=False)
    atomic_write_text(paths["landmarks.csv"],
                      landmarks_csv_text(pair.landmarks_em_um, pair.landmarks_lm_um),
                      overwrite=False)
