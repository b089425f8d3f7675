"""Load-time model transforms: the compressions a candidate can be made with."""

from __future__ import annotations

import copy
import warnings
from typing import get_args

import torch
from torch import nn

from trustdiff.config import Transform
from trustdiff.errors import ConfigError

TRANSFORMS: tuple[str, ...] = get_args(Transform)
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Int8WeightLinear(nn.Module):
    """`nn.Linear` with int8 weights and one float32 scale per output channel.

    Symmetric per-channel quantization: `scale[o] = max_i |W[o, i]| / 127`,
    `W_int8 = round(W / scale)` in [−127, 127]. The forward pass dequantizes the weight to
    the input's dtype and runs an ordinary matmul, so it works on any device (CPU, CUDA);
    activations stay in floating point (weight-only quantization).
    """

    weight_int8: torch.Tensor
    scale: torch.Tensor

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().to(torch.float32)
        scale = weight.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / 127.0
        quantized = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.register_buffer("weight_int8", quantized)
        self.register_buffer("scale", scale)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone())

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        weight = (self.weight_int8.to(torch.float32) * self.scale[:, None]).to(inputs.dtype)
        bias = None if self.bias is None else self.bias.to(inputs.dtype)
        return nn.functional.linear(inputs, weight, bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights"


def _replace_linears(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8WeightLinear(child))
        else:
            _replace_linears(child)


def apply_transform(model: nn.Module, transform: str) -> nn.Module:
    """`model` with a load-time transform applied; the input model is left untouched.

    - `int8-dynamic`: dynamic int8 quantization of every `nn.Linear`
      (`torch.ao.quantization.quantize_dynamic`, qint8 weights, activations quantized per
      batch). Its kernels exist only for CPU.
    - `int8-weight`: every `nn.Linear` becomes an `Int8WeightLinear` (int8 weights, per-channel
      float32 scales, floating-point activations); runs on CPU and CUDA.
    - `float16`, `bfloat16`: every floating-point weight cast to that dtype (the model then
      computes in it).
    """
    if transform not in TRANSFORMS:
        raise ConfigError(f"unknown transform {transform!r}; known transforms are {TRANSFORMS}")
    if transform == "int8-dynamic":
        with warnings.catch_warnings():
            # torch.ao.quantization is deprecated in favour of torchao; it still works and
            # torchao is not a dependency.
            warnings.simplefilter("ignore")
            # inplace=False (the default) quantizes a deep copy.
            return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    transformed = copy.deepcopy(model)
    if transform == "int8-weight":
        _replace_linears(transformed)
        return transformed
    return transformed.to(TORCH_DTYPES[transform])
