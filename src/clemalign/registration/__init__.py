"""3D fine registration (stage 3); the module moved here unchanged as ``core``."""

from .core import (  # noqa: F401
    Registration3DConfig,
    Registration3DResult,
    StageResult,
    _mirror_x,
    register_3d,
    working_volume,
)

__all__ = ["Registration3DConfig", "Registration3DResult", "StageResult", "register_3d",
           "working_volume"]
