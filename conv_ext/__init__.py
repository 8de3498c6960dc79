"""conv_ext: hand-written direct convolution kernels for PyTorch (CPU and CUDA).

    import conv_ext
    y = conv_ext.conv2d(x, w, b, stride=1, padding=1)     # like F.conv2d
    layer = conv_ext.Conv2d(3, 64, 3, padding=1)           # like nn.Conv2d
    model = conv_ext.convert(model)                        # swap torch's convs in place

Also conv1d, conv_transpose1d, conv_transpose2d and their modules, all on
the 2-D kernels.
"""
import torch  # noqa: F401  (first: _C links against libtorch/libc10, loaded by torch)

from . import _C  # noqa: F401  (loads the shared library, which registers the ops)
from . import ops  # noqa: F401  (fake kernels)
from .autograd import Conv2dFunction
from .functional import conv1d, conv2d, conv_transpose1d, conv_transpose2d
from .modules import (Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d, ConvertReport,
                      convert)
from .fused import FusedConv2d, conv2d_fused
from .fusion import fuse

__all__ = [
    "Conv1d", "Conv2d", "Conv2dFunction", "ConvTranspose1d", "ConvTranspose2d", "ConvertReport",
    "FusedConv2d", "built_with_cuda", "conv1d", "conv2d", "conv2d_fused", "conv_transpose1d",
    "conv_transpose2d", "convert", "fuse",
]
__version__ = "0.1.0"


def built_with_cuda() -> bool:
    """Whether the CUDA kernels were compiled into this build."""
    return bool(_C.WITH_CUDA)
