"""Sound-based sleep staging: the sequence-to-sequence models (SoundSleepNet, SleepFormer), their registry, and the
log-mel augmentations with their config validation."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from physiossl.augment import AUDIO_TRANSFORMS as AUDIO_REGISTRY
from physiossl.augment.audio import (
    FreqMask,
    Gain,
    NoiseMix,
    TimeMask,
    TimeShift,
    build_audio_augment,
    mean_db,
)
from physiossl.augment.validate import validate_audio_augment
from physiossl.models import SLEEP_MODELS, build_sleep_model, sleep_model_args
from physiossl.models.sleep import SleepFormer, SleepModel, SoundSleepNet

AUDIO_TRANSFORMS = {name: AUDIO_REGISTRY.load(name) for name in AUDIO_REGISTRY.names()}
N_MELS = 16


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tensors here are tiny: one intra-op thread is as fast, and does not slow down badly when other
    processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

SMALL = {"soundsleepnet": {"width": 8, "embed_dim": 32}, "sleepformer": {"width": 0.25, "stem_time_stride": 2}}


def make_model(name: str, frames: int, n_mels: int = N_MELS, n_classes: int = 4, **args) -> SleepModel:
    torch.manual_seed(0)
    return build_sleep_model(name, n_mels=n_mels, frames=frames, n_classes=n_classes, **{**SMALL[name], **args})


def features(b: int, s: int, frames: int, n_mels: int = N_MELS, seed: int = 0) -> torch.Tensor:
    """Random log-mel-like dB values around -50 dB."""
    g = torch.Generator().manual_seed(seed)
    return -50.0 + 8.0 * torch.randn(b, s, n_mels, frames, generator=g)


# ----------------------------------------------------------------------------------------------------------- models
@pytest.mark.parametrize("name", list(SLEEP_MODELS))
@pytest.mark.parametrize("n_s, frames", [(1, 37), (3, 64), (6, 50), (2, 150), (5, 31)])
def test_output_shapes(name, n_s, frames):
    model = make_model(name, frames).eval()
    x = features(2, n_s, frames)
    with torch.no_grad():
        z = model.embed(x)
        logits = model(x)
    assert z.shape == (2, n_s, model.embed_dim)
    assert logits.shape == (2, n_s, 4)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(model.classify(z), logits)


@pytest.mark.parametrize("name", list(SLEEP_MODELS))
def test_default_sizes_and_real_mel_count(name):
    model = build_sleep_model(name, n_mels=48, frames=100, n_classes=3).eval()
    with torch.no_grad():
        assert model(features(1, 2, 100, n_mels=48)).shape == (1, 2, 3)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000


@pytest.mark.parametrize("name, args", [("soundsleepnet", {"seq_model": "gru"}),
                                        ("soundsleepnet", {"seq_model": "lstm", "seq_layers": 2}),
                                        ("soundsleepnet", {"seq_model": "transformer"}),
                                        ("soundsleepnet", {"seq_model": "none", "norm": "bin"}),
                                        ("sleepformer", {"attn_dropout": 0.1}),
                                        ("sleepformer", {"attn_blocks": [1, 1, 1], "stem_time_stride": 2})])
def test_gradient_reaches_every_parameter(name, args):
    model = make_model(name, 45, **args).train()
    x = features(3, 4, 45)
    loss = F.cross_entropy(model(x).flatten(0, 1), torch.arange(12) % 4)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_soundsleepnet_without_sequence_model_is_epoch_local():
    model = make_model("soundsleepnet", 40, seq_model="none").eval()
    x = features(2, 5, 40)
    with torch.no_grad():
        base = model(x)
        perm = torch.tensor([3, 0, 4, 1, 2])
        # the per-sequence input normalisation is permutation invariant, so outputs follow the epochs
        torch.testing.assert_close(model(x[:, perm]), base[:, perm], rtol=1e-4, atol=1e-5)
        z = model.embed(x)
        for k in range(5):
            y = x.clone()
            y[:, k, 2:6] += 20.0
            change = (model.embed(y) - z).abs().sum(-1)
            assert (change.argmax(1) == k).all()


@pytest.mark.parametrize("name, args, local", [("soundsleepnet", {"seq_model": "gru"}, True),
                                               ("soundsleepnet", {"seq_model": "transformer"}, True),
                                               ("sleepformer", {}, False)])
def test_perturbing_an_epoch_changes_it_and_its_context(name, args, local):
    """A louder band in epoch k changes epoch k's embedding (the most, for SoundSleepNet, whose CNN sees one epoch
    at a time) and, through the sequence model or attention, the other epochs' too."""
    model = make_model(name, 64, **args).eval()
    x = features(2, 6, 64)
    with torch.no_grad():
        base = model.embed(x)
        for k in (0, 3, 5):
            y = x.clone()
            y[:, k, 2:6] += 20.0
            change = (model.embed(y) - base).abs().mean(-1)
            others = torch.cat([change[:, :k], change[:, k + 1:]], 1)
            assert (others > 0).all() and (change[:, k] > 0).all()
            if local:
                assert (change.argmax(1) == k).all()


@pytest.mark.parametrize("name", list(SLEEP_MODELS))
def test_eval_mode_deterministic_batch_independent_and_gain_invariant(name):
    model = make_model(name, 48).eval()
    x = features(4, 3, 48)
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(model(x), out, rtol=0, atol=0)
        torch.testing.assert_close(model(x[1:2]), out[1:2], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model(x + 9.5), out, rtol=1e-3, atol=1e-4)


def test_sleepformer_pools_columns_by_overlap_with_epochs():
    model = make_model("sleepformer", 50, stem_time_stride=4)  # time stride 32: columns straddle epoch boundaries
    step = model.backbone.stride[1]
    assert step == 32
    w = model.epoch_weights(4, math.ceil(4 * 50 / step), torch.zeros(1, dtype=torch.float64))
    torch.testing.assert_close(w.sum(1), torch.ones(4, dtype=torch.float64))
    # epoch 1 covers frames [50, 100): column 1 ([32, 64)) for 14 frames, column 2 ([64, 96)) for 32, column 3 for 4
    torch.testing.assert_close(w[1, :4], torch.tensor([0, 14, 32, 4], dtype=torch.float64) / 50)
    aligned = make_model("sleepformer", 64, stem_time_stride=4)
    w = aligned.epoch_weights(3, 6, torch.zeros(1))
    torch.testing.assert_close(w, torch.tensor([[.5, .5, 0, 0, 0, 0], [0, 0, .5, .5, 0, 0], [0, 0, 0, 0, .5, .5]]))
    assert aligned.image(features(1, 3, 64)).shape == (1, 1, N_MELS, 192)
    assert model.image(features(1, 3, 50)).shape == (1, 1, N_MELS, 160)


def test_registry_and_errors():
    assert set(SLEEP_MODELS) == {"soundsleepnet", "sleepformer"}
    assert isinstance(build_sleep_model("soundsleepnet", n_mels=8, frames=64, n_classes=4), SoundSleepNet)
    assert isinstance(build_sleep_model("sleepformer", n_mels=8, frames=64, n_classes=4), SleepFormer)
    assert sleep_model_args("soundsleepnet") == ["width", "embed_dim", "seq_model", "seq_layers", "dropout", "norm"]
    assert sleep_model_args("sleepformer") == ["width", "attn_blocks", "stem_time_stride", "dropout",
                                               "attn_dropout", "norm"]
    with pytest.raises(KeyError, match="unknown sleep model 'resnet'.*sleepformer"):
        build_sleep_model("resnet", n_mels=8, frames=64, n_classes=4)
    with pytest.raises(KeyError, match="unknown sleep model"):
        sleep_model_args("resnet")
    with pytest.raises(ValueError, match=r"takes no argument 'depth'.*accepted: \['width'"):
        build_sleep_model("sleepformer", n_mels=8, frames=64, n_classes=4, depth=3)
    bad = [("soundsleepnet", {"seq_model": "rnn"}, "seq_model"), ("soundsleepnet", {"embed_dim": 30}, "embed_dim"),
           ("soundsleepnet", {"norm": "global"}, "norm"), ("sleepformer", {"attn_blocks": []}, "attn_blocks"),
           ("sleepformer", {"attn_blocks": [2, 2, 2, 2]}, "attn_blocks"), ("sleepformer", {"width": 0}, "width"),
           ("sleepformer", {"dropout": 1.0}, "dropout"), ("sleepformer", {"stem_time_stride": 0}, "stem_time_stride")]
    for name, args, word in bad:
        with pytest.raises(ValueError, match=word):
            build_sleep_model(name, n_mels=8, frames=64, n_classes=4, **args)
    with pytest.raises(ValueError, match=r"frames \(40\) must be at least the backbone's time stride \(64\)"):
        build_sleep_model("sleepformer", n_mels=8, frames=40, n_classes=4)
    assert build_sleep_model("sleepformer", n_mels=8, frames=40, n_classes=4, stem_time_stride=4).embed_dim == 192
    model = build_sleep_model("soundsleepnet", n_mels=8, frames=64, n_classes=4)
    for shape in [(2, 3, 8, 63), (2, 3, 9, 64), (2, 8, 64), (2, 0, 8, 64)]:
        with pytest.raises(ValueError, match=r"expects input \(batch, N_s >= 1, n_mels=8, frames=64\)"):
            model(torch.zeros(shape))


def band_problem(n: int, n_s: int, frames: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class c of an epoch = which of 4 mel bands (4 bins each) carries +15 dB of energy; a random gain per
    sequence and noise elsewhere."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n, n_s), generator=g)
    x = -60.0 + 3.0 * torch.randn(n, n_s, N_MELS, frames, generator=g)
    band = (torch.arange(N_MELS) // 4)[None, None, :] == y[:, :, None]
    x = x + 15.0 * band[..., None] + 10.0 * torch.randn(n, 1, 1, 1, generator=g)
    return x, y


@pytest.mark.parametrize("name", list(SLEEP_MODELS))
def test_learns_a_small_synthetic_problem(name):
    x, y = band_problem(24, 4, 32, seed=1)
    model = make_model(name, 32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(50):
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x).argmax(-1) == y).float().mean().item()
    assert accuracy > 0.9


# ----------------------------------------------------------------------------------------------------- augmentations
def spectrogram(b: int = 8, s: int = 3, m: int = 12, f: int = 40, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (-50.0 + 10.0 * torch.randn(b, s, m, f, generator=g, dtype=torch.float64)).to(dtype)


@pytest.mark.parametrize("name", list(AUDIO_TRANSFORMS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_p0_identity_and_seeded(name, dtype):
    x = spectrogram(dtype=dtype)
    cls = AUDIO_TRANSFORMS[name]
    assert cls(p=0.0)(x) is x
    torch.manual_seed(3)
    y = cls()(x)
    assert y.shape == x.shape and y.dtype == dtype and torch.isfinite(y).all()
    changed = (y != x).flatten(1).any(1)
    # with p = 1 every sequence is transformed (a mask of width 0 or a shift of 0 frames can leave one unchanged)
    assert changed.all() if name in ("gain", "noise_mix") else changed.float().mean() >= 0.5
    torch.manual_seed(3)
    torch.testing.assert_close(cls()(x), y, rtol=0, atol=0)
    torch.manual_seed(4)
    assert not torch.equal(cls()(x), y)
    # (B, M, F) input is a batch of single epochs
    torch.manual_seed(5)
    single = cls()(x[:, 0])
    torch.manual_seed(5)
    torch.testing.assert_close(single, cls()(x[:, :1])[:, 0], rtol=0, atol=0)


@pytest.mark.parametrize("name", list(AUDIO_TRANSFORMS))
def test_p_is_a_per_sequence_probability(name):
    """With p < 1 each sequence is either the p = 1 result (same seed) or the input, chosen per sequence."""
    x = spectrogram(b=200, s=2, m=8, f=20)
    cls = AUDIO_TRANSFORMS[name]
    torch.manual_seed(0)
    full = cls()(x)
    chosen = torch.rand(x.shape[0]) < 0.3
    torch.manual_seed(0)
    y = cls(p=0.3)(x)
    torch.testing.assert_close(y, torch.where(chosen[:, None, None, None], full, x), rtol=0, atol=0)
    assert 0.2 < chosen.float().mean() < 0.4


def test_gain_shifts_every_value_by_the_drawn_offset():
    x = spectrogram(dtype=torch.float64)
    torch.manual_seed(7)
    y = Gain(db=(-6.0, 6.0))(x)
    torch.manual_seed(7)
    offset = -6.0 + 12.0 * torch.rand(x.shape[0], dtype=torch.float64)
    torch.testing.assert_close(y - x, offset[:, None, None, None].expand_as(x))
    torch.testing.assert_close(y.mean((1, 2, 3)) - x.mean((1, 2, 3)), offset)
    assert offset.abs().max() <= 6.0


@pytest.mark.parametrize("noise", ["batch", "pink", "white"])
def test_noise_mix_adds_energy_at_the_drawn_snr(noise):
    torch.manual_seed(0)
    x = spectrogram(dtype=torch.float64)
    y = NoiseMix(snr_db=(10.0, 10.0), noise=noise)(x)
    assert (y >= x).all()  # mixing never removes energy
    added = (10 ** (y / 10) - 10 ** (x / 10)).flatten(1).mean(1)
    snr = 10 * torch.log10((10 ** (x / 10)).flatten(1).mean(1) / added)
    torch.testing.assert_close(snr, torch.full_like(snr, 10.0), rtol=0, atol=1e-6)
    x32 = x.float()
    assert (NoiseMix(noise=noise)(x32) >= x32).all()
    quiet = NoiseMix(snr_db=(80.0, 80.0), noise=noise)(x32)
    assert (quiet - x32).abs().max() < 0.01  # high SNR: close to the input


def test_noise_mix_batch_mixes_another_recording():
    x = torch.full((2, 2, 12, 30), -100.0)
    x[0, :, 0:3] = -20.0
    x[1, :, 8:11] = -20.0
    torch.manual_seed(0)
    y = NoiseMix(snr_db=(0.0, 0.0), noise="batch")(x)
    assert (y[0, :, 8:11] > -30.0).all() and (y[1, :, 0:3] > -30.0).all()
    assert (y[0, :, 4:7] < -90.0).all()
    torch.testing.assert_close(mean_db(y) - mean_db(x), torch.full((2,), 10 * math.log10(2.0)), rtol=0, atol=1e-3)


@pytest.mark.parametrize("noise", ["pink", "white"])
def test_synthetic_noise_has_its_spectral_colour(noise):
    torch.manual_seed(0)
    x = torch.full((4, 3, 16, 200), -300.0, dtype=torch.float64)  # silence: the output is the scaled noise
    transform = NoiseMix(snr_db=(-60.0, -60.0), noise=noise, fmin=30.0, fmax=4000.0)
    y = transform(x)
    shape = y.mean(dim=(1, 3))
    shape = shape - shape[:, :1]
    profile = transform.profile(16, x)
    torch.testing.assert_close(shape, profile.expand_as(shape), rtol=0, atol=0.3)
    if noise == "pink":
        # bin centres from about 115 Hz to 3.5 kHz: about 15 dB less power in the top bin
        assert (profile.diff() < 0).all() and -16 < profile[-1] < -14
    else:
        assert (profile == 0).all()
    time_course = y.mean(dim=2).flatten(1)  # slow fluctuation over the sequence
    assert time_course.std(1).min() > 0.5


def epoch_fill(x: torch.Tensor, fill: str) -> torch.Tensor:
    ref = x.mean((2, 3)) if fill == "mean" else x.amin((2, 3))
    return ref[:, :, None, None].expand_as(x)


@pytest.mark.parametrize("fill", ["mean", "min"])
def test_time_mask_fills_whole_frames_per_epoch(fill):
    torch.manual_seed(0)
    x = spectrogram(b=16, s=4, m=12, f=50)
    y = TimeMask(n=2, max_frac=0.2, fill=fill)(x)
    expected = epoch_fill(x, fill)
    frames = (y == expected).all(2)  # (B, S, F): frames holding the epoch's fill value in every mel bin
    # y is x except on whole masked frames
    assert torch.equal(y, torch.where(frames[:, :, None, :], expected, x))
    assert frames.any() and (frames.sum(-1) <= 2 * 10).all()
    # drawn per epoch: the epochs of a sequence are not all masked alike
    assert any(not torch.equal(frames[b, 0], frames[b, 1]) for b in range(16))


@pytest.mark.parametrize("fill", ["mean", "min"])
def test_freq_mask_fills_the_same_bins_in_every_epoch(fill):
    torch.manual_seed(0)
    x = spectrogram(b=16, s=4, m=12, f=30)
    y = FreqMask(n=2, max_bins=3, fill=fill)(x)
    expected = epoch_fill(x, fill)
    bins = (y == expected).all(3)  # (B, S, M): bins holding the epoch's fill value in every frame
    assert torch.equal(y, torch.where(bins[..., None], expected, x))
    assert torch.equal(bins, bins[:, :1].expand_as(bins))  # the same bins in every epoch of a sequence
    assert bins.any() and (bins[:, 0].sum(-1) <= 6).all()


def test_time_shift_moves_the_concatenated_sequence_with_edge_padding():
    b, s, m, f = 32, 3, 4, 20
    t = torch.arange(s * f, dtype=torch.float32).reshape(s, 1, f)
    x = (t + 1000.0 * torch.arange(m).reshape(1, m, 1)).expand(b, s, m, f).contiguous()
    torch.manual_seed(0)
    y = TimeShift(max_frac=0.2)(x)
    concat = y.permute(0, 2, 1, 3).reshape(b, m, s * f)
    torch.testing.assert_close(concat - concat[:, :1], (1000.0 * torch.arange(m)).reshape(1, m, 1).expand_as(concat))
    source = concat[:, 0]  # the input frame each output frame reads
    steps = torch.arange(s * f, dtype=torch.float32)
    shifts = steps[s * f // 2] - source[:, s * f // 2]
    assert shifts.abs().max() <= 4 and (shifts > 0).any() and (shifts < 0).any()
    torch.testing.assert_close(source, (steps[None] - shifts[:, None]).clamp(0, s * f - 1))


def test_pipeline_from_config_is_reproducible():
    spec = [{"gain": {"db": [-3, 3]}}, {"noise_mix": {"snr_db": [5, 15], "noise": "pink", "p": 0.5}},
            {"time_mask": {"n": 1, "max_frac": 0.1}}, {"freq_mask": {}}, {"time_shift": None}]
    pipeline = build_audio_augment(spec)
    assert [type(t) for t in pipeline] == [Gain, NoiseMix, TimeMask, FreqMask, TimeShift]
    assert pipeline[1].noise == "pink" and pipeline[1].p == 0.5 and pipeline[0].db == (-3.0, 3.0)
    x = spectrogram()
    with torch.random.fork_rng():
        torch.manual_seed(11)
        a = pipeline(x)
        torch.manual_seed(11)
        b = pipeline(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert len(build_audio_augment([])) == 0


def test_config_validation_messages():
    assert validate_audio_augment([{"gain": {}}, {"noise_mix": {"snr_db": [-5, 5], "noise": "white"}},
                                   {"time_mask": {"n": 3, "max_frac": 0.25, "fill": "min"}}], "sleep.augment") == []
    problems = validate_audio_augment([
        {"gain": {"db": [6, -6], "level": 1}},
        {"noise_mix": {"noise": "brown", "p": 1.5, "fmax": 0}},
        {"noise_mix": {"fmin": 4000, "fmax": 1000}},
        {"time_mask": {"n": -1, "max_frac": 2}},
        {"freq_mask": {"max_bins": 2.5, "fill": "zero"}},
        {"time_shift": {"max_frac": "x"}},
        {"reverb": {}},
        "gain",
        {"gain": [1, 2]},
    ], "sleep.augment")
    expected = [
        "'sleep.augment[0].gain': unknown parameter 'level' for gain; valid: db, p",
        "'sleep.augment[0].gain': parameter 'db' range [lo, hi] needs lo <= hi",
        "'sleep.augment[1].noise_mix': parameter 'p' must be a probability in [0, 1]",
        "'sleep.augment[1].noise_mix': parameter 'noise' must be one of 'batch', 'pink', 'white', got 'brown'",
        "'sleep.augment[1].noise_mix': parameter 'fmax' must be a positive number",
        "'sleep.augment[2].noise_mix': parameters 'fmin' and 'fmax' need fmin < fmax, got 4000 and 1000",
        "'sleep.augment[3].time_mask': parameter 'n' must be a non-negative integer",
        "'sleep.augment[3].time_mask': parameter 'max_frac' must be a fraction in [0, 1]",
        "'sleep.augment[4].freq_mask': parameter 'max_bins' must be a non-negative integer",
        "'sleep.augment[4].freq_mask': parameter 'fill' must be one of 'mean', 'min'",
        "'sleep.augment[5].time_shift': parameter 'max_frac' must be a fraction in [0, 1]",
        "'sleep.augment[6].reverb': unknown transform 'reverb'; "
        "valid: freq_mask, gain, noise_mix, time_mask, time_shift",
        "'sleep.augment[7]': must be a single-key mapping",
        "'sleep.augment[8].gain': parameters must be a mapping",
    ]
    assert len(problems) == len(expected)
    for part in expected:
        assert any(part in p for p in problems), part
    assert validate_audio_augment({"gain": {}}, "augment") == [
        "config key 'augment': must be a list of single-key mappings (transform: params), got dict"]
    with pytest.raises(ValueError, match=r"invalid audio augmentation config:\nconfig key 'strong\[0\]\.gain'"):
        build_audio_augment([{"gain": {"db": 3}}], key="strong")
