"""Noise robustness: the test records with physiological noise added at increasing levels.

The noise is generated in mV by the additive noise transforms of :mod:`physiossl.augment.ecg` (level L scales
every level-1 amplitude by L) and added to the normalised signals divided by the store's per-lead standard
deviation, i.e. as if it had been recorded with the signal. The noise depends only on the seed and the level, so
every method is scored on the same noisy copies; the random draws do not depend on the level, so the noise of
level L is exactly L times the noise of level 1.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..augment.ecg import build_noise
from ..data.ecg.loading import SignalCache
from .metrics import macro_auc

_BLOCK = 256


def noisy_copy(cache: SignalCache, noise: dict, level: int, seed: int) -> SignalCache:
    """A copy of ``cache`` whose signals carry the noise of ``level`` (zero padding stays zero)."""
    std = torch.as_tensor(np.asarray(cache.attrs["norm"]["std"], np.float32))[None, :, None]
    transform = build_noise(noise, level, cache.fs)
    data = np.array(cache.data, dtype=np.float32, copy=True)
    steps = np.arange(data.shape[2])[None, :]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, len(data), _BLOCK):
            block = torch.from_numpy(data[start:start + _BLOCK])
            added = transform(torch.zeros_like(block)) / std
            valid = steps < cache.lengths[start:start + _BLOCK, None]
            data[start:start + _BLOCK] = (block + added).numpy() * valid[:, None, :]
    return cache.with_data(data)


def robustness_curve(predict: Callable, split, classes: list[str], noise: dict, levels: int, seed: int) -> list[dict]:
    """Test macro AUC at noise levels 0 (clean) to ``levels``; ``predict(split)`` gives per-record scores."""
    curve = []
    for level in range(levels + 1):
        noisy = split if level == 0 else type(split)(noisy_copy(split.cache, noise, level, seed), split.labels)
        result = macro_auc(split.labels, predict(noisy), classes)
        curve.append({"level": level, "macro_auc": result["macro_auc"], "n_scored": result["n_scored"]})
    return curve
