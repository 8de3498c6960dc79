"""conv_ext's convolution modules (subclasses of torch's, computed by
conv_ext) and convert(), which swaps torch's for them in a model."""
import dataclasses
import logging
import warnings

import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.utils import _pair, _single

from .functional import conv1d, conv2d, conv_transpose1d, conv_transpose2d

__all__ = ["Conv1d", "Conv2d", "ConvTranspose1d", "ConvTranspose2d", "ConvertReport", "convert"]

_logger = logging.getLogger("conv_ext")


class _ConvExtModule:
    """What conv_ext's modules add to torch's: a repr that names conv_ext
    (`print(model)` shows what was converted), and a clear refusal of
    torch.jit.script, which cannot compile the Python autograd Functions
    conv_ext runs on (torch.jit.trace, torch.compile and torch.export work)."""

    def _get_name(self):
        return f"conv_ext.{type(self).__name__}"

    def __prepare_scriptable__(self):
        raise RuntimeError(
            f"{self._get_name()} cannot be compiled by torch.jit.script (conv_ext's kernels are "
            "called through Python autograd Functions, which TorchScript does not support). "
            "Use torch.compile, torch.export or torch.jit.trace instead, or script a model "
            "that uses torch.nn's convolutions.")


class Conv1d(_ConvExtModule, nn.Conv1d):
    """nn.Conv1d with conv_ext's kernels (the 2-D kernels with H = 1). Same
    constructor, parameters, initialisation and state_dict;
    `isinstance(m, nn.Conv1d)` holds."""

    def _conv_forward(self, input, weight, bias):
        if self.padding_mode != "zeros":
            return conv1d(F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode),
                          weight, bias, self.stride, _single(0), self.dilation, self.groups)
        return conv1d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class Conv2d(_ConvExtModule, nn.Conv2d):
    """nn.Conv2d with conv_ext's kernels. Same constructor, parameters,
    initialisation and state_dict; `isinstance(m, nn.Conv2d)` holds."""

    def _conv_forward(self, input, weight, bias):
        if self.padding_mode != "zeros":
            return conv2d(F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode),
                          weight, bias, self.stride, _pair(0), self.dilation, self.groups)
        return conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class ConvTranspose1d(_ConvExtModule, nn.ConvTranspose1d):
    """nn.ConvTranspose1d with conv_ext's kernels; forward takes
    `output_size` as torch's does."""

    def forward(self, input, output_size=None):
        if self.padding_mode != "zeros":
            raise ValueError("Only `zeros` padding mode is supported for ConvTranspose1d")
        output_padding = self._output_padding(input, output_size, self.stride, self.padding,
                                              self.kernel_size, 1, self.dilation)
        return conv_transpose1d(input, self.weight, self.bias, self.stride, self.padding,
                                output_padding, self.groups, self.dilation)


class ConvTranspose2d(_ConvExtModule, nn.ConvTranspose2d):
    """nn.ConvTranspose2d with conv_ext's kernels; forward takes
    `output_size` as torch's does."""

    def forward(self, input, output_size=None):
        if self.padding_mode != "zeros":
            raise ValueError("Only `zeros` padding mode is supported for ConvTranspose2d")
        output_padding = self._output_padding(input, output_size, self.stride, self.padding,
                                              self.kernel_size, 2, self.dilation)
        return conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding,
                                output_padding, self.groups, self.dilation)


# torch's class -> conv_ext's: exactly these classes are converted.
_REPLACEMENTS = {
    nn.Conv1d: Conv1d, nn.Conv2d: Conv2d,
    nn.ConvTranspose1d: ConvTranspose1d, nn.ConvTranspose2d: ConvTranspose2d,
}
_OURS = tuple(_REPLACEMENTS.values())


@dataclasses.dataclass
class ConvertReport:
    """What convert() did: qualified module name -> torch class name, for the
    modules it converted and for the convolutions it left alone."""
    converted: dict = dataclasses.field(default_factory=dict)
    left_alone: dict = dataclasses.field(default_factory=dict)

    @property
    def count(self):
        return len(self.converted)

    def __str__(self):
        text = f"conv_ext.convert: converted {self.count} module(s)"
        if self.left_alone:
            text += "; left alone: " + ", ".join(
                f"{name or '<model>'} ({cls})" for name, cls in self.left_alone.items())
        return text


def _converted(module, cls):
    """A `cls` sharing `module`'s parameters, buffers and hooks."""
    new = cls.__new__(cls)
    # Copy the containers (not their contents) so the two modules share the
    # Parameter objects but adding to one's dicts does not change the other.
    new.__dict__ = {k: (v.copy() if isinstance(v, dict) else v) for k, v in module.__dict__.items()}
    return new


def convert(model: nn.Module, *, report: bool = False):
    """Replace every nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d and
    nn.ConvTranspose2d in `model` (recursively, in place; exactly those
    classes) by conv_ext's module sharing its parameters, and return the model
    (or the replacement, if `model` itself is one of them).

    Other convolutions (Conv3d, ConvTranspose3d, Lazy* not yet initialised,
    subclasses, which may override forward) are left alone, with a warning
    that names them. With report=True, returns (model, ConvertReport)."""
    memo = {}
    result = ConvertReport()

    def swap(module, name):
        cls = _REPLACEMENTS.get(type(module))
        if cls is not None:
            if id(module) not in memo:
                memo[id(module)] = _converted(module, cls)
            result.converted[name] = type(module).__name__
            return memo[id(module)]
        if isinstance(module, _ConvNd) and not isinstance(module, _OURS):
            result.left_alone[name] = type(module).__qualname__
        # _modules rather than named_children(): the latter skips a module's
        # second occurrence, which would leave it unconverted.
        for child_name, child in list(module._modules.items()):
            if child is None:
                continue
            new_child = swap(child, f"{name}.{child_name}" if name else child_name)
            if new_child is not child:
                module._modules[child_name] = new_child
        return module

    model = swap(model, "")
    _logger.info("%s", result)
    if result.left_alone:
        warnings.warn(
            "conv_ext.convert left these convolutions on torch (only exactly nn.Conv1d, "
            "nn.Conv2d, nn.ConvTranspose1d and nn.ConvTranspose2d are converted): "
            + ", ".join(f"{n or '<model>'} ({c})" for n, c in result.left_alone.items()),
            UserWarning, stacklevel=2)
    return (model, result) if report else model
