"""Transform files other tools read, and reading them back.

Every function takes or returns :class:`~clemalign.transforms.Affine` ``em_to_lm`` (EM
physical µm → LM physical µm, see ``docs/conventions.md``).

=====================  ==========================================================
format                 what is written
=====================  ==========================================================
ITK ``.tfm``           ``AffineTransform_double_3_3`` written by SimpleITK; ITK maps
                       fixed → moving points, so with the EM as fixed image it is
                       ``em_to_lm`` itself (``sitk.ReadTransform`` gives it back).
BigWarp ``.csv``       landmark rows ``name, "true", moving x y z, target x y z`` with
                       moving = LM and target = EM points (µm): the ROI corners and
                       centre mapped through the transform, for refining by hand.
                       Reading fits an affine to the rows by least squares.
napari ``.json``       4×4 in ``(z, y, x)`` order for ``viewer.add_image(lm_channel,
                       affine=A)`` that places LM voxels over an EM layer added with
                       ``scale=em_voxel_size_um, translate=em origin (z, y, x)``.
eC-CLEM ``.xml``       the matrix (LM → EM: eC-CLEM moves the source image onto the
                       target) and the point-pair datasets in the layout eC-CLEM's
                       current readers parse (:mod:`clemalign.ecclem`).
OME-NGFF ``.json``     an NGFF 0.6 scene: coordinate systems ``em`` and ``lm`` (axes
                       z, y, x in micrometer) and an ``affine`` coordinate
                       transformation from ``em`` to ``lm`` (3×4, z y x order).
``transform.json``     clemalign's own record (``em_to_lm``).
=====================  ==========================================================
"""

from __future__ import annotations

import csv
import io as _io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .ecclem import EcclemImage, read_ecclem_xml, write_ecclem_xml
from .errors import InputError, reading_text
from .io import atomic_write_text
from .transforms import Affine

__all__ = ["roi_points_um", "write_itk_tfm", "read_itk_tfm", "write_bigwarp_csv",
           "read_bigwarp_csv", "napari_affine", "write_napari_json", "write_ecclem_xml",
           "read_ecclem_xml", "EcclemImage", "write_ngff_transform", "read_ngff_transform",
           "read_transform", "fit_affine", "lm_to_em_zyx"]

NGFF_VERSION = "0.6"

# (x, y, z) <-> (z, y, x) on homogeneous 4-vectors; its own inverse
_SWAP = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)


def write_itk_tfm(path: str | os.PathLike, em_to_lm: Affine, *, overwrite: bool = False
                  ) -> Path:
    """Write ``em_to_lm`` as an ITK affine transform file (``.tfm``) via SimpleITK."""
    import SimpleITK as sitk

    tx = sitk.AffineTransform(3)
    tx.SetMatrix(tuple(float(v) for v in em_to_lm.linear.ravel()))
    tx.SetTranslation(tuple(float(v) for v in em_to_lm.translation_um))

    def write(tmp: Path) -> None:
        sitk.WriteTransform(tx, str(tmp))

    from .io import atomic_write

    return atomic_write(Path(path), overwrite, write)


def read_itk_tfm(path: str | os.PathLike) -> Affine:
    """Read an ITK transform file holding one affine-like 3D transform."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such transform file")
    try:
        tx = sitk.ReadTransform(str(path))
    except RuntimeError as exc:
        raise InputError(f"{path}: not a readable ITK transform file "
                         f"({str(exc).strip().splitlines()[-1]})") from None
    if tx.GetName() == "CompositeTransform":
        composite = sitk.CompositeTransform(tx)
        if composite.GetNumberOfTransforms() != 1:
            raise InputError(f"{path}: holds {composite.GetNumberOfTransforms()} transforms; "
                             "expected a single affine transform")
        tx = composite.GetNthTransform(0)
    if tx.GetDimension() != 3:
        raise InputError(f"{path}: a {tx.GetDimension()}D {tx.GetName()}; clemalign's "
                         "transforms are 3D (write the 2D one as 3D with z unchanged)")
    if not hasattr(tx, "GetMatrix"):
        try:
            tx = sitk.AffineTransform(tx)
        except RuntimeError:
            raise InputError(f"{path}: {tx.GetName()} is not a 3D affine transform") from None
    a = np.asarray(tx.GetMatrix(), float).reshape(3, 3)
    c = np.asarray(tx.GetCenter(), float)
    t = np.asarray(tx.GetTranslation(), float)
    return Affine.from_linear_translation(a, c + t - a @ c)


def roi_points_um(corner_min_xyz: Sequence[float], corner_max_xyz: Sequence[float]
                  ) -> np.ndarray:
    """The 8 corners and the centre of a box (µm): well-spread points for landmark files."""
    lo, hi = np.asarray(corner_min_xyz, float), np.asarray(corner_max_xyz, float)
    corners = np.array([[x, y, z] for z in (lo[2], hi[2]) for y in (lo[1], hi[1])
                        for x in (lo[0], hi[0])])
    return np.vstack([corners, (lo + hi) / 2])


def write_bigwarp_csv(path: str | os.PathLike, em_to_lm: Affine, em_points_um: np.ndarray, *,
                      overwrite: bool = False) -> Path:
    """BigWarp landmarks: moving = LM points, target = EM points (µm), one row each."""
    em_points = np.asarray(em_points_um, float).reshape(-1, 3)
    lm_points = em_to_lm.apply(em_points)
    buf = _io.StringIO()
    writer = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n")
    for k, (m, t) in enumerate(zip(lm_points, em_points, strict=True)):
        writer.writerow([f"Pt-{k}", "true", *(repr(float(v)) for v in m),
                         *(repr(float(v)) for v in t)])
    return atomic_write_text(path, buf.getvalue(), overwrite=overwrite)


def fit_affine(source_um: np.ndarray, target_um: np.ndarray, *,
               origin: str | os.PathLike = "fit_affine") -> Affine:
    """Least-squares affine mapping ``source`` points onto ``target`` points (≥ 4, not
    coplanar); ``origin`` (the file the points came from) starts the error messages."""
    src = np.asarray(source_um, float)
    dst = np.asarray(target_um, float)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3 or len(src) < 4:
        raise InputError(f"{origin}: need at least 4 point pairs in 3D")
    design = np.hstack([src, np.ones((len(src), 1))])
    if np.linalg.matrix_rank(design) < 4:
        raise InputError(f"{origin}: the points are coplanar; an affine is not determined")
    solution, *_ = np.linalg.lstsq(design, dst, rcond=None)
    m = np.eye(4)
    m[:3, :] = solution.T
    return Affine(m)


def read_bigwarp_csv(path: str | os.PathLike) -> Affine:
    """Fit ``em_to_lm`` to a BigWarp landmarks file (moving = LM, target = EM).

    Rows whose second field is ``false`` (inactive in BigWarp) are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such landmarks file")
    lm_pts, em_pts = [], []
    with reading_text(path, "BigWarp landmarks file"), \
            open(path, newline="", encoding="utf-8-sig") as fh:
        for line_no, row in enumerate(csv.reader(fh), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) != 8:
                raise InputError(f"{path}, line {line_no}: expected 8 fields (name, active, "
                                 f"moving x y z, target x y z), got {len(row)}")
            if row[1].strip().lower() == "false":
                continue
            try:
                values = [float(v) for v in row[2:]]
            except ValueError:
                raise InputError(f"{path}, line {line_no}: coordinates must be numbers, "
                                 f"got {row[2:]}") from None
            if not all(np.isfinite(values)):
                raise InputError(f"{path}, line {line_no}: coordinates must be finite "
                                 f"numbers, got {row[2:]}")
            lm_pts.append(values[:3])
            em_pts.append(values[3:])
    if len(lm_pts) < 4:
        raise InputError(f"{path}: {len(lm_pts)} active landmark pairs; need at least 4")
    return fit_affine(np.array(em_pts), np.array(lm_pts), origin=path)


def lm_to_em_zyx(em_to_lm: Affine) -> np.ndarray:
    """``lm_to_em`` as a 4×4 on napari's ``(z, y, x)`` world points (µm): the affine of an
    LM layer that keeps its own scale and translate."""
    return _SWAP @ em_to_lm.inverse().matrix @ _SWAP


def napari_affine(em_to_lm: Affine, lm_voxel_size_um: Sequence[float],
                  lm_origin_xyz_um: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """4×4 ``(z, y, x)`` affine placing LM *voxel indices* in the EM's world (µm).

    Use ``viewer.add_image(em, scale=em_voxel_size_um, translate=em_origin_zyx)`` and
    ``viewer.add_image(lm_channel, affine=A)`` (no scale/translate on the LM layer).
    """
    sz, sy, sx = (float(v) for v in lm_voxel_size_um)
    ox, oy, oz = (float(v) for v in lm_origin_xyz_um)
    index_to_lm_zyx = np.array([[sz, 0, 0, oz], [0, sy, 0, oy], [0, 0, sx, ox], [0, 0, 0, 1]])
    return lm_to_em_zyx(em_to_lm) @ index_to_lm_zyx


def write_napari_json(path: str | os.PathLike, em_to_lm: Affine,
                      lm_voxel_size_um: Sequence[float], lm_origin_xyz_um: Sequence[float],
                      em_voxel_size_um: Sequence[float], em_origin_xyz_um: Sequence[float], *,
                      overwrite: bool = False) -> Path:
    """The napari affine with the EM layer's scale/translate and how to use them."""
    record = {
        "lm_affine_zyx": napari_affine(em_to_lm, lm_voxel_size_um, lm_origin_xyz_um).tolist(),
        "em_scale_zyx": [float(v) for v in em_voxel_size_um],
        "em_translate_zyx": [float(v) for v in list(em_origin_xyz_um)[::-1]],
        "usage": "viewer.add_image(em, scale=em_scale_zyx, translate=em_translate_zyx); "
                 "viewer.add_image(lm_channel, affine=lm_affine_zyx)",
    }
    return atomic_write_text(path, json.dumps(record, indent=2) + "\n", overwrite=overwrite)


def _ngff_system(name: str) -> dict:
    return {"name": name, "axes": [{"name": a, "type": "space", "unit": "micrometer"}
                                   for a in ("z", "y", "x")]}


def write_ngff_transform(path: str | os.PathLike, em_to_lm: Affine, *,
                         overwrite: bool = False) -> Path:
    """``em_to_lm`` as an OME-NGFF 0.6 scene: an ``affine`` from coordinate system ``em``
    to ``lm`` (µm, axes z y x; the 3×4 matrix maps an EM point to its LM point)."""
    zyx = _SWAP @ em_to_lm.matrix @ _SWAP
    doc = {"ome": {"version": NGFF_VERSION, "scene": {
        "coordinateSystems": [_ngff_system("em"), _ngff_system("lm")],
        "coordinateTransformations": [{
            "type": "affine", "name": "em_to_lm", "affine": zyx[:3].tolist(),
            "input": {"name": "em"}, "output": {"name": "lm"}}]}}}
    return atomic_write_text(path, json.dumps(doc, indent=2) + "\n", overwrite=overwrite)


def read_ngff_transform(record: dict, path: str | os.PathLike) -> Affine:
    """``em_to_lm`` from an NGFF scene holding one affine between two coordinate systems
    (``input`` → ``output``; 3×4 or 4×4, axes z y x)."""
    try:
        scene = record["ome"]["scene"]
        systems = {s["name"]: [a["name"] for a in s["axes"]]
                   for s in scene["coordinateSystems"]}
        affines = [t for t in scene["coordinateTransformations"] if t.get("type") == "affine"]
    except (KeyError, TypeError):
        raise InputError(f"{path}: not an OME-NGFF scene (ome.scene with coordinateSystems "
                         "and coordinateTransformations)") from None
    if len(affines) != 1 or "affine" not in affines[0]:
        raise InputError(f"{path}: expected one inline affine coordinate transformation, "
                         f"found {len(affines)}")
    t = affines[0]
    for end in ("input", "output"):
        name = t.get(end, {}).get("name") if isinstance(t.get(end), dict) else t.get(end)
        if systems.get(name) != ["z", "y", "x"]:
            raise InputError(f"{path}: the {end} coordinate system must have axes z, y, x; "
                             f"got {systems.get(name)}")
    m = np.asarray(t["affine"], dtype=float)
    if m.shape == (3, 4):
        m = np.vstack([m, [0, 0, 0, 1]])
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise InputError(f"{path}: the affine must be 3×4 or 4×4 finite numbers, got shape "
                         f"{m.shape}")
    return Affine(_SWAP @ m @ _SWAP)


def read_transform(path: str | os.PathLike) -> Affine:
    """``em_to_lm`` from any supported file: clemalign ``.json``, OME-NGFF ``.json``, ITK
    ``.tfm``/``.txt``, BigWarp ``.csv``, eC-CLEM ``.xml``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        if not path.is_file():
            raise InputError(f"{path}: no such transform file")
        try:
            with reading_text(path, "transform JSON"):
                record = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
        if isinstance(record, dict) and "ome" in record:
            return read_ngff_transform(record, path)
        if not isinstance(record, dict) or "em_to_lm" not in record:
            raise InputError(f"{path}: no 'em_to_lm' field; expected clemalign's transform.json "
                             "or an OME-NGFF transformation")
        try:
            return Affine(np.asarray(record["em_to_lm"], dtype=float))
        except (ValueError, TypeError) as exc:
            raise InputError(f"{path}: field 'em_to_lm' is not a valid 4×4 matrix ({exc})"
                             ) from None
    if suffix in (".tfm", ".txt", ".h5", ".hdf5", ".mat"):
        return read_itk_tfm(path)
    if suffix == ".csv":
        return read_bigwarp_csv(path)
    if suffix == ".xml":
        return read_ecclem_xml(path)
    raise InputError(f"{path}: unknown transform format {suffix!r}; use transform.json, an ITK "
                     ".tfm, a BigWarp landmarks .csv or an eC-CLEM .xml")
