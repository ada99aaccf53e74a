"""3D pre-alignment (being split into modules; see :mod:`.core`)."""

from .core import *  # noqa: F403
from .core import __all__  # noqa: F401
