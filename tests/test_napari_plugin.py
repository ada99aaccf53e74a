"""The napari plugin: manifest, reader, sample data and the registration widget, on a
napari ViewerModel with Qt offscreen (no OpenGL needed).  Skipped without the
``napari`` extra."""

from __future__ import annotations

import os
import time
import warnings

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before Qt loads


def _qt_starts() -> bool:
    """Whether a Qt application starts here (a missing system library makes Qt abort the
    process, which would take the test run with it: try in a child first)."""
    import subprocess
    import sys

    code = "from qtpy.QtWidgets import QApplication; QApplication([])"
    try:
        return subprocess.run([sys.executable, "-c", code], capture_output=True,
                              timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


with warnings.catch_warnings():  # napari's and pydantic's deprecation warnings on import
    warnings.simplefilter("ignore")
    napari = pytest.importorskip("napari", reason="napari is not installed "
                                                  "(pip install \"clemalign[napari]\")")
    if not _qt_starts():
        pytest.skip("Qt cannot start here (no Qt binding or a missing system library)",
                    allow_module_level=True)
    try:
        from napari.components import ViewerModel
        from napari.layers import Layer
        from napari.qt import get_qapp

        from clemalign.napari_plugin.widget import RegisterWidget
    except ImportError as exc:  # e.g. no Qt binding
        pytest.skip(f"napari's Qt part does not load: {exc}", allow_module_level=True)

from clemalign import Affine, Volume, write_ome_tiff  # noqa: E402
from clemalign.transform_io import lm_to_em_zyx  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning",
                                        "ignore:Non-orthogonal slicing:UserWarning")


@pytest.fixture(scope="module")
def qapp():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_qapp()


@pytest.fixture(scope="module")
def sample_layers():
    from clemalign.napari_plugin.sample_data import simulated_monolayer

    return simulated_monolayer()


def _viewer(layer_data) -> ViewerModel:
    viewer = ViewerModel()
    for data, kwargs, kind in layer_data:
        viewer.add_layer(Layer.create(data, kwargs, kind))
    return viewer


def _wait(widget, qapp, timeout_s: float = 120.0) -> None:
    start = time.perf_counter()
    while widget.worker is not None and time.perf_counter() - start < timeout_s:
        qapp.processEvents()
        time.sleep(0.01)
    assert widget.worker is None, "the registration did not finish"


@pytest.fixture(scope="module")
def registered(qapp, sample_layers):
    viewer = _viewer(sample_layers)
    widget = RegisterWidget(viewer)
    widget.run()
    _wait(widget, qapp)
    return viewer, widget


def test_manifest_is_valid_and_found_through_the_entry_point():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("clemalign")
    assert manifest.name == "clemalign"
    assert [w.display_name for w in manifest.contributions.widgets] == ["Register EM and LM"]
    assert {s.key for s in manifest.contributions.sample_data} == {"monolayer", "tissue"}
    for command in manifest.contributions.commands:  # every python_name imports
        assert callable(_resolve(command.python_name))


def _resolve(python_name: str):
    from importlib import import_module

    module, _, attr = python_name.partition(":")
    return getattr(import_module(module), attr)


def test_reader_gives_scaled_layers_per_channel(tmp_path):
    from clemalign.napari_plugin.reader import get_reader

    vol = Volume(np.arange(2 * 3 * 8 * 9, dtype=np.uint16).reshape(2, 3, 8, 9),
                 (0.6, 0.22, 0.2), channel_names=("mito", "nuclei"))
    write_ome_tiff(tmp_path / "lm.ome.tif", vol)
    assert get_reader(str(tmp_path / "notes.txt")) is None
    layers = get_reader(str(tmp_path / "lm.ome.tif"))(str(tmp_path / "lm.ome.tif"))
    assert [kw["name"] for _, kw, _ in layers] == ["lm [mito]", "lm [nuclei]"]
    for c, (data, kwargs, kind) in enumerate(layers):
        assert kind == "image" and kwargs["scale"] == pytest.approx((0.6, 0.22, 0.2))
        np.testing.assert_array_equal(data, vol.data[c])


def test_widget_registers_the_sample_and_places_the_lm_exactly(registered):
    """Within 0.5 µm of the simulation's truth; the LM layers' affine is em_to_lm's
    inverse in (z, y, x), and an EM point and its LM point meet in napari's world
    within 1e-6 µm."""
    viewer, widget = registered
    result = widget.result
    assert result is not None, widget.status.text()
    assert result.confidence["verdict"] == "ok"
    em_layer = viewer.layers["EM"]
    meta = em_layer.metadata["clemalign"]
    truth = Affine(np.array(meta["truth_em_to_lm"]))
    em, lm = widget.volumes
    k, j, i = np.meshgrid(*[np.linspace(0, n - 1, 4) for n in em.shape_zyx], indexing="ij")
    points = em.index_to_physical(np.column_stack([k.ravel(), j.ravel(), i.ravel()]))
    error = np.linalg.norm(result.em_to_lm.apply(points) - truth.apply(points), axis=1)
    assert error.mean() < 0.5, error.mean()
    for name in ("LM [mito]", "LM [autofluorescence]"):  # both channels moved
        layer = viewer.layers[name]
        np.testing.assert_allclose(layer.affine.affine_matrix, lm_to_em_zyx(result.em_to_lm),
                                   atol=1e-12)
        np.testing.assert_allclose(
            layer.affine.affine_matrix[:3, :3],
            (result.em_to_lm.inverse().matrix[:3, :3])[::-1, ::-1], atol=1e-12)
        for p_em, p_lm in zip(points[::7], result.em_to_lm.apply(points[::7]), strict=True):
            world_em = em_layer.data_to_world(em.physical_to_index(p_em[None])[0])
            world_lm = layer.data_to_world(lm.physical_to_index(p_lm[None])[0])
            np.testing.assert_allclose(world_lm, world_em, atol=1e-6)
        assert layer.blending == "additive"
    assert "ok" in widget.status.text()
    assert "clemalign ROI" in viewer.layers


def test_save_writes_the_register_folder_and_load_applies_it(registered, qapp, sample_layers,
                                                              tmp_path):
    import json

    _, widget = registered
    folder = widget.save(tmp_path / "out")
    record = json.loads((folder / "transform.json").read_text())
    np.testing.assert_allclose(record["em_to_lm"], widget.result.em_to_lm.matrix, atol=1e-12)
    assert (folder / "lm_in_em.ome.tif").exists() and (folder / "report.html").exists()
    assert widget.save(tmp_path / "out") is None  # never overwrites
    assert "not saved" in widget.status.text()
    fresh = _viewer(sample_layers)
    other = RegisterWidget(fresh)
    for name in ("transform.json", "transform.tfm", "bigwarp_landmarks.csv",
                 "ecclem_transform.xml"):
        other.load_transform(folder / name)
        np.testing.assert_allclose(fresh.layers["LM [mito]"].affine.affine_matrix,
                                   lm_to_em_zyx(widget.result.em_to_lm), atol=1e-6)
    other.load_transform(tmp_path / "missing.json")
    assert "no such" in other.status.text()


def test_cancel_stops_the_run_and_changes_nothing(qapp, sample_layers):
    viewer = _viewer(sample_layers)
    widget = RegisterWidget(viewer)
    widget.run()
    widget.cancel()
    _wait(widget, qapp)
    assert widget.result is None and "cancelled" in widget.status.text()
    np.testing.assert_array_equal(viewer.layers["LM [mito]"].affine.affine_matrix, np.eye(4))
    assert widget.run_button.isEnabled()


def test_bad_inputs_give_a_message_not_a_traceback(qapp):
    viewer = ViewerModel()
    widget = RegisterWidget(viewer)
    widget.run()
    assert "open an EM and an LM" in widget.status.text()
    viewer.add_image(np.random.default_rng(0).random((64, 64)), name="section")  # no scale
    viewer.add_image(np.random.default_rng(1).random((8, 64, 64)), name="stack")
    widget.em_combo.setCurrentText("section")
    widget.lm_combo.setCurrentText("stack")
    assert [b.value() for b in widget.em_voxel] == [0.0, 0.0, 0.0]  # shown "unset"
    widget.run()
    assert "EM voxel size is unset" in widget.status.text() and widget.worker is None
    widget.save()
    assert "run a registration first" in widget.status.text()
    for box, value in zip(widget.em_voxel, (0.1, 0.1, 0.1), strict=True):
        box.setValue(value)
    for box, value in zip(widget.lm_voxel, (0.5, 0.2, 0.2), strict=True):
        box.setValue(value)
    viewer.add_shapes([np.array([[500.0, 500.0], [500.0, 600.0], [600.0, 600.0],
                                 [600.0, 500.0]])], shape_type="rectangle", name="roi")
    widget.roi_combo.setCurrentText("roi")
    widget.run()
    assert "outside the EM" in widget.status.text() and widget.worker is None


def test_roi_from_shapes_bounds_z_only_when_drawn_on_two_planes():
    from clemalign import InputError
    from clemalign.napari_plugin.layers import roi_from_box, roi_outline_zyx
    from clemalign.volume import Roi

    em = Volume(np.zeros((40, 60, 80), np.uint8), (0.5, 0.1, 0.1), (2.0, 1.0, 3.0))
    roi = Roi(10, 21, 5, 31, 7, 50)
    two_planes = np.concatenate([roi_outline_zyx(roi, em, roi.z0),
                                 roi_outline_zyx(roi, em, roi.z1 - 1)])
    assert roi_from_box(two_planes, em) == roi
    assert roi_from_box(roi_outline_zyx(roi, em), em) == Roi(0, 40, 5, 31, 7, 50)
    with pytest.raises(InputError, match="outside the EM"):
        roi_from_box(roi_outline_zyx(roi, em) + [0, 100, 0], em)


def test_reader_opens_a_multiscale_ome_zarr_as_a_pyramid(tmp_path):
    from clemalign.io.writers import write_ome_zarr_slabs
    from clemalign.napari_plugin.reader import get_reader

    data = np.random.default_rng(0).integers(0, 200, (2, 8, 96, 80)).astype(np.uint8)
    write_ome_zarr_slabs(tmp_path / "lm_in_em.ome.zarr", data.shape, dtype=np.uint8,
                         voxel_size_um=(0.5, 0.1, 0.1), slab=lambda z0, z1: data[:, z0:z1],
                         min_level_side_px=32)
    layers = get_reader(str(tmp_path / "lm_in_em.ome.zarr"))(str(tmp_path / "lm_in_em.ome.zarr"))
    assert len(layers) == 2
    pyramid, kwargs, _ = layers[1]
    assert kwargs["multiscale"] and len(pyramid) == 3
    np.testing.assert_array_equal(np.asarray(pyramid[0]), data[1])
    viewer = ViewerModel()
    viewer.add_layer(Layer.create(*layers[1]))
    assert viewer.layers[0].multiscale and viewer.layers[0].scale[1] == pytest.approx(0.1)
