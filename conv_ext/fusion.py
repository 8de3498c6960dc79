"""conv_ext.fuse(model): Conv -> BatchNorm -> activation (-> residual add)
chains of an eval-mode model as single conv_ext.FusedConv2d calls.

    model = conv_ext.fuse(conv_ext.convert(model).eval())
    print(model.conv_ext_fusion_report)

The model is traced with torch.fx (convolutions, BatchNorms and conv_ext's
fused modules are leaves); where the whole model does not trace, each child
is tried in turn, recursively. In the graph, each nn.Conv2d call (zero
padding mode, called once) absorbs:
  1. a BatchNorm2d that is the only user of its output (eval statistics,
     folded into the weight and bias in float64, then cast back);
  2. then an activation that is the only user (ReLU, ReLU6 / Hardtanh(0, 6),
     SiLU, GELU, Hardswish; modules, functions or tensor methods);
  3. or, instead of 2, an add with another tensor that is the only user
     (ResNet's `out += identity`, MobileNet's `x + block(x)`), followed by an
     activation that is the add's only user, if there is one (the residual
     then goes before the activation), or an add after the activation of 2.
Eval-mode identities on the way (Dropout, Identity, torchvision's
stochastic_depth with training=False) are removed first. The result
computes the same function as the model within floating-point rounding (the
folded weights round differently); training mode is refused.
"""
import copy
import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .fused import FusedConv2d
from .modules import Conv2d as _ConvExtConv2d

__all__ = ["FusionReport", "fuse"]


@dataclass
class FusionReport:
    """What fuse() did: one line per fused convolution, e.g.
    'layer1.0.conv2: conv+bn+add+relu', and the modules it could not trace."""
    fused: list = field(default_factory=list)
    untraced: list = field(default_factory=list)

    def counts(self):
        counts = {}
        for line in self.fused:
            kind = line.split(": ", 1)[1]
            counts[kind] = counts.get(kind, 0) + 1
        return counts

    def __str__(self):
        parts = [f"{n} x {kind}" for kind, n in sorted(self.counts().items())]
        text = f"conv_ext.fuse: {len(self.fused)} convolutions fused"
        if parts:
            text += " (" + ", ".join(parts) + ")"
        if self.untraced:
            text += f"; not traceable, searched inside: {', '.join(self.untraced)}"
        return text


_ACTIVATION_MODULES = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.SiLU: "silu",
                       nn.Hardswish: "hardswish"}
_ACTIVATION_FUNCTIONS = {F.relu: "relu", torch.relu: "relu", torch.relu_: "relu",
                         F.relu6: "relu6", F.silu: "silu", F.hardswish: "hardswish"}
_ACTIVATION_METHODS = {"relu": "relu", "relu_": "relu"}
_ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
_ADD_METHODS = ("add", "add_")


class _Tracer(fx.Tracer):
    """Convolutions, BatchNorms and fused modules stay calls (conv_ext.Conv2d
    is not under torch.nn, so the default tracer would trace into it)."""

    def is_leaf_module(self, m, qualname):
        if isinstance(m, (nn.Conv2d, nn.modules.batchnorm._BatchNorm, FusedConv2d)):
            return True
        return super().is_leaf_module(m, qualname)


def _trace(module):
    graph = _Tracer().trace(module)
    name = module.__class__.__name__
    return fx.GraphModule(module, graph, name)


def _activation_of(node, modules):
    """The activation name of `node` if it is one applied to its first
    argument alone (no other tensor operands), else None."""
    if node.op == "call_module":
        m = modules.get(node.target)
        if type(m) in _ACTIVATION_MODULES:
            return _ACTIVATION_MODULES[type(m)]
        if isinstance(m, nn.Hardtanh) and m.min_val == 0.0 and m.max_val == 6.0:
            return "relu6"
        if type(m) is nn.GELU:
            return {"none": "gelu", "tanh": "gelu_tanh"}.get(m.approximate)
        return None
    if node.op == "call_function":
        if node.target in _ACTIVATION_FUNCTIONS:
            return _ACTIVATION_FUNCTIONS[node.target]
        if node.target is F.gelu and len(node.args) == 1:
            return {"none": "gelu", "tanh": "gelu_tanh"}.get(node.kwargs.get("approximate", "none"))
        if node.target is F.hardtanh:
            bounds = list(node.args[1:3]) + [node.kwargs.get(k) for k in ("min_val", "max_val")]
            bounds = [b for b in bounds if b is not None]
            return "relu6" if bounds == [0.0, 6.0] else None
        return None
    if node.op == "call_method" and node.target in _ACTIVATION_METHODS and len(node.args) == 1:
        return _ACTIVATION_METHODS[node.target]
    return None


def _residual_of(node, source):
    """If `node` adds `source` and another graph value (no alpha), that other
    value, else None."""
    is_add = ((node.op == "call_function" and node.target in _ADD_FUNCTIONS)
              or (node.op == "call_method" and node.target in _ADD_METHODS))
    if not is_add or len(node.args) != 2 or node.kwargs:
        return None
    a, b = node.args
    if a is source and isinstance(b, fx.Node) and b is not source:
        return b
    if b is source and isinstance(a, fx.Node) and a is not source:
        return a
    return None


def _only_user(node):
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _is_eval_identity(node, modules):
    if node.op == "call_module":
        return isinstance(modules.get(node.target), (nn.Dropout, nn.Identity))
    if node.op == "call_function" and getattr(node.target, "__name__", "") == "stochastic_depth":
        training = node.args[3] if len(node.args) > 3 else node.kwargs.get("training", True)
        return training is False
    return False


def _fold(conv, bn):
    """(weight, bias) of conv followed by bn in eval mode, computed in float64."""
    w = conv.weight.detach().double()
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(
        w.shape[0], dtype=torch.float64, device=w.device)
    if bn is None:
        return conv.weight.detach().clone(), (None if conv.bias is None else conv.bias.detach().clone())
    factor = torch.rsqrt(bn.running_var.double() + bn.eps)
    shift = -bn.running_mean.double() * factor
    if bn.affine:
        factor = factor * bn.weight.detach().double()
        shift = shift * bn.weight.detach().double() + bn.bias.detach().double()
    w = w * factor.view(-1, 1, 1, 1)
    b = b * factor + shift
    return w.to(conv.weight.dtype), b.to(conv.weight.dtype)


def _foldable_bn(bn, channels):
    return (type(bn) is nn.BatchNorm2d and not bn.training and bn.track_running_stats
            and bn.running_mean is not None and bn.num_features == channels)


def _fuse_graph(gm, report, prefix):
    """Rewrites the chains of GraphModule `gm` in place; returns the count."""
    modules = dict(gm.named_modules())
    graph = gm.graph
    for node in list(graph.nodes):
        if _is_eval_identity(node, modules):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    calls = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    fused = 0
    for node in list(graph.nodes):
        if node.op != "call_module":
            continue
        conv = modules.get(node.target)
        # nn.Conv2d or conv_ext.Conv2d exactly as they compute (a subclass may
        # change the computation, e.g. standardise the weights).
        if (not isinstance(conv, nn.Conv2d) or type(conv).forward is not nn.Conv2d.forward
                or type(conv)._conv_forward not in (nn.Conv2d._conv_forward,
                                                    _ConvExtConv2d._conv_forward)
                or conv.padding_mode != "zeros" or isinstance(conv.padding, str)
                or calls[node.target] != 1 or len(node.args) != 1 or node.kwargs):
            continue
        chain, kinds = [node], ["conv"]
        bn = None
        user = _only_user(node)
        if (user is not None and user.op == "call_module" and len(user.args) == 1
                and _foldable_bn(modules.get(user.target), conv.out_channels)):
            bn = modules[user.target]
            chain.append(user)
            kinds.append("bn")
        activation, residual, before = "none", None, True
        user = _only_user(chain[-1])
        if user is not None and _activation_of(user, modules) and user.args[0] is chain[-1]:
            activation = _activation_of(user, modules)
            chain.append(user)
            kinds.append(activation)
            user = _only_user(chain[-1])
            if user is not None and _residual_of(user, chain[-1]) is not None:
                residual, before = _residual_of(user, chain[-1]), False
                chain.append(user)
                kinds.append("add")
        elif user is not None and _residual_of(user, chain[-1]) is not None:
            residual = _residual_of(user, chain[-1])
            chain.append(user)
            kinds.append("add")
            after = _only_user(user)
            if after is not None and _activation_of(after, modules) and after.args[0] is user:
                activation = _activation_of(after, modules)
                chain.append(after)
                kinds.append(activation)
        if len(chain) == 1:
            continue
        weight, bias = _fold(conv, bn)
        fused_module = FusedConv2d(weight, bias, conv.stride, conv.padding, conv.dilation,
                                   conv.groups, activation, before,
                                   source=f"{prefix}{node.target}")
        fused_module.train(False)
        gm.add_submodule(node.target, fused_module)  # in place of the conv
        last = chain[-1]
        with graph.inserting_before(last):
            args = (node.args[0],) if residual is None else (node.args[0], residual)
            new = graph.call_module(node.target, args)
        last.replace_all_uses_with(new)
        for old in reversed(chain):
            graph.erase_node(old)
        report.fused.append(f"{prefix}{node.target}: {'+'.join(kinds)}")
        fused += 1
    if fused:
        graph.lint()
        gm.delete_all_unused_submodules()
        gm.recompile()
    return fused


def _fuse_module(module, report, prefix):
    """`module` with its chains fused: a GraphModule if it traces (and
    anything was fused), else `module` with its children fused in place."""
    if isinstance(module, (nn.Conv2d, FusedConv2d)) or not any(True for _ in module.children()):
        return module
    try:
        gm = _trace(module)
    except Exception:  # not symbolically traceable: search inside
        report.untraced.append(prefix.rstrip(".") or type(module).__name__)
        for name, child in list(module._modules.items()):
            if child is not None:
                module._modules[name] = _fuse_module(child, report, f"{prefix}{name}.")
        return module
    return gm if _fuse_graph(gm, report, prefix) else module


def fuse(model: nn.Module, inplace: bool = False, verbose: bool = False) -> nn.Module:
    """A model computing what eval-mode `model` computes, with each Conv ->
    BatchNorm -> activation (-> residual add) chain as one conv_ext
    FusedConv2d call (BatchNorm folded into the weights, activation and add in
    the convolution's epilogue). `model` is copied unless inplace=True
    (traced parts are replaced by fx.GraphModules either way). The result
    carries `conv_ext_fusion_report` (a FusionReport); verbose=True prints it.

    Raises RuntimeError for a model (or submodule) in training mode: the
    fold uses BatchNorm's running statistics, which only eval mode uses."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"conv_ext.fuse: expected an nn.Module, got {type(model).__name__}")
    training = [name or type(model).__name__ for name, m in model.named_modules() if m.training]
    if training:
        raise RuntimeError(
            "conv_ext.fuse: the model is in training mode (first: "
            f"{training[0]!r}); fuse folds BatchNorm's running statistics into the "
            "convolutions, which is only what an eval-mode model computes. Call model.eval() "
            "first; train the unfused model.")
    if not inplace:
        model = copy.deepcopy(model)
    report = FusionReport()
    with torch.no_grad():
        result = _fuse_module(model, report, "")
    result.conv_ext_fusion_report = report
    if verbose:
        print(report)
    return result
