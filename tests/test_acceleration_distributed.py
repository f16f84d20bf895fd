"""Multi-device generation on two CPU processes (gloo) gives the frames of one process."""

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from latte.acceleration.distributed import CFGParallel, generate_spread
from latte.pipelines import LattePipeline
from tiny_components import build_tiny_components

PROMPTS = ["a red circle moves left", "a blue square moves right", "a yellow star spins slowly"]
ARGS = dict(num_inference_steps=3, video_length=2, height=32, width=32, output_type="pt")


def tiny_pipe():
    pipe = LattePipeline(**build_tiny_components(seed=0))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, prompt, generator):
    return pipe(prompt, generator=generator, **ARGS).frames[0]


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        pipe = tiny_pipe()
        spread = generate_spread(lambda p, g: generate(pipe, p, g), PROMPTS, seed=7)
        pipe.transformer = CFGParallel(pipe.transformer)
        split = generate(pipe, PROMPTS[0], torch.Generator().manual_seed(7))
        torch.save({"spread": spread, "cfg": split}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_equal_one_process(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    pipe = tiny_pipe()
    expected = [generate(pipe, p, torch.Generator().manual_seed(7 + i)) for i, p in enumerate(PROMPTS)]
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert len(got["spread"]) == len(PROMPTS)
        for video, ref in zip(got["spread"], expected, strict=True):
            torch.testing.assert_close(video, ref, rtol=0, atol=1e-5)
        torch.testing.assert_close(got["cfg"], expected[0], rtol=0, atol=1e-5)
