"""clemalign: automatic 3D overlay of correlative light and electron microscopy stacks."""

from importlib.metadata import PackageNotFoundError, version

from .errors import InputError
from .evaluation import target_registration_error
from .io import read_clem_pair, read_volume, write_ome_tiff, write_volume
from .pipeline import RegistrationConfig, RegistrationResult, register
from .prealign import PrealignConfig, PrealignResult, prealign_xy
from .registration import Registration3DConfig, Registration3DResult, register_3d
from .synthetic import SimulatedPair, SimulationConfig, simulate_pair, write_simulated_pair
from .transforms import Affine
from .volume import Volume, from_sitk, to_sitk

try:
    __version__ = version("clemalign")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

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
