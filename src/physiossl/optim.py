"""Adam and AdamW with the implementation chosen by the parameters' device, for pretraining, the evaluation
protocols and sleep staging.

On CUDA the fused kernels (``fused=True``) replace PyTorch's default there (foreach). On CPU the per-parameter
for-loop stays (PyTorch's default there, passed explicitly): the foreach implementation gives bit-identical
parameters on CPU but is no faster, and the fused CPU kernel, although about 3× faster per optimiser step (a step of
xresnet1d50's 0.9 M parameters is about 2 % of a training step at batch 64), rounds differently: after a few
steps a small fraction of the elements differ by about one float32 ulp, which training amplifies (relative
differences up to about 1e-3 after 20 steps of a small network), so CPU runs would no longer reproduce the numbers
of earlier runs of the same seed and config.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

#: device types whose parameters get the fused Adam/AdamW kernels
FUSED_DEVICES = ("cuda",)


def _materialise(params: Iterable[Any]) -> list[Any]:
    """``params`` (tensors, or parameter groups whose ``params`` may be any iterable) as a list, with every
    group's ``params`` a list, so that they can be read before the optimiser reads them."""
    out: list[Any] = []
    for entry in params:
        if isinstance(entry, dict):
            tensors = entry["params"]
            out.append({**entry, "params": [tensors] if isinstance(tensors, torch.Tensor) else list(tensors)})
        else:
            out.append(entry)
    return out


def implementation(params: Iterable[Any]) -> dict[str, bool]:
    """The implementation keyword for Adam/AdamW over ``params`` (tensors or parameter groups with lists of
    tensors): ``{"fused": True}`` when every parameter is a floating-point tensor on a device in
    :data:`FUSED_DEVICES`, else ``{"foreach": False}`` (the for-loop)."""
    tensors = [p for entry in params for p in (entry["params"] if isinstance(entry, dict) else [entry])]
    if tensors and all(p.device.type in FUSED_DEVICES and p.is_floating_point() for p in tensors):
        return {"fused": True}
    return {"foreach": False}


def adam(params: Iterable[Any], *, decoupled: bool = False, **kwargs: Any) -> torch.optim.Optimizer:
    """``torch.optim.AdamW`` (``decoupled``: decoupled weight decay) or ``torch.optim.Adam`` over ``params``
    (tensors or parameter groups) with ``kwargs`` (``lr``, ``weight_decay``, ...) and the :func:`implementation`
    for their device."""
    params = _materialise(params)
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    return cls(params, **kwargs, **implementation(params))
