"""The napari plugin (npe2; ``pip install "clemalign[napari]"``): a widget that registers
an EM and an LM layer with :func:`clemalign.register` and places the LM on the EM, a
reader that opens the files clemalign reads with their voxel sizes, and the simulated
pairs as sample data.

Modules: :mod:`.layers` (layers ↔ volumes and transforms, no Qt), :mod:`.reader`,
:mod:`.sample_data`, :mod:`.widget` (the Qt widget; it gathers inputs, runs the headless
API in a worker thread and shows the result — no algorithm lives here).
"""
