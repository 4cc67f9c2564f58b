"""Sequence-to-sequence models for sound-based sleep staging: SoundSleepNet (Hong et al. 2022) and SleepFormer
(MobileViTV2 backbone + fully connected head, the Asleep paper).

Input: a batch of sequences of N_s consecutive 30 s epochs of log-mel features, (B, N_s, n_mels, frames), float,
in dB (10 log10 power). Output: per-epoch logits (B, N_s, n_classes). Every model is a :class:`SleepModel`:
``embed(x)`` gives per-epoch embeddings (B, N_s, embed_dim) that already carry sequence context (used by the
sequential-consistency and semi-supervised contrastive losses), ``classify(z)`` is the per-epoch head and
``forward(x) = classify(embed(x))``. The number of epochs N_s may differ between calls; ``n_mels`` and
``frames`` must match the model's.

Input normalisation (:class:`InputNorm`, first layer of every model): each sequence's dB values are
instance-normalised (``norm="sequence"``: mean and standard deviation over all its epochs, mel bins and frames;
``norm="bin"``: per mel bin, over all its epochs' frames), then a learnable per-mel-bin affine (scale 1, shift 0
at initialisation) is applied. Both modes make the model exactly invariant to a microphone gain (a constant dB
offset) and to a scaling of the dB values; ``"sequence"`` keeps the spectral shape and the loudness differences
between the epochs of a sequence, ``"bin"`` also removes a fixed frequency response (a per-bin dB offset) at
the cost of the stationary spectral shape.

Each model registers with ``@register_sleep_model("name")``; :func:`physiossl.models.build_sleep_model` and
:func:`physiossl.models.sleep_model_args` (the constructor arguments a config may set) look them up.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from . import register_sleep_model

NORM_MODES = ("sequence", "bin")
SEQ_MODELS = ("gru", "lstm", "transformer", "none")


def _positive_int(name: str, value: int, owner: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")
    return value


class InputNorm(nn.Module):
    """Gain-invariant normalisation of log-mel dB input (B, N_s, M, F), then a learnable per-mel-bin affine.

    ``mode="sequence"``: subtract the mean and divide by the standard deviation over each sequence's epochs, mel
    bins and frames. ``mode="bin"``: the same per mel bin (over the sequence's epochs and frames). Statistics are
    computed in float32; ``eps`` (dB²) keeps constant input finite (it maps to the affine shift)."""

    eps = 1e-5

    def __init__(self, n_mels: int, mode: str = "sequence"):
        super().__init__()
        if mode not in NORM_MODES:
            raise ValueError(f"InputNorm: norm must be one of {list(NORM_MODES)}, got {mode!r}")
        self.mode = mode
        self.weight = nn.Parameter(torch.ones(n_mels, 1))
        self.bias = nn.Parameter(torch.zeros(n_mels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = (1, 2, 3) if self.mode == "sequence" else (1, 3)
        xf = x.float()
        var, mean = torch.var_mean(xf, dim=dims, keepdim=True, correction=0)
        return ((xf - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias).to(x.dtype)

    def extra_repr(self) -> str:
        return f"n_mels={self.weight.shape[0]}, mode={self.mode!r}"


class SleepModel(nn.Module, ABC):
    """Base class: (B, N_s, n_mels, frames) dB log-mel sequences → per-epoch logits (B, N_s, n_classes).

    Subclasses build ``self.head`` with :meth:`_make_head` and implement :meth:`embed`."""

    embed_dim: int
    head: nn.Module

    def __init__(self, n_mels: int, frames: int, n_classes: int, norm: str = "sequence"):
        super().__init__()
        owner = type(self).__name__
        self.n_mels = _positive_int("n_mels", n_mels, owner)
        self.frames = _positive_int("frames", frames, owner)
        self.n_classes = _positive_int("n_classes", n_classes, owner)
        self.input_norm = InputNorm(n_mels, norm)

    def _make_head(self, embed_dim: int, dropout: float) -> None:
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{type(self).__name__}: dropout must lie in [0, 1), got {dropout!r}")
        self.embed_dim = embed_dim
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(embed_dim, self.n_classes))

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] < 1 or x.shape[2] != self.n_mels or x.shape[3] != self.frames:
            raise ValueError(f"{type(self).__name__} expects input (batch, N_s >= 1, n_mels={self.n_mels}, "
                             f"frames={self.frames}), got {tuple(x.shape)}")

    @abstractmethod
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Per-epoch embeddings with sequence context: (B, N_s, n_mels, frames) → (B, N_s, embed_dim)."""

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        """The per-epoch head: (B, N_s, embed_dim) → logits (B, N_s, n_classes)."""
        return self.head(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.embed(x))


# --------------------------------------------------------------------------------------------------- SoundSleepNet
def _conv_bn_relu(ni: int, nf: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(ni, nf, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(nf),
                         nn.ReLU(inplace=True))


class _Pool2x2(nn.Module):
    """2 × 2 max-pooling (ceil mode) that leaves an axis of size 1 as it is."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = (min(2, x.shape[-2]), min(2, x.shape[-1]))
        return F.max_pool2d(x, kernel, kernel, ceil_mode=True)


class EpochCNN(nn.Module):
    """Per-epoch 2-D CNN: (B', 1, M, F) → (B', embed_dim).

    Stem: a stride-2 3 × 3 conv-BN-ReLU with ``width`` channels and 2 × 2 max-pooling; then three stages of two
    3 × 3 conv-BN-ReLU blocks with ``width``, 2 ``width`` and 4 ``width`` channels, separated by 2 × 2
    max-pooling (total downsampling 16 over mel and time; an axis already down to 1 is not pooled further);
    concatenated global average and max pooling and a linear projection to ``embed_dim``."""

    def __init__(self, width: int = 32, embed_dim: int = 128):
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_relu(1, width, stride=2), _Pool2x2()]
        prev = width
        for i, c in enumerate((width, 2 * width, 4 * width)):
            layers += ([_Pool2x2()] if i else []) + [_conv_bn_relu(prev, c), _conv_bn_relu(c, c)]
            prev = c
        self.features = nn.Sequential(*layers)
        self.proj = nn.Linear(2 * prev, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x).flatten(2)
        return self.proj(torch.cat([h.mean(-1), h.amax(-1)], 1))


def _sinusoidal(n: int, d: int, like: torch.Tensor) -> torch.Tensor:
    """(n, d) sinusoidal position encoding (d even)."""
    pos = torch.arange(n, device=like.device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d, 2, device=like.device, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(n, d, device=like.device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)
    return pe.to(like.dtype)


@register_sleep_model("soundsleepnet")
class SoundSleepNet(SleepModel):
    """SoundSleepNet-style baseline: a per-epoch 2-D CNN (:class:`EpochCNN`, shared over the N_s epochs) → a
    sequence model over the N_s epoch vectors → a fully connected head per epoch.

    ``seq_model``: ``"gru"`` / ``"lstm"`` (bidirectional, ``seq_layers`` layers, ``embed_dim / 2`` units per
    direction, residual connection and LayerNorm), ``"transformer"`` (``seq_layers`` pre-norm encoder layers
    with 4 heads, feed-forward 2 ``embed_dim``, sinusoidal positions, final LayerNorm) or ``"none"`` (each epoch
    on its own). ``dropout`` applies in the sequence model and before the head. ``norm``: see :class:`InputNorm`.
    """

    def __init__(self, n_mels: int, frames: int, n_classes: int = 4, width: int = 32, embed_dim: int = 128,
                 seq_model: str = "gru", seq_layers: int = 1, dropout: float = 0.1, norm: str = "sequence"):
        super().__init__(n_mels, frames, n_classes, norm)
        _positive_int("width", width, "SoundSleepNet")
        _positive_int("seq_layers", seq_layers, "SoundSleepNet")
        if seq_model not in SEQ_MODELS:
            raise ValueError(f"SoundSleepNet: seq_model must be one of {list(SEQ_MODELS)}, got {seq_model!r}")
        if isinstance(embed_dim, bool) or not isinstance(embed_dim, int) or embed_dim < 4 or embed_dim % 4:
            raise ValueError(f"SoundSleepNet: embed_dim must be a positive multiple of 4, got {embed_dim!r}")
        self.seq_model = seq_model
        self.encoder = EpochCNN(width, embed_dim)
        self.seq: nn.Module | None = None
        self.seq_norm: nn.Module = nn.Identity()
        self.seq_dropout = nn.Dropout(dropout)
        if seq_model in ("gru", "lstm"):
            rnn = nn.GRU if seq_model == "gru" else nn.LSTM
            self.seq = rnn(embed_dim, embed_dim // 2, num_layers=seq_layers, batch_first=True, bidirectional=True,
                           dropout=dropout if seq_layers > 1 else 0.0)
            self.seq_norm = nn.LayerNorm(embed_dim)
        elif seq_model == "transformer":
            layer = nn.TransformerEncoderLayer(embed_dim, 4, 2 * embed_dim, dropout, batch_first=True,
                                               norm_first=True)
            self.seq = nn.TransformerEncoder(layer, seq_layers, norm=nn.LayerNorm(embed_dim),
                                             enable_nested_tensor=False)
        self._make_head(embed_dim, dropout)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        b, s, m, f = x.shape
        z = self.encoder(self.input_norm(x).reshape(b * s, 1, m, f)).reshape(b, s, -1)
        if self.seq_model in ("gru", "lstm"):
            return self.seq_norm(z + self.seq_dropout(self.seq(z)[0]))
        if self.seq_model == "transformer":
            return self.seq(z + _sinusoidal(s, self.embed_dim, z))
        return z

    def layer_groups(self) -> list[nn.Module]:
        """Input normalisation + CNN, then the sequence model (input to output; the head is not included)."""
        groups: list[nn.Module] = [nn.ModuleList([self.input_norm, self.encoder])]
        if self.seq is not None:
            groups.append(nn.ModuleList([self.seq, self.seq_norm]))
        return groups


# ------------------------------------------------------------------------------------------ SleepFormer / MobileViTV2
def make_divisible(v: float, divisor: int = 8) -> int:
    """``v`` rounded to a multiple of ``divisor`` (at least ``divisor``, never below 90 % of ``v``), as in
    MobileNet / MobileViT."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


class ConvBNAct(nn.Sequential):
    """Conv2d (``k`` × ``k``, same padding, no bias) → BatchNorm2d → SiLU (without it when ``act`` is False)."""

    def __init__(self, ni: int, nf: int, k: int = 3, stride: int | tuple[int, int] = 1, groups: int = 1,
                 act: bool = True):
        layers: list[nn.Module] = [nn.Conv2d(ni, nf, k, stride=stride, padding=k // 2, groups=groups, bias=False),
                                   nn.BatchNorm2d(nf)]
        if act:
            layers.append(nn.SiLU(inplace=True))
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: expand 1 × 1 → depthwise 3 × 3 (``stride``) → project 1 × 1 (BN, SiLU; no activation
    after the projection); a residual connection when the shape is kept."""

    def __init__(self, ni: int, nf: int, stride: int = 1, expand: float = 2.0):
        super().__init__()
        hidden = make_divisible(round(ni * expand)) if expand != 1 else ni
        layers: list[nn.Module] = [ConvBNAct(ni, hidden, 1)] if expand != 1 else []
        layers += [ConvBNAct(hidden, hidden, 3, stride, groups=hidden), ConvBNAct(hidden, nf, 1, act=False)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and ni == nf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class SeparableSelfAttention(nn.Module):
    """MobileViTv2's separable self-attention (linear in the number of tokens) on patches (B, d, P, N).

    A 1 × 1 projection gives per token a context score (1 channel), a key and a value (d channels each); the
    scores are softmax-normalised over the N tokens (separately for each of the P pixel positions of a patch);
    the context vector is the score-weighted sum of the keys; the output is ReLU(value) × context (broadcast over
    the tokens) followed by a 1 × 1 projection."""

    def __init__(self, dim: int, attn_dropout: float = 0.0):
        super().__init__()
        self.dim = dim
        self.qkv = nn.Conv2d(dim, 1 + 2 * dim, 1)
        self.attn_dropout = nn.Dropout(attn_dropout)
        self.out = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query, key, value = self.qkv(x).split([1, self.dim, self.dim], dim=1)
        scores = self.attn_dropout(query.softmax(dim=-1))
        context = (key * scores).sum(dim=-1, keepdim=True)
        return self.out(F.relu(value) * context)


class LinearAttnFFN(nn.Module):
    """Pre-norm transformer layer of MobileViTv2 on (B, d, P, N): x + attn(GN(x)), then x + FFN(GN(x)), with
    GroupNorm(1) (layer norm over channels and tokens) and a 1 × 1-conv FFN (d → ``ffn_dim`` → d, SiLU);
    ``attn_dropout`` on the attention scores."""

    def __init__(self, dim: int, ffn_dim: int, attn_dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(1, dim)
        self.attn = SeparableSelfAttention(dim, attn_dropout)
        self.norm2 = nn.GroupNorm(1, dim)
        self.ffn = nn.Sequential(nn.Conv2d(dim, ffn_dim, 1), nn.SiLU(inplace=True), nn.Conv2d(ffn_dim, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class MobileViTV2Block(nn.Module):
    """MobileViTv2 block: local representation (depthwise 3 × 3 conv-BN-SiLU, 1 × 1 conv to ``attn_dim``) →
    unfold into non-overlapping ``patch`` patches → ``n_layers`` × :class:`LinearAttnFFN` + GroupNorm(1) → fold
    back → 1 × 1 conv-BN to ``channels``.

    A feature map whose height or width is not a multiple of the patch size is padded at the bottom / right with
    its edge values for the unfolding and cropped back after folding, so positions are kept."""

    def __init__(self, channels: int, attn_dim: int, n_layers: int, patch: tuple[int, int] = (2, 2),
                 ffn_multiplier: float = 2.0, attn_dropout: float = 0.0):
        super().__init__()
        self.patch = patch
        self.local = nn.Sequential(ConvBNAct(channels, channels, 3, groups=channels),
                                   nn.Conv2d(channels, attn_dim, 1, bias=False))
        ffn_dim = make_divisible(attn_dim * ffn_multiplier, 16)
        self.global_rep = nn.Sequential(*[LinearAttnFFN(attn_dim, ffn_dim, attn_dropout) for _ in range(n_layers)],
                                        nn.GroupNorm(1, attn_dim))
        self.proj = ConvBNAct(attn_dim, channels, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.local(x)
        b, d, h, w = y.shape
        ph, pw = self.patch
        pad_h, pad_w = -h % ph, -w % pw
        if pad_h or pad_w:
            y = F.pad(y, (0, pad_w, 0, pad_h), mode="replicate")
        size = (h + pad_h, w + pad_w)
        patches = F.unfold(y, kernel_size=self.patch, stride=self.patch).reshape(b, d, ph * pw, -1)
        patches = self.global_rep(patches)
        y = F.fold(patches.reshape(b, d * ph * pw, -1), output_size=size, kernel_size=self.patch, stride=self.patch)
        return self.proj(y[:, :, :h, :w])


class MobileViTV2(nn.Module):
    """MobileViTv2 backbone (Mehta & Rastegari 2022) with width multiplier ``width`` (α): (B, C_in, H, W) →
    (B, out_channels, ⌈H / stride[0]⌉, ⌈W / stride[1]⌉).

    Stem conv-BN-SiLU with max(16, min(64, 32 α)) channels and stride (2, ``stem_time_stride``), kernel
    3 × (2 ``stem_time_stride`` - 1) so it covers every input column; stage 1: an inverted-residual block (64 α,
    stride 1); stage 2: two (128 α, the first with stride 2); then one stage per entry n of ``attn_blocks``: an
    inverted-residual block with stride 2 and a :class:`MobileViTV2Block` with n attention layers, with
    (256 α, 384 α, 512 α) channels and (128 α, 192 α, 256 α) attention dimensions. Expansion 2, patches 2 × 2,
    channels rounded to multiples of 8. ``attn_blocks=(2, 4, 3)`` with ``stem_time_stride=2`` is the original
    MobileViTv2 (stride 32); ``stride`` = (2, ``stem_time_stride``) × 2^(1 + len(attn_blocks)). The network runs
    in channels-last memory format (much faster depthwise convolutions on CPU)."""

    out_widths = (256, 384, 512)
    attn_widths = (128, 192, 256)

    def __init__(self, in_channels: int = 1, width: float = 0.5, attn_blocks: Sequence[int] = (2, 2),
                 attn_dropout: float = 0.0, stem_time_stride: int = 2):
        super().__init__()
        blocks = tuple(attn_blocks) if isinstance(attn_blocks, (list, tuple)) else ()
        if not (1 <= len(blocks) <= 3 and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1
                                              for n in blocks)):
            raise ValueError(f"MobileViTV2: attn_blocks must be a list of 1 to 3 positive integers (attention layers "
                             f"per MobileViTv2 stage), got {attn_blocks!r}")
        if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
            raise ValueError(f"MobileViTV2: width must be a positive number, got {width!r}")
        st = _positive_int("stem_time_stride", stem_time_stride, "MobileViTV2")
        stem = make_divisible(max(16, min(64, 32 * width)))
        c1, c2 = make_divisible(64 * width), make_divisible(128 * width)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem, (3, 2 * st - 1), stride=(2, st), padding=(1, st - 1), bias=False),
            nn.BatchNorm2d(stem), nn.SiLU(inplace=True))
        stages: list[nn.Module] = [InvertedResidual(stem, c1, 1), nn.Sequential(InvertedResidual(c1, c2, 2),
                                                                               InvertedResidual(c2, c2, 1))]
        prev = c2
        for n, out_w, attn_w in zip(blocks, self.out_widths, self.attn_widths):
            c, d = make_divisible(out_w * width), make_divisible(attn_w * width)
            stages.append(nn.Sequential(InvertedResidual(prev, c, 2),
                                        MobileViTV2Block(c, d, n, attn_dropout=attn_dropout)))
            prev = c
        self.stages = nn.Sequential(*stages)
        down = 2 ** (1 + len(blocks))
        self.stride = (2 * down, st * down)
        self.out_channels = prev

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x.contiguous(memory_format=torch.channels_last)))


@register_sleep_model("sleepformer")
class SleepFormer(SleepModel):
    """SleepFormer: a MobileViTv2 backbone (:class:`MobileViTV2`) over the whole sequence + a fully connected
    head per epoch.

    The sequence's N_s normalised spectrograms are placed side by side along time into one image
    (B, 1, n_mels, N_s · frames), so attention mixes neighbouring epochs; the image is padded on the right with
    its last frame to a multiple of the backbone's time stride T. Column j of the final feature map (B, C, h, w)
    stands for input frames [j T, (j + 1) T); averaged over the h mel rows, the columns are pooled into the N_s
    epochs with weights proportional to their overlap with each epoch's frames [k · frames, (k + 1) · frames)
    (padding frames belong to no epoch). Where ``frames`` is a multiple of T this is adaptive average pooling to
    (1, N_s); otherwise a column straddling an epoch boundary is shared by both epochs in proportion, so the
    segments follow the epoch boundaries to within a fraction of a column. The result are the per-epoch
    embeddings (B, N_s, C), ``embed_dim = C``.

    ``width``: the width multiplier α; ``attn_blocks``: attention layers per MobileViTv2 stage;
    ``stem_time_stride``: the stem's stride along time (the mel stride is 2, as in MobileViTv2; the default 8
    keeps the very wide sequence image cheap; ``frames`` must be at least the resulting time stride, 64 with the
    defaults, and a few times it keeps epochs well resolved); ``dropout``: before the head; ``attn_dropout``: on
    the attention scores; ``norm``: see :class:`InputNorm`."""

    def __init__(self, n_mels: int, frames: int, n_classes: int = 4, width: float = 0.5,
                 attn_blocks: Sequence[int] = (2, 2), stem_time_stride: int = 8, dropout: float = 0.1,
                 attn_dropout: float = 0.0, norm: str = "sequence"):
        super().__init__(n_mels, frames, n_classes, norm)
        if not 0.0 <= attn_dropout < 1.0:
            raise ValueError(f"SleepFormer: attn_dropout must lie in [0, 1), got {attn_dropout!r}")
        self.backbone = MobileViTV2(1, width, attn_blocks, attn_dropout, stem_time_stride)
        if frames < self.backbone.stride[1]:
            raise ValueError(f"SleepFormer: frames ({frames}) must be at least the backbone's time stride "
                             f"({self.backbone.stride[1]}) so that every epoch has a feature column of its own; "
                             f"lower stem_time_stride or use fewer attn_blocks")
        self._make_head(self.backbone.out_channels, dropout)

    def image(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised sequence as one image (B, 1, n_mels, W): N_s · frames columns, edge-padded on the
        right to a multiple of the backbone's time stride."""
        self._check_input(x)
        b, s, m, f = x.shape
        img = self.input_norm(x).permute(0, 2, 1, 3).reshape(b, m, s * f)
        pad = -(s * f) % self.backbone.stride[1]
        if pad:
            img = F.pad(img, (0, pad), mode="replicate")
        return img.unsqueeze(1)

    def epoch_weights(self, n_s: int, columns: int, like: torch.Tensor) -> torch.Tensor:
        """(n_s, columns) pooling weights: the overlap of feature column j (input frames [j T, (j + 1) T)) with
        epoch k (frames [k · frames, (k + 1) · frames)), normalised to sum 1 per epoch."""
        step, f = self.backbone.stride[1], self.frames
        col = torch.arange(columns, device=like.device, dtype=torch.float64)[None, :] * step
        ep = torch.arange(n_s, device=like.device, dtype=torch.float64)[:, None] * f
        overlap = (torch.minimum(col + step, ep + f) - torch.maximum(col, ep)).clamp_min(0)
        return (overlap / overlap.sum(1, keepdim=True)).to(like.dtype)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        cols = self.backbone(self.image(x)).mean(2)
        return torch.einsum("bcw,sw->bsc", cols, self.epoch_weights(x.shape[1], cols.shape[-1], cols))

    def layer_groups(self) -> list[nn.Module]:
        """Input normalisation + stem, then the backbone stages (input to output; the head is not included)."""
        return [nn.ModuleList([self.input_norm, self.backbone.stem]), *self.backbone.stages]
