"""The ``clemalign`` command line (thin: parse, call the library, write, report).

Modules: :mod:`~clemalign.cli.app` (the command group, shared options, ``main``),
:mod:`~clemalign.cli.files` (``info``, ``check``, ``simulate``),
:mod:`~clemalign.cli.registration` (``register``, ``demo``),
:mod:`~clemalign.cli.landmarks` (``evaluate``, ``apply``).
"""

from . import files, landmarks, registration  # noqa: F401  (the commands register on app)
from .app import app, main

__all__ = ["app", "main"]
