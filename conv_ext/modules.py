"""conv_ext.Conv2d (an nn.Conv2d computed by conv_ext) and convert()."""
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.utils import _pair

from .functional import conv2d

__all__ = ["Conv2d", "convert"]


class Conv2d(nn.Conv2d):
    """nn.Conv2d with conv_ext's kernels. Same constructor, parameters,
    initialisation, state_dict and repr; `isinstance(m, nn.Conv2d)` holds."""

    def _conv_forward(self, input, weight, bias):
        if self.padding_mode != "zeros":
            return conv2d(F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode),
                          weight, bias, self.stride, _pair(0), self.dilation, self.groups)
        return conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)


def _converted(module):
    """A conv_ext.Conv2d sharing `module`'s parameters, buffers and hooks."""
    new = Conv2d.__new__(Conv2d)
    # Copy the containers (not their contents) so the two modules share the
    # Parameter objects but adding to one's dicts does not change the other.
    new.__dict__ = {k: (v.copy() if isinstance(v, dict) else v) for k, v in module.__dict__.items()}
    return new


def convert(model: nn.Module) -> nn.Module:
    """Replace every nn.Conv2d in `model` (recursively, in place) by a
    conv_ext.Conv2d sharing its parameters, and return the model (or the
    replacement, if `model` itself is an nn.Conv2d). Subclasses of
    nn.Conv2d other than conv_ext's are left alone: they may override forward."""
    memo = {}

    def swap(module):
        if type(module) is nn.Conv2d:
            if id(module) not in memo:
                memo[id(module)] = _converted(module)
            return memo[id(module)]
        # _modules rather than named_children(): the latter skips a module's
        # second occurrence, which would leave it unconverted.
        for name, child in list(module._modules.items()):
            if child is None:
                continue
            new_child = swap(child)
            if new_child is not child:
                module._modules[name] = new_child
        return module

    return swap(model)
