"""Scheduler swaps keep Latte's settings, and every scheduler offered works on the shipped model (the adherence
analyser reads the videos back)."""

import diffusers
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from latte.evaluation.adherence import prompt_set, read_clip
from latte.models.io import read_json
from latte.pipelines import LattePipeline, default_model_path
from latte.pipelines.schedulers import (
    RECOMMENDED_STEPS,
    UNSUPPORTED,
    load_scheduler,
    make_scheduler,
    recommended_steps,
    scheduler_names,
)
from latte.training.export import LATTE1_SCHEDULER

MODEL = default_model_path()
needs_model = pytest.mark.skipif(
    not (MODEL / "model_index.json").is_file(), reason=f"the default model is not installed at {MODEL}"
)


@pytest.fixture(scope="module")
def dpm_config():
    """The shipped scheduler as plain diffusers loads it (DPM-Solver++, no `clip_sample` key)."""
    return DPMSolverMultistepScheduler.from_config(read_json(MODEL / "scheduler" / "scheduler_config.json")).config


@pytest.fixture(scope="module")
def pipe():
    from latte.pipelines import LattePipeline

    pipe = LattePipeline.from_pretrained(MODEL)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ------------------------------------------------------------------ settings kept by swaps and loads
@needs_model
def test_swap_from_dpm_config_turns_clipping_off(dpm_config):
    ddim = make_scheduler("DDIMScheduler", dpm_config)
    assert ddim.config.clip_sample is False and ddim.config.thresholding is False
    assert ddim.config.prediction_type == "v_prediction"
    assert ddim.config.timestep_spacing == "trailing"  # the shipped config's


@needs_model
def test_diffusers_swap_idiom_turns_default_clipping_off(pipe, dpm_config):
    assert DDIMScheduler.from_config(dpm_config).config.clip_sample is True  # diffusers' default, kept by diffusers
    pipe.scheduler = DDIMScheduler.from_config(dpm_config)
    assert pipe.scheduler.config.clip_sample is False
    pipe.scheduler = DDIMScheduler.from_config(dpm_config, clip_sample=True)  # asked for explicitly: kept
    assert pipe.scheduler.config.clip_sample is True


def test_swap_keeps_training_schedule_and_prediction_type():
    betas = torch.linspace(1e-4, 0.03, 1000).tolist()
    source = DDIMScheduler(trained_betas=betas, prediction_type="v_prediction", timestep_spacing="leading",
                           clip_sample=True, thresholding=True)
    for name in scheduler_names():
        scheduler = make_scheduler(name, source.config)
        assert scheduler.config.trained_betas == betas, name
        assert scheduler.config.prediction_type == "v_prediction", name
        assert scheduler.config.timestep_spacing == "leading", name  # stated by the source: kept
        assert scheduler.config.get("clip_sample", False) is False, name
        assert scheduler.config.get("thresholding", False) is False, name


def test_unstated_spacing_becomes_trailing_and_learned_variance_is_dropped_for_dpm():
    config = {k: v for k, v in LATTE1_SCHEDULER.items() if k != "timestep_spacing"}
    assert make_scheduler("EulerDiscreteScheduler", config).config.timestep_spacing == "trailing"
    assert make_scheduler("DPMSolverMultistepScheduler", LATTE1_SCHEDULER).config.variance_type is None
    assert make_scheduler("DDPMScheduler", LATTE1_SCHEDULER).config.variance_type == "learned_range"


def test_folder_config_loads_without_clipping(tmp_path):
    (tmp_path / "scheduler_config.json").write_text(
        '{"_class_name": "DDIMScheduler", "clip_sample": true, "thresholding": true}'
    )
    scheduler = load_scheduler(tmp_path)
    assert scheduler.config.clip_sample is False and scheduler.config.thresholding is False


# ------------------------------------------------------------------ the offered set
def test_unknown_name_gives_one_line_with_the_allowed_names():
    with pytest.raises(ValueError) as err:
        make_scheduler("Bogus", LATTE1_SCHEDULER)
    message = str(err.value)
    assert "\n" not in message and message.startswith("unknown scheduler 'Bogus'; allowed: ")
    assert message.endswith(", ".join(scheduler_names()))


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_unsupported_schedulers_are_not_offered_and_say_why(name):
    assert name not in scheduler_names()
    with pytest.raises(ValueError, match=f"scheduler '{name}' does not work with Latte models .*; allowed: DDIM"):
        recommended_steps(name)


def test_offered_set_is_in_diffusers_karras_family_and_each_builds():
    karras = {e.name for e in diffusers.schedulers.KarrasDiffusionSchedulers}
    assert set(scheduler_names()) <= karras
    assert set(scheduler_names()) | set(UNSUPPORTED) == karras  # every candidate is decided
    for name in scheduler_names():  # optional dependencies (scipy for LMS) are installed
        make_scheduler(name, LATTE1_SCHEDULER).set_timesteps(RECOMMENDED_STEPS[name])


# ------------------------------------------------------------------ on the shipped model
def generate(pipe, name: str, prompts: list[str], steps: int) -> torch.Tensor:
    """(B, 16, 3, 64, 64) videos of the shipped model (its frames and size) with scheduler `name`."""
    pipe.scheduler = make_scheduler(name, read_json(MODEL / "scheduler" / "scheduler_config.json"))
    generators = [torch.Generator().manual_seed(i) for i in range(len(prompts))]
    return pipe(prompts, num_inference_steps=steps, guidance_scale=4.0, video_length=16, height=64, width=64,
                generator=generators, output_type="pt").frames


@needs_model
@pytest.mark.parametrize("name", scheduler_names())
def test_every_offered_scheduler_gets_the_colour_right(pipe, name):
    """Smoke: 10 steps are enough for the colour; a scheduler that clips x0 or misreads the model gives noise at
    any step count."""
    case = prompt_set(4)[0]
    video = generate(pipe, name, [case.prompt], steps=10)[0]
    assert torch.isfinite(video).all()
    assert read_clip(video).color == case.color


@needs_model
@pytest.mark.slow  # 35-130 s per scheduler on the shared 2-core CPU
@pytest.mark.parametrize("name", scheduler_names())
def test_every_offered_scheduler_is_adherent(pipe, name):
    cases = [case for case in prompt_set(4) if case.split == "seen"]
    readings = [read_clip(v) for v in generate(pipe, name, [case.prompt for case in cases], recommended_steps(name))]
    colour = sum(r.color == c.color for r, c in zip(readings, cases, strict=True))
    motion = sum(r.motion == c.motion for r, c in zip(readings, cases, strict=True))
    assert colour >= len(cases) - 1 and motion >= len(cases) - 1, (name, readings)


def test_cli_scheduler_runs_at_its_recommended_steps(monkeypatch, tmp_path, capsys):
    from latte.cli.main import main

    seen = []

    def record_and_stop(self, *args, **kwargs):  # the call's arguments are all this test needs
        seen.append(kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(LattePipeline, "__call__", record_and_stop)
    assert main(["generate", "a red circle", "--scheduler", "DDIMScheduler", "-o", str(tmp_path / "v.mp4")]) == 130
    assert seen[0]["num_inference_steps"] == RECOMMENDED_STEPS["DDIMScheduler"]
    assert main(["generate", "a red circle", "--scheduler", "EDMEulerScheduler", "-o", str(tmp_path / "v.mp4")]) == 2
    assert "does not work with Latte models" in capsys.readouterr().err
