"""medssl: self-supervised learning for medical volumes.

Filter2Noise low-dose CT denoising on a custom bilateral-filter kernel, 3D self-supervised
pretraining (MAE, contrastive, graph matching) and nnU-Net v2 fine-tuning.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("medssl")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
