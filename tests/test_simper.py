"""SimPer building blocks: MXCorr and nPSD against direct computations, the soft-target loss by hand, and the
speed-resampled views."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from physiossl.augment.periodic import SpeedViews, sample_speeds, speed_resample
from physiossl.losses.simper import band_bins, mxcorr, npsd, simper_loss


def t64(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def mxcorr_direct(a: np.ndarray, b: np.ndarray, circular: bool = False) -> np.ndarray:
    """O(T^2) per pair: explicit loops over the pairs and the lags, population std, divided by T - 1."""
    t = a.shape[1]
    out = np.zeros((len(a), len(b)))
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            x_c, y_c = x - x.mean(), y - y.mean()
            best = -np.inf
            for lag in range(0, t) if circular else range(-(t - 1), t):
                if circular:
                    c = sum(x_c[k] * y_c[(k + lag) % t] for k in range(t))
                else:
                    c = sum(x_c[k] * y_c[k + lag] for k in range(t) if 0 <= k + lag < t)
                best = max(best, c)
            out[i, j] = best / (x_c.std() * y_c.std() * (t - 1))
    return out


def npsd_direct(a: np.ndarray, b: np.ndarray, fs: float, band: tuple[float, float]) -> np.ndarray:
    freqs = np.fft.rfftfreq(a.shape[1], d=1.0 / fs)
    keep = (freqs >= band[0]) & (freqs <= band[1])
    out = np.zeros((len(a), len(b)))
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            px = np.abs(np.fft.rfft(x - x.mean()))[keep] ** 2
            py = np.abs(np.fft.rfft(y - y.mean()))[keep] ** 2
            out[i, j] = px @ py / (np.linalg.norm(px) * np.linalg.norm(py))
    return out


def loss_direct(s: np.ndarray, speeds1: np.ndarray, speeds2: np.ndarray, tau: float) -> float:
    """mean_i -sum_j W_ij log softmax_j(S_ij), W_ij = softmax_j(-|s_i - s'_j| / tau), with explicit loops."""
    total = 0.0
    for i in range(s.shape[0]):
        w = np.exp([-abs(speeds1[i] - v) / tau for v in speeds2])
        w /= w.sum()
        log_p = s[i] - math.log(sum(math.exp(v) for v in s[i]))
        total -= float(w @ log_p)
    return total / s.shape[0]


def sinusoid(freq: float, t: int, fs: float, phase: float = 0.0) -> np.ndarray:
    return np.sin(2 * math.pi * freq * np.arange(t) / fs + phase)


# --------------------------------------------------------------------------------------------- MXCorr
@pytest.mark.parametrize("circular", [False, True])
def test_mxcorr_matches_direct_computation(circular):
    a, b = randn(3, 7, seed=1), randn(4, 7, seed=2)
    expected = mxcorr_direct(a.numpy(), b.numpy(), circular)
    torch.testing.assert_close(mxcorr(a, b, circular=circular), t64(expected), rtol=1e-10, atol=1e-12)


def test_mxcorr_hand_values():
    # a = (1, 0, -1, 0), b = a delayed by one, c = (1, 1, -1, -1); sigma_a^2 = sigma_b^2 = 1/2, sigma_c^2 = 1;
    # best lagged products: a.a = 2, a.b = 2 (lag 1, three overlapping samples), a.c = 2 (lags 0 and 1)
    a, b, c = [1.0, 0.0, -1.0, 0.0], [0.0, 1.0, 0.0, -1.0], [1.0, 1.0, -1.0, -1.0]
    s = mxcorr(t64([a, b]), t64([a, c]))
    torch.testing.assert_close(s, t64([[4 / 3, 2 * math.sqrt(2) / 3], [4 / 3, 2 * math.sqrt(2) / 3]]))


@pytest.mark.parametrize("circular", [False, True])
def test_mxcorr_symmetry_affine_invariance_and_range(circular):
    a, b = randn(5, 16, seed=3), randn(6, 16, seed=4)
    s = mxcorr(a, b, circular=circular)
    torch.testing.assert_close(mxcorr(b, a, circular=circular), s.T)
    torch.testing.assert_close(mxcorr(2.5 * a - 3.0, 0.1 * b + 7.0, circular=circular), s)
    assert (s >= 0).all() and (s <= 16 / 15 + 1e-12).all()
    # identical series reach the maximum T / (T - 1) at lag 0
    torch.testing.assert_close(mxcorr(a, a, circular=circular).diagonal(), torch.full((5,), 16 / 15, dtype=a.dtype))


def test_mxcorr_circular_is_exactly_lag_invariant():
    a, b = randn(3, 20, seed=5), randn(4, 20, seed=6)
    s = mxcorr(a, b, circular=True)
    for d in (1, 7, 19):
        torch.testing.assert_close(mxcorr(a, b.roll(d, dims=1), circular=True), s)
        torch.testing.assert_close(mxcorr(a.roll(d, dims=1), b, circular=True), s)


def test_mxcorr_linear_lag_invariance_for_periodic_signal():
    # a of period P dividing T and b = a circularly shifted by d: b[k + l] = a[k] for every lag l = d (mod P), so
    # at such a lag with |l| <= P / 2 the linear correlation misses only the |l| non-overlapping samples, each
    # with a^2 <= 1 = 2 sigma^2: mxcorr(a, b) >= (T - P) / (T - 1), within P / (T - 1) of mxcorr(a, a) = T / (T - 1).
    # A shift by a whole number of periods loses nothing; the circular correlation is exactly invariant.
    t, period = 48, 8
    a = t64(sinusoid(1.0, t, period, phase=0.3))[None]
    full = mxcorr(a, a).item()
    assert full == pytest.approx(t / (t - 1))
    for d in range(1, t):
        shifted = mxcorr(a, a.roll(d, dims=1)).item()
        assert full - period / (t - 1) - 1e-12 <= shifted <= full + 1e-12
        assert mxcorr(a, a.roll(d, dims=1), circular=True).item() == pytest.approx(full)
    assert mxcorr(a, a.roll(period, dims=1)).item() == pytest.approx(full)


def test_mxcorr_batched_and_constant_series():
    a, b = randn(2, 3, 10, seed=7), randn(2, 4, 10, seed=8)
    s = mxcorr(a, b)
    assert s.shape == (2, 3, 4)
    for k in range(2):
        torch.testing.assert_close(s[k], mxcorr(a[k], b[k]))
    const = torch.full((2, 10), 3.0, dtype=torch.float64, requires_grad=True)
    other = randn(3, 10, seed=9).requires_grad_()
    s = mxcorr(const, other)
    torch.testing.assert_close(s, torch.zeros(2, 3, dtype=torch.float64))
    s.sum().backward()
    assert torch.isfinite(const.grad).all() and torch.isfinite(other.grad).all()
    with pytest.raises(ValueError, match="same T"):
        mxcorr(randn(2, 5), randn(2, 6))


def test_mxcorr_float32_and_half_inputs():
    a = randn(3, 12, seed=10)
    expected = mxcorr(a, a)
    out = mxcorr(a.float(), a.float())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    assert mxcorr(a.bfloat16(), a.bfloat16()).dtype == torch.float32


# --------------------------------------------------------------------------------------------- nPSD
def test_npsd_matches_direct_computation():
    a, b = randn(3, 30, seed=11), randn(2, 30, seed=12)
    for band in ((0.5, 3.0), (0.0, 5.0)):
        torch.testing.assert_close(npsd(a, b, fs=10.0, band=band), t64(npsd_direct(a.numpy(), b.numpy(), 10.0, band)))
    torch.testing.assert_close(npsd(a, b), npsd(a, b, fs=10.0, band=(0.0, 5.0)))


def test_npsd_sinusoids_and_out_of_band_power():
    fs, t, band = 10.0, 40, (0.5, 3.0)  # frequency bins of 0.25 Hz
    one, two = sinusoid(1.0, t, fs), sinusoid(2.0, t, fs, phase=1.0)
    s = npsd(t64([one, two]), t64([one, two, 3.0 * one + 5.0]), fs=fs, band=band)
    torch.testing.assert_close(s, t64([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]), rtol=0, atol=1e-10)
    noisy = one + 5.0 * sinusoid(4.0, t, fs)  # 4 Hz is outside the band
    assert npsd(t64([noisy]), t64([one]), fs=fs, band=band).item() == pytest.approx(1.0, abs=1e-10)
    assert npsd(t64([noisy]), t64([one])).item() < 0.1
    # shifted by a whole number of cycles of every component: same power spectrum
    assert npsd(t64([one]), t64([np.roll(one, 3)]), fs=fs, band=band).item() == pytest.approx(1.0, abs=1e-10)


def test_npsd_band_edge_on_a_bin_keeps_that_bin():
    # fs 30 Hz, T 50: bins of 0.6 Hz, the 25th is exactly 15 Hz (float32 rfftfreq gives 15.000000954)
    alternation = t64([[(-1.0) ** k for k in range(50)]])
    assert npsd(alternation, alternation, fs=30.0, band=(0.25, 15.0)).item() == pytest.approx(1.0, abs=1e-12)
    assert npsd(alternation, alternation, fs=30.0, band=(15.0, 15.0)).item() == pytest.approx(1.0, abs=1e-12)
    assert band_bins(50, 30.0, 0.25, 15.0).nonzero().flatten().tolist() == list(range(1, 26))


def test_npsd_errors_and_constant_series():
    with pytest.raises(ValueError, match="needs fs"):
        npsd(randn(2, 8), randn(2, 8), band=(0.5, 1.0))
    with pytest.raises(ValueError, match="no frequency bin"):
        npsd(randn(2, 8), randn(2, 8), fs=8.0, band=(1.2, 1.8))
    const = torch.ones(2, 8, dtype=torch.float64, requires_grad=True)
    s = npsd(const, randn(3, 8))
    torch.testing.assert_close(s, torch.zeros(2, 3, dtype=torch.float64))
    s.sum().backward()
    assert torch.isfinite(const.grad).all()


# --------------------------------------------------------------------------------------------- loss
def test_simper_loss_hand_value():
    # S = [[4/3, d'], [4/3, d']] (see test_mxcorr_hand_values), d = 4/3 - d' = (4 - 2 sqrt 2) / 3; speeds (1, 1.2) on
    # both sides at tau = 0.1 give W = [[q, 1 - q], [1 - q, q]], q = 1 / (1 + e^-2); both rows have log-probabilities
    # (-log(1 + e^-d), -d - log(1 + e^-d)), so L = log(1 + e^-d) + d ((1 - q) + q) / 2 = log(1 + e^-d) + d / 2.
    a, b, c = [1.0, 0.0, -1.0, 0.0], [0.0, 1.0, 0.0, -1.0], [1.0, 1.0, -1.0, -1.0]
    speeds = t64([1.0, 1.2])
    d = (4 - 2 * math.sqrt(2)) / 3
    loss = simper_loss(t64([a, b]), t64([a, c]), speeds, speeds, temperature=0.1)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-d)) + d / 2, rel=1e-12)
    assert loss.dtype == torch.float64


@pytest.mark.parametrize("similarity", ["mxcorr", "npsd"])
def test_simper_loss_matches_direct_computation(similarity):
    z1, z2 = randn(4, 16, seed=13), randn(5, 16, seed=14)
    s1, s2 = t64([0.6, 0.9, 1.4, 1.9]), t64([0.5, 0.8, 1.1, 1.5, 2.0])
    kwargs = {"fs": 4.0, "band": (0.5, 1.5)} if similarity == "npsd" else {}
    s = (npsd_direct(z1.numpy(), z2.numpy(), 4.0, (0.5, 1.5)) if similarity == "npsd"
         else mxcorr_direct(z1.numpy(), z2.numpy()))
    loss = simper_loss(z1, z2, s1, s2, similarity=similarity, temperature=0.3, **kwargs)
    assert loss.item() == pytest.approx(loss_direct(s, s1.numpy(), s2.numpy(), 0.3), rel=1e-10)


@pytest.mark.parametrize("similarity", ["mxcorr", "npsd"])
def test_simper_loss_with_one_hot_targets_is_cross_entropy(similarity):
    z1, z2 = randn(4, 12, seed=15), randn(4, 12, seed=16)
    speeds = t64([0.5, 0.9, 1.3, 1.7])
    logits = mxcorr(z1, z2) if similarity == "mxcorr" else npsd(z1, z2)
    expected = F.cross_entropy(logits, torch.arange(4))
    torch.testing.assert_close(simper_loss(z1, z2, speeds, speeds, similarity=similarity, temperature=1e-6), expected)


def test_simper_loss_branches_batches_and_permutations():
    z1, z2 = randn(3, 4, 10, seed=17), randn(3, 4, 10, seed=18)
    speeds = t64([[0.5, 0.7, 1.2, 1.9]] * 3)
    loss = simper_loss(z1, z2, speeds, speeds)
    # each clip is contrasted only with itself: the batch loss is the mean of the per-clip losses
    per_clip = torch.stack([simper_loss(z1[k], z2[k], speeds[k], speeds[k]) for k in range(3)])
    torch.testing.assert_close(loss, per_clip.mean())
    # anchors and candidates may be permuted along with their speeds
    p, q = torch.tensor([2, 0, 3, 1]), torch.tensor([1, 3, 0, 2])
    torch.testing.assert_close(simper_loss(z1[:, p], z2[:, q], speeds[:, p], speeds[:, q]), loss)
    # swapping the branches scores the columns of the symmetric similarity matrix instead of its rows
    s = mxcorr_direct(z1[0].numpy(), z2[0].numpy())
    swapped = simper_loss(z2[0], z1[0], speeds[0], speeds[0])
    assert swapped.item() == pytest.approx(loss_direct(s.T, speeds[0].numpy(), speeds[0].numpy(), 0.1), rel=1e-10)


@pytest.mark.parametrize("similarity", ["mxcorr", "npsd"])
def test_simper_loss_finite_gradients_for_constant_features(similarity):
    speeds = t64([0.5, 1.0, 1.5])
    for z2 in (torch.full((3, 8), 2.0, dtype=torch.float64), randn(3, 8, seed=19)):
        z1 = torch.full((3, 8), -1.0, dtype=torch.float64, requires_grad=True)
        z2 = z2.clone().requires_grad_()
        loss = simper_loss(z1, z2, speeds, speeds, similarity=similarity)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()


def test_simper_loss_errors():
    z, s = randn(3, 8), t64([1.0, 1.5, 2.0])
    with pytest.raises(ValueError, match="unknown similarity"):
        simper_loss(z, z, s, s, similarity="cosine")
    with pytest.raises(ValueError, match="temperature"):
        simper_loss(z, z, s, s, temperature=0.0)
    with pytest.raises(ValueError, match="leading axes"):
        simper_loss(z, z, s[:2], s)


# --------------------------------------------------------------------------------------------- views
def test_speed_resample_dominant_frequency():
    fs, t, out_len, f = 100.0, 400, 200, 2.0  # output bins of 0.5 Hz
    x = t64(sinusoid(f, t, fs))[None, None].expand(3, 2, t)
    speeds = t64([0.5, 1.5, 2.0])
    torch.manual_seed(0)
    y = speed_resample(x, speeds, out_len)
    assert y.shape == (3, 2, out_len) and y.dtype == torch.float64
    power = torch.fft.rfft(y - y.mean(-1, keepdim=True)).abs()
    peak = torch.fft.rfftfreq(out_len, d=1.0 / fs, dtype=torch.float64)[power.argmax(-1)]
    torch.testing.assert_close(peak, (speeds * f)[:, None].expand(3, 2))


def test_speed_resample_positions_start_and_clamp():
    t = 50
    ramp = torch.arange(t, dtype=torch.float64)[None, None].expand(4, 1, t)  # interpolating a ramp reads positions
    x = randn(4, 3, t, seed=20)
    torch.testing.assert_close(speed_resample(x, 1.0, t, start=0.0), x, rtol=0, atol=0)
    torch.testing.assert_close(speed_resample(x, 1.0, 20, start=5), x[..., 5:25], rtol=0, atol=0)
    torch.testing.assert_close(speed_resample(x, 2.0, 25, start=0), x[..., ::2], rtol=0, atol=0)
    speeds = t64([0.5, 1.0, 1.7, 2.0])
    torch.manual_seed(1)
    pos = speed_resample(ramp, speeds, 25)[:, 0]
    torch.testing.assert_close(pos.diff(dim=1), speeds[:, None].expand(4, 24))
    assert (pos[:, 0] >= 0).all() and (pos[:, -1] <= t - 1).all()
    assert pos[:, 0].unique().numel() > 1
    # a window that does not fit starts at 0 and holds the last sample
    pos = speed_resample(ramp[:1], 3.0, 25)[0, 0]
    expected = (3.0 * torch.arange(25, dtype=torch.float64)).clamp(max=t - 1)
    torch.testing.assert_close(pos, expected)


def test_speed_resample_float32_device_and_errors():
    x = torch.randn(2, 1, 30)
    y = speed_resample(x, torch.tensor([0.8, 1.2]), 10)
    assert y.shape == (2, 1, 10) and y.dtype == torch.float32 and y.device == x.device
    with pytest.raises(ValueError, match="out_len"):
        speed_resample(x, 1.0, 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_speed_views_on_cuda():
    views, speeds = SpeedViews(3, 20)(torch.randn(2, 1, 60, device="cuda"))
    assert views.device.type == "cuda" and speeds.device.type == "cuda"


def test_sample_speeds():
    torch.manual_seed(2)
    s = sample_speeds(64, 5, 0.5, 2.0)
    assert s.shape == (64, 5) and s.dtype == torch.float32
    assert (s >= 0.5).all() and (s <= 2.0).all() and (s.diff(dim=1) >= 0).all()
    torch.manual_seed(2)
    torch.testing.assert_close(sample_speeds(64, 5), s)
    assert sample_speeds(2, 3, dtype=torch.float64).dtype == torch.float64
    with pytest.raises(ValueError, match="low"):
        sample_speeds(2, 3, 0.0, 1.0)


def test_speed_views_shapes_order_and_grouping():
    b, m, t, out_len = 3, 4, 80, 30
    # clip k is 1000 k + ramp on both leads: each view's values give its clip and, by their slope, its speed
    x = (1000.0 * torch.arange(b, dtype=torch.float64)[:, None, None]
         + torch.arange(t, dtype=torch.float64)).expand(b, 2, t).contiguous()
    module = SpeedViews(m, out_len, speed_range=(0.5, 2.0))
    torch.manual_seed(3)
    views, speeds = module(x)
    assert views.shape == (b * m, 2, out_len) and speeds.shape == (b * m,) and speeds.dtype == torch.float64
    views, speeds = views.view(b, m, 2, out_len), speeds.view(b, m)
    assert (speeds >= 0.5).all() and (speeds <= 2.0).all() and (speeds.diff(dim=1) >= 0).all()
    clip = torch.arange(b, dtype=torch.float64)[:, None, None].expand(b, m, 2)
    torch.testing.assert_close(views[..., 0] // 1000, clip)
    torch.testing.assert_close(views.diff(dim=-1), speeds[:, :, None, None].expand(b, m, 2, out_len - 1))
    assert "m=4" in repr(module)


# --------------------------------------------------------------------------------------------- the method
SIMPER_KEY = "pretrain.methods.simper"
INVARIANT = [{"channel_resize": {"scale": [0.5, 2.0]}}, {"gaussian_noise": {"std": 0.05}}]
SIMPER_BASE = {"lr": 1.0e-3, "weight_decay": 1.0e-6, "warmup_epochs": 0, "augment": INVARIANT, "crop_s": 8.0}
ENCODERS = {"xresnet1d50": {"stage_strides": [1, 2, 1, 1]}, "cpc": {"hidden": 16}}


def simper(encoder: str = "xresnet1d50", encoder_args: dict | None = None, fs: float = 100.0, **changes):
    from physiossl.methods import get_method

    args = ENCODERS.get(encoder) if encoder_args is None else encoder_args
    return get_method("simper")(cfg={**SIMPER_BASE, **changes}, encoder=encoder, fs=fs, encoder_args=args)


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
@pytest.mark.parametrize("similarity", ["mxcorr", "npsd"])
def test_simper_method_steps_with_finite_gradients(encoder, similarity):
    torch.manual_seed(0)
    method = simper(encoder, similarity=similarity)
    method.train()
    x = torch.randn(3, 12, 800, generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.Adam(method.parameters(), lr=1e-3)
    head_before = method.series_head.weight.detach().clone()
    for _ in range(2):
        loss = method.loss(x)
        assert loss.ndim == 0 and torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        missing = [n for n, p in method.named_parameters() if p.grad is None]
        assert not missing, missing
        assert all(torch.isfinite(p.grad).all() for p in method.parameters())
        optimizer.step()
    assert all(torch.isfinite(p).all() for p in method.parameters())
    assert not torch.equal(method.series_head.weight, head_before)


@pytest.mark.parametrize("encoder,stride", [("xresnet1d50", 8), ("cpc", 1)])
def test_simper_series_shape_rate_and_band(encoder, stride):
    method = simper(encoder)
    assert method.encoder.stride == stride and method.feature_fs == 100.0 / stride
    assert method.view_len == 400 and method.series_len == 400 // stride
    x = torch.randn(5, 12, 400)
    assert method.series(x).shape == (5, 400 // stride)
    assert method.series(torch.randn(2, 12, 333)).shape == (2, math.ceil(333 / stride))
    # band_hz 0.5-3.5 Hz over speeds 0.5-2: 0.25-7 Hz, clipped to the Nyquist frequency (6.25 Hz at stride 8)
    assert method.band == (0.25, min(7.0, 50.0 / stride))
    narrow = simper(encoder, speed_range=[0.8, 1.25], band_hz=[1.0, 2.0])
    assert narrow.band == pytest.approx((0.8, 2.5))


def test_simper_loss_is_the_symmetric_loss_of_the_grouped_views(monkeypatch):
    method = simper("cpc", augment=[])
    method.eval()
    b, m = 2, 5
    speeds = torch.tensor([[0.5, 0.8, 1.1, 1.5, 2.0], [0.6, 0.7, 1.0, 1.3, 1.9]])
    views = torch.randn(b * m, 12, method.view_len)
    monkeypatch.setattr(method.speed_views, "forward", lambda x: (views, speeds.reshape(-1)))
    with torch.no_grad():
        z = method.series(views).view(b, m, -1)
        loss = method.loss(torch.randn(b, 12, 800))
    # without augmentation both views are the same series: the loss is simper_loss(z, z) within each clip
    torch.testing.assert_close(loss, simper_loss(z, z, speeds, speeds, temperature=0.1))
    per_clip = [simper_loss(z[k], z[k], speeds[k], speeds[k]) for k in range(b)]
    torch.testing.assert_close(loss, torch.stack(per_clip).mean())

    method = simper("cpc", augment=[{"gaussian_noise": {"std": 0.5}}], similarity="npsd", temperature=0.3)
    method.eval()
    monkeypatch.setattr(method.speed_views, "forward", lambda x: (views, speeds.reshape(-1)))
    torch.manual_seed(4)
    with torch.no_grad():
        loss = method.loss(torch.randn(b, 12, 800))
    torch.manual_seed(4)
    torch.randn(b, 12, 800)
    with torch.no_grad():
        z1, z2 = method.series(torch.cat([method.views(views), method.views(views)])).view(2, b, m, -1)
    kwargs = {"similarity": "npsd", "temperature": 0.3, "fs": method.feature_fs, "band": method.band}
    expected = (simper_loss(z1, z2, speeds, speeds, **kwargs) + simper_loss(z2, z1, speeds, speeds, **kwargs)) / 2
    torch.testing.assert_close(loss, expected)
    assert not torch.allclose(simper_loss(z1, z2, speeds, speeds, **kwargs), expected)


def test_simper_defaults_and_exported_heads():
    from physiossl.methods import get_method

    method = simper()
    assert {k: method.cfg[k] for k in ("n_speeds", "speed_range", "view_s", "similarity", "temperature",
                                       "band_hz")} == {"n_speeds": 5, "speed_range": [0.5, 2.0], "view_s": 4.0,
                                                       "similarity": "mxcorr", "temperature": 0.1,
                                                       "band_hz": [0.5, 3.5]}
    assert method.speed_views.m == 5 and method.speed_views.speed_range == (0.5, 2.0)
    heads = method.exported_heads()
    assert list(heads) == ["series"] and heads["series"] is method.series_head
    assert isinstance(method.series_head, torch.nn.Conv1d) and method.series_head.weight.shape == (1, 256, 1)
    simclr = get_method("simclr")(cfg={**SIMPER_BASE, "augment": []}, encoder="cpc", encoder_args={"hidden": 8})
    assert simclr.exported_heads() == {}


def test_simper_config_errors():
    from physiossl.methods import validate_method_config as light

    def validate_method_config(*args, **kwargs):   # with the checks of SimPer's code (check-config --deep)
        return light(*args, deep=True, **kwargs)

    assert validate_method_config("simper", SIMPER_BASE, SIMPER_KEY, encoder="xresnet1d50") == []
    missing = {k: v for k, v in SIMPER_BASE.items() if k != "crop_s"}
    assert validate_method_config("simper", missing, SIMPER_KEY) == [
        f"config key '{SIMPER_KEY}.crop_s': missing required key"]

    warped = {**SIMPER_BASE, "augment": [*INVARIANT, {"random_resized_crop": {}}, {"dynamic_time_warp": {"radius": 5}}]}
    problems = validate_method_config("simper", warped, SIMPER_KEY)
    assert len(problems) == 2, problems
    assert problems[0].startswith(f"config key '{SIMPER_KEY}.augment[2].random_resized_crop': ")
    assert problems[1].startswith(f"config key '{SIMPER_KEY}.augment[3].dynamic_time_warp': ")
    assert all("period" in p for p in problems)

    assert light("simper", {**SIMPER_BASE, "crop_s": 7.5}, SIMPER_KEY) == []   # the schema allows it
    short = validate_method_config("simper", {**SIMPER_BASE, "crop_s": 7.5}, SIMPER_KEY)
    assert len(short) == 1 and short[0].startswith(f"config key '{SIMPER_KEY}.crop_s': ") and "at least 8" in short[0]
    assert validate_method_config("simper", {**SIMPER_BASE, "crop_s": 6.0, "view_s": 3.0}, SIMPER_KEY) == []
    assert validate_method_config("simper", {**SIMPER_BASE, "crop_s": 4.0, "speed_range": [0.5, 1.0]}, SIMPER_KEY) == []
    assert validate_method_config("simper", {**SIMPER_BASE, "crop_s": 4.0, "speed_range": [0.5, 1.5]}, SIMPER_KEY)

    inverted = validate_method_config("simper", {**SIMPER_BASE, "speed_range": [1.5, 0.5]}, SIMPER_KEY)
    assert inverted == [f"config key '{SIMPER_KEY}.speed_range': needs low <= high, got [1.5, 0.5]"]
    band = validate_method_config("simper", {**SIMPER_BASE, "band_hz": [3.0, 1.0]}, SIMPER_KEY)
    assert len(band) == 1 and band[0].startswith(f"config key '{SIMPER_KEY}.band_hz': ")
    for key, value in (("speed_range", [0.0, 2.0]), ("speed_range", [1.0]), ("similarity", "cosine"),
                       ("n_speeds", 1), ("temperature", 0), ("view_s", "4 s"), ("crop_s", "long")):
        problems = validate_method_config("simper", {**SIMPER_BASE, key: value}, SIMPER_KEY)
        assert problems and all(p.startswith(f"config key '{SIMPER_KEY}.{key}") for p in problems), (key, problems)

    # the constructor runs the same checks
    with pytest.raises(ValueError, match=r"augment\[0\]\.random_resized_crop"):
        simper(augment=[{"random_resized_crop": {}}])
    with pytest.raises(ValueError, match=r"simper\.crop_s"):
        simper(crop_s=4.0)


def test_simper_rejects_a_feature_series_that_aliases_the_target():
    with pytest.raises(ValueError, match=r"stride 32 .*Nyquist 1\.5625 Hz.*stage_strides"):
        simper("xresnet1d50", encoder_args={})
    with pytest.raises(ValueError, match="stride 16"):
        simper("xresnet1d50", encoder_args={"stage_strides": [1, 2, 2, 1]})
    # stride 32 is enough for a narrower band and speed range: 0.5-1.5 Hz up to speed 1.25 stays below 1.5625 Hz
    assert simper("xresnet1d50", encoder_args={}, speed_range=[0.8, 1.25], band_hz=[0.5, 1.5]).band == (0.4, 1.5625)
    # a feature series too short for the band or for a correlation
    with pytest.raises(ValueError, match="no frequency bin"):
        simper("xresnet1d50", similarity="npsd", view_s=0.1, crop_s=1.0, band_hz=[1.0, 1.2])
    with pytest.raises(ValueError, match="feature series of 1 sample"):
        simper("xresnet1d50", view_s=0.08, crop_s=1.0)


def test_simper_rejects_clips_shorter_than_the_fastest_view():
    method = simper("cpc")
    method.loss(torch.randn(2, 12, 799))
    with pytest.raises(ValueError, match="too short"):
        method.loss(torch.randn(2, 12, 798))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("similarity", ["mxcorr", "npsd"])
def test_simper_method_on_cuda_under_autocast(similarity):
    method = simper(similarity=similarity).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = method.loss(torch.randn(4, 12, 800, device="cuda"))
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in method.parameters())


def periodic_ecg(n: int, t: int, fs: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n 12-lead signals (n, 12, t) of ECG-like beats at random rates f ~ U(0.8, 2) Hz (returned, (n,)): a narrow
    positive pulse and a wider negative wave per beat, lead gains N(0, 1), baseline wander below 0.35 Hz of
    random amplitude per lead, and white noise of standard deviation 0.2."""
    f = 0.8 + 1.2 * torch.rand(n, 1, 1, generator=generator)
    seconds = torch.arange(t) / fs
    cycle = (seconds * f + torch.rand(n, 1, 1, generator=generator)) % 1.0
    gap = torch.minimum(cycle, 1 - cycle) / f
    beat = torch.exp(-0.5 * (gap / 0.04) ** 2) - 0.3 * torch.exp(-0.5 * ((gap - 0.25 / f.clamp(min=1)) / 0.08) ** 2)
    wander_f = 0.05 + 0.3 * torch.rand(n, 1, 1, generator=generator)
    wander = 0.5 * torch.sin(2 * math.pi * wander_f * seconds + 2 * math.pi * torch.rand(n, 1, 1, generator=generator))
    x = (torch.randn(n, 12, 1, generator=generator) * beat + wander * torch.rand(n, 12, 1, generator=generator)
         + 0.2 * torch.randn(n, 12, t, generator=generator))
    return x, f.flatten()


def dominant_frequency(method, x: torch.Tensor, low: float = 0.4) -> torch.Tensor:
    """The frequency (Hz) of the largest power-spectrum bin at or above ``low`` of each signal's feature series."""
    method.eval()
    with torch.no_grad():
        s = method.series(x)
    method.train()
    power = torch.fft.rfft(s - s.mean(-1, keepdim=True)).abs().square()
    freqs = torch.fft.rfftfreq(s.shape[-1], d=1.0 / method.feature_fs)
    return freqs[power.masked_fill(freqs < low, 0).argmax(-1)]


@pytest.mark.slow
def test_simper_learns_the_frequency_of_periodic_signals():
    """30 steps of SimPer (xresnet1d50 at stride 4 on 25 Hz signals, 16 clips of 8 s a step) make the dominant
    frequency of the feature series follow the beat rate of held-out synthetic 12-lead signals."""
    from scipy.stats import spearmanr

    fs = 25.0
    torch.manual_seed(0)
    method = simper("xresnet1d50", encoder_args={"stage_strides": [1, 1, 1, 1]}, fs=fs, lr=3e-3,
                    speed_range=[0.5, 1.5], band_hz=[0.8, 2.0])
    assert method.feature_fs == 6.25
    test_x, test_f = periodic_ecg(128, 200, fs, torch.Generator().manual_seed(123))
    before = spearmanr(dominant_frequency(method, test_x), test_f).statistic
    optimizer = torch.optim.Adam(method.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(30):
        loss = method.loss(periodic_ecg(16, 200, fs, generator)[0])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = spearmanr(dominant_frequency(method, test_x), test_f).statistic
    assert before < 0.6 and after > 0.9, (before, after)
