"""Transform exports round-trip; the consuming library maps points as em_to_lm does."""

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi

from clemalign import Affine, InputError, Volume
from clemalign.evaluation import (
    read_landmarks_csv,
    read_points_csv,
    sample_on_em_plane,
    tre_table,
)
from clemalign.outputs import resample_lm_to_em
from clemalign.transform_io import (
    EcclemImage,
    napari_affine,
    read_bigwarp_csv,
    read_ecclem_xml,
    read_itk_tfm,
    read_transform,
    roi_points_um,
    write_bigwarp_csv,
    write_ecclem_xml,
    write_itk_tfm,
    write_ngff_transform,
)
from clemalign.transforms import rotation_matrix_xyz

EM_TO_LM = Affine.from_linear_translation(
    rotation_matrix_xyz((2.0, -1.5, 12.0)) @ np.diag([1.03, 0.98, 1.01]), [55.2, -3.1, 1.7])
POINTS = roi_points_um([0, 0, 0], [93.2, 126.4, 12.3])


def test_itk_tfm_round_trip_and_sitk_mapping(tmp_path):
    path = write_itk_tfm(tmp_path / "t.tfm", EM_TO_LM)
    np.testing.assert_allclose(read_itk_tfm(path).matrix, EM_TO_LM.matrix, atol=1e-9)
    tx = sitk.ReadTransform(str(path))
    mapped = np.array([tx.TransformPoint(tuple(p)) for p in POINTS])
    np.testing.assert_allclose(mapped, EM_TO_LM.apply(POINTS), atol=1e-9)
    with pytest.raises(InputError, match="exists"):
        write_itk_tfm(path, EM_TO_LM)


def test_bigwarp_round_trip(tmp_path):
    path = write_bigwarp_csv(tmp_path / "landmarks.csv", EM_TO_LM, POINTS)
    first = path.read_text().splitlines()[0].split(",")
    assert first[0] == '"Pt-0"' and first[1] == '"true"'
    # moving (LM) first, then target (EM)
    np.testing.assert_allclose([float(v.strip('"')) for v in first[2:5]],
                               EM_TO_LM.apply(POINTS[:1])[0], atol=1e-9)
    np.testing.assert_allclose(read_bigwarp_csv(path).matrix, EM_TO_LM.matrix, atol=1e-9)


EM_IMAGE = EcclemImage((120, 900, 700), (0.05, 0.14, 0.14), (3.0, -2.0, 0.5), "em.tif")
LM_IMAGE = EcclemImage((20, 400, 300), (0.6, 0.22, 0.22), (0.0, 0.0, 0.0), "lm.tif")


def _ecclem_reader_checks(path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse the file as eC-CLEM 2.2.2's readers do (every element and attribute they
    require, with their rules), returning its matrix and the source and target points."""
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    node = root.find("MatrixTransformation")
    matrix = np.array([[float(node.attrib[f"m{r}{c}"]) for c in range(4)] for r in range(4)])
    transformation = root.find("transformation")  # the first direct child of that name
    assert transformation.get("type") in ("AFFINE", "RIGID", "SIMILARITY", "SPLINE")
    assert transformation.get("noiseModel") in ("ISOTROPIC", "ANISOTROPIC")
    sizes = transformation.findall("sequenceSize")
    assert [s.get("type") for s in sizes] == ["source", "target"]  # exactly two
    for size in sizes:
        dims = {d.get("name"): d for d in size}
        assert set(dims) == {"X", "Y", "Z"}
        for d in dims.values():
            assert d.text == d.text.strip() and int(d.text) > 0  # Integer.parseInt
            assert float(d.get("pixelSize")) > 0
    datasets = transformation.findall("dataset")
    assert [d.get("type") for d in datasets] == ["source", "target"]
    points = []
    for d in datasets:
        assert d.get("pointType") == "FIDUCIAL" and int(d.get("dimension")) == 3
        rows = []
        for point in d:
            assert point.tag == "point"
            assert all(c.tag == "coordinate" for c in point) and len(point) <= 3
            row = [0.0] * 3
            for c in point:
                row[int(c.get("dimension"))] = float(c.text)
            rows.append(row)
        points.append(np.array(rows))
    assert len(points[0]) == len(points[1]) >= 3
    return matrix, points[0], points[1]


def test_ecclem_file_as_ecclem_reads_it(tmp_path):
    """eC-CLEM reads the matrix (source LM µm → target EM µm, its µm without origins) and
    refits the same affine from the point pairs (least squares on [1 x y z] rows)."""
    path = write_ecclem_xml(tmp_path / "t.xml", EM_TO_LM, POINTS, em=EM_IMAGE, lm=LM_IMAGE)
    matrix, source, target = _ecclem_reader_checks(path)
    shift_em = Affine.from_translation(-np.asarray(EM_IMAGE.origin_xyz_um))
    expected = shift_em @ EM_TO_LM.inverse()
    np.testing.assert_allclose(matrix, expected.matrix, atol=1e-9)
    design = np.hstack([np.ones((len(source), 1)), source])
    coef = np.linalg.pinv(design.T @ design) @ design.T @ target  # eC-CLEM's AFFINE fit
    np.testing.assert_allclose(design @ coef, target, atol=1e-9)
    np.testing.assert_allclose(expected.apply(source), target, atol=1e-9)
    np.testing.assert_allclose(
        read_ecclem_xml(path, EM_IMAGE.origin_xyz_um, LM_IMAGE.origin_xyz_um).matrix,
        EM_TO_LM.matrix, atol=1e-9)


def test_ecclem_point_only_schema_reads_back(tmp_path):
    """eC-CLEM's own transformation-schema files hold only the point pairs: the affine
    is fitted to them."""
    import xml.etree.ElementTree as ET

    path = write_ecclem_xml(tmp_path / "t.xml", EM_TO_LM, POINTS, em=LM_IMAGE, lm=LM_IMAGE)
    tree = ET.parse(path)
    tree.getroot().remove(tree.getroot().find("MatrixTransformation"))
    schema = tmp_path / "x_to_y_2026_12_02_10_00_00.transformation_schema.xml"
    tree.write(schema)
    np.testing.assert_allclose(read_ecclem_xml(schema).matrix, EM_TO_LM.matrix, atol=1e-9)
    np.testing.assert_allclose(read_transform(schema).matrix, EM_TO_LM.matrix, atol=1e-9)


def test_ngff_transform_maps_em_points_to_lm_points(tmp_path):
    """The NGFF affine, applied as the spec says (a point's z y x coordinates in the
    input system, times the 3×4 matrix, gives the output's), maps EM to LM points; and
    it reads back (also as 4×4)."""
    import json

    path = write_ngff_transform(tmp_path / "ngff_transform.json", EM_TO_LM)
    doc = json.loads(path.read_text())["ome"]
    assert doc["version"] == "0.6"
    systems = {s["name"]: s for s in doc["scene"]["coordinateSystems"]}
    assert [a["name"] for a in systems["em"]["axes"]] == ["z", "y", "x"]
    assert {a["unit"] for a in systems["lm"]["axes"]} == {"micrometer"}
    (t,) = doc["scene"]["coordinateTransformations"]
    assert (t["type"], t["input"]["name"], t["output"]["name"]) == ("affine", "em", "lm")
    a = np.asarray(t["affine"])
    assert a.shape == (3, 4)
    zyx = POINTS[:, ::-1]
    mapped = (a[:, :3] @ zyx.T).T + a[:, 3]
    np.testing.assert_allclose(mapped[:, ::-1], EM_TO_LM.apply(POINTS), atol=1e-9)
    np.testing.assert_allclose(read_transform(path).matrix, EM_TO_LM.matrix, atol=1e-12)
    t["affine"] = np.vstack([a, [0, 0, 0, 1]]).tolist()
    square = tmp_path / "square.json"
    square.write_text(json.dumps({"ome": doc}))
    np.testing.assert_allclose(read_transform(square).matrix, EM_TO_LM.matrix, atol=1e-12)
    t["affine"] = [[1, 2], [3, 4]]
    square.write_text(json.dumps({"ome": doc}))
    with pytest.raises(InputError, match="3×4 or 4×4"):
        read_transform(square)


def test_napari_affine_matches_lm_in_em():
    rng = np.random.default_rng(0)
    lm_data = ndi.gaussian_filter(rng.random((12, 80, 90)), 2).astype(np.float32)
    lm = Volume(lm_data, (0.6, 0.22, 0.22), (1.0, 2.0, 0.5))
    em = Volume(np.zeros((10, 40, 50), np.uint8), (0.5, 0.3, 0.3), (0.0, 0.0, 0.0))
    em_to_lm = Affine.from_linear_translation(rotation_matrix_xyz((0, 0, 8.0)), [4.0, 3.0, 2.0])
    reference = resample_lm_to_em(lm, em, em_to_lm).data[0]
    a = napari_affine(em_to_lm, lm.voxel_size_um, lm.origin_xyz_um)
    em_index_to_world = np.diag([0.5, 0.3, 0.3, 1.0])  # EM layer: scale, translate 0
    to_lm_index = np.linalg.inv(a) @ em_index_to_world
    napari_view = ndi.affine_transform(lm_data, to_lm_index, output_shape=em.shape_zyx, order=1,
                                       mode="constant", cval=0)
    inside = reference > 0
    assert inside.mean() > 0.5
    np.testing.assert_allclose(napari_view[inside], reference[inside], atol=1e-4)


@pytest.mark.parametrize("content, message", [
    ("not xml", "not valid XML"),
    ("<root><other/></root>", "neither a <MatrixTransformation>"),
    ("<root><transformation><dataset type=\"source\"/></transformation></root>",
     "a source and a target"),
    ('<root><MatrixTransformation m00="1"/></root>', "lacks attribute m01"),
])
def test_bad_ecclem(tmp_path, content, message):
    path = tmp_path / "bad.xml"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        read_transform(path)


def test_bad_transform_files(tmp_path):
    bad_csv = tmp_path / "bw.csv"
    bad_csv.write_text('"Pt-0","true",1,2,3,4,5,6\n"Pt-1","true",1,2,x,4,5,6\n')
    with pytest.raises(InputError, match="line 2"):
        read_transform(bad_csv)
    bad_json = tmp_path / "t.json"
    bad_json.write_text('{"em_to_lm": [[1, 0], [0, 1]]}')
    with pytest.raises(InputError, match="em_to_lm"):
        read_transform(bad_json)
    (tmp_path / "t.tfm").write_text("garbage\n")
    with pytest.raises(InputError, match="ITK"):
        read_transform(tmp_path / "t.tfm")
    with pytest.raises(InputError, match="unknown transform format"):
        read_transform(tmp_path / "t.nrrd")


def test_landmarks_physical_and_index(tmp_path):
    phys = tmp_path / "l.csv"
    phys.write_text("name,em_x_um,em_y_um,em_z_um,lm_x_um,lm_y_um,lm_z_um\n"
                    "a,1,2,3,11,12,13\nb,0,0,0,10,10,10\n")
    lm = read_landmarks_csv(phys)
    table = tre_table(Affine.from_translation([10, 10, 10]), lm, em_pixel_um=0.1)
    assert table["summary"]["max_um"] == pytest.approx(0.0)
    shifted = tre_table(Affine.from_translation([10, 10, 10.5]), lm, em_pixel_um=0.1)
    assert shifted["summary"]["mean_em_px"] == pytest.approx(5.0)
    index = tmp_path / "i.csv"
    index.write_text("name,em_k,em_j,em_i,lm_k,lm_j,lm_i\na,2,3,4,1,1,1\n")
    pts = read_landmarks_csv(index, em_voxel_size_um=(0.5, 0.2, 0.1),
                             lm_voxel_size_um=(0.6, 0.22, 0.22))
    np.testing.assert_allclose(pts.em_um[0], [0.4, 0.6, 1.0])
    with pytest.raises(InputError, match="voxel-size"):
        read_landmarks_csv(index)
    bad = tmp_path / "b.csv"
    bad.write_text("name,em_x_um,em_y_um,em_z_um,lm_x_um,lm_y_um,lm_z_um\na,1,2,oops,4,5,6\n")
    with pytest.raises(InputError, match="line 2: field 'em_z_um'"):
        read_landmarks_csv(bad)
    (tmp_path / "h.csv").write_text("x,y\n1,2\n")
    with pytest.raises(InputError, match="header lacks"):
        read_landmarks_csv(tmp_path / "h.csv")
    pts_file = tmp_path / "p.csv"
    pts_file.write_text("name,x_um,y_um,z_um\nq,1,2,3\n")
    names, values = read_points_csv(pts_file)
    assert names == ("q",) and values.tolist() == [[1.0, 2.0, 3.0]]


def test_sample_on_em_plane_pairs_the_same_physical_points():
    # one smooth scene f(x, y) (LM frame), drawn on an LM grid and, through a known
    # rotation + shift + anisotropic pixels, on an EM grid: the samples must agree
    def scene(x, y):
        return np.sin(0.3 * x) + np.cos(0.2 * y) + 0.01 * x * y

    em_to_lm = Affine.from_linear_translation(rotation_matrix_xyz((0.0, 0.0, 25.0)),
                                              [12.0, 3.0, 0.7])
    em_sp, lm_sp = (0.1, 0.07), (0.25, 0.3)
    jj, ii = np.mgrid[0:200, 0:260]
    em_pts = np.stack([ii.ravel() * em_sp[1], jj.ravel() * em_sp[0], np.full(ii.size, 2.0)], 1)
    lm_pts = em_to_lm.apply(em_pts)
    em_img = scene(lm_pts[:, 0], lm_pts[:, 1]).reshape(ii.shape)
    jl, il = np.mgrid[0:200, 0:200]
    lm_img = scene(il * lm_sp[1], jl * lm_sp[0])
    e, m = sample_on_em_plane(em_img, em_sp, lm_img, lm_sp, em_to_lm, z_um=2.0, pixel_um=0.5)
    assert e.size == len(np.arange(0.25, 19.9, 0.5)) * len(np.arange(0.25, 18.13, 0.5))
    assert np.abs(e - m).max() < 0.02  # linear interpolation of a smooth scene
    # a 1 µm error in the transform is visible
    off = Affine.from_translation([1.0, 0.0, 0.0]) @ em_to_lm
    e2, m2 = sample_on_em_plane(em_img, em_sp, lm_img, lm_sp, off, z_um=2.0, pixel_um=0.5)
    assert np.abs(e2 - m2).mean() > 0.1


def test_napari_layers_as_the_json_says_put_landmarks_together(tmp_path):
    """Layers added exactly as napari_affine.json says: an EM point and its LM point
    (em_to_lm) land on the same napari world position (napari's own transforms)."""
    import json
    import warnings

    with warnings.catch_warnings():  # napari's own deprecation warnings on import
        warnings.simplefilter("ignore")
        layers = pytest.importorskip("napari.layers", reason="napari is not installed "
                                                             "(pip install \"clemalign[napari]\")")
    from clemalign.transform_io import write_napari_json

    em = Volume(np.zeros((30, 80, 90), np.uint8), (0.05, 0.14, 0.14), (1.5, -2.0, 0.3))
    lm = Volume(np.zeros((12, 60, 70), np.uint16), (0.6, 0.22, 0.22), (4.0, 3.0, -1.0))
    path = write_napari_json(tmp_path / "napari_affine.json", EM_TO_LM, lm.voxel_size_um,
                             lm.origin_xyz_um, em.voxel_size_um, em.origin_xyz_um)
    spec = json.loads(path.read_text())
    em_layer = layers.Image(em.data, scale=spec["em_scale_zyx"],
                            translate=spec["em_translate_zyx"])
    with warnings.catch_warnings():  # its 2D view of a rotated LM (the README's caveat)
        warnings.filterwarnings("ignore", "Non-orthogonal slicing", UserWarning)
        lm_layer = layers.Image(lm.data, affine=spec["lm_affine_zyx"])
    em_points = em.index_to_physical(np.array([[3, 10, 20], [25, 70, 5], [12, 40, 80]], float))
    for p_em, p_lm in zip(em_points, EM_TO_LM.apply(em_points), strict=True):
        world_em = em_layer.data_to_world(em.physical_to_index(p_em[None])[0])
        world_lm = lm_layer.data_to_world(lm.physical_to_index(p_lm[None])[0])
        np.testing.assert_allclose(world_lm, world_em, atol=1e-6)
