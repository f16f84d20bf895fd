"""Shared set-up of the training tests: tiny frozen components, a small synthetic latent cache, configs."""

from pathlib import Path

import torch

from latte.training.config import Config, config_from_dict
from tiny_components import build_tiny_pipeline_folder

TINY_MODEL = {"num_layers": 1, "num_attention_heads": 2, "attention_head_dim": 16}


def tiny_config(output_dir: Path, components: Path, cache_dir: Path, **sections) -> Config:
    """A text-to-video run on 8 synthetic 4-frame 64 px clips (8 x 8 latents), seconds per few steps on a CPU.
    `sections` update the config sections, e.g. train={"steps": 4}."""
    data = {
        "output_dir": str(output_dir),
        "components": str(components),
        "model": {"type": "t2v", "args": dict(TINY_MODEL)},
        "data": {
            "source": "synthetic",
            "shard_size": 3,  # two shards of 4 clips: exercises shard lookup
            "num_samples": 8,
            "num_frames": 4,
            "size": 64,
            "cache_dir": str(cache_dir),
        },
        "train": {"steps": 4, "batch_size": 4, "lr": 1e-3, "ema_decay": 0.9, "cfg_dropout": 0.25},
        "log": {"log_every": 1, "ckpt_every": 2, "keep_last": 2, "tensorboard": False},
    }
    for name, values in sections.items():
        data[name] = {**data[name], **values} if isinstance(data.get(name), dict) else values
    return config_from_dict(data)


def make_components(folder: Path) -> Path:
    """The tiny pipeline folder, its VAE made deterministic and scaled so synthetic latents have std ~1.

    The random tiny VAE otherwise has a posterior std (~1) far above the spread of its means (~0.2), so its
    latents would be mostly posterior noise: nothing a model could learn or overfit."""
    from latte.models.vae import load_vae

    folder = build_tiny_pipeline_folder(folder)
    vae = load_vae(folder / "vae")
    with torch.no_grad():
        n = vae.config.latent_channels
        vae.quant_conv.weight[n:] = 0  # the log-variance half of the moments
        vae.quant_conv.bias[n:] = -30  # std e^-15: a deterministic encoder
    vae.register_to_config(scaling_factor=5.5)
    vae.save_pretrained(str(folder / "vae"))
    return folder


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join_as_rank(rank: int, world: int, port: int) -> None:
    """The environment torchrun gives rank `rank` of `world` (gloo on the CPU, one thread)."""
    import os

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    torch.set_num_threads(1)


def distributed_worker(rank: int, world: int, port: int, cfg: Config) -> None:
    """One torchrun-like process training `cfg`; target of torch.multiprocessing.spawn."""
    import torch.distributed as dist

    from latte.training.train import train

    join_as_rank(rank, world, port)
    try:
        train(cfg)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def distributed_cli_worker(rank: int, world: int, port: int, argv: list[str], report: Path) -> None:
    """One torchrun-like process running `latte ARGV`; writes its exit code and stderr to report/rank-N.json."""
    import contextlib
    import io
    import json

    import torch.distributed as dist

    from latte.cli.main import main

    join_as_rank(rank, world, port)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            code = main(argv)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    (report / f"rank-{rank}.json").write_text(json.dumps({"code": code, "stderr": err.getvalue()}))


def train_killed_after_checkpoint(cfg: Config, step: int, monkeypatch) -> None:
    """Run `train(cfg)` and kill it (KeyboardInterrupt) right after it has written the checkpoint of `step`, as a
    kill between two steps would; the run folder is left as the killed run left it."""
    import pytest

    import latte.training.checkpoint as ckpt
    from latte.training.train import train

    real_save = ckpt.save_checkpoint

    def save_then_die(run_dir, saved_step, state, keep_last):
        path = real_save(run_dir, saved_step, state, keep_last)
        if saved_step == step:
            raise KeyboardInterrupt("killed")
        return path

    with monkeypatch.context() as patch:
        patch.setattr("latte.training.train.save_checkpoint", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            train(cfg)
