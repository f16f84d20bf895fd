"""Our LattePipeline against diffusers' LattePipeline built from the same tiny components, and batch
semantics."""

import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, LatteTransformer3DModel
from diffusers import LattePipeline as DiffusersLattePipeline

from latte import LattePipeline
from tiny_components import LATTE1_SCHEDULER, TINY_TRANSFORMER, build_tiny_components

TOL = 1e-4  # frames are in [0, 1]
STEPS = 3


@pytest.fixture(scope="module")
def components():
    return build_tiny_components(seed=0)


def diffusers_pipeline(components, scheduler_cls):
    """diffusers' pipeline on the same weights. Its side of the scheduler has no `variance_type`: with
    Latte-1's `learned_range` diffusers hands DDIM 8 channels and crashes (and DPM-Solver keeps 3 of them)."""
    transformer = LatteTransformer3DModel(**TINY_TRANSFORMER).eval()
    transformer.load_state_dict(components["transformer"].state_dict())
    config = {k: v for k, v in LATTE1_SCHEDULER.items() if k != "variance_type"}
    pipe = DiffusersLattePipeline(
        tokenizer=components["tokenizer"], text_encoder=components["text_encoder"], vae=components["vae"],
        transformer=transformer, scheduler=scheduler_cls.from_config(config),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def ours(components, scheduler_cls=DDIMScheduler):
    pipe = LattePipeline(**{**components, "scheduler": scheduler_cls.from_config(LATTE1_SCHEDULER)})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, seed=0, **kwargs):
    kwargs = {"num_inference_steps": STEPS, "height": 64, "width": 64, "output_type": "pt", **kwargs}
    if isinstance(pipe, DiffusersLattePipeline):
        kwargs["clean_caption"] = False  # no bs4/ftfy here: the same lower/strip either way, minus a warning
    return pipe(generator=torch.Generator().manual_seed(seed), **kwargs).frames


@pytest.mark.parametrize("scheduler_cls", [DDIMScheduler, DPMSolverMultistepScheduler])
@pytest.mark.parametrize("guidance", [1.0, 4.5])
@pytest.mark.parametrize("frames", [1, 16])
def test_matches_diffusers(components, scheduler_cls, guidance, frames):
    prompt = "A small cactus with a happy face"
    expected = run(diffusers_pipeline(components, scheduler_cls), prompt=prompt, guidance_scale=guidance,
                   video_length=frames)
    got = run(ours(components, scheduler_cls), prompt=prompt, guidance_scale=guidance, video_length=frames)
    assert got.shape == expected.shape == (1, frames, 3, 64, 64)
    assert (got - expected).abs().max() <= TOL
    assert got.std() > 0.01  # a real video, not a constant frame


def test_learned_variance_ddpm_matches_diffusers(components):
    """DDPM with learned_range takes all 8 channels (the guided variance included) in both pipelines."""
    from diffusers import DDPMScheduler

    theirs = diffusers_pipeline(components, DDPMScheduler)
    theirs.scheduler = DDPMScheduler.from_config(LATTE1_SCHEDULER)  # learned_range is valid for DDPM
    expected = run(theirs, prompt="waves crash", guidance_scale=3.0)
    got = run(ours(components, DDPMScheduler), prompt="waves crash", guidance_scale=3.0)
    assert (got - expected).abs().max() <= TOL
    again = run(ours(components, DDPMScheduler), prompt="waves crash", guidance_scale=3.0)
    assert torch.equal(again, got)  # seeded: reproducible


def test_batch_equals_one_at_a_time(components):
    """Several prompts of different lengths, two videos each: every video equals generating it alone from the
    same starting noise (and hence diffusers one at a time), with and without guidance."""
    pipe = ours(components)
    prompts = ["a red circle", "two dogs run across a field at sunset"]
    latents = torch.randn(4, 4, 16, 2, 2, generator=torch.Generator().manual_seed(3))  # 16 x 16 pixels
    for guidance in (1.0, 6.0):
        common = dict(video_length=16, height=16, width=16, guidance_scale=guidance, negative_prompt="blurry")
        batch = run(pipe, prompt=prompts, num_videos_per_prompt=2, latents=latents, **common)
        theirs = diffusers_pipeline(components, DDIMScheduler)
        for i in range(4):
            alone = run(pipe, prompt=prompts[i // 2], latents=latents[i : i + 1], **common)
            assert (batch[i:i + 1] - alone).abs().max() <= 1e-5, (guidance, i)
            reference = run(theirs, prompt=prompts[i // 2], latents=latents[i : i + 1], **common)
            assert (alone - reference).abs().max() <= TOL


def test_diffusers_batches_differ(components):
    """The upstream defect we avoid: diffusers conditions a prompt differently inside a batch."""
    latents = torch.randn(2, 4, 1, 2, 2, generator=torch.Generator().manual_seed(3))
    prompts = ["a red circle", "two dogs run across a field at sunset"]
    theirs = diffusers_pipeline(components, DDIMScheduler)
    batch = run(theirs, prompt=prompts, latents=latents, video_length=1, height=16, width=16)
    alone = run(theirs, prompt=prompts[0], latents=latents[:1], video_length=1, height=16, width=16)
    assert (batch[:1] - alone).abs().max() > 1e-3


def test_prompt_embeds_match_prompt(components):
    pipe = ours(components)
    embeds, negative, mask = pipe.encode_prompt("a yellow star", device=torch.device("cpu"))
    assert mask is None and embeds.shape == negative.shape and embeds.shape[0] == 1
    from_text = run(pipe, prompt="a yellow star", video_length=2)
    from_embeds = run(pipe, prompt_embeds=embeds, negative_prompt_embeds=negative, negative_prompt=None,
                      video_length=2)
    assert (from_text - from_embeds).abs().max() <= 1e-6


@pytest.mark.parametrize("direction", ["ours_to_diffusers", "diffusers_to_ours"])
def test_saved_folders_load_both_ways(components, tmp_path, direction):
    config = {**LATTE1_SCHEDULER, "variance_type": None}  # diffusers' DDIM cannot take learned_range (above)
    if direction == "ours_to_diffusers":
        source = ours(components)
        source.scheduler = DDIMScheduler.from_config(config)
        source.save_pretrained(tmp_path / "m")
        loaded = DiffusersLattePipeline.from_pretrained(tmp_path / "m")
        loaded.set_progress_bar_config(disable=True)
        assert type(loaded.transformer).__name__ == "LatteTransformer3DModel"
    else:
        source = diffusers_pipeline(components, DDIMScheduler)
        source.save_pretrained(tmp_path / "m")
        loaded = LattePipeline.from_pretrained(tmp_path / "m")
        loaded.set_progress_bar_config(disable=True)
        assert type(loaded.transformer).__name__ == "LatteT2VTransformer"
    kwargs = dict(prompt="a purple hexagon zooms in", video_length=16, guidance_scale=3.0)
    assert (run(loaded, **kwargs) - run(source, **kwargs)).abs().max() <= TOL
