"""The SSL method registry, every method's training step, their method-specific state (EMA targets, queues,
prototypes, masks), config validation, and one real Lightning fit."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.nn.functional as F
import yaml

from physiossl import optim
from physiossl.losses.cpc import cpc_loss
from physiossl.losses.infonce import infonce
from physiossl.losses.masked_prediction import masked_prediction_loss
from physiossl.methods import available, get_method, validate_method_config
from physiossl.methods._common import cosine_momentum
from physiossl.methods.moco_v2 import shuffled_chunks
from physiossl.models import build_encoder
from physiossl.models.cpc import CPCEncoder
from physiossl.stages.pretrain import method_encoder

# the methods with invariance or predictive objectives on crops; SimPer (periodic targets) is tested in test_simper.py
METHODS = ["apc", "barlow_twins", "byol", "cpc", "moco_v2", "moco_v3", "mpc", "simclr", "simsiam", "swav"]
AUGMENT = [{"random_resized_crop": {"scale": [0.5, 1.0]}}, {"timeout": {"area": [0.2, 0.4]}}]
BASE = {"lr": 1.0e-3, "weight_decay": 1.0e-6, "warmup_epochs": 0}
SMALL = {
    "simclr": {"proj_hidden": 32, "proj_dim": 8},
    "byol": {"proj_hidden": 32, "proj_dim": 8, "pred_hidden": 32},
    "swav": {"proj_hidden": 32, "proj_dim": 8, "n_prototypes": 10, "n_small_crops": 2, "queue_length": 16,
             "queue_start_epoch": 0, "freeze_prototypes_epochs": 0},
    "moco_v2": {"proj_hidden": 32, "proj_dim": 8, "queue_size": 12},
    "moco_v3": {"proj_hidden": 32, "proj_dim": 8, "pred_hidden": 32},
    "cpc": {"steps": 3, "n_negatives": 8},
    "barlow_twins": {"proj_hidden": 32, "proj_dim": 16},
    "simsiam": {"proj_dim": 16, "pred_hidden": 8},
    "mpc": {"span": 2},
    "apc": {"shift": 10},
}
CPC_ONLY = {"cpc", "apc"}

REPO = Path(__file__).resolve().parents[1]
# the method blocks of the shipped paper grid and CPU demo grids, and the methods each of them configures
GRIDS = {"paper_ecg": sorted(METHODS + ["simper"]), "demo_methods": METHODS,
         "demo_periodic": ["byol", "cpc", "simclr", "simper"]}


def small_config(name: str, **changes) -> dict:
    augment = [] if name in CPC_ONLY | {"mpc"} else AUGMENT
    return {**BASE, "augment": augment, **SMALL[name], **changes}


def make(name: str, encoder: str | None = None, **changes):
    encoder = encoder or ("cpc" if name in CPC_ONLY else "xresnet1d50")
    args = {"hidden": 32} if encoder == "cpc" else None
    return get_method(name)(cfg=small_config(name, **changes), encoder=encoder, encoder_args=args)


def batch(n: int = 8, t: int = 250, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 12, t, generator=torch.Generator().manual_seed(seed))


def step(method, x: torch.Tensor, optimizer: torch.optim.Optimizer, batch_idx: int = 0) -> torch.Tensor:
    """One manual training step with the Lightning hooks a fit would call around it."""
    loss = method.loss(x)
    optimizer.zero_grad()
    loss.backward()
    method.on_after_backward()
    optimizer.step()
    method.after_optimizer_step()
    return loss


def adam(method) -> torch.optim.Optimizer:
    return torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=1e-3)


def snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


# --------------------------------------------------------------------------------------------- registry, encoders
def test_registry_lists_every_method():
    assert available() == sorted(METHODS + ["simper"])
    with pytest.raises(KeyError, match="simclr"):
        get_method("nope")


def test_encoders_stride_groups_and_arguments():
    x = batch(2)
    xr = build_encoder("xresnet1d50")
    assert xr.stride == 32 and xr.features(x).shape == (2, xr.feature_dim, math.ceil(250 / 32))
    assert [type(g).__name__ for g in xr.layer_groups()] == ["Sequential"] * 5
    assert sum(p.numel() for g in xr.layer_groups() for p in g.parameters()) == 886_400
    cpc = build_encoder("cpc", hidden=16, lstm_layers=1)
    assert isinstance(cpc, CPCEncoder) and cpc.stride == 1 and cpc.out_dim == 48
    z = cpc.encode(x)
    assert z.shape == (2, 250, 16) and cpc.context(z).shape == (2, 250, 16)
    assert cpc.features(x).shape == (2, 16, 250) and cpc(x).shape == (2, 48)
    assert len(cpc.layer_groups()) == 2
    c = cpc.context(z)
    torch.testing.assert_close(cpc(x), torch.cat([c.amax(1), c.mean(1), c[:, -1]], dim=1))
    # causal: the context at t does not depend on later samples
    y = x.clone()
    y[..., 200:] = 0
    cpc.eval()
    torch.testing.assert_close(cpc.features(x)[..., :200], cpc.features(y)[..., :200])
    with pytest.raises(ValueError, match=r"'cpc'.*'hiden'"):
        build_encoder("cpc", hiden=3)
    with pytest.raises(ValueError, match=r"'xresnet1d50'.*'hidden'"):
        build_encoder("xresnet1d50", hidden=3)


# --------------------------------------------------------------------------------------------- every method trains
@pytest.mark.parametrize("name,encoder", [(m, None) for m in METHODS] + [("mpc", "cpc")])
def test_method_trains_with_finite_losses_and_gradients(name, encoder):
    torch.manual_seed(0)
    method = make(name, encoder)
    method.train()
    x = batch()
    optimizer = adam(method)
    trainable = {n: p for n, p in method.named_parameters() if p.requires_grad}
    for i in range(2):
        loss = method.loss(x)
        assert loss.ndim == 0 and torch.isfinite(loss), f"{name}: loss {loss}"
        optimizer.zero_grad()
        loss.backward()
        missing = [n for n, p in trainable.items() if p.grad is None]
        assert not missing, f"{name}: no gradient for {missing}"
        bad = [n for n, p in trainable.items() if not torch.isfinite(p.grad).all()]
        assert not bad, f"{name}: non-finite gradient for {bad}"
        method.on_after_backward()
        optimizer.step()
        method.after_optimizer_step()
    assert all(torch.isfinite(p).all() for p in method.parameters())


# --------------------------------------------------------------------------------------------- method-specific state
@pytest.mark.parametrize("name,online,target", [
    ("byol", ["encoder", "projector"], ["target_encoder", "target_projector"]),
    ("moco_v2", ["encoder", "projector"], ["key_encoder", "key_projector"]),
    ("moco_v3", ["encoder", "projector"], ["momentum_encoder", "momentum_projector"]),
])
def test_target_networks_are_ema_copies(name, online, target):
    torch.manual_seed(0)
    method = make(name, "cpc", momentum=0.9)
    for o, t in zip(online, target):
        for a, b in zip(getattr(method, o).parameters(), getattr(method, t).parameters()):
            assert torch.equal(a, b) and not b.requires_grad
    optimizer = adam(method)
    x = batch()
    loss = method.loss(x)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    for t in target:
        assert all(p.grad is None for p in getattr(method, t).parameters())
    before = {t: snapshot(getattr(method, t)) for t in target}
    m = method.current_momentum()
    assert m == pytest.approx(0.9)  # no trainer: the base momentum
    method.after_optimizer_step()
    for o, t in zip(online, target):
        pairs = list(zip(before[t], getattr(method, o).parameters(), getattr(method, t).parameters()))
        assert any(not torch.equal(old, new) for old, _, new in pairs)
        for old, on, new in pairs:
            torch.testing.assert_close(new, m * old + (1 - m) * on.detach())


def test_cosine_momentum_schedule():
    assert cosine_momentum(0.99, 0, 100) == pytest.approx(0.99)
    assert cosine_momentum(0.99, 50, 100) == pytest.approx(0.995)
    assert cosine_momentum(0.99, 100, 100) == pytest.approx(1.0)
    assert cosine_momentum(0.99, 10, None) == 0.99


def test_moco_v2_queue_holds_the_newest_keys():
    torch.manual_seed(0)
    method = make("moco_v2", "cpc")  # queue of 12, batches of 8: the second enqueue wraps around
    optimizer = adam(method)
    assert torch.allclose(method.queue.norm(dim=1), torch.ones(12))
    expected_ptr = 0
    for i in range(2):
        x = batch(seed=i)
        loss = method.loss(x)
        keys = method._keys[-1].clone()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.after_optimizer_step()
        rows = (torch.arange(8) + expected_ptr) % 12
        expected_ptr = (expected_ptr + 8) % 12
        assert int(method.queue_ptr) == expected_ptr
        torch.testing.assert_close(method.queue[rows], keys)
        torch.testing.assert_close(keys.norm(dim=1), torch.ones(8))


def test_shuffled_chunks_mix_query_chunks():
    torch.manual_seed(0)
    for splits in range(2, 6):
        for n in range(2 * splits, 30):
            blocks = torch.arange(n).tensor_split(splits)
            query_chunk = torch.cat([torch.full((len(c),), j) for j, c in enumerate(blocks)])
            chunks = shuffled_chunks(n, splits)
            assert len(chunks) == splits and sorted(torch.cat(chunks).tolist()) == list(range(n))
            assert all(len(c) in (n // splits, n // splits + 1) for c in chunks)
            assert all(len(set(query_chunk[c].tolist())) >= 2 for c in chunks)


def test_moco_v2_split_shuffle_bn():
    torch.manual_seed(0)
    method = make("moco_v2", "cpc", bn_splits=4)
    method.views = torch.nn.Identity()
    x = torch.arange(8.0)[:, None, None].expand(8, 12, 250).contiguous()  # sample i is all i
    calls = {"query": [], "key": []}
    for name, net in (("query", method.encoder), ("key", method.key_encoder)):
        net.register_forward_pre_hook(lambda _, args, name=name: calls[name].append(args[0][:, 0, 0].long().tolist()))
    assert torch.isfinite(method.loss(x))
    assert calls["query"] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert len(calls["key"]) == 4 and sorted(sum(calls["key"], [])) == list(range(8))
    for chunk in calls["key"]:  # every key shares its BN statistics with samples other than its query's
        assert len(chunk) == 2 and chunk[0] // 2 != chunk[1] // 2
    method.key_encoder.eval()  # BN on running statistics: the chunking is invisible, the order must be restored
    method.loss(x)
    torch.testing.assert_close(method._keys[-1], F.normalize(method.key_projector(method.key_encoder(x)), dim=1))
    calls["key"].clear()
    method.key_encoder.train()
    method.loss(x[:6])  # fewer than 2 · bn_splits samples: 3 chunks of 2
    assert [len(c) for c in calls["key"]] == [2, 2, 2]
    assert method.bn_splits(3) == 1 and method.bn_splits(100) == 4


def test_moco_v2_one_bn_split_is_whole_batch_bn():
    torch.manual_seed(0)
    method = make("moco_v2", "cpc", bn_splits=1)
    x = batch()
    with torch.random.fork_rng():
        torch.manual_seed(1)
        loss = method.loss(x)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        q = method.projector(method.encoder(method.views(x)))
        with torch.no_grad():
            k = F.normalize(method.key_projector(method.key_encoder(method.views(x))), dim=1)
    torch.testing.assert_close(method._keys[-1], k, rtol=0, atol=0)
    torch.testing.assert_close(loss, infonce(q, k, method.cfg["temperature"], queue=method.queue), rtol=0, atol=0)


def test_swav_prototypes_normalised_frozen_and_queue():
    torch.manual_seed(0)
    frozen = make("swav", "cpc", freeze_prototypes_epochs=1)
    norms = frozen.prototypes.weight.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))
    before = frozen.prototypes.weight.detach().clone()
    encoder_before = snapshot(frozen.encoder)
    optimizer = adam(frozen)
    step(frozen, batch(), optimizer)
    torch.testing.assert_close(frozen.prototypes.weight, before)  # epoch 0 < freeze_prototypes_epochs
    assert any(not torch.equal(a, b) for a, b in zip(encoder_before, frozen.encoder.parameters()))

    torch.manual_seed(0)
    free = make("swav", "cpc", freeze_prototypes_epochs=0, queue_length=16, queue_start_epoch=0)
    optimizer = adam(free)
    before = free.prototypes.weight.detach().clone()
    assert not free.use_queue()
    for i in range(2):
        x = batch(seed=i)
        step(free, x, optimizer, i)
        norms = free.prototypes.weight.norm(dim=1)
        torch.testing.assert_close(norms, torch.ones_like(norms))
    assert not torch.allclose(free.prototypes.weight, before)
    assert free.queue_filled == 16 and free.use_queue()
    assert torch.isfinite(free.loss(batch(seed=2)))  # Sinkhorn over batch + queue
    newest = free._assigned[-1].clone()
    free.after_optimizer_step()
    torch.testing.assert_close(free.queue[:, :8], newest)

    late = make("swav", "cpc", queue_start_epoch=5)  # before its start epoch the queue stays empty
    step(late, batch(), adam(late))
    assert late.queue_filled == 0


def test_swav_small_crops_are_shorter():
    torch.manual_seed(0)
    method = make("swav", "cpc", n_small_crops=3, small_crop_fraction=0.4)
    lengths = []
    method.encoder.register_forward_pre_hook(lambda module, args: lengths.append(args[0].shape))
    method.loss(batch())
    assert lengths == [(16, 12, 250), (24, 12, 100)]


def test_mpc_mask_ratio_and_loss_on_masked_frames_only():
    torch.manual_seed(0)
    method = make("mpc", "xresnet1d50", mask_ratio=0.3, span=2)
    mask = method.frame_mask(64, 20, torch.device("cpu"))
    assert mask.shape == (64, 20) and (mask.sum(dim=1) == 6).all()  # 3 of 10 spans of 2 frames
    assert not torch.equal(mask[0], mask[1])

    x = batch(4, t=320)  # 10 frames of 32 samples
    stride = method.encoder.stride
    with torch.random.fork_rng():
        torch.manual_seed(1)
        loss = method.loss(x)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        masked, mask = method.masked_input(x)
        prediction = method.predict(masked, 10)
    assert mask.shape == (4, 10) and (mask.sum(dim=1) == 4).all()  # round(0.3 * 5) = 2 spans of 2
    samples = mask.repeat_interleave(stride, dim=1)[:, None, :].expand_as(x)
    assert (masked[samples] == 0).all() and torch.equal(masked[~samples], x[~samples])
    assert prediction.shape == (4, 12 * stride, 10)
    b, lead, frame, j = 2, 5, 7, 3
    target = x.reshape(4, 12, 10, stride).transpose(2, 3).reshape(4, 12 * stride, 10)
    assert target[b, lead * stride + j, frame] == x[b, lead, frame * stride + j]
    per_frame = (prediction - target).pow(2).mean(dim=1)
    torch.testing.assert_close(loss, per_frame[mask].mean())
    # any change of the targets of unmasked frames leaves the loss unchanged
    changed = torch.where(mask[:, None, :], target, torch.randn_like(target))
    torch.testing.assert_close(masked_prediction_loss(prediction, changed, mask), loss)


@pytest.mark.parametrize("name", ["cpc", "apc"])
def test_cpc_and_apc_need_the_cpc_encoder(name):
    cfg = small_config(name)
    problems = validate_method_config(name, {**cfg, "encoder": "xresnet1d50"}, f"pretrain.methods.{name}")
    assert len(problems) == 1 and problems[0].startswith(f"config key 'pretrain.methods.{name}.encoder'")
    assert "'cpc'" in problems[0]
    assert validate_method_config(name, cfg, f"pretrain.methods.{name}", encoder="xresnet1d50")
    assert validate_method_config(name, {**cfg, "encoder": "cpc"}, f"pretrain.methods.{name}") == []
    with pytest.raises(ValueError, match="cpc"):
        get_method(name)(cfg=cfg, encoder="xresnet1d50")


def test_cpc_predicts_every_step_or_the_last_one():
    x = batch(4, t=40)
    method = make("cpc")  # steps 3, all predicted: one map per step
    assert method.offsets == [1, 2, 3] and len(method.predictors) == 3
    torch.manual_seed(5)
    loss = method.loss(x)
    z = method.encoder.encode(x)
    c = method.encoder.context(z)
    torch.manual_seed(5)  # the negatives come from the global generator: the same draws again
    stacked = cpc_loss(torch.stack([w(c) for w in method.predictors]), z, 8, "same_sequence")
    torch.testing.assert_close(loss, stacked, rtol=1e-6, atol=0)

    last = make("cpc", steps_predicted="last")  # one map, for step 3 only (the ECG SSL paper's code)
    assert last.offsets == [3] and len(last.predictors) == 1
    torch.manual_seed(6)
    loss = last.loss(x)
    z = last.encoder.encode(x)
    c = last.encoder.context(z)
    torch.manual_seed(6)
    torch.testing.assert_close(loss, cpc_loss([last.predictors[0](c[:, :37])], z, 8, offsets=[3]), rtol=1e-6, atol=0)
    loss.backward()
    assert last.predictors[0].weight.grad.abs().sum() > 0

    key = "pretrain.methods.cpc"
    assert validate_method_config("cpc", small_config("cpc", steps_predicted="last"), key, encoder="cpc") == []
    problems = validate_method_config("cpc", small_config("cpc", steps_predicted="first"), key, encoder="cpc")
    assert len(problems) == 1 and problems[0].startswith(f"config key '{key}.steps_predicted'")
    assert get_method("cpc").defaults()["steps_predicted"] == "all"


def test_barlow_twins_projector_defaults_to_2048_and_takes_8192():
    defaults = get_method("barlow_twins").defaults()
    assert defaults["proj_hidden"] == defaults["proj_dim"] == 2048
    method = get_method("barlow_twins")(cfg={**BASE, "augment": AUGMENT}, encoder="xresnet1d50")
    assert [m.out_features for m in method.projector.modules() if isinstance(m, torch.nn.Linear)] == [2048] * 3
    wide = {**BASE, "augment": AUGMENT, "proj_hidden": 8192, "proj_dim": 8192}
    assert validate_method_config("barlow_twins", wide, "pretrain.methods.barlow_twins") == []


# --------------------------------------------------------------------------------------------- optimiser
def train_adam(cls, build, steps: int = 5, **kwargs) -> list[torch.Tensor]:
    """A small conv net trained ``steps`` steps by ``build(cls, params, **kwargs)``; its parameters after."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv1d(12, 16, 5), torch.nn.BatchNorm1d(16), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten(), torch.nn.Linear(16, 5))
    groups = [{"params": (p for p in net[:2].parameters())}, {"params": net[5].parameters(), "weight_decay": 0.0}]
    optimizer = build(cls, groups, lr=1e-2, **kwargs)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(8, 12, 40, generator=g), torch.randn(8, 5, generator=g)
        loss = F.mse_loss(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return [p.detach().clone() for p in net.parameters()]


@pytest.mark.parametrize("cls,weight_decay", [(torch.optim.Adam, 0.0), (torch.optim.Adam, 1e-3),
                                              (torch.optim.AdamW, 1e-2)])
def test_adam_on_cpu_is_bit_identical_to_the_default_implementation(cls, weight_decay):
    def default(cls, groups, **kwargs):
        return cls([{**g, "params": list(g["params"])} for g in groups], **kwargs)

    def helper(cls, groups, **kwargs):
        optimizer = optim.adam(groups, decoupled=cls is torch.optim.AdamW, **kwargs)
        assert type(optimizer) is cls and optimizer.defaults["foreach"] is False and not optimizer.defaults["fused"]
        assert sum(len(g["params"]) for g in optimizer.param_groups) == 6  # generators in the groups are read once
        return optimizer

    expected = train_adam(cls, default, weight_decay=weight_decay)
    got = train_adam(cls, helper, weight_decay=weight_decay)
    assert all(torch.equal(a, b) for a, b in zip(expected, got))


def test_adam_implementation_by_device(monkeypatch):
    params = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2, 2))]
    assert optim.FUSED_DEVICES == ("cuda",)
    assert optim.implementation(params) == {"foreach": False}
    assert optim.implementation([{"params": params}]) == {"foreach": False}
    monkeypatch.setattr(optim, "FUSED_DEVICES", ("cpu",))  # as on a device with fused kernels
    assert optim.implementation(params) == {"fused": True}
    assert optim.implementation([{"params": params}, {"params": [torch.zeros(2, dtype=torch.long)]}]) == {
        "foreach": False}
    optimizer = optim.adam(iter(params), decoupled=True, lr=1e-3, weight_decay=1e-2)
    assert type(optimizer) is torch.optim.AdamW and optimizer.defaults["fused"] is True
    method = make("cpc")
    method.trainer = SimpleNamespace(max_epochs=1, estimated_stepping_batches=10, world_size=1)
    assert method.configure_optimizers()["optimizer"].defaults["fused"] is True


# --------------------------------------------------------------------------------------------- config validation
@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_paper_and_demo_configs_validate_and_build(grid):
    pretrain = yaml.safe_load((REPO / "config" / f"{grid}.yaml").read_text())["pretrain"]
    configs = pretrain["methods"]
    assert sorted(configs) == GRIDS[grid]
    for name, cfg in configs.items():
        assert validate_method_config(name, cfg, f"pretrain.methods.{name}", encoder="xresnet1d50") == []
    for name in {"cpc", "swav", "simper"} & set(configs):
        cfg = configs[name]
        encoder, encoder_args = method_encoder(pretrain, cfg)
        get_method(name)(cfg=cfg, encoder=encoder, encoder_args=encoder_args)


def test_method_defaults_fill_the_config():
    method = get_method("byol")(cfg={**BASE, "augment": []}, encoder="cpc", encoder_args={"hidden": 8})
    assert method.cfg["momentum"] == 0.996 and method.cfg["proj_dim"] == 16
    assert method.hparams["cfg"] == {**BASE, "augment": []} and method.hparams["encoder_args"] == {"hidden": 8}
    assert not method.gather_distributed


@pytest.mark.parametrize("name", METHODS)
def test_validate_method_config_reports_problems(name):
    key = f"pretrain.methods.{name}"
    cfg = small_config(name)
    assert validate_method_config(name, cfg, key, encoder="cpc" if name in CPC_ONLY else "xresnet1d50") == []

    bad = {**cfg, "encoder": "cpc", "colour": "blue"}
    del bad["lr"]
    bad["augment"] = [{"random_resized_crop": {"scale": [0.5, 1.0]}}, {"wobble": {}}]
    bad["encoder_args"] = {"hidden": 16, "hiden": 3}
    problems = validate_method_config(name, bad, key)
    assert all(p.startswith(f"config key '{key}") for p in problems)
    assert len(problems) == 4, problems
    assert any(p.startswith(f"config key '{key}.colour'") and "unknown key" in p for p in problems)
    assert any(p.startswith(f"config key '{key}.lr'") and "missing" in p for p in problems)
    assert any(p.startswith(f"config key '{key}.augment[1].wobble'") for p in problems)
    assert any(p.startswith(f"config key '{key}.encoder_args.hiden'") for p in problems)


def test_validate_method_config_types_and_unknown_method():
    key = "pretrain.methods.swav"
    problems = validate_method_config("swav", {**small_config("swav"), "n_prototypes": "many", "lr": 0,
                                               "batch_size": 1, "encoder": "resnet"}, key)
    assert any(p.startswith(f"config key '{key}.n_prototypes'") for p in problems)
    assert any(p.startswith(f"config key '{key}.lr'") for p in problems)
    assert any(p.startswith(f"config key '{key}.batch_size'") for p in problems)
    assert any(p.startswith(f"config key '{key}.encoder'") for p in problems)
    assert validate_method_config("swav", {**small_config("swav"), "augment": {"timeout": [0.2, 0.4]}}, key)
    assert validate_method_config("nope", {}, "pretrain.methods.nope") == [
        f"config key 'pretrain.methods.nope': unknown method 'nope' (available: {sorted(METHODS + ['simper'])})"]


# --------------------------------------------------------------------------------------------- a real Lightning fit
@pytest.mark.parametrize("name", ["moco_v2", "swav"])
def test_lightning_fit_runs_the_hooks(name):
    L.seed_everything(0, verbose=False)
    method = make(name, "cpc")
    key_before = snapshot(method.key_encoder) if name == "moco_v2" else None
    loader = torch.utils.data.DataLoader(batch(16), batch_size=8)
    trainer = L.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(method, loader)
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train_loss_step"])
    if name == "moco_v2":
        assert int(method.queue_ptr) == 16 % 12
        assert any(not torch.equal(a, b) for a, b in zip(key_before, method.key_encoder.parameters()))
    else:
        assert method.queue_filled == 16
        norms = method.prototypes.weight.norm(dim=1)
        torch.testing.assert_close(norms, torch.ones_like(norms))


def fit(method, n: int, max_steps: int, accumulate: int = 1, **kwargs) -> L.Trainer:
    trainer = L.Trainer(max_steps=max_steps, accumulate_grad_batches=accumulate, accelerator="cpu", devices=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, **kwargs)
    trainer.fit(method, torch.utils.data.DataLoader(batch(n), batch_size=8))
    return trainer


@pytest.mark.parametrize("name", ["byol", "moco_v2", "moco_v3", "swav"])
def test_state_updates_once_per_optimiser_step_with_accumulation(name, monkeypatch):
    L.seed_everything(0, verbose=False)
    method = make(name, "cpc", **({"queue_size": 40} if name == "moco_v2" else {}))
    adam_steps = []

    def spy(fn):
        def wrapped(*args):
            state = method.trainer.optimizers[0].state
            adam_steps.append(int(next(iter(state.values()))["step"]) if state else 0)
            return fn(*args)
        return wrapped

    if name == "swav":
        monkeypatch.setattr(method, "normalize_prototypes", spy(method.normalize_prototypes))
    else:
        monkeypatch.setattr(method, "update_targets", spy(method.update_targets))
    if name == "moco_v2":
        enqueued = []
        monkeypatch.setattr(method, "enqueue", lambda keys, fn=method.enqueue: (enqueued.append(len(keys)), fn(keys)))
    trainer = fit(method, 32, max_steps=2, accumulate=2)
    assert trainer.global_step == 2
    assert adam_steps == [1, 2]  # once per optimiser step, after it
    if name == "moco_v2":
        assert enqueued == [16, 16] and int(method.queue_ptr) == 32
    if name == "swav":
        assert method.queue_filled == 16 and not method._assigned


def test_checkpoint_holds_targets_and_queues(tmp_path, caplog):
    L.seed_everything(0, verbose=False)
    for name in ("byol", "moco_v2", "moco_v3", "swav"):
        method = make(name, "cpc")
        trainer = fit(method, 16, max_steps=2)
        trainer.save_checkpoint(tmp_path / f"{name}.ckpt")
        checkpoint = torch.load(tmp_path / f"{name}.ckpt", weights_only=False)
        restored = make(name, "cpc")
        restored.load_state_dict(checkpoint["state_dict"])
        restored.on_load_checkpoint(checkpoint)
        for key, value in method.state_dict().items():
            torch.testing.assert_close(restored.state_dict()[key], value, msg=f"{name}: {key}")
        if name == "moco_v2":
            assert "queue" in checkpoint["state_dict"] and int(restored.queue_ptr) == 16 % 12
        if name == "swav":
            assert restored.queue_filled == 16
            torch.testing.assert_close(restored.queue, method.queue.cpu())
            ddp = make(name, "cpc")
            ddp._trainer = SimpleNamespace(world_size=2)  # a resume with 2 processes: the queue starts empty
            with caplog.at_level(logging.INFO, logger="physiossl.methods.swav"):
                ddp.on_load_checkpoint(checkpoint)
            assert ddp.queue_filled == 0 and not ddp.use_queue() and "queue" in caplog.text
