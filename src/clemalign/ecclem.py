"""eC-CLEM transformation files, in the layout eC-CLEM's current readers parse.

Read from eC-CLEM's source (anrcrocoval/ec-clem 2.2.2: the transformation-schema reader
and the matrix reader): a ``<root>`` holding

* ``<MatrixTransformation m00=… m33=… process_date=…>``: the 4×4 matrix from the source
  image's µm to the target image's µm (read by eC-CLEM's "apply to ROIs" reader);
* ``<transformation type="AFFINE" noiseModel="ISOTROPIC" date=…>`` with two
  ``<sequenceSize type="source|target" dimension="3">`` (``<dimensionSize name="X|Y|Z"
  pixelSize=µm>size in pixels</dimensionSize>``), two ``<sequenceFileName>`` and two
  ``<dataset type="source|target" n dimension="3" pointType="FIDUCIAL">`` of
  ``<point id><coordinate dimension="0|1|2">µm</coordinate>…</point>``: eC-CLEM refits
  its transform from these point pairs (paired by order, least squares).

Source is the image eC-CLEM moves (the LM), target the one it stays on (the EM).  eC-CLEM's
µm are pixel index × pixel size, without an origin: the files here subtract each image's
origin.  Reading takes the matrix when there is one, else fits an affine to the datasets
(eC-CLEM's own schema files hold no matrix).
"""

from __future__ import annotations

import datetime as _dt
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError, reading_text
from .io import atomic_write_text
from .transforms import Affine

__all__ = ["EcclemImage", "write_ecclem_xml", "read_ecclem_xml", "TRANSFORMATION_TYPES",
           "NOISE_MODELS", "POINT_TYPES"]

TRANSFORMATION_TYPES = ("AFFINE", "RIGID", "SIMILARITY", "SPLINE")
NOISE_MODELS = ("ISOTROPIC", "ANISOTROPIC")
POINT_TYPES = ("FIDUCIAL", "NOT_FIDUCIAL", "PREDICTED_ERROR", "MEASURED_ERROR")


@dataclass(frozen=True)
class EcclemImage:
    """What eC-CLEM records of an image: its size in pixels (z, y, x), voxel size
    (z, y, x) µm, origin (x, y, z) µm (subtracted: eC-CLEM has none) and file name."""

    shape_zyx: tuple[int, int, int]
    voxel_size_um: tuple[float, float, float]
    origin_xyz_um: tuple[float, float, float] = (0.0, 0.0, 0.0)
    file: str = ""


def _num(v: float) -> str:
    return repr(float(v))


def _sequence_size(parent: ET.Element, kind: str, image: EcclemImage) -> None:
    node = ET.SubElement(parent, "sequenceSize", {"dimension": "3", "type": kind})
    for name, n, size in zip("XYZ", image.shape_zyx[::-1], image.voxel_size_um[::-1],
                             strict=True):
        # the size is parsed as an integer without trimming: no whitespace around it
        ET.SubElement(node, "dimensionSize", {"name": name, "pixelSize": _num(size)}).text = \
            str(int(n))


def _dataset(parent: ET.Element, kind: str, points: np.ndarray) -> None:
    node = ET.SubElement(parent, "dataset", {"type": kind, "n": str(len(points)),
                                             "dimension": "3", "pointType": "FIDUCIAL"})
    for k, p in enumerate(points):
        point = ET.SubElement(node, "point", {"id": str(k)})
        for d, v in enumerate(p):
            ET.SubElement(point, "coordinate", {"dimension": str(d)}).text = _num(v)


def write_ecclem_xml(path: str | os.PathLike, em_to_lm: Affine, em_points_um: np.ndarray, *,
                     em: EcclemImage, lm: EcclemImage, overwrite: bool = False) -> Path:
    """An eC-CLEM transformation file: LM (source) → EM (target), matrix and point pairs.

    Parameters
    ----------
    path : path
    em_to_lm : Affine
    em_points_um : (n, 3) array
        EM points (physical µm, n ≥ 4 and not coplanar) written as the target dataset;
        their images under ``em_to_lm`` are the source dataset.
    em, lm : EcclemImage
        The images (sizes, voxel sizes, origins, file names).
    overwrite : bool
    """
    em_points = np.asarray(em_points_um, float).reshape(-1, 3)
    lm_points = em_to_lm.apply(em_points)
    # eC-CLEM's µm: index × pixel size, no origin
    to_em = Affine.from_translation(-np.asarray(em.origin_xyz_um, float))
    from_lm = Affine.from_translation(np.asarray(lm.origin_xyz_um, float))
    matrix = (to_em @ em_to_lm.inverse() @ from_lm).matrix
    now = _dt.datetime.now(_dt.UTC)
    root = ET.Element("root")
    ET.SubElement(root, "MatrixTransformation",
                  {**{f"m{r}{c}": _num(matrix[r, c]) for r in range(4) for c in range(4)},
                   "process_date": now.strftime("%a %b %d %H:%M:%S UTC %Y")})
    node = ET.SubElement(root, "transformation", {
        "type": "AFFINE", "noiseModel": "ISOTROPIC",
        "date": now.isoformat(timespec="milliseconds") + "[UTC]"})
    _sequence_size(node, "source", lm)
    _sequence_size(node, "target", em)
    ET.SubElement(node, "sequenceFileName", {"type": "source"}).text = lm.file
    ET.SubElement(node, "sequenceFileName", {"type": "target"}).text = em.file
    _dataset(node, "source", lm_points - np.asarray(lm.origin_xyz_um, float))
    _dataset(node, "target", em_points - np.asarray(em.origin_xyz_um, float))
    ET.indent(root)
    # as Icy writes it: no XML declaration
    return atomic_write_text(path, ET.tostring(root, encoding="unicode") + "\n",
                             overwrite=overwrite)


def _matrix(node: ET.Element, path: Path) -> np.ndarray:
    m = np.eye(4)
    for r in range(4):
        for c in range(4):
            key = f"m{r}{c}"
            if key not in node.attrib:
                raise InputError(f"{path}: <MatrixTransformation> lacks attribute {key}")
            try:
                m[r, c] = float(node.attrib[key])
            except ValueError:
                raise InputError(f"{path}: attribute {key}={node.attrib[key]!r} is not a "
                                 "number") from None
    return m


def _points(node: ET.Element, path: Path) -> np.ndarray:
    rows = []
    for point in node:
        xyz = [0.0, 0.0, 0.0]  # eC-CLEM: missing coordinates are 0
        for coordinate in point:
            try:
                d, v = int(coordinate.get("dimension", "")), float(coordinate.text or "")
            except ValueError:
                raise InputError(f"{path}: a <coordinate> of dataset "
                                 f"{node.get('type')!r} is not a number") from None
            if not 0 <= d <= 2:
                raise InputError(f"{path}: coordinate dimension {d} is not 0, 1 or 2")
            xyz[d] = v
        rows.append(xyz)
    return np.array(rows, float).reshape(-1, 3)


def _fitted(transformation: ET.Element, path: Path) -> Affine:
    from .transform_io import fit_affine

    sets = {d.get("type"): d for d in transformation.findall("dataset")}
    if set(sets) != {"source", "target"}:
        raise InputError(f"{path}: expected a source and a target <dataset>, got "
                         f"{sorted(k or '?' for k in sets)}")
    source, target = _points(sets["source"], path), _points(sets["target"], path)
    if len(source) != len(target) or len(source) < 4:
        raise InputError(f"{path}: {len(source)} source and {len(target)} target points; "
                         "need the same number, at least 4")
    return fit_affine(target, source, origin=path)  # EM (target) → LM (source)


def read_ecclem_xml(path: str | os.PathLike,
                    em_origin_xyz_um: Sequence[float] = (0.0, 0.0, 0.0),
                    lm_origin_xyz_um: Sequence[float] = (0.0, 0.0, 0.0)) -> Affine:
    """``em_to_lm`` from an eC-CLEM file: its matrix (source LM → target EM) when it has
    one, else an affine fitted to its source/target point datasets.

    The origins (physical µm of voxel 0) turn eC-CLEM's origin-less µm back into physical
    ones; they are 0 for files without an origin.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such transform file")
    try:
        with reading_text(path, "eC-CLEM XML"):
            root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise InputError(f"{path}: not valid XML ({exc})") from None
    to_em = Affine.from_translation(-np.asarray(em_origin_xyz_um, float))
    from_lm = Affine.from_translation(np.asarray(lm_origin_xyz_um, float))
    node = root if root.tag == "MatrixTransformation" else root.find(".//MatrixTransformation")
    if node is not None:
        try:
            source_to_target = Affine(_matrix(node, path))
            return from_lm @ source_to_target.inverse() @ to_em
        except ValueError as exc:
            raise InputError(f"{path}: {exc}") from None
    transformation = root.find("transformation")
    if transformation is None:
        raise InputError(f"{path}: neither a <MatrixTransformation> nor a <transformation> "
                         "with point datasets")
    return from_lm @ _fitted(transformation, path) @ to_em
