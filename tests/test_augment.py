"""ECG augmentations: batched per-sample randomness, p, reproducibility, the behaviour of each transform, the
config builders (build_augment / build_noise) and their validation messages."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from physiossl.augment import TRANSFORMS as REGISTRY
from physiossl.augment.ecg import (
    BaselineShift,
    BaselineWander,
    ChannelResize,
    DynamicTimeWarp,
    EMNoise,
    GaussianBlur,
    GaussianNoise,
    PowerlineNoise,
    RandomResizedCrop,
    build_augment,
    build_noise,
)
from physiossl.augment.validate import noise_transforms, validate_augment, validate_noise

TRANSFORMS = {name: REGISTRY.load(name) for name in REGISTRY.names()}
NOISE_TRANSFORMS = {name: TRANSFORMS[name] for name in noise_transforms()}

FS = 100.0
# parameters under which every sample visibly changes (GaussianBlur with sigma near 0.1 samples is an identity
# to float32 precision)
CHANGING = {"gaussian_blur": {"sigma": (0.5, 1.0)}}


def make(name: str, fs: float = FS, **params) -> torch.nn.Module:
    cls = TRANSFORMS[name]
    if name in ("baseline_wander", "powerline_noise", "em_noise"):
        params["fs"] = fs
    return cls(**{**CHANGING.get(name, {}), **params})


def changed(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per sample: whether any value differs."""
    return (x != y).flatten(1).any(1)


def spectrum(noise: torch.Tensor, fs: float) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.fft.rfftfreq(noise.shape[-1], 1.0 / fs), torch.fft.rfft(noise.double()).abs() ** 2


# --------------------------------------------------------------------------------------------- common behaviour
@pytest.mark.parametrize("name", list(TRANSFORMS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_and_p1_changes_every_sample(name, dtype):
    torch.manual_seed(0)
    x = torch.randn(16, 12, 250, dtype=dtype)
    y = make(name)(x)
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert torch.isfinite(y).all()
    assert changed(x, y).all()


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_per_sample_independence(name):
    torch.manual_seed(0)
    x = torch.randn(1, 12, 250).expand(8, 12, 250).contiguous()
    y = make(name)(x)
    for i in range(1, 8):
        assert not torch.equal(y[0], y[i]), f"samples 0 and {i} got the same transform"


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_p0_is_identity(name):
    x = torch.randn(16, 12, 250)
    torch.testing.assert_close(make(name, p=0.0)(x), x, rtol=0, atol=0)


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_p_selects_samples(name):
    torch.manual_seed(0)
    x = torch.randn(400, 12, 100)
    y = make(name, p=0.5)(x)
    hit = changed(x, y)
    assert 0.35 < hit.float().mean() < 0.65
    torch.testing.assert_close(y[~hit], x[~hit], rtol=0, atol=0)


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_reproducible_under_manual_seed(name):
    x = torch.randn(16, 12, 250)
    outputs = []
    for _ in range(2):
        torch.manual_seed(123)
        outputs.append(make(name, p=0.7)(x))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    with torch.random.fork_rng():
        torch.manual_seed(124)
        other = make(name, p=0.7)(x)
    assert not torch.equal(outputs[0], other)


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_large_batch_is_vectorised(name):
    torch.manual_seed(0)
    x = torch.randn(512, 12, 250)
    assert make(name)(x).shape == x.shape


# --------------------------------------------------------------------------------------------- per transform
def ramp(b: int, c: int, t: int) -> torch.Tensor:
    return torch.linspace(0.0, 1.0, t).expand(b, c, t).contiguous()


@pytest.mark.parametrize("scale", [(0.5, 1.0), (0.3, 0.3)])
def test_random_resized_crop_reads_a_contiguous_stretched_crop(scale):
    torch.manual_seed(0)
    t = 250
    y = RandomResizedCrop(scale)(ramp(64, 3, t))
    assert (y.diff(dim=-1) >= -1e-6).all()
    span = y[..., -1] - y[..., 0]
    assert (span >= scale[0] - 1e-5).all() and (span <= scale[1] + 1e-5).all()
    assert (y[..., 0] >= -1e-6).all() and (y[..., -1] <= 1 + 1e-6).all()
    # linear input stays linear: the crop is stretched uniformly
    torch.testing.assert_close(y.diff(dim=-1), (span / (t - 1))[..., None].expand(64, 3, t - 1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("warps,radius", [(3, 10.0), (1, 5.0), (8, 30.0)])
def test_dynamic_time_warp_monotone_fixed_endpoints_bounded(warps, radius):
    torch.manual_seed(0)
    t = 250
    x = ramp(64, 12, t)
    y = DynamicTimeWarp(warps, radius)(x)
    assert (y.diff(dim=-1) >= -1e-6).all(), "a ramp must stay monotone"
    torch.testing.assert_close(y[..., 0], x[..., 0], rtol=0, atol=1e-6)
    torch.testing.assert_close(y[..., -1], x[..., -1], rtol=0, atol=1e-6)
    shift = (y - x) * (t - 1)  # displacement in samples
    assert shift.abs().amax() <= radius + 1e-3
    assert shift.abs().amax(dim=-1).amin() > 0.5 * radius
    assert (y == y[:, :1]).all(dim=1).all(), "all leads are warped alike"


def test_gaussian_blur_keeps_constants_and_reduces_high_frequencies():
    torch.manual_seed(0)
    blur = GaussianBlur((0.5, 2.0))
    const = torch.full((8, 12, 250), 3.0)
    torch.testing.assert_close(blur(const), const)
    x = torch.randn(32, 12, 500)
    freqs, before = spectrum(x, FS)
    _, after = spectrum(blur(x), FS)
    high = freqs > FS / 4
    assert (after[..., high].sum(-1) < 0.5 * before[..., high].sum(-1)).all()
    low = freqs < FS / 50
    assert (after[..., low].sum() > 0.9 * before[..., low].sum())


def test_channel_resize_factors_per_lead_in_range():
    torch.manual_seed(0)
    y = ChannelResize((0.5, 2.0))(torch.ones(256, 12, 50))
    factor = y[..., 0]
    assert (y == factor[..., None]).all(), "one factor per lead"
    assert (factor >= 0.5 - 1e-6).all() and (factor <= 2.0 + 1e-6).all()
    assert factor.std(dim=1).amin() > 0, "leads get different factors"
    # log-uniform: the log-factor is symmetric about 0 for (0.5, 2)
    assert abs(factor.log().mean().item()) < 0.05
    assert (factor < 1).float().mean().item() == pytest.approx(0.5, abs=0.05)


def test_gaussian_noise_std_up_to_configured():
    torch.manual_seed(0)
    x = torch.zeros(256, 12, 2000)
    noise = GaussianNoise(0.2)(x)
    std = noise.std(dim=(1, 2))
    assert std.amax() <= 0.2 * 1.05 and std.amin() < 0.05
    fixed = GaussianNoise(0.2, fixed_amplitude=True)(x).std(dim=(1, 2))
    torch.testing.assert_close(fixed, torch.full_like(fixed, 0.2), rtol=0.03, atol=0)


@pytest.mark.parametrize("components", [1, 3])
def test_baseline_wander_frequency_in_band(components):
    torch.manual_seed(0)
    fs, t, band = 50.0, 3000, (0.2, 0.5)  # 60 s: 1/60 Hz resolution
    noise = BaselineWander(0.3, band, components, fs=fs)(torch.zeros(64, 12, t))
    freqs, power = spectrum(noise, fs)
    df = fs / t
    peak = freqs[power.argmax(-1)]
    assert (peak >= band[0] - df).all() and (peak <= band[1] + df).all()
    in_band = (freqs >= band[0] - 3 * df) & (freqs <= band[1] + 3 * df)
    assert (power[..., in_band].sum(-1) > 0.9 * power.sum(-1)).all()
    assert noise.abs().amax() <= 0.3 * components + 1e-5
    # the same wander on every lead, scaled by a per-lead gain in [0.5, 1]
    peak_lead = noise.abs().amax(-1)
    gain = peak_lead / peak_lead.amax(-1, keepdim=True)
    assert (gain >= 0.5 - 1e-4).all()
    torch.testing.assert_close(noise / peak_lead[..., None], (noise / peak_lead[..., None])[:, :1].expand_as(noise))


def test_powerline_noise_at_mains_frequency():
    torch.manual_seed(0)
    fs, t = 500.0, 1000
    noise = PowerlineNoise(0.1, (50.0, 60.0), fs=fs)(torch.zeros(128, 12, t))
    freqs, power = spectrum(noise, fs)
    peak = freqs[power.argmax(-1)]
    assert torch.isin(peak, torch.tensor([50.0, 60.0], dtype=peak.dtype)).all()
    per_sample = peak[:, 0]
    assert (peak == per_sample[:, None]).all(), "one mains frequency per sample"
    assert 0.3 < (per_sample == 50.0).float().mean() < 0.7
    assert noise.abs().amax() <= 0.1 + 1e-6


def test_powerline_noise_aliases_above_nyquist():
    torch.manual_seed(0)
    fs, t = 100.0, 1000
    noise = PowerlineNoise(0.1, [60.0], fixed_amplitude=True, fs=fs)(torch.zeros(16, 1, t))
    freqs, power = spectrum(noise, fs)
    assert (freqs[power.argmax(-1)] == 40.0).all()
    # exactly a sampled 60 Hz sinusoid: x[n] = a sin(2π 0.6 n + φ) satisfies x[n+1] + x[n-1] = 2 cos(2π 0.6) x[n]
    x = noise[:, 0].double()
    torch.testing.assert_close(x[:, 2:] + x[:, :-2], 2 * math.cos(2 * math.pi * 0.6) * x[:, 1:-1], atol=1e-5, rtol=0)


def test_em_noise_low_frequency_bursts():
    torch.manual_seed(0)
    fs, t = 100.0, 1000
    noise = EMNoise(0.2, (0.25, 0.5), fixed_amplitude=True, fs=fs)(torch.zeros(128, 12, t))
    freqs, power = spectrum(noise, fs)
    assert (power[..., freqs <= 10.0].sum(-1) > 0.9 * power.sum(-1)).all()
    assert power[..., freqs <= 10.0].sum() > 0.99 * power.sum()
    # a burst: the noise is zero outside one segment common to all leads of at most half the record
    active = (noise != 0).any(dim=1)
    assert (active.sum(-1) <= 0.5 * t + 2).all()
    assert (active.sum(-1) >= 0.25 * t - 2).all()
    idx = [torch.nonzero(a).flatten() for a in active[:4]]
    assert all((i[-1] - i[0] + 1).item() == len(i) for i in idx)
    # the RMS inside the burst's plateau is about the amplitude
    env = noise.abs().amax(dim=1)
    plateau_rms = torch.stack([noise[b, :, env[b] > 0].pow(2).mean().sqrt() for b in range(8)])
    assert ((plateau_rms > 0.1) & (plateau_rms < 0.25)).all()


@pytest.mark.parametrize("duration", [(0.1, 0.5), (0.2, 0.2)])
def test_baseline_shift_piecewise_constant_segment(duration):
    torch.manual_seed(0)
    t = 500
    noise = BaselineShift(0.5, duration)(torch.zeros(64, 12, t))
    for b in range(64):
        active = noise[b, 0] != 0
        idx = torch.nonzero(active).flatten()
        assert duration[0] * t - 1 <= len(idx) <= duration[1] * t + 1e-9
        assert (idx[-1] - idx[0] + 1).item() == len(idx), "one contiguous segment"
        for lead in range(12):
            seg = noise[b, lead, idx]
            assert (seg == seg[0]).all(), "constant over the segment"
            assert (noise[b, lead] != 0).equal(active), "the same segment on every lead"
            assert abs(seg[0]) <= 0.5
        ratio = noise[b, :, idx[0]] / noise[b, :, idx[0]].abs().amax()
        assert (ratio.sign() == ratio[0].sign()).all() and (ratio.abs() >= 0.5 - 1e-5).all()


# --------------------------------------------------------------------------------------------- noise protocol
NOISE_SPEC = {name: {} for name in NOISE_TRANSFORMS}


def test_noise_transforms_declare_level_param():
    assert set(NOISE_TRANSFORMS) == {"gaussian_noise", "baseline_wander", "powerline_noise", "em_noise",
                                     "baseline_shift"}
    for cls in NOISE_TRANSFORMS.values():
        assert cls.level_param in ("std", "amplitude")


@pytest.mark.parametrize("name", list(NOISE_TRANSFORMS))
def test_build_noise_scales_linearly_with_level(name):
    x = torch.randn(32, 12, 500)
    added = {}
    for level in (1.0, 2.0, 3.5):
        torch.manual_seed(7)
        added[level] = build_noise({name: {}}, level, fs=FS)(x) - x
    rms = {level: n.pow(2).mean().sqrt().item() for level, n in added.items()}
    assert rms[1.0] > 0
    assert rms[2.0] == pytest.approx(2 * rms[1.0], rel=1e-3)
    assert rms[3.5] == pytest.approx(3.5 * rms[1.0], rel=1e-3)
    torch.testing.assert_close(added[2.0], 2 * added[1.0], atol=1e-4, rtol=1e-4)


def test_build_noise_fixed_amplitude_and_identity_at_level_0():
    x = torch.randn(8, 12, 250)
    identity = build_noise(NOISE_SPEC, 0, fs=FS)
    assert len(identity) == 0 and torch.equal(identity(x), x)
    noise = build_noise({"gaussian_noise": {"std": 0.1}, "baseline_wander": {"amplitude": 0.2}}, 3, fs=FS)
    assert [type(m) for m in noise] == [GaussianNoise, BaselineWander]
    assert noise[0].std == pytest.approx(0.3) and noise[1].amplitude == pytest.approx(0.6)
    assert all(m.p == 1.0 and m.fixed_amplitude for m in noise) and noise[1].fs == FS
    torch.manual_seed(0)
    std = (build_noise({"gaussian_noise": {"std": 0.1}}, 2, fs=FS)(torch.zeros(64, 12, 1000))).std(dim=(1, 2))
    torch.testing.assert_close(std, torch.full_like(std, 0.2), rtol=0.03, atol=0)


def test_build_noise_rejects_bad_spec():
    with pytest.raises(ValueError, match="random_resized_crop"):
        build_noise({"random_resized_crop": {}}, 1, fs=FS)
    with pytest.raises(ValueError, match="'p'"):
        build_noise({"gaussian_noise": {"p": 0.5}}, 1, fs=FS)
    with pytest.raises(ValueError, match="level"):
        build_noise(NOISE_SPEC, -1, fs=FS)


def test_validate_noise():
    key = "evaluate.robustness.noise"
    assert validate_noise(NOISE_SPEC, key) == []
    assert validate_noise({}, key) == []
    assert validate_noise({"em_noise": None}, key) == []
    problems = validate_noise({"timeout": {}, "powerline_noise": {"amplitude": -1, "freq": [50, 0]}}, key)
    assert len(problems) == 3
    assert problems[0].startswith(f"config key '{key}.timeout': unknown transform") and "gaussian_noise" in problems[0]
    assert all(p.startswith(f"config key '{key}.powerline_noise': parameter") for p in problems[1:])
    assert validate_noise([{"gaussian_noise": {}}], key)[0].startswith(f"config key '{key}': must be a mapping")


# --------------------------------------------------------------------------------------------- builder and validation
YAML_EXAMPLE = """
augment:
  - random_resized_crop: {scale: [0.5, 1.0]}
  - timeout: {area: [0.2, 0.4]}
  - gaussian_noise: {std: 0.05, p: 0.5}
"""


def test_yaml_example_builds():
    spec = yaml.safe_load(YAML_EXAMPLE)["augment"]
    assert validate_augment(spec, "augment") == []
    pipeline = build_augment(spec, fs=FS)
    assert [type(m).__name__ for m in pipeline] == ["RandomResizedCrop", "TimeOut", "GaussianNoise"]
    assert pipeline[0].scale == (0.5, 1.0) and pipeline[1].area == (0.2, 0.4)
    assert pipeline[2].std == 0.05 and pipeline[2].p == 0.5
    torch.manual_seed(0)
    x = torch.randn(16, 12, 250)
    assert pipeline(x).shape == x.shape


def test_build_augment_all_transforms_defaults_and_fs_injection():
    spec = [{name: {}} for name in TRANSFORMS] + [{"powerline_noise": None}]
    pipeline = build_augment(spec, fs=250.0)
    assert [type(m) for m in pipeline] == list(TRANSFORMS.values()) + [PowerlineNoise]
    assert all(m.fs == 250.0 for m in pipeline if hasattr(m, "fs"))
    assert len(build_augment([], fs=FS)) == 0
    x = torch.randn(4, 12, 250)
    torch.manual_seed(0)
    assert pipeline(x).shape == x.shape


def test_build_augment_errors_name_transform_and_key():
    with pytest.raises(ValueError) as err:
        build_augment([{"gaussian_noise": {"sd": 0.1}}], fs=FS)
    msg = str(err.value)
    assert "gaussian_noise" in msg and "'sd'" in msg and "std" in msg and "p" in msg
    with pytest.raises(ValueError) as err:
        build_augment([{"timeout": {}}, {"jitter": {}}], fs=FS)
    msg = str(err.value)
    assert "'jitter'" in msg and "augment[1].jitter" in msg
    assert all(name in msg for name in TRANSFORMS)
    with pytest.raises(ValueError, match="fs is set from the data"):
        build_augment([{"baseline_wander": {"fs": 500}}], fs=FS)


def test_validate_augment_messages():
    key = "pretrain.methods.simclr.augment"
    spec = [
        {"random_resized_crop": {"scale": [1.0, 0.5]}},
        {"timeout": {"area": [0.2, 0.4, 0.6]}},
        {"gaussian_noise": {"std": -0.1, "p": 1.5}},
        {"channel_resize": {"scale": [0.0, 2.0]}},
        {"dynamic_time_warp": {"warps": 2.5}},
        {"baseline_shift": {"duration": [0.1, 1.5], "fixed_amplitude": "yes"}},
        {"em_noise": {"amplitude": 0.1}, "timeout": {}},
        "timeout",
        {"nonsense": {}},
        {"powerline_noise": [50, 60]},
    ]
    problems = validate_augment(spec, key)
    expected = [
        (f"{key}[0].random_resized_crop", "lo <= hi"),
        (f"{key}[1].timeout", "range [lo, hi]"),
        (f"{key}[2].gaussian_noise", "'std'"),
        (f"{key}[2].gaussian_noise", "'p'"),
        (f"{key}[3].channel_resize", "positive"),
        (f"{key}[4].dynamic_time_warp", "integer"),
        (f"{key}[5].baseline_shift", "[0, 1]"),
        (f"{key}[5].baseline_shift", "true or false"),
        (f"{key}[6]", "single-key"),
        (f"{key}[7]", "single-key"),
        (f"{key}[8].nonsense", "unknown transform"),
        (f"{key}[9].powerline_noise", "mapping"),
    ]
    assert len(problems) == len(expected), problems
    for problem, (where, text) in zip(problems, expected):
        assert problem.startswith(f"config key '{where}': "), problem
        assert text in problem, problem
    assert validate_augment([], key) == []
    assert validate_augment({"timeout": {}}, key)[0].startswith(f"config key '{key}': must be a list")
    valid = [{"baseline_wander": {"amplitude": 0.2, "freq": [0.1, 0.3], "components": 3, "p": 0.5}},
             {"powerline_noise": {"freq": 50}}, {"em_noise": {"duration": [0.5, 0.5], "cutoff": 5}},
             {"dynamic_time_warp": {"warps": 4, "radius": 5}}, {"gaussian_blur": {"sigma": [0.5, 0.5]}}]
    assert validate_augment(valid, key) == []
