"""The "Register EM and LM" widget.

It gathers the inputs from the viewer's layers and the form, runs
:func:`clemalign.register` in a worker thread (the viewer stays responsive; Cancel stops
it at the next progress report), and shows the result: the LM layers placed on the EM
through their ``affine`` (no resampling), the verdict, and the ROI as a shapes layer.
Save writes what ``clemalign register`` writes; Load transform applies a transform file.
"""

from __future__ import annotations

import html
import threading
from pathlib import Path

import numpy as np
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..errors import InputError
from ..transform_io import lm_to_em_zyx
from .layers import METADATA_KEY, roi_from_box, roi_outline_zyx, volume_from_layer

__all__ = ["RegisterWidget", "Cancelled"]

WHOLE_EM = "(whole EM)"
VERDICT_COLOURS = {"ok": "#2e7d32", "uncertain": "#ef6c00", "failed": "#c62828"}
ROI_LAYER = "clemalign ROI"


class Cancelled(Exception):
    """Raised inside the worker when Cancel was pressed."""


class _Progress(QObject):
    """Carries progress from the worker thread to the widget (queued signal)."""

    changed = Signal(str, float)


def _voxel_boxes() -> list[QDoubleSpinBox]:
    boxes = []
    for _ in range(3):
        box = QDoubleSpinBox()
        box.setDecimals(5)
        box.setRange(0.0, 1e4)
        box.setSingleStep(0.01)
        box.setSpecialValueText("unset")  # 0 shows as "unset"
        boxes.append(box)
    return boxes


def _row(widgets) -> QWidget:
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    for w in widgets:
        layout.addWidget(w)
    return row


class RegisterWidget(QWidget):
    """Register an EM image layer with an LM image layer (see the module docstring).

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.result = None  # the last RegistrationResult
        self.volumes = None  # the (em, lm) it came from
        self.worker = None
        self._cancel = threading.Event()
        self._progress = _Progress()
        self._progress.changed.connect(self._on_progress)

        self.em_combo, self.lm_combo, self.roi_combo = QComboBox(), QComboBox(), QComboBox()
        self.em_voxel, self.lm_voxel = _voxel_boxes(), _voxel_boxes()
        self.max_rotation = QDoubleSpinBox()
        self.max_rotation.setRange(0.0, 180.0)
        self.max_rotation.setValue(180.0)
        self.max_rotation.setSuffix(" °")
        self.mirror = QCheckBox("mirrored EM possible")
        self.mirror.setChecked(True)
        self.flip_z = QCheckBox("reversed z possible")
        self.flip_z.setChecked(True)
        self.model = QComboBox()
        self.model.addItems(["affine", "rigid"])
        self.prealign = QComboBox()
        self.prealign.addItems(["auto", "xy", "3d"])
        self.run_button, self.cancel_button = QPushButton("Run"), QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.save_button = QPushButton("Save…")
        self.save_button.setEnabled(False)
        self.load_button = QPushButton("Load transform…")
        self.bars = {"prealign": QProgressBar(), "fine": QProgressBar()}
        self.status = QLabel("Choose the EM and LM layers, then Run.")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("EM layer", self.em_combo)
        form.addRow("EM voxel z, y, x (µm)", _row(self.em_voxel))
        form.addRow("LM layer", self.lm_combo)
        form.addRow("LM voxel z, y, x (µm)", _row(self.lm_voxel))
        form.addRow("ROI (shapes on the EM)", self.roi_combo)
        form.addRow("max rotation", self.max_rotation)
        form.addRow("", _row([self.mirror, self.flip_z]))
        form.addRow("model", self.model)
        form.addRow("pre-alignment", self.prealign)
        form.addRow(_row([self.run_button, self.cancel_button]))
        form.addRow("pre-alignment", self.bars["prealign"])
        form.addRow("3D registration", self.bars["fine"])
        form.addRow(_row([self.save_button, self.load_button]))
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.status)
        layout.addStretch()

        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.save_button.clicked.connect(lambda: self.save())
        self.load_button.clicked.connect(lambda: self.load_transform())
        self.em_combo.currentTextChanged.connect(lambda _: self._fill_voxels("em"))
        self.lm_combo.currentTextChanged.connect(lambda _: self._fill_voxels("lm"))
        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.connect(self._refresh_layers)
        self._refresh_layers()

    # ------------------------------------------------------------------ inputs
    def _layers(self, kind: str) -> list:
        return [layer for layer in self.viewer.layers if type(layer).__name__ == kind]

    def _refresh_layers(self, *_) -> None:
        """Fill the layer choices; the EM defaults to a layer the reader marked as EM,
        else the first, the LM to another image layer."""
        images = [layer.name for layer in self._layers("Image")
                  if not getattr(layer, "rgb", False)]
        for combo, role in ((self.em_combo, "em"), (self.lm_combo, "lm")):
            current = combo.currentText()
            combo.blockSignals(True)  # the user's voxel sizes stay unless the layer changes
            combo.clear()
            combo.addItems(images)
            if current in images:
                combo.setCurrentText(current)
            else:
                preferred = [layer.name for layer in self._layers("Image")
                             if layer.metadata.get(METADATA_KEY, {}).get("role") == role]
                others = [n for n in images if n != self.em_combo.currentText()]
                pick = preferred[0] if preferred else (others[0] if role == "lm" and others
                                                       else None)
                if pick:
                    combo.setCurrentText(pick)
            combo.blockSignals(False)
            if combo.currentText() != current:
                self._fill_voxels(role)
        current = self.roi_combo.currentText()
        self.roi_combo.clear()
        self.roi_combo.addItems([WHOLE_EM] + [layer.name for layer in self._layers("Shapes")
                                              if layer.name != ROI_LAYER])
        if current in [self.roi_combo.itemText(i) for i in range(self.roi_combo.count())]:
            self.roi_combo.setCurrentText(current)

    def _fill_voxels(self, which: str) -> None:
        """The voxel boxes from the layer's scale; "unset" when the layer carries the
        default scale of 1 and no voxel size from a file (napari's "unknown")."""
        combo, boxes = ((self.em_combo, self.em_voxel) if which == "em"
                        else (self.lm_combo, self.lm_voxel))
        layer = self._layer(combo.currentText())
        if layer is None:
            return
        scale = [float(v) for v in layer.scale]
        scale = ([scale[-1]] + scale) if len(scale) == 2 else scale[-3:]
        known = METADATA_KEY in layer.metadata or any(v != 1.0 for v in scale)
        for box, value in zip(boxes, scale, strict=True):
            box.setValue(value if known else 0.0)

    def _layer(self, name: str):
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def _lm_group(self, lm_layer) -> list:
        """The LM layer and its sibling channels (same file, same shape), in layer order."""
        meta = lm_layer.metadata.get(METADATA_KEY, {})
        if not meta.get("source"):
            return [lm_layer]
        return [layer for layer in self._layers("Image")
                if layer.metadata.get(METADATA_KEY, {}).get("source") == meta["source"]
                and layer.metadata[METADATA_KEY].get("role") != "em"
                and layer.data.shape == lm_layer.data.shape]

    def gather(self):
        """The EM and LM volumes, the LM layers, and the configuration the form
        describes.

        Raises
        ------
        InputError
            A missing or unsuitable layer, an unset voxel size, an ROI outside the EM.
        """
        from ..pipeline import RegistrationConfig
        from ..volume import Volume

        em_layer = self._layer(self.em_combo.currentText())
        lm_layer = self._layer(self.lm_combo.currentText())
        if em_layer is None or lm_layer is None:
            raise InputError("open an EM and an LM image layer first (File › Open, or "
                             "File › Open Sample › clemalign)")
        if em_layer is lm_layer:
            raise InputError("the EM and LM layers are the same layer; choose two")
        for name, boxes in (("EM", self.em_voxel), ("LM", self.lm_voxel)):
            if min(box.value() for box in boxes) <= 0:
                raise InputError(f"{name} voxel size is unset: enter its z, y, x size in µm")
        em = volume_from_layer(em_layer, [b.value() for b in self.em_voxel], what="EM layer")
        group = self._lm_group(lm_layer)
        channels = [volume_from_layer(layer, [b.value() for b in self.lm_voxel],
                                      what="LM layer") for layer in group]
        first = channels[0]
        lm = Volume(np.stack([c.data for c in channels]) if len(channels) > 1 else first.data,
                    first.voxel_size_um, first.origin_xyz_um,
                    tuple(c.channel_names[0] for c in channels), first.source)
        roi = None
        shapes = self._layer(self.roi_combo.currentText())
        if shapes is not None:
            if len(shapes.data) == 0:
                raise InputError(f"shapes layer {shapes.name!r} is empty: draw a rectangle "
                                 "on the EM, or choose the whole EM")
            # the bounding box of every shape: rectangles on two planes give the z range
            vertices = np.concatenate([np.asarray(d, float) for d in shapes.data])
            world = np.array([shapes.data_to_world(v) for v in vertices], float)
            roi = roi_from_box(world[:, -3:] if world.shape[1] >= 3 else world, em).to_str()
        config = RegistrationConfig.from_options(
            lm_channel=group.index(lm_layer), roi=roi, model=self.model.currentText(),
            max_rotation_deg=self.max_rotation.value(), mirror=self.mirror.isChecked(),
            flip_z=self.flip_z.isChecked(), prealign_mode=self.prealign.currentText())
        return em, lm, group, config

    # --------------------------------------------------------------------- run
    def run(self) -> None:
        """Start the registration in a worker thread (returns at once)."""
        from napari.qt.threading import create_worker

        from ..pipeline import register

        try:
            em, lm, group, config = self.gather()
        except InputError as exc:
            self._say(str(exc), "failed")
            return
        self._cancel.clear()
        for bar in self.bars.values():
            bar.setValue(0)

        def progress(stage: str, fraction: float) -> None:
            if self._cancel.is_set():
                raise Cancelled
            self._progress.changed.emit(stage, fraction)

        def job():
            return register(em, lm, config=config, progress=progress)

        self.worker = create_worker(job, _ignore_errors=True)  # errors go to _on_error
        self.worker.returned.connect(lambda result: self._on_result(result, em, lm, group))
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self._say("registering…", None)
        self.worker.start()

    def cancel(self) -> None:
        """Stop the running registration at its next progress report."""
        self._cancel.set()
        self._say("cancelling…", None)

    def _on_progress(self, stage: str, fraction: float) -> None:
        if stage in self.bars:
            self.bars[stage].setValue(int(round(100 * fraction)))

    def _on_finished(self) -> None:
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.worker = None

    def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, Cancelled):
            self._say("cancelled: nothing was changed", "uncertain")
        elif isinstance(exc, InputError):
            self._say(str(exc), "failed")
        else:
            self._say(f"internal error ({type(exc).__name__}: {exc}); please report it",
                      "failed")

    def _on_result(self, result, em, lm, group) -> None:
        self.result, self.volumes = result, (em, lm)
        for bar in self.bars.values():
            bar.setValue(100)
        em_layer = self._layer(self.em_combo.currentText())
        if em_layer is not None:  # the EM under the fluorescence, so the overlay shows
            self.viewer.layers.move(self.viewer.layers.index(em_layer), 0)
        self.apply_transform(result.em_to_lm, group)
        outline = roi_outline_zyx(result.roi, em)
        colour = VERDICT_COLOURS[result.confidence["verdict"]]
        if ROI_LAYER in self.viewer.layers:
            self.viewer.layers[ROI_LAYER].data = [outline]
            self.viewer.layers[ROI_LAYER].edge_color = colour
        else:
            width = 0.01 * float(np.ptp(outline[:, 1:], axis=0).max())  # µm, thin
            self.viewer.add_shapes([outline], shape_type="rectangle", name=ROI_LAYER,
                                   edge_color=colour, face_color="transparent",
                                   edge_width=width)
        conf = result.confidence
        text = f"<b>{conf['verdict']}</b> — confidence {conf['score']:.2f}"
        if conf["verdict"] != "ok":
            text += "<br>" + html.escape("; ".join(conf["reasons"]))
        self._say(text, conf["verdict"], rich=True)
        self.save_button.setEnabled(True)

    def apply_transform(self, em_to_lm, group=None) -> None:
        """Place the LM layers on the EM: each one's ``affine`` becomes ``lm_to_em`` in
        ``(z, y, x)`` (its scale and translate stay); additive blending, contrast from
        the data."""
        if group is None:
            layer = self._layer(self.lm_combo.currentText())
            if layer is None:
                raise InputError("choose the LM layer the transform applies to")
            group = self._lm_group(layer)
        affine = lm_to_em_zyx(em_to_lm)
        for layer in group:
            if layer.ndim == 2:  # a 2D LM plane: the in-plane part (z is dropped)
                layer.affine = affine[np.ix_([1, 2, 3], [1, 2, 3])]
            else:
                layer.affine = affine
            layer.blending = "additive"
            data = np.asarray(layer.data[0] if layer.multiscale else layer.data)
            sample = data[::max(1, data.shape[0] // 8)]
            lo, hi = np.percentile(sample, [1, 99.8])
            if hi > lo:
                layer.contrast_limits = (float(lo), float(hi))

    # ---------------------------------------------------------------- files
    def save(self, folder: str | Path | None = None) -> Path | None:
        """Write the last result as ``clemalign register`` would into ``folder`` (asked
        for when not given); refuses a folder holding earlier outputs."""
        from ..outputs import write_registration

        if self.result is None:
            self._say("nothing to save: run a registration first", "failed")
            return None
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Output folder for the results")
            if not folder:
                return None
        em, lm = self.volumes
        try:
            paths = write_registration(folder, self.result, em, lm)
        except (InputError, OSError) as exc:
            self._say(f"not saved: {exc}", "failed")
            return None
        self._say(f"saved {len(paths)} files to {folder}", "ok")
        return Path(folder)

    def load_transform(self, path: str | Path | None = None) -> None:
        """Apply a transform file (transform.json, OME-NGFF JSON, ITK .tfm, BigWarp CSV,
        eC-CLEM XML) to the LM layers."""
        from ..transform_io import read_transform

        if path is None:
            path, _ = QFileDialog.getOpenFileName(
                self, "Transform file", "",
                "Transforms (*.json *.tfm *.txt *.csv *.xml);;All files (*)")
            if not path:
                return
        try:
            self.apply_transform(read_transform(path))
        except InputError as exc:
            self._say(str(exc), "failed")
            return
        self._say(f"applied {Path(path).name} to the LM layers", "ok")

    def _say(self, text: str, verdict: str | None, *, rich: bool = False) -> None:
        colour = VERDICT_COLOURS.get(verdict or "", "")
        body = text if rich else html.escape(text)
        self.status.setText(f"<span style='color:{colour}'>{body}</span>" if colour else body)
