"""The narrow 1-D XResNet of the ECG SSL paper (after fastai's XResNet and the PTB-XL benchmark).

Stem of three convolutions (32, 32, 64 channels, kernel 5, the first with stride 2) and a max-pool, then
four stages of bottleneck blocks (expansion 4) that all have width 64, so the last stage has 256 channels;
concatenated adaptive max- and average-pooling gives the 512-d representation. The stages downsample by
``stage_strides`` (default (1, 2, 2, 2), as in the paper: total stride 32); smaller strides keep a finer feature
time series (e.g. (1, 2, 1, 1): total stride 8) with the same parameters.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from . import register_encoder


def conv_bn(ni: int, nf: int, ks: int = 5, stride: int = 1, act: bool = True, zero_bn: bool = False) -> nn.Sequential:
    bn = nn.BatchNorm1d(nf)
    nn.init.constant_(bn.weight, 0.0 if zero_bn else 1.0)
    layers = [nn.Conv1d(ni, nf, ks, stride=stride, padding=ks // 2, bias=False), bn]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ResBlock(nn.Module):
    def __init__(self, expansion: int, ni: int, nf: int, stride: int = 1, ks: int = 5):
        super().__init__()
        nin, nout = ni * expansion, nf * expansion
        if expansion == 1:
            convs = [conv_bn(nin, nf, ks, stride), conv_bn(nf, nout, ks, act=False, zero_bn=True)]
        else:
            convs = [conv_bn(nin, nf, 1), conv_bn(nf, nf, ks, stride), conv_bn(nf, nout, 1, act=False, zero_bn=True)]
        self.convs = nn.Sequential(*convs)
        idpath = []
        if stride != 1:
            idpath.append(nn.AvgPool1d(stride, ceil_mode=True))
        if nin != nout:
            idpath.append(conv_bn(nin, nout, 1, act=False))
        self.idpath = nn.Sequential(*idpath)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.convs(x) + self.idpath(x))


class ConcatPool1d(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.amax(dim=-1), x.mean(dim=-1)], dim=1)


DEFAULT_STAGE_STRIDES = (1, 2, 2, 2)


def check_stage_strides(stage_strides: Sequence[int], n_stages: int) -> tuple[int, ...]:
    """``stage_strides`` as a tuple; ValueError unless it is a sequence of ``n_stages`` positive integers."""
    ok = (isinstance(stage_strides, Sequence) and not isinstance(stage_strides, str)
          and len(stage_strides) == n_stages
          and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in stage_strides))
    if not ok:
        raise ValueError(f"XResNet1d: stage_strides must be a list of {n_stages} positive integers (one stride per "
                         f"stage, default {list(DEFAULT_STAGE_STRIDES)}), got {stage_strides!r}")
    return tuple(int(s) for s in stage_strides)


class XResNet1d(nn.Module):
    """Encoder: (B, C, T) → (B, 2 * width * expansion); ``features`` gives the (B, feature_dim = 256, T') map with
    T' = ceil(T / stride), ``stride`` the total downsampling: 4 (the stem's stride-2 convolution and max-pool)
    times the product of ``stage_strides``, the strides of the first block of each stage (default (1, 2, 2, 2):
    stride 32). ``layer_groups`` lists stem and stages from input to output (for discriminative learning rates)."""

    def __init__(self, layers: list[int], in_channels: int = 12, expansion: int = 4, width: int = 64,
                 ks: int = 5, stem: tuple[int, ...] = (32, 32, 64),
                 stage_strides: Sequence[int] = DEFAULT_STAGE_STRIDES):
        super().__init__()
        self.stage_strides = check_stage_strides(stage_strides, len(layers))
        sizes = (in_channels, *stem)
        self.stem = nn.Sequential(
            *[conv_bn(sizes[i], sizes[i + 1], ks, stride=2 if i == 0 else 1) for i in range(len(stem))],
            nn.MaxPool1d(3, stride=2, padding=1),
        )
        block_sizes = [stem[-1] // expansion] + [width] * len(layers)
        stages = []
        self.stride = self.stem[0][0].stride[0] * self.stem[-1].stride
        for i, (n_blocks, stride) in enumerate(zip(layers, self.stage_strides)):
            self.stride *= stride
            stages.append(nn.Sequential(*[
                ResBlock(expansion, block_sizes[i] if j == 0 else block_sizes[i + 1], block_sizes[i + 1],
                         stride=stride if j == 0 else 1, ks=ks)
                for j in range(n_blocks)
            ]))
        self.stages = nn.Sequential(*stages)
        self.pool = ConcatPool1d()
        self.feature_dim = width * expansion
        self.out_dim = 2 * self.feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x))

    def layer_groups(self) -> list[nn.Module]:
        return [self.stem, *self.stages]


@register_encoder("xresnet1d50")
def xresnet1d50(in_channels: int = 12, stage_strides: Sequence[int] = DEFAULT_STAGE_STRIDES) -> XResNet1d:
    return XResNet1d([3, 4, 6, 3], in_channels=in_channels, stage_strides=stage_strides)


@register_encoder("xresnet1d101")
def xresnet1d101(in_channels: int = 12, stage_strides: Sequence[int] = DEFAULT_STAGE_STRIDES) -> XResNet1d:
    return XResNet1d([3, 4, 23, 3], in_channels=in_channels, stage_strides=stage_strides)
