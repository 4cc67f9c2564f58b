"""Losses of sound-based sleep staging: sequential consistency, semi-supervised contrastive (SSC) and the CCSSL
baseline. Hand-derived values on tiny inputs, invariances and properties, finite gradients, shape errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from physiossl.losses.ccssl import ccssl_loss
from physiossl.losses.semi_supervised_contrastive import semi_supervised_contrastive_loss
from physiossl.losses.sequential_consistency import consistency_weights, sequential_consistency_loss


def t64(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


def rand64(*shape, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ------------------------------------------------------------------------------------ sequential consistency
def test_consistency_weights_values():
    torch.testing.assert_close(consistency_weights(1, 0.3), torch.ones(1, 1))
    torch.testing.assert_close(consistency_weights(2, 0.5), torch.tensor([[1.0, 0.5], [0.5, 1.0]]))
    torch.testing.assert_close(consistency_weights(3, 0.2, dtype=torch.float64),
                               t64([[1.0, 0.6, 0.2], [0.6, 1.0, 0.6], [0.2, 0.6, 1.0]]))
    w = consistency_weights(6, 0.5, dtype=torch.float64)
    i, j = np.indices((6, 6))
    torch.testing.assert_close(w, torch.from_numpy(1.0 - 0.1 * np.abs(i - j)))
    assert w[0, 5].item() == pytest.approx(0.5) and torch.equal(w, w.T)


def test_sequential_consistency_hand_value():
    # view a: epochs e1, e2 -> C^a = I; view b: e1, (1, 1) -> off-diagonal cos = 1/sqrt(2).
    # W = [[1, .5], [.5, 1]], sum 3: loss = 2 * 0.5 * (1/sqrt2)^2 / 3 = 1/6; second sequence identical -> 0.
    za = t64([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]])
    zb = t64([[[1.0, 0.0], [1.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]])
    loss = sequential_consistency_loss(za, zb, w_min=0.5)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx((1 / 6 + 0.0) / 2, rel=1e-12)
    # w_min = 0 removes the only off-diagonal pair's weight for N_s = 2
    assert sequential_consistency_loss(za, zb, w_min=0.0).item() == pytest.approx(0.0, abs=1e-15)


def test_sequential_consistency_zero_for_identical_and_rescaled_views():
    za = rand64(3, 6, 8)
    assert sequential_consistency_loss(za, za.clone()).item() == pytest.approx(0.0, abs=1e-14)
    scale = torch.rand(3, 6, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 5 + 0.1
    assert sequential_consistency_loss(za, za * scale).item() == pytest.approx(0.0, abs=1e-14)


def test_sequential_consistency_symmetric_float32_and_gradients():
    za, zb = rand64(2, 6, 5, seed=2), rand64(2, 6, 5, seed=3)
    loss = sequential_consistency_loss(za, zb)
    assert loss.item() > 0
    torch.testing.assert_close(sequential_consistency_loss(zb, za), loss)
    assert sequential_consistency_loss(za.half(), zb.half()).dtype == torch.float32
    za32, zb32 = za.float().requires_grad_(), zb.float().requires_grad_()
    sequential_consistency_loss(za32, zb32).backward()
    assert torch.isfinite(za32.grad).all() and torch.isfinite(zb32.grad).all()
    assert za32.grad.abs().sum() > 0
    one = sequential_consistency_loss(za[:, :1], zb[:, :1])
    assert one.item() == pytest.approx(0.0, abs=1e-14)


@pytest.mark.parametrize("za_shape, zb_shape", [((2, 6, 4), (2, 5, 4)), ((6, 4), (6, 4)), ((2, 0, 4), (2, 0, 4))])
def test_sequential_consistency_bad_shapes(za_shape, zb_shape):
    with pytest.raises(ValueError, match="N_s"):
        sequential_consistency_loss(torch.randn(za_shape), torch.randn(zb_shape))


@pytest.mark.parametrize("w_min", [-0.1, 1.5])
def test_sequential_consistency_bad_w_min(w_min):
    with pytest.raises(ValueError, match="w_min"):
        sequential_consistency_loss(torch.randn(2, 6, 4), torch.randn(2, 6, 4), w_min=w_min)
    with pytest.raises(ValueError, match="w_min"):
        consistency_weights(6, w_min)


# ------------------------------------------------------------------------- semi-supervised contrastive
def test_ssc_hand_value():
    # anchors e1 (class 0), e2 (class 1), -e1 (class 0); tau = 0.5
    z_l = t64([[1.0, 0.0], [0.0, 3.0], [-2.0, 0.0]])
    labels = torch.tensor([0, 1, 0])
    # sample 0 = e1, probs (.75, .25): logits (2, 0, -2), weights (.75, .25, .75)
    lse0 = math.log(math.exp(2) + 1 + math.exp(-2))
    l0 = -(0.75 * (2 - lse0) + 0.25 * (0 - lse0) + 0.75 * (-2 - lse0)) / 1.75
    # sample 1 = (1, 1), probs (0, 1): logits sqrt2 * (1, 1, -1), only anchor 1 weighted
    r = math.sqrt(2)
    l1 = -(r - math.log(2 * math.exp(r) + math.exp(-r)))
    z_u, probs = t64([[1.0, 0.0], [1.0, 1.0]]), t64([[0.75, 0.25], [0.0, 1.0]])
    loss = semi_supervised_contrastive_loss(z_u, probs, z_l, labels, temperature=0.5)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx((l0 + l1) / 2, rel=1e-12)


def test_ssc_gradient_only_into_unlabeled():
    z_u, z_l = rand64(5, 4, seed=4).requires_grad_(), rand64(7, 4, seed=5).requires_grad_()
    probs = torch.softmax(rand64(5, 3, seed=6), dim=1).requires_grad_()
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    semi_supervised_contrastive_loss(z_u, probs, z_l, labels).backward()
    assert z_l.grad is None and probs.grad is None
    assert torch.isfinite(z_u.grad).all() and z_u.grad.abs().sum() > 0


def test_ssc_lower_loss_near_own_class_anchors():
    z_l = t64([[1.0, 0.1], [1.0, -0.1], [0.1, 1.0], [-0.1, 1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    probs = t64([[0.9, 0.1]])
    near = semi_supervised_contrastive_loss(t64([[1.0, 0.05]]), probs, z_l, labels)
    far = semi_supervised_contrastive_loss(t64([[0.05, 1.0]]), probs, z_l, labels)
    assert near.item() < far.item()


def test_ssc_anchor_permutation_invariance_and_float32():
    z_u, z_l = rand64(6, 5, seed=7), rand64(9, 5, seed=8)
    probs = torch.softmax(rand64(6, 4, seed=9), dim=1)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 3])
    loss = semi_supervised_contrastive_loss(z_u, probs, z_l, labels, temperature=0.2)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(10))
    torch.testing.assert_close(semi_supervised_contrastive_loss(z_u, probs, z_l[perm], labels[perm], 0.2), loss)
    half = semi_supervised_contrastive_loss(z_u.half(), probs.half(), z_l.half(), labels, 0.2)
    assert half.dtype == torch.float32 and torch.isfinite(half)


@pytest.mark.parametrize("zu, probs, zl, labels", [
    ((4, 3), (4, 2), (5, 2), [0] * 5),       # D mismatch
    ((4, 3), (3, 2), (5, 3), [0] * 5),       # probs rows
    ((4, 3), (4, 2), (5, 3), [0] * 4),       # labels length
    ((4, 3), (4, 2), (5, 3), [0, 1, 2, 0, 1]),  # label out of range
])
def test_ssc_bad_inputs(zu, probs, zl, labels):
    with pytest.raises(ValueError):
        semi_supervised_contrastive_loss(torch.randn(zu), torch.rand(probs), torch.randn(zl), torch.tensor(labels))


def test_ssc_float_labels_rejected():
    with pytest.raises(ValueError, match="integer labels"):
        semi_supervised_contrastive_loss(torch.randn(4, 3), torch.rand(4, 2), torch.randn(5, 3), torch.zeros(5))


# ----------------------------------------------------------------------------------------------- CCSSL
def ccssl_reference(z: np.ndarray, probs: np.ndarray, tau: float, threshold: float) -> float:
    """The documented formula with explicit loops; z (N, V, D)."""
    n, v, _ = z.shape
    feats = np.concatenate([z[:, j] for j in range(v)], axis=0)
    feats = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    u = feats @ feats.T / tau
    q, c = probs.max(axis=1), probs.argmax(axis=1)
    total = 0.0
    for r in range(v * n):
        i = r % n
        lse = math.log(sum(math.exp(u[r, k]) for k in range(v * n) if k != r))
        num = den = 0.0
        for k in range(v * n):
            j = k % n
            if k == r:
                continue
            if i == j or (c[i] == c[j] and q[i] >= threshold and q[j] >= threshold):
                rho = q[i] * q[j]
                num += rho * (u[r, k] - lse)
                den += rho
        total += -num / den if den > 0 else 0.0
    return total / (v * n)


def supcon_reference(feats: np.ndarray, labels: np.ndarray, tau: float) -> float:
    """Unweighted SupCon (Khosla et al.) over the rows of feats with labels, self excluded."""
    feats = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    u = feats @ feats.T / tau
    m = len(labels)
    losses = []
    for r in range(m):
        lse = math.log(sum(math.exp(u[r, k]) for k in range(m) if k != r))
        pos = [k for k in range(m) if k != r and labels[k] == labels[r]]
        losses.append(-sum(u[r, k] - lse for k in pos) / len(pos))
    return float(np.mean(losses))


def test_ccssl_hand_value_single_view():
    # z = e1, e2, (1,1)/sqrt2; confidences .9 (class 0), .6 (class 0, below .8), .85 (class 0)
    # positives: (0, 2) and (2, 0) only; anchor 1 has none -> 0.
    # anchor 0: logits (0, sqrt2) over {1, 2}; anchor 2: logits (sqrt2, sqrt2) over {0, 1} -> log 2.
    r = math.sqrt(2)
    l0 = -(r - math.log(1 + math.exp(r)))
    expected = (l0 + 0.0 + math.log(2)) / 3
    z = t64([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    probs = t64([[0.9, 0.1], [0.6, 0.4], [0.85, 0.15]])
    loss = ccssl_loss(z, probs, temperature=0.5, threshold=0.8)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert loss.item() == pytest.approx(ccssl_reference(z.numpy()[:, None], probs.numpy(), 0.5, 0.8), rel=1e-12)


def test_ccssl_hand_value_confidence_weights():
    # all three confident and class 0; anchor 0 has positives 1, 2 with weights .9*.8, .9*1.
    # z = e1, e2, -e1, tau = 1: anchor 0 logits over {1, 2} = (0, -1)
    z = t64([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    probs = t64([[0.9, 0.1], [0.8, 0.2], [1.0, 0.0]])
    lse0 = math.log(1 + math.exp(-1))
    l0 = -(0.72 * (0 - lse0) + 0.9 * (-1 - lse0)) / (0.72 + 0.9)
    lse1 = math.log(2)                                  # anchor 1 = e2: logits (0, 0) over {0, 2}
    l1 = -(0.72 * (0 - lse1) + 0.8 * (0 - lse1)) / (0.72 + 0.8)
    lse2 = math.log(math.exp(-1) + 1)                   # anchor 2 = -e1: logits (-1, 0) over {0, 1}
    l2 = -(0.9 * (-1 - lse2) + 0.8 * (0 - lse2)) / (0.9 + 0.8)
    loss = ccssl_loss(z, probs, temperature=1.0, threshold=0.8)
    assert loss.item() == pytest.approx((l0 + l1 + l2) / 3, rel=1e-12)


def test_ccssl_two_views_matches_formula():
    z = rand64(6, 2, 5, seed=11)
    probs = torch.softmax(3 * rand64(6, 3, seed=12), dim=1)
    for threshold in (0.0, 0.6, 1.1):
        expected = ccssl_reference(z.numpy(), probs.numpy(), 0.07, threshold)
        assert ccssl_loss(z, probs, threshold=threshold).item() == pytest.approx(expected, rel=1e-10)


def test_ccssl_reduces_to_supcon_with_full_confidence():
    z = rand64(5, 2, 4, seed=13)
    labels = np.array([0, 1, 0, 2, 1])
    probs = torch.nn.functional.one_hot(torch.from_numpy(labels), 3).double()
    feats = np.concatenate([z[:, 0].numpy(), z[:, 1].numpy()], axis=0)
    expected = supcon_reference(feats, np.concatenate([labels, labels]), 0.07)
    assert ccssl_loss(z, probs).item() == pytest.approx(expected, rel=1e-10)
    assert ccssl_loss(z, probs, threshold=0.3).item() == pytest.approx(expected, rel=1e-10)


def test_ccssl_self_pairs_excluded():
    # two samples, one view, same class, full confidence: the only candidate of each anchor is its positive,
    # so the loss is exactly 0 whatever the embeddings (a self-pair in the denominator would make it > 0).
    z = rand64(2, 7, seed=14)
    probs = t64([[1.0, 0.0], [1.0, 0.0]])
    assert ccssl_loss(z, probs, temperature=0.1).item() == pytest.approx(0.0, abs=1e-12)
    # a lone sample of its class with one view has no positive at all and contributes 0
    probs = t64([[1.0, 0.0], [0.0, 1.0]])
    assert ccssl_loss(z, probs, temperature=0.1).item() == pytest.approx(0.0, abs=1e-12)


def test_ccssl_finite_gradients_float32_and_no_grad_into_probs():
    z = rand64(8, 2, 6, seed=15).float().requires_grad_()
    probs = torch.softmax(rand64(8, 4, seed=16), dim=1).float().requires_grad_()
    loss = ccssl_loss(z, probs, threshold=0.3)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    assert probs.grad is None
    z1 = rand64(5, 3, seed=17).requires_grad_()
    ccssl_loss(z1, torch.softmax(rand64(5, 2, seed=18), dim=1)).backward()
    assert torch.isfinite(z1.grad).all()
    assert ccssl_loss(z.detach().half(), probs.detach().half()).dtype == torch.float32


@pytest.mark.parametrize("z_shape, p_shape", [((4, 3), (5, 2)), ((4,), (4, 2)), ((4, 2, 3, 1), (4, 2)),
                                              ((1, 3), (1, 2)), ((4, 3), (4,))])
def test_ccssl_bad_shapes(z_shape, p_shape):
    with pytest.raises(ValueError):
        ccssl_loss(torch.randn(z_shape), torch.rand(p_shape))
