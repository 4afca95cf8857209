"""SRDenseNet-All (Tong et al., ICCV 2017) for x4 single-channel super-resolution.

Structure: a 3x3 low-level convolution; ``blocks`` dense blocks of ``layers_per_block``
conv3x3+ReLU layers with growth rate ``growth``; dense skip connections that feed every block
the concatenation of the low-level features and all earlier block outputs (the "All" variant);
a 1x1 bottleneck; two stride-2 transposed convolutions (x4); a 3x3 reconstruction convolution
to one channel. Inside a block the first layer reads the block input and every later layer
reads the concatenation of the block's earlier layer outputs, so a block emits
``layers_per_block * growth`` new maps (8 x 16 = 128 in the paper) and the paper-size network
has about 2.7 M parameters.

``global_residual`` (not in the paper) adds bicubic upsampling of the input to the output, so
the network only learns a correction; its last convolution then starts at zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True))


class DenseBlock(nn.Module):
    def __init__(self, in_channels: int, growth: int, layers: int):
        super().__init__()
        self.layers = nn.ModuleList(
            [_conv_relu(in_channels, growth)]
            + [_conv_relu(growth * i, growth) for i in range(1, layers)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [self.layers[0](x)]
        for layer in self.layers[1:]:
            features.append(layer(torch.cat(features, dim=1)))
        return torch.cat(features, dim=1)


class SRDenseNet(nn.Module):
    def __init__(
        self,
        blocks: int = 8,
        layers_per_block: int = 8,
        growth: int = 16,
        bottleneck: int = 256,
        scale: int = 4,
        global_residual: bool = False,
    ):
        super().__init__()
        if scale not in (2, 4, 8):
            raise ValueError(f"scale must be 2, 4 or 8 (stride-2 deconvolutions), got {scale}")
        self.config = {
            "blocks": blocks,
            "layers_per_block": layers_per_block,
            "growth": growth,
            "bottleneck": bottleneck,
            "scale": scale,
            "global_residual": global_residual,
        }
        self.scale = scale
        self.global_residual = global_residual
        block_maps = growth * layers_per_block
        self.low_level = _conv_relu(1, block_maps)
        self.blocks = nn.ModuleList(
            [DenseBlock(block_maps * (i + 1), growth, layers_per_block) for i in range(blocks)]
        )
        self.bottleneck = nn.Sequential(
            nn.Conv2d(block_maps * (blocks + 1), bottleneck, 1), nn.ReLU(inplace=True)
        )
        upsampling = []
        for _ in range(scale.bit_length() - 1):
            upsampling += [
                nn.ConvTranspose2d(
                    bottleneck, bottleneck, 3, stride=2, padding=1, output_padding=1
                ),
                nn.ReLU(inplace=True),
            ]
        self.upsample = nn.Sequential(*upsampling)
        self.reconstruction = nn.Conv2d(bottleneck, 1, 3, padding=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)
        if self.global_residual:
            # Start as plain bicubic upsampling; training learns the correction.
            nn.init.zeros_(self.reconstruction.weight)
        else:
            nn.init.kaiming_normal_(self.reconstruction.weight, nonlinearity="linear")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.low_level(x)
        for block in self.blocks:
            features = torch.cat([features, block(features)], dim=1)
        out = self.reconstruction(self.upsample(self.bottleneck(features)))
        if self.global_residual:
            out = out + F.interpolate(
                x, scale_factor=self.scale, mode="bicubic", align_corners=False
            )
        return out

    @property
    def receptive_radius_lr(self) -> int:
        """How far (in LR pixels) an output pixel sees: the low-level conv and every 3x3 dense
        layer add one pixel, the deconvolutions and the last conv less than one each."""
        config = self.config
        return 1 + config["blocks"] * config["layers_per_block"] + 2

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
