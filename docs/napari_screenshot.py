"""Screenshot of the napari widget after registering the monolayer sample (for the README).

Opens napari with the "Simulated monolayer CLEM pair" sample, docks the "Register EM and
LM" widget, runs it, and saves the whole window once the LM sits on the EM.  Needs the
``napari`` extra and a display with OpenGL (on a headless machine: ``xvfb-run -a``; Qt's
xcb plugin needs the libxcb-* packages, e.g. ``apt-get install libxcb-icccm4
libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0
libxkbcommon-x11-0 libxcb-shape0 libxcb-xfixes0 libxcb-cursor0``).

Run:  xvfb-run -a python docs/napari_screenshot.py docs/napari_widget.png
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, nargs="?", default=Path("docs/napari_widget.png"))
    args = parser.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import napari
        from napari.qt import get_qapp

    from clemalign.napari_plugin.widget import RegisterWidget

    viewer = napari.Viewer(title="clemalign — Register EM and LM", show=True)
    viewer.window.resize(1500, 900)
    viewer.open_sample("clemalign", "monolayer")
    widget = RegisterWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Register EM and LM", area="right")
    widget.run()
    app = get_qapp()
    start = time.perf_counter()
    while widget.worker is not None and time.perf_counter() - start < 300:
        app.processEvents()
        time.sleep(0.02)
    if widget.result is None:
        raise SystemExit(f"the registration did not finish: {widget.status.text()}")
    # a slice through the middle of the EM, with the LM channels overlaid
    viewer.layers["EM"].contrast_limits = (40, 230)
    lo, hi = viewer.layers["EM"].extent.world
    viewer.dims.set_point(0, (lo[0] + hi[0]) / 2)
    viewer.reset_view()
    viewer.scene.camera.center = ((lo[1] + hi[1]) / 2, (lo[2] + hi[2]) / 2)
    viewer.scene.camera.zoom *= 1.7  # the EM field and the LM around it
    for _ in range(20):
        app.processEvents()
        time.sleep(0.05)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(args.output), canvas_only=False)
    print(f"{widget.result.confidence['verdict']} "
          f"({widget.result.confidence['score']:.2f}); wrote {args.output}")
    viewer.close()


if __name__ == "__main__":
    main()
