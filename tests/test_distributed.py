"""Two gloo processes on the CPU train like one process with the same global batch."""

import json

import pytest
import torch
import torch.multiprocessing as mp

from latte.training import checkpoint as ckpt
from latte.training.train import train
from training_support import distributed_worker, free_port, make_components, tiny_config


def _losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


SECTIONS = dict(train={"steps": 3, "batch_size": 4}, log={"log_every": 1, "ckpt_every": 3})


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The one-process run (it also builds the cache the two-process runs share)."""
    root = tmp_path_factory.mktemp("dist")
    cfg = tiny_config(root / "single", make_components(root / "components"), root / "cache", **SECTIONS)
    train(cfg)
    return cfg


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_match_one(single, tmp_path, parallel):
    """Same global batch of 4 (2 per process): same losses and EMA weights up to float reduction order."""
    double = tiny_config(
        tmp_path / "double",
        single.components,
        single.cache_path,
        train={**SECTIONS["train"], "parallel": parallel},
        log=SECTIONS["log"],
    )
    mp.spawn(distributed_worker, args=(2, free_port(), double), nprocs=2, join=True)

    one, two = _losses(single.run_dir), _losses(double.run_dir)
    assert len(one) == len(two) == 3
    torch.testing.assert_close(torch.tensor(two), torch.tensor(one), rtol=1e-4, atol=1e-6)
    a, b = (torch.load(ckpt.checkpoint_path(c.run_dir, 3), weights_only=True) for c in (single, double))
    for name, tensor in a["ema"].items():
        torch.testing.assert_close(b["ema"][name], tensor, rtol=1e-4, atol=1e-5, msg=name)
