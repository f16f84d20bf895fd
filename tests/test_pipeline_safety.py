"""LattePipeline call-time safety: scheduler step limits, finite checks on the latents, work-size limits before
any work, and the warnings for unknown words and beyond-training sizes."""

import logging
import time
from functools import partial

import pytest
import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler

from latte.pipelines import limits
from latte.pipelines.limits import NonFiniteLatentsError
from tiny_components import build_tiny_components, quiet_pipeline, tiny_frames

gen = partial(tiny_frames, video_length=1, height=16, width=16)


def count_decodes(pipe):
    calls = []
    pipe.vae.decoder.register_forward_hook(lambda *a: calls.append(1))
    return calls


# ---------------------------------------------------------------------- step limits, checked up front


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_inference_steps": 1001}, r"num_inference_steps must be an integer in 1..1000 \(the "
                                        r"DPMSolverMultistepScheduler's num_train_timesteps\), got 1001"),
        ({"num_inference_steps": 100_000_000_000}, "integer in 1..1000"),
        ({"num_inference_steps": 2.5}, "integer in 1..1000"),
        ({"timesteps": []}, r"timesteps must be a non-empty list of integers, got \[\]"),
        ({"timesteps": [0, 500, 999]}, r"strictly descending integers in 0..999 .*got \[0, 500, 999\]"),
        ({"timesteps": [999, 999, 0]}, "strictly descending"),
        ({"timesteps": [1000, 0]}, "strictly descending integers in 0..999"),
        ({"timesteps": [-1]}, "strictly descending integers in 0..999"),
        ({"timesteps": [500.5, 0]}, "non-empty list of integers"),
        ({"guidance_scale": float("inf")}, "guidance_scale must be a finite number .* got inf"),
        ({"guidance_scale": float("nan")}, "guidance_scale must be a finite number"),
        ({"guidance_scale": "4"}, "guidance_scale must be a finite number"),
        ({"height": 0}, "height must be a positive multiple of 16 .*got 0"),
        ({"width": -16}, "width must be a positive multiple of 16 .*got -16"),
        ({"video_length": 0}, r"video_length \(frames\) must be an integer >= 1, got 0"),
    ],
)
def test_limits_are_checked_before_any_work(tiny_components, kwargs, message):
    """The DPM-Solver++ probes: 1001 steps wrote a black video, 2000 an IndexError after minutes."""
    config = tiny_components["scheduler"].config
    pipe = quiet_pipeline(tiny_components, scheduler=DPMSolverMultistepScheduler.from_config(config))
    calls = []
    pipe.text_encoder.register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(ValueError, match=message):
        gen(pipe, **kwargs)
    assert calls == []  # refused before the prompt was even encoded


def test_valid_custom_timesteps_still_run(tiny_components):
    pipe = quiet_pipeline(tiny_components, scheduler=DDPMScheduler.from_config(tiny_components["scheduler"].config))
    gen(pipe, timesteps=torch.tensor([999, 500, 0]))
    assert pipe.scheduler.timesteps.tolist() == [999, 500, 0]


# ---------------------------------------------------------------------- finite checks


def test_huge_guidance_stops_at_a_check_and_decodes_nothing(tiny_pipe):
    decodes = count_decodes(tiny_pipe)
    seen = []
    with pytest.raises(NonFiniteLatentsError, match=r"NaN or infinite by step 10 of 12; nothing was decoded\. "
                       r"Likely causes: the scheduler \(DDIMScheduler with 12 steps.*guidance scale \(1e\+30"):
        gen(tiny_pipe, guidance_scale=1e30, num_inference_steps=12,
            callback_on_step_end=lambda p, i, t, x: seen.append(i) or {})
    assert seen == list(range(10))  # stopped at the first check, not after all 12 steps
    assert decodes == []


def test_non_finite_latents_after_the_last_step_are_caught(tiny_pipe):
    """A callback (or a scheduler) that makes NaN in the last steps: the final check sees it."""
    decodes = count_decodes(tiny_pipe)
    nan = lambda p, i, t, x: {"latents": x["latents"] * float("nan")} if i == 2 else {}  # noqa: E731
    with pytest.raises(NonFiniteLatentsError, match="by step 3 of 3"):
        gen(tiny_pipe, num_inference_steps=3, callback_on_step_end=nan)
    assert decodes == []
    assert isinstance(NonFiniteLatentsError("x"), ValueError)  # the CLI reports it in one line


def test_nan_weights_are_named():
    pipe = quiet_pipeline(build_tiny_components(seed=1))
    with torch.no_grad():
        pipe.transformer.proj_out.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteLatentsError, match="transformer's weight proj_out.weight holds NaN"):
        gen(pipe)


def test_nan_inputs_are_refused_up_front(tiny_pipe):
    with pytest.raises(ValueError, match="latents contain NaN or infinite values"):
        gen(tiny_pipe, latents=torch.full((1, 4, 1, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="prompt_embeds contain NaN"):
        gen(tiny_pipe, prompt=None, prompt_embeds=torch.full((1, 3, 32), float("inf")))


def test_nan_text_encoder_output_is_refused(tiny_components):
    pipe = quiet_pipeline(tiny_components, text_encoder=build_tiny_components(seed=1)["text_encoder"])
    with torch.no_grad():
        pipe.text_encoder.shared.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="text encoder produced NaN or infinite prompt embeddings"):
        gen(pipe)


# ---------------------------------------------------------------------- work size


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"video_length": 10_000_000}, r"video_length=10000000 frames is above the limit of 1024: .*--max-frames"),
        ({"height": 180_000, "width": 180_000}, r"180000 x 180000 pixels is above the limit of 8192 per side"),
    ],
)
def test_absurd_sizes_fail_at_once(tiny_pipe, kwargs, message):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        gen(tiny_pipe, **kwargs)
    assert time.perf_counter() - start < 0.5


def test_memory_estimate_is_compared_with_the_device(tiny_pipe, monkeypatch):
    tiny_pipe.limits.max_frames, tiny_pipe.limits.max_size = 10**9, 10**6
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"needs about [\d,.]+ GiB on cpu \(denoising [\d,.]+, decoding [\d,.]+ GiB\) "
                       r"but [\d,.]+ GiB is available: .*max_memory_fraction=None \(CLI: --no-memory-check\)"):
        gen(tiny_pipe, video_length=10_000_000, height=4096, width=4096)
    assert time.perf_counter() - start < 0.5

    monkeypatch.setattr(limits, "available_memory", lambda device: 1024)  # 1 KiB free
    with pytest.raises(ValueError, match="is available"):
        gen(tiny_pipe)
    tiny_pipe.limits.max_memory_fraction = None  # the override
    assert gen(tiny_pipe).shape == (1, 1, 3, 16, 16)
    monkeypatch.setattr(limits, "available_memory", lambda device: None)  # unknown: no check
    tiny_pipe.limits.max_memory_fraction = 1.0
    assert gen(tiny_pipe).shape == (1, 1, 3, 16, 16)


def test_estimate_grows_with_the_work(tiny_pipe):
    def peak(**kwargs):
        args = {"videos": 1, "model_batch": 2, "frames": 16, "height": 256, "width": 256, "scale": 8, "patch": 2,
                "latent_channels": 4, "model_width": 64, "model_bytes": 4, "vae": tiny_pipe.vae, "decode_chunk": 14,
                "decoded": True, **kwargs}
        return max(limits.estimate_memory(**args).values())

    base = peak()
    assert peak(frames=32) > base and peak(height=512) > base and peak(model_batch=4, videos=2) > base
    assert peak(decoded=False) < base
    assert 1 < base / 2**20 < 1000  # MiB: the right order for a 16 x 256 x 256 tiny-model job


# ---------------------------------------------------------------------- warnings


def test_words_the_tokenizer_cannot_represent_are_named(tiny_pipe, caplog):
    with caplog.at_level(logging.WARNING, logger="latte.pipelines.text_to_video"):
        gen(tiny_pipe, prompt=["a red quokka,", "A Red circle"])
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.startswith("the tokenizer cannot represent 'quokka' "), message  # named without the comma
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="latte.pipelines.text_to_video"):
        gen(tiny_pipe, prompt="the cat plays piano")  # words of the tiny tokenizer's corpus
    assert caplog.records == []


def test_beyond_training_is_said_once(tiny_pipe, caplog):
    with caplog.at_level(logging.WARNING, logger="latte.pipelines.text_to_video"):
        gen(tiny_pipe, video_length=17, height=80)
    (message,) = [r.getMessage() for r in caplog.records]
    assert message == ("17 frames of 80 x 16 is beyond what this model was trained on (16 frames of 64 x 64): "
                       "expect degraded videos")


# ---------------------------------------------------------------------- the class-conditional pipeline


def test_class_pipeline_shares_the_checks():
    from test_class_pipeline import tiny_pipeline

    pipe = tiny_pipeline()
    run = {"video_length": 1, "height": 16, "width": 16, "output_type": "pt"}
    for kwargs, message in [
        ({"num_inference_steps": 1001}, "num_inference_steps must be an integer in 1..1000"),
        ({"timesteps": [0, 999]}, "strictly descending integers in 0..999"),
        ({"guidance_scale": float("nan")}, "guidance_scale must be a finite number"),
        ({"video_length": 0}, r"video_length \(frames\) must be an integer >= 1, got 0"),
        ({"height": 0}, "height must be a positive multiple of 16"),
        ({"video_length": 2000}, "video_length=2000 frames is above the limit of 1024"),
    ]:
        with pytest.raises(ValueError, match=message):
            pipe(0, num_inference_steps=kwargs.pop("num_inference_steps", 2), **{**run, **kwargs})
    decodes = count_decodes(pipe)
    with pytest.raises(NonFiniteLatentsError, match="by step 10 of 12; nothing was decoded"):
        pipe(0, num_inference_steps=12, guidance_scale=1e30, **run)
    assert decodes == []
