"""The CPC encoder of the ECG SSL paper (after van den Oord et al. 2018).

A per-time-step encoder of ``encoder_layers`` × [Conv1d (kernel 1) → BatchNorm1d → ReLU] maps every input
sample to a ``hidden``-d vector z_t (no downsampling, ``stride = 1``); a unidirectional (causal)
``lstm_layers``-layer LSTM with ``hidden`` units turns z into the context c. Paper defaults: 4 layers,
512 units, 2 LSTM layers, 1000-sample (10 s at 100 Hz) input. The downstream representation is the
concatenation of the max over time, the mean over time and the last step of c (``out_dim = 3 * hidden``).
"""

from __future__ import annotations

import torch
from torch import nn

from . import register_encoder


@register_encoder("cpc")
class CPCEncoder(nn.Module):
    """(B, C, T) → ``encode`` z (B, T, hidden) → ``context`` c (B, T, hidden) → concat pooling (B, 3 * hidden);
    ``features`` is c channels first, (B, feature_dim = hidden, T)."""

    stride = 1

    def __init__(self, in_channels: int = 12, hidden: int = 512, encoder_layers: int = 4, lstm_layers: int = 2):
        super().__init__()
        if min(in_channels, hidden, encoder_layers, lstm_layers) < 1:
            raise ValueError("CPCEncoder: in_channels, hidden, encoder_layers and lstm_layers must be >= 1")
        layers: list[nn.Module] = []
        for i in range(encoder_layers):
            layers += [nn.Conv1d(in_channels if i == 0 else hidden, hidden, 1, bias=False),
                       nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
        self.step_encoder = nn.Sequential(*layers)
        self.lstm = nn.LSTM(hidden, hidden, num_layers=lstm_layers, batch_first=True)
        self.hidden = self.feature_dim = hidden
        self.out_dim = 3 * hidden

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.step_encoder(x).transpose(1, 2)

    def context(self, z: torch.Tensor) -> torch.Tensor:
        return self.lstm(z)[0]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.context(self.encode(x)).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.context(self.encode(x))
        return torch.cat([c.amax(dim=1), c.mean(dim=1), c[:, -1]], dim=1)

    def layer_groups(self) -> list[nn.Module]:
        return [self.step_encoder, self.lstm]
