"""pathsgd: Path-SGD (Neyshabur, Salakhutdinov & Srebro, 2015) for ReLU networks.

The package imports with torch alone; the Hydra runner lives in ``pathsgd.train``.
"""

from .geometry import path_norm, path_scales
from .models import MLP
from .optim import PathAdaGrad, PathAdam, PathSGD
from .rescaling import balanced_init_, rescale_unit_, unbalanced_init_

__all__ = [
    "MLP",
    "PathAdaGrad",
    "PathAdam",
    "PathSGD",
    "balanced_init_",
    "path_norm",
    "path_scales",
    "rescale_unit_",
    "unbalanced_init_",
]
__version__ = "0.1.0"
