"""Two CPU processes (gloo, file:// rendezvous): the gathered losses equal the single-process losses on the global
batch, and the DDP-averaged gradients equal the single-process gradients.

Each rank r holds half of a fixed global batch. DDP averages gradients over the W ranks, so the gradient that
reaches the shared parameters through rank r's inputs is grad_r / W; it must equal the single-process gradient of
the global loss with respect to those inputs, and the mean of the per-rank losses must equal the global loss.
"""

from __future__ import annotations

import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from physiossl.losses import _distributed, barlow_twins_loss, infonce, nt_xent, sinkhorn, swav_loss

WORLD = 2


def _swav(s1, s2, s3, gather_distributed):
    scores = [s1, s2, s3]
    codes = [sinkhorn(s, epsilon=0.05, iterations=3, gather_distributed=gather_distributed) for s in scores[:2]]
    return swav_loss(scores, codes, temperature=0.1)


# name: (loss of the local inputs, shapes of the global inputs)
CASES = {
    "nt_xent": (lambda a, b, gd: nt_xent(a, b, 0.5, gather_distributed=gd), [(8, 5), (8, 5)]),
    "infonce": (lambda q, k, gd: infonce(q, k, 0.2, gather_distributed=gd), [(8, 5), (8, 5)]),
    "barlow_twins": (lambda a, b, gd: barlow_twins_loss(a, b, 0.05, gather_distributed=gd), [(8, 6), (8, 6)]),
    "swav": (_swav, [(8, 7), (8, 7), (8, 7)]),
}


def _inputs(name: str) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(sorted(CASES).index(name))
    return [torch.randn(shape, generator=g, dtype=torch.float64) for shape in CASES[name][1]]


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        results = {"helpers": (_distributed.is_distributed(), _distributed.rank(), _distributed.world_size(),
                               _distributed.all_reduce_sum(torch.tensor([rank + 1.0])))}
        for name, (loss_fn, _) in CASES.items():
            local = [x.chunk(WORLD)[rank].clone().requires_grad_() for x in _inputs(name)]
            loss = loss_fn(*local, True)
            loss.backward()
            mean_loss = loss.detach().clone()
            dist.all_reduce(mean_loss)
            results[name] = (mean_loss / WORLD, [x.grad for x in local])
        codes = sinkhorn(_inputs("swav")[0].chunk(WORLD)[rank], gather_distributed=True)
        results["codes"] = codes
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed + gloo")
@pytest.mark.skipif(sys.platform == "win32", reason="file:// rendezvous path handling differs on Windows")
def test_gathered_losses_match_single_process(tmp_path):
    mp.start_processes(_worker, args=(str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=WORLD, join=True,
                       start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    for r, result in enumerate(ranks):
        distributed, rank, world, total = result["helpers"]
        assert distributed and rank == r and world == WORLD
        torch.testing.assert_close(total, torch.tensor([3.0]))

    for name, (loss_fn, _) in CASES.items():
        inputs = [x.requires_grad_() for x in _inputs(name)]
        loss = loss_fn(*inputs, False)
        loss.backward()
        for result in ranks:
            torch.testing.assert_close(result[name][0], loss.detach(), rtol=1e-12, atol=1e-12, msg=name)
        for i, x in enumerate(inputs):
            averaged = torch.cat([result[name][1][i] for result in ranks]) / WORLD
            torch.testing.assert_close(averaged, x.grad, rtol=1e-10, atol=1e-12, msg=f"{name}: input {i}")

    global_codes = sinkhorn(_inputs("swav")[0])
    torch.testing.assert_close(torch.cat([result["codes"] for result in ranks]), global_codes, rtol=1e-12, atol=1e-12)
    # the gathered codes differ from per-rank codes: the check above is not vacuous
    local_codes = torch.cat([sinkhorn(x) for x in _inputs("swav")[0].chunk(WORLD)])
    assert not torch.allclose(local_codes, global_codes, rtol=1e-6, atol=1e-6)
