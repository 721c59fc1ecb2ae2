# the host's shared fixtures (molecules, bulk carbon, Cu bulk, float64 default dtype, ...)
from nequip.utils.unittests.conftest import *  # noqa: F401,F403
