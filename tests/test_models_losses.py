"""Encoders, the NT-Xent loss, the ECG augmentations, macro AUC and the method registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from physiossl.augment.ecg import RandomResizedCrop, TimeOut
from physiossl.eval.metrics import macro_auc
from physiossl.losses.nt_xent import nt_xent
from physiossl.models import build_encoder
from physiossl.models.xresnet1d import xresnet1d50, xresnet1d101


# --------------------------------------------------------------------------------------------- encoders
@pytest.mark.parametrize("factory,n_params", [(xresnet1d50, 886_400), (xresnet1d101, 1_804_672)])
def test_xresnet_size_and_shapes(factory, n_params):
    torch.manual_seed(0)
    model = factory()
    assert sum(p.numel() for p in model.parameters()) == n_params
    assert model.out_dim == 512
    x = torch.randn(3, 12, 250)
    assert model(x).shape == (3, 512)
    feats = model.features(x)
    assert feats.ndim == 3 and feats.shape[:2] == (3, 256)
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (3, 512)


def test_build_encoder():
    assert sum(p.numel() for p in build_encoder("xresnet1d50").parameters()) == 886_400
    assert build_encoder("xresnet1d50", in_channels=3)(torch.randn(2, 3, 250)).shape == (2, 512)
    with pytest.raises(KeyError, match="xresnet1d50"):
        build_encoder("resnet9000")


@pytest.mark.parametrize("factory", [xresnet1d50, xresnet1d101])
@pytest.mark.parametrize("strides,total",
                         [((1, 2, 2, 2), 32), ([1, 2, 1, 1], 8), ([1, 1, 1, 1], 4), ([2, 3, 1, 1], 24)])
def test_xresnet_stage_strides(factory, strides, total):
    torch.manual_seed(0)
    model = factory(stage_strides=strides)
    default = factory()
    assert model.stride == total and default.stride == 32 and default.stage_strides == (1, 2, 2, 2)
    # the strides change no parameter, only the length of the feature map
    assert [p.shape for p in model.parameters()] == [p.shape for p in default.parameters()]
    for t in (250, 400, 1000, 333):
        assert model.features(torch.randn(2, 12, t)).shape == (2, 256, math.ceil(t / total))
    assert model(torch.randn(2, 12, 250)).shape == (2, 512)


def test_xresnet_stage_strides_from_config_and_errors():
    encoder = build_encoder("xresnet1d50", stage_strides=[1, 2, 1, 1])
    assert encoder.stride == 8 and encoder.features(torch.randn(1, 12, 400)).shape[-1] == 50
    for bad in ([1, 2, 2], [1, 2, 0, 2], [1, 2.0, 2, 2], [1, True, 2, 2], "1222", 2):
        with pytest.raises(ValueError, match="stage_strides must be a list of 4 positive integers"):
            xresnet1d50(stage_strides=bad)


# --------------------------------------------------------------------------------------------- NT-Xent
def reference_nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> float:
    """The textbook NT-Xent written out with explicit loops, in float64."""
    z = [[c / math.sqrt(sum(c * c for c in v)) for c in v] for v in torch.cat([z1, z2]).double().tolist()]
    n2 = len(z)
    n = n2 // 2
    sim = [[sum(a * b for a, b in zip(z[i], z[k])) for k in range(n2)] for i in range(n2)]
    total = 0.0
    for i in range(n2):
        pos = (i + n) % n2
        denom = sum(math.exp(sim[i][k] / tau) for k in range(n2) if k != i)
        total += -math.log(math.exp(sim[i][pos] / tau) / denom)
    return total / n2


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("n,d", [(2, 3), (4, 5), (7, 8)])
def test_nt_xent_matches_textbook(tau, n, d):
    g = torch.Generator().manual_seed(n * 100 + d)
    z1, z2 = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    assert nt_xent(z1, z2, tau).item() == pytest.approx(reference_nt_xent(z1, z2, tau), rel=1e-5, abs=1e-6)


def test_nt_xent_symmetric_and_scale_invariant():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(6, 10, generator=g), torch.randn(6, 10, generator=g)
    loss = nt_xent(z1, z2, 0.5)
    torch.testing.assert_close(nt_xent(z2, z1, 0.5), loss)
    s1 = torch.rand(6, 1, generator=g) * 10 + 0.01
    s2 = torch.rand(6, 1, generator=g) * 10 + 0.01
    torch.testing.assert_close(nt_xent(z1 * s1, z2 * s2, 0.5), loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(nt_xent(3.0 * z1, 3.0 * z2, 0.5), loss, rtol=1e-5, atol=1e-6)


def test_nt_xent_prefers_aligned_pairs():
    g = torch.Generator().manual_seed(2)
    z1 = torch.randn(16, 32, generator=g)
    z2 = z1 + 0.1 * torch.randn(16, 32, generator=g)
    shuffled = z2[torch.roll(torch.arange(16), 1)]
    for tau in (0.1, 0.5, 1.0):
        assert nt_xent(z1, z2, tau) < nt_xent(z1, shuffled, tau)


def test_nt_xent_shape_errors():
    with pytest.raises(ValueError):
        nt_xent(torch.randn(4, 8), torch.randn(5, 8))
    with pytest.raises(ValueError):
        nt_xent(torch.randn(4, 8), torch.randn(4, 7))
    with pytest.raises(ValueError):
        nt_xent(torch.randn(4, 8, 2), torch.randn(4, 8, 2))


def test_nt_xent_single_pair_is_zero():
    z = torch.randn(1, 8)
    for tau in (0.1, 0.5, 1.0):
        assert nt_xent(z, z.clone(), tau).item() == 0.0


def test_nt_xent_gradient_finite():
    z1 = torch.randn(5, 8, requires_grad=True)
    z2 = torch.randn(5, 8, requires_grad=True)
    nt_xent(z1, z2, 0.1).backward()
    assert torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()


# --------------------------------------------------------------------------------------------- augmentations
def test_random_resized_crop_full_scale_is_identity():
    torch.manual_seed(0)
    x = torch.randn(8, 12, 250)
    torch.testing.assert_close(RandomResizedCrop((1.0, 1.0))(x), x, rtol=1e-4, atol=1e-4)


def test_random_resized_crop_shape_and_per_sample():
    torch.manual_seed(0)
    x = torch.randn(1, 12, 250).expand(8, 12, 250).contiguous()
    y = RandomResizedCrop((0.5, 1.0))(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all()
    for i in range(1, 8):
        assert not torch.allclose(y[0], y[i])
    # values are interpolations of the input: within its range per lead
    assert (y.amax(dim=-1) <= x.amax(dim=-1) + 1e-5).all() and (y.amin(dim=-1) >= x.amin(dim=-1) - 1e-5).all()


@pytest.mark.parametrize("area", [(0.2, 0.4), (0.1, 0.1), (0.0, 0.5)])
def test_timeout_zeroes_one_contiguous_span(area):
    torch.manual_seed(0)
    b, c, t = 64, 12, 250
    x = torch.rand(b, c, t) + 1.0  # never zero
    y = TimeOut(area)(x)
    assert y.shape == x.shape
    lo, hi = area
    for i in range(b):
        zero = (y[i] == 0)
        assert (zero == zero[0]).all(), "the span must cover all leads"
        idx = torch.nonzero(zero[0]).flatten()
        fraction = len(idx) / t
        assert lo - 1.0 / t <= fraction <= hi + 1e-9
        if len(idx):
            assert (idx[-1] - idx[0] + 1).item() == len(idx), "the zeroed span must be contiguous"
        torch.testing.assert_close(y[i][~zero], x[i][~zero])


# --------------------------------------------------------------------------------------------- macro AUC
def mann_whitney_auc(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def test_macro_auc_perfect():
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    result = macro_auc(y, y.astype(float) * 0.8 + 0.1, ["a", "b"])
    assert result["macro_auc"] == 1.0
    assert result["per_class_auc"] == {"a": 1.0, "b": 1.0}
    assert result["excluded"] == {} and result["n_scored"] == 2


def test_macro_auc_stays_within_unit_interval():
    """torchmetrics integrates in float32, so a perfect ranking can come out as 1.0000001; never above 1."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (45, 300))
    y[0], y[1] = 1, 0
    scores = rng.random(y.shape) + 2.0 * y
    names = [f"c{k}" for k in range(300)]
    for sign, target in ((1.0, 1.0), (-1.0, 0.0)):
        values = np.array(list(macro_auc(y, sign * scores, names)["per_class_auc"].values()))
        assert ((values >= 0.0) & (values <= 1.0)).all()
        np.testing.assert_allclose(values, target, atol=1e-6)


def test_macro_auc_excludes_unscorable_classes():
    y = np.array([[1, 0, 1, 1], [0, 0, 1, 0], [1, 0, 1, 0], [0, 0, 1, 1], [0, 0, 1, 0]])
    s = np.array([[0.9, 0.1, 0.5, 0.2], [0.3, 0.2, 0.4, 0.6], [0.4, 0.3, 0.3, 0.1], [0.2, 0.4, 0.2, 0.9],
                  [0.6, 0.5, 0.1, 0.3]])
    result = macro_auc(y, s, ["a", "none", "all", "d"])
    assert result["excluded"] == {"none": "no positives", "all": "no negatives"}
    assert set(result["per_class_auc"]) == {"a", "d"} and result["n_scored"] == 2
    expected_a, expected_d = mann_whitney_auc(y[:, 0], s[:, 0]), mann_whitney_auc(y[:, 3], s[:, 3])
    assert result["per_class_auc"]["a"] == pytest.approx(expected_a)
    assert result["per_class_auc"]["d"] == pytest.approx(expected_d)
    assert result["macro_auc"] == pytest.approx((expected_a + expected_d) / 2)


def test_macro_auc_matches_rank_auc_with_ties():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, (40, 3))
    y[0], y[1] = 1, 0
    s = rng.integers(0, 5, (40, 3)) / 4.0  # many ties
    result = macro_auc(y, s, ["x", "y", "z"])
    expected = [mann_whitney_auc(y[:, k], s[:, k]) for k in range(3)]
    for name, value in zip("xyz", expected):
        assert result["per_class_auc"][name] == pytest.approx(value, abs=1e-6)
    assert result["macro_auc"] == pytest.approx(np.mean(expected), abs=1e-6)


def test_macro_auc_nothing_scorable_is_nan():
    result = macro_auc(np.zeros((3, 1)), np.random.rand(3, 1), ["a"])
    assert math.isnan(result["macro_auc"]) and result["excluded"] == {"a": "no positives"}
