"""The SSL losses: hand-derived values on tiny inputs, invariances and properties, finite gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from physiossl.losses import (
    apc_loss,
    barlow_twins_loss,
    byol_loss,
    cpc_loss,
    infonce,
    masked_prediction_loss,
    nt_xent,
    simsiam_loss,
    sinkhorn,
    swav_loss,
)
from physiossl.losses.cpc import same_sequence_negatives


def t64(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


def unit_rows(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def log_softmax(a: np.ndarray) -> np.ndarray:
    a = a - a.max(axis=1, keepdims=True)
    return a - np.log(np.exp(a).sum(axis=1, keepdims=True))


def hadamard(n: int) -> np.ndarray:
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


# --------------------------------------------------------------------------------------------- NT-Xent
def test_nt_xent_hand_value():
    # z = [e1, e2, (1,1)/sqrt2, (1,-1)/sqrt2]; positives (0,2), (1,3)
    z = unit_rows(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, -1.0]]))
    tau = 0.5
    sim = z @ z.T / tau
    total = 0.0
    for i, pos in enumerate([2, 3, 0, 1]):
        others = [k for k in range(4) if k != i]
        total += -sim[i, pos] + math.log(sum(math.exp(sim[i, k]) for k in others))
    z1, z2 = t64([[1.0, 0.0], [0.0, 1.0]]), t64([[1.0, 1.0], [1.0, -1.0]])
    assert nt_xent(z1, z2, tau).item() == pytest.approx(total / 4, rel=1e-12)
    assert nt_xent(z1, z2, tau).dtype == torch.float64


def test_nt_xent_view_symmetry_and_row_scaling():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(5, 4, generator=g, dtype=torch.float64)
    loss = nt_xent(z1, z2, 0.3)
    torch.testing.assert_close(nt_xent(z2, z1, 0.3), loss)
    scale = torch.rand(5, 1, generator=g, dtype=torch.float64) * 5 + 0.1
    torch.testing.assert_close(nt_xent(z1 * scale, z2 / scale, 0.3), loss)


def test_nt_xent_gather_is_noop_without_process_group():
    z1, z2 = torch.randn(4, 3), torch.randn(4, 3)
    torch.testing.assert_close(nt_xent(z1, z2, 0.5, gather_distributed=True), nt_xent(z1, z2, 0.5))


# --------------------------------------------------------------------------------------------- InfoNCE
def test_infonce_queue_hand_value():
    # cos(q, k) = 1, cos(q, queue) = (0, -1): logits (2, 0, -2) at tau = 0.5
    q, k = t64([[2.0, 0.0]]), t64([[3.0, 0.0]])
    queue = t64([[0.0, 5.0], [-1.0, 0.0]])
    expected = -math.log(math.exp(2.0) / (math.exp(2.0) + 1.0 + math.exp(-2.0)))
    assert infonce(q, k, 0.5, queue=queue).item() == pytest.approx(expected, rel=1e-12)


def test_infonce_queue_ignores_batch_keys_and_queue_order():
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(4, 6, generator=g, dtype=torch.float64), torch.randn(4, 6, generator=g, dtype=torch.float64)
    queue = torch.randn(10, 6, generator=g, dtype=torch.float64)
    loss = infonce(q, k, 0.2, queue=queue)
    torch.testing.assert_close(infonce(q, k, 0.2, queue=queue[torch.randperm(10, generator=g)]), loss)
    # per-sample: the loss of query 0 does not depend on the other keys of the batch
    k_other = k.clone()
    k_other[1:] = torch.randn(3, 6, generator=g, dtype=torch.float64)
    torch.testing.assert_close(infonce(q[:1], k[:1], 0.2, queue=queue), infonce(q[:1], k_other[:1], 0.2, queue=queue))
    qn, kn, un = (unit_rows(a.numpy()) for a in (q, k, queue))
    logits = np.concatenate([(qn * kn).sum(1, keepdims=True), qn @ un.T], axis=1) / 0.2
    assert loss.item() == pytest.approx(-log_softmax(logits)[:, 0].mean(), rel=1e-12)


def test_infonce_in_batch_hand_value():
    q, k = t64([[1.0, 0.0], [0.0, 2.0]]), t64([[1.0, 1.0], [0.0, 1.0]])
    # cosines: q0.(k0, k1) = (1/sqrt2, 0); q1.(k0, k1) = (1/sqrt2, 1); targets 0 and 1
    tau, c = 0.2, 1 / math.sqrt(2)
    l0 = -c / tau + math.log(math.exp(c / tau) + 1.0)
    l1 = -1 / tau + math.log(math.exp(c / tau) + math.exp(1 / tau))
    assert infonce(q, k, tau).item() == pytest.approx((l0 + l1) / 2, rel=1e-12)


# --------------------------------------------------------------------------------------------- BYOL, SimSiam
def test_byol_values():
    assert byol_loss(t64([[1.0, 0.0]]), t64([[1.0, 1.0]])).item() == pytest.approx(2 - math.sqrt(2), rel=1e-12)
    z = torch.randn(6, 5, dtype=torch.float64)
    scale = torch.rand(6, 1, dtype=torch.float64) + 0.5
    assert byol_loss(z * scale, z).item() == pytest.approx(0.0, abs=1e-12)
    assert byol_loss(-z, z).item() == pytest.approx(4.0, rel=1e-12)
    # mean over rows: one aligned and one orthogonal row
    assert byol_loss(t64([[1.0, 0.0], [0.0, 1.0]]), t64([[2.0, 0.0], [1.0, 0.0]])).item() == pytest.approx(1.0)


def test_simsiam_value_and_stop_gradient():
    p = t64([[1.0, 0.0], [1.0, 1.0]]).requires_grad_()
    z = t64([[1.0, 1.0], [1.0, 1.0]]).requires_grad_()
    loss = simsiam_loss(p, z)
    assert loss.item() == pytest.approx(-(1 / math.sqrt(2) + 1.0) / 2, rel=1e-12)
    loss.backward()
    assert z.grad is None
    assert p.grad is not None and p.grad[0].abs().sum() > 0


# --------------------------------------------------------------------------------------------- SwAV
def numpy_sinkhorn(scores: np.ndarray, epsilon: float, iterations: int) -> np.ndarray:
    q = np.exp(scores / epsilon).T
    b, k = q.shape[1], q.shape[0]
    q = q / q.sum()
    for _ in range(iterations):
        q = q / q.sum(axis=1, keepdims=True) / k
        q = q / q.sum(axis=0, keepdims=True) / b
    return (q * b).T


def test_sinkhorn_matches_algorithm_on_tiny_input():
    scores = np.array([[0.9, 0.1, -0.2], [0.3, 0.8, 0.0], [-0.5, 0.2, 0.7], [0.1, 0.1, 0.1]])
    for eps, iters in ((0.05, 3), (0.5, 1), (1.0, 10)):
        q = sinkhorn(t64(scores), epsilon=eps, iterations=iters)
        np.testing.assert_allclose(q.numpy(), numpy_sinkhorn(scores, eps, iters), rtol=1e-10)


def test_sinkhorn_one_iteration_by_hand():
    # 2 samples, 2 prototypes, epsilon 1: E = exp(scores); prototypes then samples normalised
    scores = np.array([[1.0, 0.0], [0.0, 0.0]])
    e = np.array([[math.e, 1.0], [1.0, 1.0]])  # (B, K)
    col = e / e.sum(axis=0, keepdims=True)  # each prototype mass 1 over the batch
    expected = col / col.sum(axis=1, keepdims=True)  # each sample sums to 1
    np.testing.assert_allclose(sinkhorn(t64(scores), epsilon=1.0, iterations=1).numpy(), expected, rtol=1e-12)


def test_sinkhorn_properties():
    g = torch.Generator().manual_seed(3)
    b, k = 32, 8
    scores = torch.nn.functional.normalize(torch.randn(b, 16, generator=g), dim=1) @ \
        torch.nn.functional.normalize(torch.randn(k, 16, generator=g), dim=1).T
    q = sinkhorn(scores)
    assert q.shape == (b, k) and q.dtype == scores.dtype and (q >= 0).all()
    torch.testing.assert_close(q.sum(dim=1), torch.ones(b))
    perm = torch.randperm(b, generator=g)
    torch.testing.assert_close(sinkhorn(scores[perm]), q[perm])
    balanced = sinkhorn(scores, epsilon=0.5, iterations=200)
    torch.testing.assert_close(balanced.sum(dim=0), torch.full((k,), b / k), rtol=1e-4, atol=1e-4)
    # scores / epsilon far beyond float32's exp range (about 88) do not overflow
    assert torch.isfinite(sinkhorn(20.0 * scores, epsilon=0.05)).all()
    scores.requires_grad_()
    assert not sinkhorn(scores).requires_grad


def test_swav_loss_averages_over_pairs():
    g = np.random.default_rng(4)
    b, k, tau = 3, 4, 0.1
    scores = [g.normal(size=(b, k)) for _ in range(3)]  # 2 global crops + 1 small crop
    codes = [g.dirichlet(np.ones(k), size=b) for _ in range(2)]
    pairs = [(0, 1), (0, 2), (1, 0), (1, 2)]
    terms = [-(codes[i] * log_softmax(scores[v] / tau)).sum(axis=1).mean() for i, v in pairs]
    loss = swav_loss([t64(s) for s in scores], [t64(c) for c in codes], tau)
    assert loss.item() == pytest.approx(np.mean(terms), rel=1e-12)
    assert loss.item() != pytest.approx(np.sum(terms) / 6)
    one = swav_loss([t64(s) for s in scores[:2]], [t64(codes[0])], tau)
    assert one.item() == pytest.approx(terms[0], rel=1e-12)


def test_swav_codes_are_targets():
    scores = [torch.randn(4, 5, requires_grad=True) for _ in range(2)]
    codes = [torch.softmax(s, dim=1) for s in scores]
    swav_loss(scores, codes).backward()
    direct = [torch.randn(4, 5, requires_grad=True) for _ in range(2)]
    swav_loss(direct, [sinkhorn(s) for s in direct]).backward()
    assert all(torch.isfinite(s.grad).all() for s in scores + direct)
    with pytest.raises(ValueError):
        swav_loss(scores[:1], codes[:1])


# --------------------------------------------------------------------------------------------- Barlow Twins
def test_barlow_twins_hand_value():
    z1 = np.array([[1.0, 2.0], [2.0, 0.0], [3.0, 1.0], [4.0, 5.0]])
    z2 = np.array([[0.0, 1.0], [1.0, 3.0], [1.0, 0.0], [2.0, 2.0]])
    lam = 0.1

    def standardise(z):
        return (z - z.mean(0)) / z.std(0)  # population std

    c = standardise(z1).T @ standardise(z2) / 4
    expected = (1 - c[0, 0]) ** 2 + (1 - c[1, 1]) ** 2 + lam * (c[0, 1] ** 2 + c[1, 0] ** 2)
    assert barlow_twins_loss(t64(z1), t64(z2), lam, eps=0.0).item() == pytest.approx(expected, rel=1e-12)
    assert barlow_twins_loss(t64(z1), t64(z2), lam).item() == pytest.approx(expected, rel=1e-4)


def test_barlow_twins_zero_for_decorrelated_identical_views():
    z = t64(hadamard(8)[:, 1:6])  # 8 samples, 5 zero-mean, unit-variance, mutually orthogonal features
    assert barlow_twins_loss(z, z.clone(), eps=0.0).item() == pytest.approx(0.0, abs=1e-12)
    assert barlow_twins_loss(z, z.clone()).item() == pytest.approx(0.0, abs=1e-8)
    g = torch.Generator().manual_seed(5)
    noisy = z + 0.3 * torch.randn(z.shape, generator=g, dtype=torch.float64)
    assert barlow_twins_loss(z, noisy).item() > 1e-3
    correlated = z.clone()
    correlated[:, 1] = z[:, 0] + z[:, 1]
    assert barlow_twins_loss(correlated, correlated.clone()).item() > 1e-3


def test_barlow_twins_per_feature_affine_invariance():
    g = torch.Generator().manual_seed(6)
    z1, z2 = torch.randn(16, 4, generator=g, dtype=torch.float64), torch.randn(16, 4, generator=g, dtype=torch.float64)
    scale = torch.rand(4, generator=g, dtype=torch.float64) * 10 + 0.1
    shift = torch.randn(4, generator=g, dtype=torch.float64) * 5
    loss = barlow_twins_loss(z1, z2, eps=0.0)
    torch.testing.assert_close(barlow_twins_loss(z1 * scale + shift, z2, eps=0.0), loss)
    torch.testing.assert_close(barlow_twins_loss(z1, z2 * scale - shift, eps=0.0), loss)


# --------------------------------------------------------------------------------------------- CPC
def test_cpc_all_mode_hand_value():
    # B = 1, T = 3, D = 2, S = 2: valid (s, t) = (0, 0), (0, 1), (1, 0)
    z = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    pred = np.array([[[0.5, 0.2], [1.0, -1.0], [3.0, 3.0]],
                     [[0.0, 2.0], [7.0, 7.0], [7.0, 7.0]]])
    losses = []
    for s, t in ((0, 0), (0, 1), (1, 0)):
        logits = z @ pred[s, t]
        losses.append(-logits[t + s + 1] + math.log(np.exp(logits).sum()))
    loss = cpc_loss(t64(pred)[:, None], t64(z)[None], negatives="all")
    assert loss.item() == pytest.approx(np.mean(losses), rel=1e-12)


def one_hot_problem(b: int, t: int, n_steps: int, strength: float = 30.0):
    """Targets: a distinct one-hot vector per position; each prediction is strength × its positive target."""
    targets = torch.eye(b * t, dtype=torch.float64).view(b, t, b * t)
    predictions = torch.zeros(n_steps, b, t, b * t, dtype=torch.float64)
    for s in range(n_steps):
        predictions[s, :, : t - s - 1] = strength * targets[:, s + 1:]
    return predictions, targets


@pytest.mark.parametrize("negatives", ["same_sequence", "batch", "all"])
def test_cpc_negatives_exclude_the_positive(negatives):
    # positive logit 30, every other logit 0: the loss is ~n e^-30 ≈ 0, but >= log 2 if the positive were a negative
    predictions, targets = one_hot_problem(b=2, t=3, n_steps=2)
    g = torch.Generator().manual_seed(7)
    loss = cpc_loss(predictions, targets, n_negatives=64, negatives=negatives, generator=g)
    assert 0.0 < loss.item() < 1e-9
    if negatives == "all":
        assert loss.item() == pytest.approx(math.log(1 + 2 * math.exp(-30.0)), rel=1e-9)


def test_cpc_same_sequence_uses_only_the_same_sequence():
    # other sequences carry a target equal to the positive: drawing from them would raise the loss to >= log 2
    predictions, targets = one_hot_problem(b=1, t=4, n_steps=1)
    other = targets.clone()
    batch_targets = torch.cat([targets, other], dim=0)
    batch_predictions = torch.cat([predictions, torch.zeros_like(predictions)], dim=1)
    g = torch.Generator().manual_seed(8)
    loss = cpc_loss(batch_predictions, batch_targets, n_negatives=32, negatives="same_sequence", generator=g)
    # sequence 1 predicts zeros: log(1 + 32) per valid step, sequence 0 ~ 0
    assert loss.item() == pytest.approx(math.log(33) / 2, rel=1e-9)
    mixed = cpc_loss(batch_predictions, batch_targets, n_negatives=32, negatives="batch", generator=g)
    assert mixed.item() > loss.item() + 0.1


def test_cpc_sampling_is_reproducible_and_differentiable():
    g = torch.Generator().manual_seed(9)
    predictions = torch.randn(3, 2, 10, 8, generator=g, requires_grad=True)
    targets = torch.randn(2, 10, 8, generator=g, requires_grad=True)
    for negatives in ("same_sequence", "batch", "all"):
        a = cpc_loss(predictions, targets, 16, negatives, torch.Generator().manual_seed(0))
        b = cpc_loss(predictions, targets, 16, negatives, torch.Generator().manual_seed(0))
        assert a.item() == b.item()
        predictions.grad = targets.grad = None
        a.backward()
        assert torch.isfinite(predictions.grad).all() and torch.isfinite(targets.grad).all()
        # step s is only used where t + s + 1 < T
        assert (predictions.grad[2, :, 7:] == 0).all() and predictions.grad[2, :, :7].abs().sum() > 0
    with pytest.raises(ValueError):
        cpc_loss(predictions, targets, negatives="nope")


def dense_same_sequence_reference(predictions: list[torch.Tensor], targets: torch.Tensor, offsets: list[int],
                                  n_negatives: int, generator: torch.Generator) -> torch.Tensor:
    """The "same_sequence" loss with every step's anchors scored against all T positions, (B, H, T), and the
    negatives picked from those scores at the positions the loss draws (same generator, same order of draws)."""
    b, t, _ = targets.shape
    total, count = 0.0, 0
    for prediction, k in zip(predictions, offsets):
        if t - k < 1:
            continue
        drawn = torch.randint(t - 1, (b, n_negatives), generator=generator)
        index = same_sequence_negatives(drawn, torch.arange(k, t), t)  # (B, H, N)
        scores = prediction[:, :t - k] @ targets.transpose(1, 2)  # (B, H, T)
        positive = torch.diagonal(scores, offset=k, dim1=1, dim2=2).unsqueeze(-1)
        logits = torch.cat([positive, scores.gather(2, index)], dim=-1)
        total = total + (torch.logsumexp(logits, dim=-1) - logits[..., 0]).sum()
        count += b * (t - k)
    return total / count


@pytest.mark.parametrize("offsets", [None, [3], [1, 4, 9]])
def test_cpc_same_sequence_scoring_equals_dense_scoring_of_the_same_draws(offsets):
    # the loss scores only the drawn columns (one batched matmul per step); picking the same columns out of the
    # dense (B, H, T) scores gives the same loss and gradients
    g = torch.Generator().manual_seed(10)
    b, t, d, n = 3, 12, 5, 7
    ks = offsets or [1, 2, 3, 4]
    context = torch.randn(b, t, d, generator=g, dtype=torch.float64, requires_grad=True)
    maps = torch.randn(len(ks), d, d, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randn(b, t, d, generator=g, dtype=torch.float64, requires_grad=True)
    predictions = [context[:, :max(t - k, 0)] @ maps[i] for i, k in enumerate(ks)]
    loss = cpc_loss(predictions, targets, n, "same_sequence", torch.Generator().manual_seed(3), offsets=offsets)
    grads = torch.autograd.grad(loss, (context, maps, targets))
    dense_predictions = [context[:, :max(t - k, 0)] @ maps[i] for i, k in enumerate(ks)]
    reference = dense_same_sequence_reference(dense_predictions, targets, ks, n, torch.Generator().manual_seed(3))
    torch.testing.assert_close(loss, reference, rtol=1e-12, atol=0)
    for got, expected in zip(grads, torch.autograd.grad(reference, (context, maps, targets))):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-14)
    if offsets is None:  # the stacked (S, B, T, D) form gives the same loss
        stacked = torch.stack([context @ m for m in maps])
        torch.testing.assert_close(cpc_loss(stacked, targets, n, "same_sequence", torch.Generator().manual_seed(3)),
                                   loss, rtol=1e-12, atol=0)


def test_cpc_same_sequence_negatives_have_the_per_anchor_distribution():
    # every anchor's negatives: independent, each uniform over the T - 1 positions other than its positive
    t, n = 5, 400_000
    drawn = torch.randint(t - 1, (1, n), generator=torch.Generator().manual_seed(11))
    index = same_sequence_negatives(drawn, torch.arange(t), t)[0]  # anchors with every positive 0..T-1
    for positive in range(t):
        frequency = torch.bincount(index[positive], minlength=t).double() / n
        assert frequency[positive] == 0
        others = torch.cat([frequency[:positive], frequency[positive + 1:]])
        assert (others - 1 / (t - 1)).abs().max() < 0.004, (positive, frequency)
        # two negatives of one anchor are independent: their pairs are uniform over the (T - 1)^2 pairs
        pairs = index[positive, 0::2] * t + index[positive, 1::2]
        joint = torch.bincount(pairs, minlength=t * t).double().view(t, t) / (n // 2)
        expected = torch.full((t, t), 1 / (t - 1) ** 2, dtype=torch.float64)
        expected[positive, :] = expected[:, positive] = 0
        assert (joint - expected).abs().max() < 0.004, (positive, joint)
    # the loss draws (B, n_negatives) per step in [0, T - 2] from its generator, the positions the anchors take
    small = torch.randint(t - 1, (3, 64), generator=torch.Generator().manual_seed(12))
    assert small.min() >= 0 and small.max() <= t - 2
    index = same_sequence_negatives(small, torch.arange(1, t), t)
    assert index.shape == (3, t - 1, 64) and not (index == torch.arange(1, t).view(1, -1, 1)).any()


def test_cpc_loss_from_per_step_predictions_equals_the_stacked_predictions():
    # predictors applied to the contexts that have a target only: the same loss as the stacked (S, B, T, D) form
    g = torch.Generator().manual_seed(13)
    context = torch.randn(2, 9, 4, generator=g, dtype=torch.float64)
    maps = torch.randn(3, 4, 4, generator=g, dtype=torch.float64)
    targets = torch.randn(2, 9, 4, generator=g, dtype=torch.float64)
    stacked = torch.stack([context @ m for m in maps])
    per_step = [context[:, :9 - s - 1] @ m for s, m in enumerate(maps)]
    for negatives in ("same_sequence", "batch", "all"):
        a = cpc_loss(stacked, targets, 6, negatives, torch.Generator().manual_seed(0))
        b = cpc_loss(per_step, targets, 6, negatives, torch.Generator().manual_seed(0))
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="H_s"):
        cpc_loss([context[:, :5] @ maps[0]], targets)  # step 1 needs the 8 contexts with a target
    with pytest.raises(ValueError, match="offset"):
        cpc_loss(per_step, targets, offsets=[1, 2])
    with pytest.raises(ValueError, match="no prediction step"):
        cpc_loss([context[:, :0]], targets, offsets=[9])


def test_cpc_offsets_hand_value():
    # one prediction step 2 ahead (T = 3: only t = 0 predicts z[2]), every other position as negative
    z = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    pred = np.array([0.0, 2.0])
    logits = z @ pred
    expected = -logits[2] + math.log(np.exp(logits).sum())
    loss = cpc_loss([t64(pred).view(1, 1, 2)], t64(z)[None], negatives="all", offsets=[2])
    assert loss.item() == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------------------------- masked, APC
def test_masked_prediction_hand_value_and_unmasked_frames_ignored():
    target = t64([[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]])  # (B=1, F=2, N=3)
    prediction = t64([[[1.0, 9.0, 0.0], [3.0, -9.0, 8.0]]])
    mask = torch.tensor([[True, False, True]])
    # frame 0: (1 + 0) / 2; frame 2: (4 + 9) / 2
    assert masked_prediction_loss(prediction, target, mask).item() == pytest.approx((0.5 + 6.5) / 2)
    changed = prediction.clone()
    changed[:, :, 1] = float("nan")
    assert masked_prediction_loss(changed, target, mask).item() == pytest.approx(3.5)
    changed.requires_grad_()
    masked_prediction_loss(changed, target, mask).backward()
    assert (changed.grad[:, :, 1] == 0).all() and torch.isfinite(changed.grad).all()
    with pytest.raises(ValueError, match="masked"):
        masked_prediction_loss(prediction, target, torch.zeros(1, 3, dtype=torch.bool))


def test_apc_uses_exactly_the_shift():
    target = t64(np.arange(12.0).reshape(1, 6, 2) ** 1.5)
    for k in (1, 2, 3):
        perfect = torch.zeros_like(target)
        perfect[:, : 6 - k] = target[:, k:]
        assert apc_loss(perfect, target, k).item() == 0.0
        for other in {1, 2, 3} - {k}:
            assert apc_loss(perfect, target, other).item() > 0.1
    zeros = torch.zeros_like(target)
    assert apc_loss(zeros, target, 2).item() == pytest.approx(target[:, 2:].abs().mean().item())
    with pytest.raises(ValueError):
        apc_loss(zeros, target, 6)
    with pytest.raises(ValueError):
        apc_loss(zeros, target, 0)


# --------------------------------------------------------------------------------------------- all losses
LOSSES = {
    "nt_xent": lambda x: nt_xent(x(8, 16), x(8, 16), 0.5),
    "infonce_v3": lambda x: infonce(x(8, 16), x(8, 16)),
    "infonce_v2": lambda x: infonce(x(8, 16), x(8, 16), queue=x(32, 16)),
    "byol": lambda x: byol_loss(x(8, 16), x(8, 16)),
    "simsiam": lambda x: simsiam_loss(x(8, 16), x(8, 16)),
    "swav": lambda x: (lambda s: swav_loss(s, [sinkhorn(v) for v in s[:2]]))([x(8, 10) for _ in range(4)]),
    "barlow_twins": lambda x: barlow_twins_loss(x(8, 16), x(8, 16)),
    "cpc": lambda x: cpc_loss(x(4, 2, 20, 8), x(2, 20, 8), 16),
    "cpc_batch": lambda x: cpc_loss(x(4, 2, 20, 8), x(2, 20, 8), 16, "batch"),
    "masked": lambda x: masked_prediction_loss(x(2, 4, 10), x(2, 4, 10), torch.arange(10).repeat(2, 1) % 3 == 0),
    "apc": lambda x: apc_loss(x(2, 10, 4), x(2, 10, 4), 3),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_is_a_finite_scalar_with_finite_gradients(name):
    torch.manual_seed(10)
    inputs = []

    def x(*shape):
        inputs.append(torch.randn(*shape, requires_grad=True))
        return inputs[-1]

    loss = LOSSES[name](x)
    assert loss.ndim == 0 and loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(v.grad is None or torch.isfinite(v.grad).all() for v in inputs)
    assert inputs[0].grad is not None and inputs[0].grad.abs().sum() > 0



@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_runs_in_float32_under_autocast_and_for_low_precision_inputs(name):
    def run(*dtypes: torch.dtype) -> torch.Tensor:
        torch.manual_seed(11)

        def x(*shape):
            v = torch.randn(*shape)
            for dtype in dtypes:
                v = v.to(dtype)
            return v

        return LOSSES[name](x)

    reference = run()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = run()
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, reference)
    # bfloat16 inputs are promoted: the loss is the float32 loss of the same values
    low = run(torch.bfloat16)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, run(torch.bfloat16, torch.float32))
