"""clemalign: automatic 3D overlay of correlative light and electron microscopy stacks."""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

from .errors import InputError

try:
    __version__ = version("clemalign")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

# the public names load on first use (as scikit-image's do): ``import clemalign`` stays
# quick, and the command line can catch Ctrl-C while the heavy modules load
_WHERE = {
    "target_registration_error": "evaluation", "read_clem_pair": "io", "read_volume": "io",
    "write_ome_tiff": "io", "write_volume": "io", "RegistrationConfig": "pipeline",
    "RegistrationResult": "pipeline", "register": "pipeline", "PrealignConfig": "prealign",
    "PrealignResult": "prealign", "prealign_xy": "prealign",
    "Registration3DConfig": "registration", "Registration3DResult": "registration",
    "register_3d": "registration", "SimulatedPair": "synthetic",
    "SimulationConfig": "synthetic", "simulate_pair": "synthetic",
    "write_simulated_pair": "synthetic", "Affine": "transforms", "Volume": "volume",
    "from_sitk": "volume", "to_sitk": "volume",
}


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'clemalign' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "Affine",
    "InputError",
    "PrealignConfig",
    "PrealignResult",
    "Registration3DConfig",
    "Registration3DResult",
    "RegistrationConfig",
    "RegistrationResult",
    "SimulatedPair",
    "SimulationConfig",
    "Volume",
    "__version__",
    "from_sitk",
    "prealign_xy",
    "read_clem_pair",
    "read_volume",
    "register",
    "register_3d",
    "simulate_pair",
    "target_registration_error",
    "to_sitk",
    "write_ome_tiff",
    "write_simulated_pair",
    "write_volume",
]
