"""The report's figures as PNG bytes."""

import io

import numpy as np
from PIL import Image

from clemalign.figures import plot_orthogonal_views, plot_scale_selection
from clemalign.outputs import _png_bytes
from clemalign.volume import Volume


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))


def test_png_bytes_are_the_pixels_savefig_writes():
    """One Agg draw lays a constrained-layout figure out as savefig's two passes do."""
    rng = np.random.default_rng(0)
    em = Volume(rng.random((6, 40, 50)).astype(np.float32), (0.5, 0.1, 0.1))
    lm = Volume(rng.random((1, 6, 40, 50)).astype(np.float32), (0.5, 0.1, 0.1))
    selection = {"sigmas_um": [0.3, 0.5, 1.0, 2.0], "blob_counts": [5, 9, 7, 2],
                 "sigma_um": 0.5, "polarity": "bright"}
    for make in (lambda: plot_orthogonal_views(em, lm),
                 lambda: plot_scale_selection({"EM slices": selection})):
        ours, buf = _png_bytes(make()), io.BytesIO()
        make().savefig(buf, format="png", dpi=100)
        expected = _pixels(buf.getvalue())
        assert expected.shape[0] > 100 and np.array_equal(_pixels(ours), expected)
