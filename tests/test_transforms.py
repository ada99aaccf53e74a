import numpy as np
import pytest

from clemalign import Affine, InputError
from clemalign.transforms import decompose, rotation_matrix_xyz


def test_apply_compose_inverse():
    a = Affine.from_linear_translation(rotation_matrix_xyz([0, 0, 90]), [1, 2, 3])
    # +90° about z takes x onto y
    np.testing.assert_allclose(a.apply([1, 0, 0]), [1, 3, 3], atol=1e-12)
    b = Affine.from_translation([10, 0, 0])
    np.testing.assert_allclose((a @ b).apply([0, 0, 0]), a.apply(b.apply([0, 0, 0])))
    p = np.random.default_rng(0).normal(size=(5, 3))
    np.testing.assert_allclose(a.inverse().apply(a.apply(p)), p, atol=1e-12)


@pytest.mark.parametrize("matrix, message", [
    (np.zeros((3, 3)), "4×4"),
    (np.diag([1, 1, 0, 1.0]), "singular"),
    (np.full((4, 4), np.nan), "NaN"),
    (np.vstack([np.eye(4)[:3], [0, 0, 1, 1]]), "last row"),
])
def test_invalid_matrices_are_refused(matrix, message):
    with pytest.raises(InputError, match=message):
        Affine(matrix)


def test_matrix_is_read_only():
    a = Affine.identity()
    with pytest.raises(ValueError):
        a.matrix[0, 0] = 2


def test_decompose_known_parts():
    a = Affine.from_linear_translation(rotation_matrix_xyz((3.0, -2.0, 15.0))
                                       @ np.diag([1.05, 0.97, 1.0]), [1.0, 2.0, 3.0])
    d = decompose(a)
    np.testing.assert_allclose(d["rotation_deg"], [3.0, -2.0, 15.0], atol=1e-9)
    np.testing.assert_allclose(d["scale"], [1.05, 1.0, 0.97], atol=1e-9)
    np.testing.assert_allclose(d["translation_um"], [1, 2, 3])
    assert not d["mirror"] and d["shear"] < 1e-9
    mirrored = Affine.from_linear_translation(np.diag([-1.0, 1.0, 1.0]), [0, 0, 0])
    assert decompose(mirrored)["mirror"]


def test_decompose_mirrored_placement():
    from clemalign.prealign import placement_transform

    a = placement_transform(np.array([5.0, 6.0, 7.0]), np.array([50.0, 60.0]), 120.0, True)
    stretched = Affine(a.matrix @ np.diag([1.05, 0.97, 1.0, 1.0]))
    d = decompose(stretched)
    assert d["mirror"]
    assert d["rotation_deg"][2] == pytest.approx(120.0, abs=1e-9)
    np.testing.assert_allclose(d["scale"], [1.05, 1.0, 0.97], atol=1e-12)
    assert d["shear"] < 1e-9
    # the ROI centre lands where asked
    np.testing.assert_allclose(a.apply(np.array([[5.0, 6.0, 7.0]]))[0], [50.0, 60.0, 7.0])
