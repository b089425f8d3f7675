"""Model transforms: the weight-only int8 layer is per-channel symmetric quantization."""

from __future__ import annotations

import torch

from trustdiff.transforms import Int8WeightLinear


def test_int8_weight_linear_is_per_channel_symmetric_quantization() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(16, 4)
    with torch.no_grad():
        linear.weight[1] *= 100  # channels keep their own scale
    quantized = Int8WeightLinear(linear)
    weight = linear.weight.detach()
    scale = weight.abs().amax(dim=1) / 127
    torch.testing.assert_close(quantized.scale, scale)
    assert quantized.weight_int8.dtype == torch.int8
    assert int(quantized.weight_int8.abs().max()) == 127
    dequantized = quantized.weight_int8.float() * scale[:, None]
    assert bool(((dequantized - weight).abs() <= scale[:, None] / 2 + 1e-7).all())
    inputs = torch.randn(3, 16)
    expected = torch.nn.functional.linear(inputs, dequantized, linear.bias)
    torch.testing.assert_close(quantized(inputs), expected)
    torch.testing.assert_close(
        quantized(inputs.bfloat16()), expected.bfloat16(), atol=0.5, rtol=0.02
    )
