"""The ``clemalign`` command line (thin: parse, call the library, write, report).

Modules: :mod:`~clemalign.cli.app` (the command group, shared options, ``main``),
:mod:`~clemalign.cli.files` (``info``, ``check``, ``simulate``),
:mod:`~clemalign.cli.registration` (``register``, ``demo``),
:mod:`~clemalign.cli.landmarks` (``evaluate``, ``apply``), :mod:`~clemalign.cli.batch`
(``batch``).
"""

from . import batch, files, landmarks, registration  # noqa: F401  (commands register on app)
from .app import app, main

__all__ = ["app", "main"]
