"""Multi-device generation on torch.distributed: the two modes that pay off for one Latte video.

1. `CFGParallel`: the guidance batch [negative; positive] is split over the ranks (2 ranks: one half each);
   every rank runs the same pipeline loop with the same seed, computes its half of each step and all-gathers
   the other, so all ranks hold identical latents and frames.
2. `generate_spread`: a prompt list dealt round-robin over the ranks; prompt i always gets the seed
   `seed + i`, so the videos do not depend on the number of ranks, and every rank returns all of them.

Sequence parallelism is not offered: a 16 x 512 x 512 Latte sample is too small to amortise it.

    torchrun --nproc-per-node 2 my_script.py     # in my_script.py:
    dist.init_process_group("nccl" or "gloo"); pipe.transformer = CFGParallel(pipe.transformer)
"""

import logging
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist

from latte.acceleration.wrappers import TransformerWrapper
from latte.models.latte_t2v import LatteT2VTransformer, TextContext

logger = logging.getLogger(__name__)


def rank_and_world(group=None) -> tuple[int, int]:
    """(rank, world size) in `group`; (0, 1) when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(group), dist.get_world_size(group)
    return 0, 1


class CFGParallel(TransformerWrapper):
    """`transformer` whose batch (the guidance pair) is split evenly over the ranks of `group`."""

    def __init__(self, transformer: LatteT2VTransformer, group=None):
        super().__init__(transformer)
        self.group = group

    def denoise(self, hidden_states: torch.Tensor, timestep, context: TextContext, *options) -> torch.Tensor:
        """The transformer's `denoise` on this rank's part of the batch, the other parts gathered from the other
        ranks. `options` pass through to `denoise` unchanged."""
        rank, world = rank_and_world(self.group)
        batch = hidden_states.shape[0]
        if batch % world:
            raise ValueError(f"CFGParallel: batch {batch} does not split over {world} ranks")
        part = slice(rank * batch // world, (rank + 1) * batch // world)
        timestep = torch.as_tensor(timestep, device=hidden_states.device).reshape(-1).expand(batch)
        out = self.transformer.denoise(
            hidden_states[part], timestep[part], context.select(part), *options
        ).contiguous()  # (B / world, C, F, H, W)
        if world > 1:
            parts = [torch.empty_like(out) for _ in range(world)]
            dist.all_gather(parts, out, group=self.group)
            out = torch.cat(parts)
        return out


def generate_spread(
    generate: Callable[[str, torch.Generator], object], prompts: Sequence[str], seed: int = 0, group=None
) -> list:
    """Run `generate(prompt, generator)` for every prompt, prompt i on rank i % world with the generator
    seeded `seed + i`; returns all results, in prompt order, on every rank (objects are pickled to share).

    `generate` is e.g. `lambda p, g: pipe(p, generator=g, output_type="np").frames[0]`.
    """
    rank, world = rank_and_world(group)
    mine = {}
    for i in range(rank, len(prompts), world):
        logger.info("rank %d: prompt %d/%d", rank, i + 1, len(prompts))
        mine[i] = generate(prompts[i], torch.Generator().manual_seed(seed + i))
    if world == 1:
        return [mine[i] for i in range(len(prompts))]
    gathered: list = [None] * world
    dist.all_gather_object(gathered, mine, group=group)
    merged = {i: result for part in gathered for i, result in part.items()}
    return [merged[i] for i in range(len(prompts))]
