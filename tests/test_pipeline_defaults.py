"""A model folder's generation defaults (`_generate_defaults` in model_index.json): read by from_pretrained,
used by calls that pass none, kept by save_pretrained, checked with one-line errors."""

import json
import shutil

import pytest
import torch

from latte import LattePipeline
from tiny_components import build_tiny_pipeline_folder

DEFAULTS = {"steps": 3, "guidance": 1.0, "frames": 2, "height": 32, "width": 48, "fps": 12}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = build_tiny_pipeline_folder(tmp_path_factory.mktemp("tiny") / "model", seed=1)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_generate_defaults": DEFAULTS}))
    return folder


def with_defaults(folder, tmp_path, defaults):
    copy = tmp_path / "m"
    shutil.copytree(folder, copy)
    index = json.loads((copy / "model_index.json").read_text())
    (copy / "model_index.json").write_text(json.dumps({**index, "_generate_defaults": defaults}))
    return copy


def test_calls_without_arguments_use_the_folders_defaults(folder):
    pipe = LattePipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.generate_defaults == DEFAULTS
    calls = []
    pipe.text_encoder.register_forward_hook(lambda *a: calls.append(1))
    frames = pipe("a red circle", output_type="pt", generator=torch.Generator().manual_seed(0)).frames
    assert frames.shape == (1, 2, 3, 32, 48) and pipe.num_timesteps == 3
    assert len(calls) == 1  # guidance 1.0: no negative prompt encoded
    explicit = pipe("a red circle", num_inference_steps=3, guidance_scale=1.0, video_length=2, height=32, width=48,
                    output_type="pt", generator=torch.Generator().manual_seed(0)).frames
    assert torch.equal(frames, explicit)
    assert pipe("a red circle", num_inference_steps=1, video_length=1, output_type="latent").frames.shape[2] == 1


def test_without_folder_defaults_diffusers_and_trained_values_apply(folder):
    pipe = LattePipeline(**LattePipeline.from_pretrained(folder).components)
    assert pipe.generate_defaults == {}
    assert pipe.generation_settings() == {"steps": 50, "guidance": 7.5, "frames": 16, "height": 64, "width": 64}
    assert pipe.generation_settings(num_inference_steps=4, height=16)["steps"] == 4


def test_save_pretrained_keeps_them(folder, tmp_path):
    pipe = LattePipeline.from_pretrained(folder)
    pipe.generate_defaults = {**DEFAULTS, "steps": 7}
    pipe.save_pretrained(tmp_path / "copy")
    assert json.loads((tmp_path / "copy" / "model_index.json").read_text())["_generate_defaults"]["steps"] == 7
    assert LattePipeline.from_pretrained(tmp_path / "copy").generate_defaults == {**DEFAULTS, "steps": 7}


@pytest.mark.parametrize(
    ("defaults", "message"),
    [
        ({"steps": [25]}, r"_generate_defaults.steps must be an integer >= 1, got \[25\]"),
        ({"steps": 0}, "_generate_defaults.steps must be an integer >= 1, got 0"),
        ({"frames": 2.5}, "_generate_defaults.frames must be an integer >= 1"),
        ({"height": True}, "_generate_defaults.height must be an integer >= 1, got True"),
        ({"guidance": "4"}, "_generate_defaults.guidance must be a finite number, got '4'"),
        ({"guidance": float("inf")}, "_generate_defaults.guidance must be a finite number, got inf"),
        ({"fps": 0}, "_generate_defaults.fps must be a number in \\[0.1, 1000.0\\], got 0"),
        ({"slow_motion": 0.5}, "_generate_defaults.slow_motion must be a finite number >= 1, got 0.5"),
        ({"seed": 3}, r"unknown _generate_defaults key 'seed'; allowed: \['steps', 'frames'"),
        ([25], r"_generate_defaults must be an object like"),
    ],
)
def test_bad_defaults_are_one_line_errors_naming_the_file(folder, tmp_path, defaults, message):
    with pytest.raises(ValueError, match=f"model_index.json: {message}"):
        LattePipeline.from_pretrained(with_defaults(folder, tmp_path, defaults))


def test_assigned_defaults_are_checked(folder):
    pipe = LattePipeline(**LattePipeline.from_pretrained(folder).components)
    with pytest.raises(ValueError, match="generate_defaults: _generate_defaults.steps must be an integer >= 1"):
        pipe.generate_defaults = {"steps": -1}
    assert pipe.generate_defaults == {}


def test_shipped_model_runs_its_own_defaults():
    """The README's Python snippet on the shipped folder: 64 px and 25 steps, not 512 px and 50 steps."""
    from latte.pipelines import default_model_path

    if not (default_model_path() / "model_index.json").is_file():
        pytest.skip("the default model is not installed")
    pipe = LattePipeline.from_pretrained(default_model_path())
    assert pipe.generation_settings() == {"steps": 25, "guidance": 4.0, "frames": 16, "height": 64, "width": 64}
    # Its shapes cross the frame in about 40 frames: long videos play one training clip's motion, up to 4x slower.
    assert [pipe.resolve_slow_motion(None, frames) for frames in (16, 32, 64, 128)] == [1, 2, 4, 4]
    assert pipe.generate_defaults["fps"] == 8
