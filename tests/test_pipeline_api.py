"""LattePipeline API: components, scheduler swaps, outputs, callbacks, dtypes, offload, compile recipe and
bad input."""

import json

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from latte import LattePipeline
from latte.pipelines.schedulers import make_scheduler
from tiny_components import build_tiny_components, build_tiny_pipeline_folder, quiet_pipeline
from tiny_components import tiny_frames as gen


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_pipeline_folder(tmp_path_factory.mktemp("tiny") / "model", seed=1)


def test_components_are_shared_not_copied(tiny_pipe):
    second = LattePipeline(**tiny_pipe.components)
    assert set(tiny_pipe.components) == {"tokenizer", "text_encoder", "vae", "transformer", "scheduler"}
    for name, component in second.components.items():
        assert component is tiny_pipe.components[name], name
    assert torch.equal(gen(second), gen(tiny_pipe))


def test_scheduler_swap_with_latte1_config(tiny_pipe):
    """The documented swap keeps Latte-1's `variance_type: learned_range`; DPM-Solver would then keep 3 of 4
    latent channels, so the pipeline drops that key for it."""
    assert tiny_pipe.scheduler.config.variance_type == "learned_range"
    tiny_pipe.scheduler = DPMSolverMultistepScheduler.from_config(tiny_pipe.scheduler.config)
    assert isinstance(tiny_pipe.scheduler, DPMSolverMultistepScheduler)
    assert tiny_pipe.scheduler.config.variance_type is None
    frames = gen(tiny_pipe, num_inference_steps=3)
    assert frames.shape == (1, 2, 3, 32, 32) and torch.isfinite(frames).all()


def test_output_types(tiny_pipe):
    pil = gen(tiny_pipe, output_type="pil", num_images_per_prompt=2)
    assert len(pil) == 2 and len(pil[0]) == 2 and pil[0][0].size == (32, 32)
    array = gen(tiny_pipe, output_type="np")
    assert isinstance(array, np.ndarray) and array.shape == (1, 2, 32, 32, 3)
    assert array.min() >= 0 and array.max() <= 1
    np.testing.assert_allclose(np.asarray(pil[0][1]), (array[0, 1] * 255).round(), atol=1)
    latents = gen(tiny_pipe, output_type="latent")
    assert latents.shape == (1, 4, 2, 4, 4)
    (frames,) = tiny_pipe("a red circle", num_inference_steps=1, video_length=1, height=32, width=32,
                     output_type="pt", return_dict=False)
    assert frames.shape == (1, 1, 3, 32, 32)


def test_any_frame_count_and_default_size(tiny_pipe):
    frames = gen(tiny_pipe, video_length=5, height=None, width=None)
    assert frames.shape == (1, 5, 3, 64, 64)  # sample_size 8 x VAE factor 8


def test_videos_per_prompt_alias(tiny_pipe):
    assert torch.equal(gen(tiny_pipe, num_videos_per_prompt=2), gen(tiny_pipe, num_images_per_prompt=2))
    with pytest.raises(ValueError, match="contradicts num_images_per_prompt=3"):
        gen(tiny_pipe, num_videos_per_prompt=2, num_images_per_prompt=3)


def test_callback_sees_every_step_and_can_replace_latents(tiny_pipe):
    seen = []

    def callback(p, i, t, tensors):
        seen.append((i, int(t), tuple(tensors["latents"].shape), tensors["prompt_embeds"].shape[0]))
        return {"latents": torch.zeros_like(tensors["latents"])} if i == 2 else {}

    latents = gen(tiny_pipe, num_inference_steps=3, output_type="latent", callback_on_step_end=callback,
                  callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"])
    assert [s[0] for s in seen] == [0, 1, 2] and seen[0][1] > seen[1][1] > seen[2][1]
    assert seen[0][2] == (1, 4, 2, 4, 4) and seen[0][3] == 1
    assert torch.count_nonzero(latents) == 0

    def stop(p, i, t, tensors):
        p._interrupt = True
        return {}

    inputs = ["latents", "prompt_embeds", "negative_prompt_embeds"]
    kwargs = {"num_inference_steps": 3, "output_type": "latent", "callback_on_step_end_tensor_inputs": inputs}
    same = gen(tiny_pipe, callback_on_step_end=lambda p, i, t, x: x, **kwargs)
    assert torch.equal(same, gen(tiny_pipe, num_inference_steps=3, output_type="latent"))
    swap = lambda p, i, t, x: {"prompt_embeds": x["negative_prompt_embeds"]}  # noqa: E731
    changed = gen(tiny_pipe, callback_on_step_end=swap, **kwargs)
    assert (changed - same).abs().max() > 1e-3  # the new text takes effect from the next step

    from diffusers.callbacks import PipelineCallback

    class Zero(PipelineCallback):  # diffusers' callback objects name their own tensor inputs
        tensor_inputs = ["latents"]

        def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
            return {"latents": torch.zeros_like(callback_kwargs["latents"])}

    assert torch.count_nonzero(gen(tiny_pipe, output_type="latent", callback_on_step_end=Zero())) == 0

    calls = []
    tiny_pipe.transformer.register_forward_hook(lambda *a: calls.append(1))
    gen(tiny_pipe, num_inference_steps=4, callback_on_step_end=stop)
    assert len(calls) == 1
    with pytest.raises(ValueError, match="not allowed"):
        gen(tiny_pipe, callback_on_step_end=stop, callback_on_step_end_tensor_inputs=["noise_pred"])


def test_progress_bar(tiny_pipe, capsys):
    tiny_pipe.set_progress_bar_config(disable=False)
    gen(tiny_pipe)
    assert "denoising" in capsys.readouterr().err
    tiny_pipe.set_progress_bar_config(disable=True)
    gen(tiny_pipe)
    assert capsys.readouterr().err == ""


def test_negative_embedding_is_cached(tiny_pipe):
    calls = []
    handle = tiny_pipe.text_encoder.register_forward_hook(lambda *a: calls.append(1))
    gen(tiny_pipe)
    gen(tiny_pipe, prompt="a blue square")
    handle.remove()
    assert len(calls) == 3  # two prompts, one "" negative


def test_latents_take_the_transformer_dtype(tiny_components):
    """A float32 text encoder with a bfloat16 transformer (diffusers' latents would take the T5 dtype)."""
    pipe = quiet_pipeline(tiny_components, transformer=build_tiny_components(seed=1)["transformer"])
    reference = gen(pipe)
    pipe.transformer.to(torch.bfloat16)
    seen = []
    gen(pipe, callback_on_step_end=lambda p, i, t, x: seen.append(x["latents"].dtype) or {})
    assert seen == [torch.bfloat16] * 2
    frames = gen(pipe, latents=torch.randn(1, 4, 2, 4, 4))  # float32 latents passed in are cast too
    assert frames.dtype == torch.float32
    assert (gen(pipe) - reference).abs().max() < 0.1


def test_custom_timesteps(tiny_components):
    config = tiny_components["scheduler"].config
    pipe = quiet_pipeline(tiny_components, scheduler=DDPMScheduler.from_config(config))
    gen(pipe, timesteps=[999, 500, 0])
    assert pipe.num_timesteps == 3 and pipe.scheduler.timesteps.tolist() == [999, 500, 0]
    ddim = quiet_pipeline(tiny_components, scheduler=DDIMScheduler.from_config(config))
    with pytest.raises(ValueError, match="DDIMScheduler rejected the timesteps"):
        gen(ddim, timesteps=[999, 0])


def test_cpu_offload_and_vae_options_keep_frames(tiny_pipe):
    reference = gen(tiny_pipe, video_length=3)
    tiny_pipe.enable_model_cpu_offload(device="cpu")  # the only device here; exercises the moves
    assert torch.equal(gen(tiny_pipe, video_length=3), reference)
    tiny_pipe.to("cpu")
    tiny_pipe.enable_vae_slicing()
    tiny_pipe.enable_vae_tiling()
    assert tiny_pipe.vae.use_slicing and tiny_pipe.vae.use_tiling
    assert (gen(tiny_pipe, video_length=3) - reference).abs().max() < 1e-5  # frames too small to be tiled
    tiny_pipe.disable_vae_slicing()
    tiny_pipe.disable_vae_tiling()
    assert (gen(tiny_pipe, video_length=3, decode_chunk_size=1) - reference).abs().max() < 1e-5


@pytest.mark.slow  # inductor's first compile on a 2-core CPU: about 40-80 s, nearly all of it fixed cost
def test_documented_compile_recipe_gives_the_eager_frames():
    """The Latte-1 docs' speed recipe (channels_last, torch.compile of the transformer and of vae.decode) on our
    pipeline: same fp32 frames as eager within 1e-4. The smallest models that still have every kind of layer
    keep inductor's compile time down."""
    from diffusers import AutoencoderKL

    components = build_tiny_components(seed=1, num_layers=1)
    components["vae"] = AutoencoderKL(
        latent_channels=4, layers_per_block=1, norm_num_groups=4, block_out_channels=(8, 8),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    ).eval()
    pipe = quiet_pipeline(components)
    kwargs = {"num_inference_steps": 2, "video_length": 2, "height": 16, "width": 16, "output_type": "np"}
    reference = pipe("a red circle", generator=torch.Generator().manual_seed(0), **kwargs).frames
    pipe.transformer.to(memory_format=torch.channels_last)
    pipe.vae.to(memory_format=torch.channels_last)
    pipe.transformer = torch.compile(pipe.transformer)
    pipe.vae.decode = torch.compile(pipe.vae.decode)
    frames = pipe(prompt="a red circle", generator=torch.Generator().manual_seed(0), **kwargs).frames
    assert frames.shape == reference.shape == (1, 2, 16, 16, 3)
    assert np.abs(frames - reference).max() <= 1e-4


def test_load_folder_and_dtype(folder):
    pipe = LattePipeline.from_pretrained(folder, torch_dtype=torch.bfloat16)
    assert pipe.transformer.dtype == pipe.vae.dtype == pipe.text_encoder.dtype == torch.bfloat16
    pipe.set_progress_bar_config(disable=True)
    low = gen(pipe)
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    pipe.to(torch.float32)
    assert pipe.transformer.dtype == pipe.vae.dtype == pipe.text_encoder.dtype == torch.float32
    assert (gen(pipe) - low).abs().max() < 0.1
    assert json.loads((folder / "model_index.json").read_text())["transformer"] == [
        "diffusers", "LatteTransformer3DModel"]


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"height": 40}, "height must be a positive multiple of 16 .VAE factor 8 x patch size 2., got 40"),
        ({"width": 8}, "width must be a positive multiple of 16"),
        ({"video_length": 0}, "video_length .frames. must be an integer >= 1, got 0"),
        ({"prompt": 5}, "prompt must be a string or a non-empty list of strings, got int"),
        ({"prompt": ["ok", None]}, "prompt must be a string or a non-empty list of strings"),
        ({"num_inference_steps": 0}, r"num_inference_steps must be an integer in 1..1000 \(the DDIMScheduler.s "
                                     r"num_train_timesteps\), got 0"),
        ({"output_type": "gif"}, "output_type must be one of .'pil', 'np', 'pt', 'latent'., got 'gif'"),
        ({"latents": torch.randn(1, 4, 2, 8, 8)}, r"latents must have shape \(1, 4, 2, 4, 4\)"),
        ({"negative_prompt": ["a", "b"]}, "got 2 negative prompts for 1 prompts"),
        ({"generator": [torch.Generator()] * 2}, "got 2 generators for 1 videos"),
    ],
)
def test_bad_call_arguments(tiny_pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        gen(tiny_pipe, **kwargs)


def test_bad_prompt_embeds(tiny_pipe):
    with pytest.raises(ValueError, match=r"prompt_embeds must be a \(prompts, tokens, 32\) tensor, got \(1"):
        gen(tiny_pipe, prompt=None, prompt_embeds=torch.randn(1, 5, 7))
    message = r"negative_prompt_embeds shape \(1, 4, 32\) must equal prompt_embeds shape \(1, 5, 32\)"
    with pytest.raises(ValueError, match=message):
        gen(tiny_pipe, prompt=None, prompt_embeds=torch.randn(1, 5, 32),
            negative_prompt_embeds=torch.randn(1, 4, 32), negative_prompt=None)
    with pytest.raises(ValueError, match="exactly one of `prompt` and `prompt_embeds`"):
        gen(tiny_pipe, prompt_embeds=torch.randn(1, 5, 32))


def test_unknown_scheduler_names_the_allowed_ones(folder, tmp_path):
    with pytest.raises(ValueError, match="unknown scheduler 'Bogus'; allowed: .*DDIMScheduler.*DPMSolver"):
        make_scheduler("Bogus", {})
    broken = tmp_path / "m"
    broken.mkdir()
    for sub in folder.iterdir():
        (broken / sub.name).symlink_to(sub)
    (broken / "scheduler").unlink()
    (broken / "scheduler").mkdir()
    (broken / "scheduler" / "scheduler_config.json").write_text('{"_class_name": "FancyScheduler"}')
    with pytest.raises(ValueError, match="scheduler_config.json: unknown scheduler 'FancyScheduler'"):
        LattePipeline.from_pretrained(broken)


@pytest.mark.parametrize(
    ("damage", "error", "message"),
    [
        ("model_index.json", FileNotFoundError, "missing file: .*model_index.json"),
        ("vae/diffusion_pytorch_model.safetensors", FileNotFoundError, "no weights in .*vae"),
        ("transformer/config.json", FileNotFoundError, "missing file: .*transformer/config.json"),
        ("text_encoder/config.json", FileNotFoundError, "missing file .*text_encoder/config.json"),
        ("corrupt:transformer/diffusion_pytorch_model.safetensors", ValueError,
         "corrupt or unreadable weights file .*transformer/diffusion_pytorch_model.safetensors"),
        ("corrupt:model_index.json", ValueError, "corrupt JSON file .*model_index.json"),
        ("corrupt:vae/diffusion_pytorch_model.safetensors", ValueError, "cannot load the VAE in .*vae"),
        ("corrupt:text_encoder/model.safetensors", ValueError, "cannot load the text encoder in .*encoder"),
    ],
)
def test_missing_or_corrupt_files_are_named(folder, tmp_path, damage, error, message):
    import shutil

    copy = tmp_path / "m"
    shutil.copytree(folder, copy)
    corrupt = damage.startswith("corrupt:")
    target = copy / damage.removeprefix("corrupt:")
    if corrupt:
        target.write_bytes(b"\x00garbage")
    else:
        target.unlink()
    with pytest.raises(error, match=message):
        LattePipeline.from_pretrained(copy)


def test_save_is_atomic(tiny_pipe, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError, match="cannot write"):
        tiny_pipe.save_pretrained(blocker / "model")
    tiny_pipe.save_pretrained(tmp_path / "model")
    tiny_pipe.save_pretrained(tmp_path / "model")  # replacing an existing folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "model"]  # no temporary leftovers
