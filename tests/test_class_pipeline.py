"""LatteClassPipeline: the paper's respaced DDPM sampler against IDDPM math, guidance, outputs, loading."""

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from latte import Latte, LatteClassPipeline
from latte.pipelines.class_conditional import paper_scheduler, respaced_timesteps
from test_latte_models import TINY, original_state_dict, randomize
from tiny_components import tiny_vae


def tiny_pipeline(num_classes=3, scheduler=None, learn_sigma=True):
    model = randomize(Latte(**TINY, num_classes=num_classes, learn_sigma=learn_sigma), std=0.1).eval()
    pipe = LatteClassPipeline(tiny_vae(), model, scheduler or paper_scheduler(learn_sigma))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_respaced_timesteps_are_the_papers():
    kept = respaced_timesteps(1000, 250)
    assert len(kept) == 250 and kept[:3] == [999, 995, 991] and kept[-3:] == [8, 4, 0]
    assert kept == sorted({round(k * 999 / 249) for k in range(250)}, reverse=True)


def iddpm_respaced_chain(x, kept_desc, model, noises):
    """IDDPM's p_sample loop over the respaced chain, in float64, written from the paper's formulas."""
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    abar_all = np.cumprod(1.0 - betas)
    kept = sorted(kept_desc)
    abar = abar_all[kept]
    abar_prev = np.append(1.0, abar[:-1])
    beta = 1.0 - abar / abar_prev  # respaced betas
    post_var = beta * (1.0 - abar_prev) / (1.0 - abar)
    post_log_var = np.log(np.append(post_var[1], post_var[1:]))  # index 0 takes index 1's value
    coef_x0 = beta * np.sqrt(abar_prev) / (1.0 - abar)
    coef_xt = (1.0 - abar_prev) * np.sqrt(1.0 - beta) / (1.0 - abar)
    x = x.double()
    for step, i in enumerate(reversed(range(len(kept)))):
        eps, v = model(x)
        frac = (v + 1) / 2
        log_var = frac * np.log(beta[i]) + (1 - frac) * post_log_var[i]
        x0 = np.sqrt(1.0 / abar[i]) * x - np.sqrt(1.0 / abar[i] - 1) * eps
        mean = coef_x0[i] * x0 + coef_xt[i] * x
        x = mean + (i != 0) * torch.exp(0.5 * log_var) * noises[step].double()
    return x


def test_ddpm_learned_range_equals_iddpm_respaced_sampling():
    """The whole chain, on IDDPM's 50-step respacing (the arithmetic is the same for the paper's 250)."""
    def model(x):  # a fixed smooth "network": epsilon and the variance value from x
        return 0.5 * torch.tanh(x), torch.sin(x)

    kept = respaced_timesteps(1000, 50)
    shape = (2, 4, 3, 4, 4)
    x_start = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    # diffusers draws a step's noise as randn(shape, generator): step k's generator is seeded with k + 1.
    noises = [torch.randn(shape, generator=torch.Generator().manual_seed(k + 1)) for k in range(len(kept))]
    expected = iddpm_respaced_chain(x_start, kept, model, noises)

    scheduler = paper_scheduler()
    scheduler.set_timesteps(timesteps=kept)
    x = x_start.clone()
    for k, t in enumerate(scheduler.timesteps):
        eps, v = model(x)
        g = torch.Generator().manual_seed(k + 1)
        x = scheduler.step(torch.cat([eps, v], 1), t, x, generator=g).prev_sample
    assert ((x.double() - expected).abs().max() / expected.abs().max()).item() < 1e-5


def test_outputs_shapes_and_seeds():
    pipe = tiny_pipeline()
    run = dict(num_inference_steps=3, video_length=2, height=32, width=32)

    def latents(seed):
        return pipe([0, 2], num_videos_per_label=2, generator=torch.Generator().manual_seed(seed),
                    output_type="latent", **run).frames

    first = latents(0)
    assert first.shape == (4, 4, 2, 4, 4)
    assert torch.equal(first, latents(0)) and not torch.allclose(first, latents(1))
    pt = pipe([0, 2], generator=torch.Generator().manual_seed(0), output_type="pt", **run).frames
    assert pt.shape == (2, 2, 3, 32, 32) and pt.min() >= 0 and pt.max() <= 1
    npy = pipe(1, generator=torch.Generator().manual_seed(0), output_type="np", **run).frames
    assert isinstance(npy, np.ndarray) and npy.shape == (1, 2, 32, 32, 3)
    (pil,) = pipe(1, output_type="pil", return_dict=False, **run)
    assert len(pil) == 1 and len(pil[0]) == 2 and pil[0][0].size == (32, 32)


class Recorder:
    """Wraps the scheduler's step to record what the pipeline hands it."""

    def __init__(self, pipe):
        self.calls, self.step = [], pipe.scheduler.step
        pipe.scheduler.step = self

    def __call__(self, model_output, t, sample, **kwargs):
        self.calls.append((model_output.clone(), t, sample.clone()))
        return self.step(model_output, t, sample, **kwargs)


def test_guidance_mixes_epsilon_only_with_the_null_class():
    pipe = tiny_pipeline()
    recorder = Recorder(pipe)
    seen = []
    pipe.transformer.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs.get("class_labels")), with_kwargs=True)
    pipe([0, 2], guidance_scale=4.0, num_inference_steps=2, video_length=4, output_type="latent",
         generator=torch.Generator().manual_seed(0))
    assert seen[0].tolist() == [0, 2, 3, 3]  # [cond; null], null = num_classes
    model_output, t, sample = recorder.calls[0]
    with torch.no_grad():
        cond = pipe.transformer(sample, t.expand(2), torch.tensor([0, 2])).sample
        null = pipe.transformer(sample, t.expand(2), torch.tensor([3, 3])).sample
    assert torch.allclose(model_output[:, :4], null[:, :4] + 4.0 * (cond[:, :4] - null[:, :4]), atol=1e-5)
    assert torch.allclose(model_output[:, 4:], cond[:, 4:], atol=1e-6)  # the conditional half's variance
    assert pipe.scheduler.timesteps.tolist() == [999, 0]  # respaced, not diffusers' leading grid


def test_default_guidance_is_the_papers():
    pipe = tiny_pipeline()
    seen = []
    pipe.transformer.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs.get("class_labels")), with_kwargs=True)
    pipe(1, num_inference_steps=1, video_length=4, output_type="latent")
    assert seen[0].tolist() == [1, 3]  # guided by default (7.0)
    seen.clear()
    pipe(1, guidance_scale=1.0, num_inference_steps=1, video_length=4, output_type="latent")
    assert seen[0].tolist() == [1]


def test_ddim_gets_epsilon_channels():
    pipe = tiny_pipeline(scheduler=DDIMScheduler.from_config(paper_scheduler().config))
    recorder = Recorder(pipe)
    pipe(0, num_inference_steps=4, video_length=4, output_type="latent")
    assert [call[0].shape[1] for call in recorder.calls] == [4] * 4
    assert pipe.scheduler.timesteps.tolist() == [750, 500, 250, 0]  # DDIM keeps its own spacing


def test_dpm_solver_from_the_paper_config():
    from diffusers import DPMSolverMultistepScheduler

    pipe = tiny_pipeline()
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    assert pipe.scheduler.config.variance_type is None  # else it would cut epsilon to 3 channels
    latents = pipe(0, num_inference_steps=3, video_length=2, output_type="latent").frames
    assert latents.shape == (1, 4, 2, 8, 8) and torch.isfinite(latents).all()


def test_unconditional_model():
    pipe = tiny_pipeline(num_classes=0, learn_sigma=False)
    frames = pipe(num_videos_per_label=2, num_inference_steps=2, video_length=2, height=32, width=32,
                  output_type="pt").frames
    assert frames.shape == (2, 2, 3, 32, 32)
    with pytest.raises(ValueError, match="unconditional"):
        pipe(class_labels=[1], num_inference_steps=2)
    with pytest.raises(ValueError, match="null class"):
        pipe(guidance_scale=3.0, num_inference_steps=2)


def test_bad_inputs():
    pipe = tiny_pipeline()
    with pytest.raises(ValueError, match=r"0\.\.2"):
        pipe([5])
    with pytest.raises(ValueError, match="class-conditional"):
        pipe()
    with pytest.raises(ValueError, match="output_type"):
        pipe(0, output_type="gif")
    with pytest.raises(ValueError, match="height"):
        pipe(0, height=60)


def test_original_checkpoint_and_folder_round_trip(tmp_path):
    torch.save({"ema": original_state_dict(depth=2, frames=4, num_classes=3)}, tmp_path / "ucf.pt")
    tiny_vae().save_pretrained(str(tmp_path / "vae"))
    pipe = LatteClassPipeline.from_original(tmp_path / "ucf.pt", vae=tmp_path / "vae", num_heads=4)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.transformer.config.num_classes == 3
    run = dict(num_inference_steps=3, output_type="pt")
    first = pipe([1, 2], generator=torch.Generator().manual_seed(0), **run).frames
    assert first.shape == (2, 4, 3, 64, 64) and torch.isfinite(first).all()

    pipe.save_pretrained(tmp_path / "folder")
    loaded = LatteClassPipeline.from_pretrained(tmp_path / "folder")
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.scheduler).__name__ == "DDPMScheduler"
    assert loaded.scheduler.config.variance_type == "learned_range"
    assert torch.equal(loaded([1, 2], generator=torch.Generator().manual_seed(0), **run).frames, first)
    (tmp_path / "folder" / "model_index.json").unlink()  # the trainer's export writes none
    assert LatteClassPipeline.from_pretrained(tmp_path / "folder").transformer.config.num_classes == 3
    with pytest.raises(FileNotFoundError):
        LatteClassPipeline.from_pretrained(tmp_path / "nowhere")


def test_half_precision_model_keeps_float32_diffusion():
    pipe = tiny_pipeline()
    pipe.transformer.to(torch.bfloat16)
    recorder = Recorder(pipe)
    latents = pipe(1, num_inference_steps=2, video_length=2, output_type="latent",
                   generator=torch.Generator().manual_seed(0)).frames
    assert latents.dtype == torch.float32 and torch.isfinite(latents).all()
    assert all(out.dtype == sample.dtype == torch.float32 for out, _, sample in recorder.calls)
