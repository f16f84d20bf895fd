"""Latte-1 text-to-video pipeline: T5 prompt -> Latte transformer denoising loop -> VAE frames.

Same call signature, defaults and outputs as diffusers' `LattePipeline`, with these deliberate differences
(see the reference's list of upstream defects):
- every video in a batch is conditioned exactly as if generated alone (batch-1 semantics, below);
- learned-sigma outputs are split by channel count, never by the scheduler config's `variance_type` text;
- latents always take the transformer's dtype; any frame count >= 1 works.

Batch-1 semantics (what diffusers does for a single video, with `mask_feature=True`): the prompt embedding is
cut to its k real tokens (EOS included) and the negative embedding is cut to the *same* first k positions
(pads included). In a batch, each video keeps all tokens up to the longest k and gets a text mask with k_i
ones; the same mask serves its negative half, so both halves attend to exactly the positions they would attend
to alone.

Letters in shape comments: B videos, F frames, C latent channels, L text tokens, Ct text width.
"""

import inspect
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from latte.models.io import read_json, write_json
from latte.models.latte_t2v import DIFFUSERS_CLASS_NAME, LatteT2VTransformer
from latte.models.text_encoder import (
    TOKENIZER_CLASSES,
    check_prompts,
    encode_text,
    load_text_encoder,
    load_tokenizer,
)
from latte.models.vae import decode_latents, load_vae, vae_scale_factor
from latte.outputs import write_folder
from latte.pipelines.schedulers import keep_latte_settings, load_scheduler, scheduler_names, uses_learned_variance

logger = logging.getLogger(__name__)

PIPELINE_CLASS_NAME = "LattePipeline"
OUTPUT_TYPES = ("pil", "np", "pt", "latent")
CALLBACK_TENSOR_INPUTS = ("latents", "prompt_embeds", "negative_prompt_embeds")
TORCH_COMPONENTS = ("text_encoder", "transformer", "vae")


def _unwrap(module):
    """The module inside a `torch.compile` wrapper (what gets saved and moved)."""
    return getattr(module, "_orig_mod", module)


@dataclass
class LattePipelineOutput:
    """`frames`: a list (one per video) of PIL image lists, a (B, F, H, W, 3) float array in [0, 1], a
    (B, F, 3, H, W) tensor in [0, 1], or the raw latents (B, C, F, h, w), per `output_type`."""

    frames: list | np.ndarray | torch.Tensor


class LattePipeline:
    """Text-to-video generation with Latte-1 (or any model folder in the diffusers Latte layout).

    Components: `tokenizer` (T5Tokenizer), `text_encoder` (T5EncoderModel), `vae` (diffusers AutoencoderKL),
    `transformer` (our `LatteT2VTransformer`, possibly `torch.compile`d) and `scheduler` (any diffusers
    Karras-family scheduler, e.g. DDIMScheduler, DPMSolverMultistepScheduler).

    ```python
    pipe = LattePipeline.from_pretrained("Latte-1", torch_dtype=torch.float16).to("cuda")
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)  # optional swap
    frames = pipe("a cat playing piano", generator=torch.Generator().manual_seed(0)).frames[0]
    export_video(frames, "cat.mp4", fps=8)
    ```
    """

    def __init__(self, tokenizer, text_encoder, vae, transformer, scheduler):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.vae = vae
        self.transformer = transformer
        self.scheduler = scheduler
        self._progress_bar_config: dict = {}
        self._offload_device: torch.device | None = None
        self._negative_cache: dict = {}  # (encoder id, text, length, device) -> (1, L, Ct) negative embedding
        self._interrupt = False
        self._num_timesteps = 0

    # ------------------------------------------------------------------ components
    @property
    def scheduler(self):
        return self._scheduler

    @scheduler.setter
    def scheduler(self, scheduler):
        self._scheduler = keep_latte_settings(scheduler)

    @property
    def components(self) -> dict:
        """The five components by name: `LattePipeline(**pipe.components)` shares them without copying."""
        return dict(
            tokenizer=self.tokenizer,
            text_encoder=self.text_encoder,
            vae=self.vae,
            transformer=self.transformer,
            scheduler=self.scheduler,
        )

    @property
    def vae_scale_factor(self) -> int:
        return vae_scale_factor(self.vae)

    @property
    def dtype(self) -> torch.dtype:
        """The transformer's dtype; latents and text features take it."""
        return _unwrap(self.transformer).dtype

    @property
    def device(self) -> torch.device:
        """Where the denoising runs: the offload device when CPU offload is on, else the transformer's
        device."""
        return self._offload_device or _unwrap(self.transformer).device

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    def to(self, *args, **kwargs) -> "LattePipeline":
        """Move/cast the torch components like `nn.Module.to`: `pipe.to("cuda")`, `pipe.to(torch.float16)`,
        `pipe.to(device=..., dtype=...)`. Turns CPU offload off."""
        for name in TORCH_COMPONENTS:
            getattr(self, name).to(*args, **kwargs)
        self._offload_device = None
        self._negative_cache.clear()
        return self

    def enable_model_cpu_offload(self, device: str | torch.device = "cuda") -> None:
        """Keep every model on the CPU and move each to `device` only while it runs (text encoder, then the
        transformer, then the VAE): peak accelerator memory is the largest single model."""
        self._offload_device = torch.device(device)
        for name in TORCH_COMPONENTS:
            getattr(self, name).to("cpu")

    def _activate(self, name: str) -> None:
        """Under CPU offload: `name` on the execution device, the other models on the CPU."""
        if self._offload_device is None:
            return
        for other in TORCH_COMPONENTS:
            getattr(self, other).to(self._offload_device if other == name else "cpu")

    def enable_vae_slicing(self) -> None:
        """Decode the frames one at a time inside the VAE (less memory, same frames)."""
        self.vae.enable_slicing()

    def disable_vae_slicing(self) -> None:
        self.vae.disable_slicing()

    def enable_vae_tiling(self) -> None:
        """Decode each frame in overlapping tiles (much less memory for large frames; seams are blended)."""
        self.vae.enable_tiling()

    def disable_vae_tiling(self) -> None:
        self.vae.disable_tiling()

    def set_progress_bar_config(self, **kwargs) -> None:
        """tqdm options for the denoising bar, e.g. `disable=True`."""
        self._progress_bar_config = kwargs

    def progress_bar(self, total: int):
        return tqdm(total=total, **{"desc": "denoising", **self._progress_bar_config})

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_pretrained(
        cls, folder: str | os.PathLike, torch_dtype: torch.dtype | None = None
    ) -> "LattePipeline":
        """Load a diffusers-layout model folder: `model_index.json` plus `tokenizer/`, `text_encoder/`,
        `vae/`, `transformer/`, `scheduler/`. `torch_dtype` casts the three models (the scheduler stays
        float32)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"model folder not found: {folder}")
        index = read_json(folder / "model_index.json")
        expected = {
            "tokenizer": TOKENIZER_CLASSES,
            "text_encoder": ("T5EncoderModel",),
            "vae": ("AutoencoderKL",),
            "transformer": (DIFFUSERS_CLASS_NAME,),
            "scheduler": tuple(scheduler_names()),
        }
        for name, allowed in expected.items():
            entry = index.get(name)
            if not (isinstance(entry, list) and len(entry) == 2 and entry[1] in allowed):
                raise ValueError(
                    f"{folder / 'model_index.json'}: component {name!r} is {entry!r}; "
                    f"expected [library, class] with class one of {list(allowed)}"
                )
        import transformers

        return cls(
            tokenizer=load_tokenizer(folder / "tokenizer", getattr(transformers, index["tokenizer"][1])),
            text_encoder=load_text_encoder(folder / "text_encoder", transformers.T5EncoderModel, torch_dtype),
            vae=load_vae(folder / "vae", torch_dtype),
            transformer=LatteT2VTransformer.from_pretrained(
                folder, subfolder="transformer", torch_dtype=torch_dtype
            ),
            scheduler=load_scheduler(folder / "scheduler"),
        )

    def save_pretrained(self, folder: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the diffusers layout (loadable by diffusers' `LattePipeline` too) as a new folder: built
        beside `folder`, then swapped in, so it is never half-written; an existing folder is replaced only if
        latte wrote it or `overwrite=True` (the output rule of `latte.outputs`)."""
        import diffusers

        def fill(tmp: Path) -> None:
            index = {"_class_name": PIPELINE_CLASS_NAME, "_diffusers_version": diffusers.__version__}
            for name, component in self.components.items():
                component = _unwrap(component)
                component.save_pretrained(str(tmp / name))
                library = "transformers" if name in ("tokenizer", "text_encoder") else "diffusers"
                class_name = DIFFUSERS_CLASS_NAME if name == "transformer" else type(component).__name__
                index[name] = [library, class_name]
            write_json(tmp / "model_index.json", index)

        return write_folder(folder, fill, overwrite)

    # ------------------------------------------------------------------ text
    def encode_prompt(
        self,
        prompt: str | list[str] | None,
        do_classifier_free_guidance: bool = True,
        negative_prompt: str | list[str] | None = "",
        num_videos_per_prompt: int = 1,
        device: torch.device | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        mask_feature: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Text conditioning for every video, with batch-1 semantics.

        Returns `(prompt_embeds (B, L, Ct), negative_prompt_embeds (B, L, Ct) or None without guidance,
        text_mask (B, L) long or None)`, B = prompts x `num_videos_per_prompt` (prompt-major). With
        `mask_feature` and encoded prompts, L is the longest prompt's token count k and `text_mask` marks each
        video's first k_i positions, for its prompt and its negative alike; it is None when every row is
        whole. Embeddings passed in are used whole (no mask), as diffusers does.
        """
        device = self.device if device is None else device
        text_mask = None
        if prompt_embeds is None:
            self._activate("text_encoder")
            prompt_embeds, mask = encode_text(self.tokenizer, self.text_encoder, prompt, device=device)
            if mask_feature:
                text_mask = mask
        batch = prompt_embeds.shape[0]
        if do_classifier_free_guidance and negative_prompt_embeds is None:
            negatives = (
                [negative_prompt or ""] * batch if not isinstance(negative_prompt, list) else negative_prompt
            )
            negative_prompt_embeds = torch.cat(
                [self._encode_negative(text, prompt_embeds.shape[1], device) for text in negatives]
            )
        if text_mask is not None:
            # Right-padded tokens: cutting to the longest real length loses nothing any video attends to.
            k = int(text_mask.sum(dim=1).max())
            prompt_embeds, text_mask = prompt_embeds[:, :k], text_mask[:, :k]
            if negative_prompt_embeds is not None:
                negative_prompt_embeds = negative_prompt_embeds[:, :k]
            if bool(text_mask.all()):
                text_mask = None  # every video attends to all k tokens: exactly the batch-1 computation

        def per_video(x):
            return None if x is None else x.repeat_interleave(num_videos_per_prompt, dim=0).to(device)

        dtype = self.dtype
        return (
            per_video(prompt_embeds).to(dtype),
            None if negative_prompt_embeds is None else per_video(negative_prompt_embeds).to(dtype),
            per_video(text_mask),
        )

    def _encode_negative(self, text: str, length: int, device: torch.device) -> torch.Tensor:
        """(1, length, Ct) embedding of one negative prompt; cached, since it is usually the constant ""."""
        key = (id(self.text_encoder), text, length, str(device))
        if key not in self._negative_cache:
            self._activate("text_encoder")
            self._negative_cache[key] = encode_text(
                self.tokenizer, self.text_encoder, [text], length, device
            )[0]
        return self._negative_cache[key]

    # ------------------------------------------------------------------ checks
    def check_inputs(
        self,
        prompt,
        height,
        width,
        video_length,
        num_inference_steps,
        timesteps,
        negative_prompt,
        prompt_embeds,
        negative_prompt_embeds,
        num_videos_per_prompt,
        output_type,
        callback_on_step_end_tensor_inputs,
        decode_chunk_size,
    ) -> int:
        """Fail early with errors naming the bad value; returns the number of prompts."""
        transformer = _unwrap(self.transformer)
        step = self.vae_scale_factor * transformer.config.patch_size
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, int) or value < step or value % step:
                raise ValueError(
                    f"{name} must be a positive multiple of {step} (VAE factor "
                    f"{self.vae_scale_factor} x patch size {transformer.config.patch_size}), got {value!r}"
                )
        if not isinstance(video_length, int) or video_length < 1:
            raise ValueError(f"video_length (frames) must be an integer >= 1, got {video_length!r}")
        if timesteps is None and (not isinstance(num_inference_steps, int) or num_inference_steps < 1):
            raise ValueError(f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}")
        if not isinstance(num_videos_per_prompt, int) or num_videos_per_prompt < 1:
            raise ValueError(f"num_videos_per_prompt must be an integer >= 1, got {num_videos_per_prompt!r}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {list(OUTPUT_TYPES)}, got {output_type!r}")
        if decode_chunk_size is not None and (
            not isinstance(decode_chunk_size, int) or decode_chunk_size < 1
        ):
            raise ValueError(f"decode_chunk_size must be an integer >= 1 or None, got {decode_chunk_size!r}")
        bad = [k for k in callback_on_step_end_tensor_inputs if k not in CALLBACK_TENSOR_INPUTS]
        if bad:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs {bad} not allowed; use {list(CALLBACK_TENSOR_INPUTS)}"
            )

        if (prompt is None) == (prompt_embeds is None):
            raise ValueError("pass exactly one of `prompt` and `prompt_embeds`")
        if prompt is not None:
            batch = len(check_prompts(prompt))
            if negative_prompt_embeds is not None:
                raise ValueError(
                    "`negative_prompt_embeds` needs `prompt_embeds`, not `prompt`: pass both as embeddings"
                )
        else:
            width_text = transformer.config.caption_channels
            if (
                not isinstance(prompt_embeds, torch.Tensor)
                or prompt_embeds.ndim != 3
                or prompt_embeds.shape[2] != width_text
                or prompt_embeds.shape[1] < 1
            ):
                raise ValueError(
                    f"prompt_embeds must be a (prompts, tokens, {width_text}) tensor, got "
                    f"{tuple(getattr(prompt_embeds, 'shape', ())) or type(prompt_embeds).__name__}"
                )
            batch = prompt_embeds.shape[0]
            if negative_prompt_embeds is not None and (
                not isinstance(negative_prompt_embeds, torch.Tensor)
                or negative_prompt_embeds.shape != prompt_embeds.shape
            ):
                raise ValueError(
                    f"negative_prompt_embeds shape {tuple(getattr(negative_prompt_embeds, 'shape', ()))}"
                    f" must equal prompt_embeds shape {tuple(prompt_embeds.shape)}"
                )
        if negative_prompt_embeds is not None and negative_prompt:
            raise ValueError("pass either `negative_prompt` or `negative_prompt_embeds`, not both")
        if isinstance(negative_prompt, list):
            if len(check_prompts(negative_prompt)) != batch:
                raise ValueError(f"got {len(negative_prompt)} negative prompts for {batch} prompts")
        elif negative_prompt is not None and not isinstance(negative_prompt, str):
            raise ValueError(
                f"negative_prompt must be a string or a list of strings, got {negative_prompt!r:.80}"
            )
        return batch

    # ------------------------------------------------------------------ generation
    def prepare_latents(
        self, shape: tuple[int, ...], generator, latents: torch.Tensor | None, device: torch.device
    ) -> torch.Tensor:
        """Starting noise (B, C, F, h, w) in the transformer's dtype, times the scheduler's
        `init_noise_sigma`.

        Drawn like diffusers' `randn_tensor`: on the generator's device (then moved), one draw per video when
        `generator` is a list.
        """
        dtype = self.dtype
        if latents is not None:
            if tuple(latents.shape) != shape:
                raise ValueError(
                    f"latents must have shape {shape} (videos, channels, frames, height/"
                    f"{self.vae_scale_factor}, width/{self.vae_scale_factor}), got {tuple(latents.shape)}"
                )
            latents = latents.to(device=device, dtype=dtype)
        elif isinstance(generator, list):
            if len(generator) != shape[0]:
                raise ValueError(f"got {len(generator)} generators for {shape[0]} videos")
            latents = torch.cat(
                [torch.randn((1, *shape[1:]), generator=g, device=g.device, dtype=dtype) for g in generator]
            ).to(device)
        else:
            gen_device = generator.device if generator is not None else device
            latents = torch.randn(shape, generator=generator, device=gen_device, dtype=dtype).to(device)
        return latents * self.scheduler.init_noise_sigma

    def _step_kwargs(self, generator, eta: float) -> dict:
        # Scheduler step() signatures differ: DDIM takes eta, stochastic ones a generator, others neither.
        params = inspect.signature(self.scheduler.step).parameters
        kwargs = {"eta": eta} if "eta" in params else {}
        if "generator" in params:
            kwargs["generator"] = generator
        return kwargs

    def _model_output_for_scheduler(self, noise_pred: torch.Tensor, channels: int) -> torch.Tensor:
        """The part of a (B, C or 2C, ...) model output the scheduler takes (see `uses_learned_variance`)."""
        return noise_pred if uses_learned_variance(self.scheduler) else noise_pred[:, :channels]

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = "",
        num_inference_steps: int = 50,
        timesteps: list[int] | None = None,
        guidance_scale: float = 7.5,
        num_images_per_prompt: int = 1,
        video_length: int = 16,
        height: int | None = 512,
        width: int | None = 512,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[["LattePipeline", int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | tuple[str, ...] = ("latents",),
        clean_caption: bool = True,
        mask_feature: bool = True,
        enable_temporal_attentions: bool = True,
        decode_chunk_size: int | None = 14,
        num_videos_per_prompt: int | None = None,
    ) -> LattePipelineOutput | tuple:
        """Generate videos from text.

        Args:
            prompt: the text (or list of texts) to generate from; or pass `prompt_embeds`.
            negative_prompt: text guided away from (default `""`, as Latte-1 was trained); a string or one per
                prompt. Ignored without guidance.
            num_inference_steps: denoising steps (default 50). More: slower, usually better.
            timesteps: custom descending timesteps instead of `num_inference_steps` (schedulers that support
                it).
            guidance_scale: classifier-free guidance weight (default 7.5); <= 1 turns guidance off (half the
                work).
            num_images_per_prompt: videos per prompt (default 1); diffusers' name, see
                `num_videos_per_prompt`.
            video_length: frames per video (default 16, Latte-1's training length; any count >= 1 runs).
            height, width: pixel size (default 512 x 512; None = the model's trained size). Must be multiples
                of the VAE factor x patch size (16 for Latte-1).
            eta: DDIM eta (default 0, deterministic); ignored by other schedulers.
            generator: a `torch.Generator` (or one per video) for the starting noise and stochastic steps.
            latents: starting noise (B, 4, F, height/8, width/8) instead of drawing it; cast to the model
                dtype.
            prompt_embeds: T5 features (prompts, tokens, Ct) instead of `prompt`; attended to whole.
            negative_prompt_embeds: features for the negative prompt, same shape as `prompt_embeds`.
            output_type: `"pil"` (default; per video a list of PIL images), `"np"` ((B, F, H, W, 3) floats in
                [0, 1]), `"pt"` ((B, F, 3, H, W) tensor in [0, 1]) or `"latent"` (the final latents).
            return_dict: return a `LattePipelineOutput` (default) or a 1-tuple `(frames,)`.
            callback_on_step_end: `fn(pipe, step_index, timestep, tensors) -> dict` called after every step
                with the tensors named in `callback_on_step_end_tensor_inputs` (`latents` by default; also
                `prompt_embeds`, `negative_prompt_embeds`); tensors it returns replace the pipeline's.
                diffusers' `PipelineCallback` objects work too (their `tensor_inputs` are used).
                Setting `pipe._interrupt = True` inside it skips the remaining steps.
            clean_caption: accepted for compatibility; prompts are lower-cased and stripped (diffusers'
                behaviour when bs4/ftfy are not installed), no further cleaning.
            mask_feature: condition each video on its prompt's real tokens only (default True, as Latte-1).
            enable_temporal_attentions: False skips the temporal blocks (frames become independent images).
            decode_chunk_size: frames per VAE decode call (default 14; None = all at once); memory only.
            num_videos_per_prompt: clearer alias of `num_images_per_prompt`.

        Returns:
            `LattePipelineOutput(frames)`, or `(frames,)` when `return_dict=False`.
        """
        # 1. Check inputs
        if hasattr(callback_on_step_end, "tensor_inputs"):  # diffusers PipelineCallback objects
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        if num_videos_per_prompt is not None:
            if num_images_per_prompt not in (1, num_videos_per_prompt):
                raise ValueError(
                    f"num_videos_per_prompt={num_videos_per_prompt} contradicts "
                    f"num_images_per_prompt={num_images_per_prompt}; pass one of them"
                )
            num_images_per_prompt = num_videos_per_prompt
        transformer = _unwrap(self.transformer)
        height = height or transformer.config.sample_size * self.vae_scale_factor
        width = width or transformer.config.sample_size * self.vae_scale_factor
        num_prompts = self.check_inputs(
            prompt,
            height,
            width,
            video_length,
            num_inference_steps,
            timesteps,
            negative_prompt,
            prompt_embeds,
            negative_prompt_embeds,
            num_images_per_prompt,
            output_type,
            callback_on_step_end_tensor_inputs,
            decode_chunk_size,
        )
        device = self.device
        do_cfg = guidance_scale > 1.0
        self._interrupt = False

        # 2. Encode the prompts (batch-1 semantics; see the module docstring)
        prompt_embeds, negative_prompt_embeds, text_mask = self.encode_prompt(
            prompt,
            do_cfg,
            negative_prompt,
            num_images_per_prompt,
            device,
            prompt_embeds,
            negative_prompt_embeds,
            mask_feature,
        )

        # 3. Timesteps
        try:
            if timesteps is not None:
                self.scheduler.set_timesteps(timesteps=list(timesteps), device=device)
            else:
                self.scheduler.set_timesteps(num_inference_steps, device=device)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{type(self.scheduler).__name__} rejected the timesteps: {err}") from err
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)

        # 4. Starting noise
        channels = transformer.config.in_channels
        s = self.vae_scale_factor
        shape = (num_prompts * num_images_per_prompt, channels, video_length, height // s, width // s)
        latents = self.prepare_latents(shape, generator, latents, device)
        step_kwargs = self._step_kwargs(generator, eta)

        # 5. Denoising loop. The prompt-only work (caption projection, cross-attention K/V) is done once, and
        # the variance channels are computed only for schedulers that use them.
        def text_context():
            if do_cfg:  # one batch [negative; positive], each half masked like its video
                text = torch.cat([negative_prompt_embeds, prompt_embeds])
                mask = None if text_mask is None else torch.cat([text_mask, text_mask])
                return transformer.prepare_text(text, mask)
            return transformer.prepare_text(prompt_embeds, text_mask)

        sample_channels = None if uses_learned_variance(self.scheduler) else channels
        self._activate("transformer")
        context = text_context()
        with self.progress_bar(total=len(timesteps)) as bar:
            for i, t in enumerate(timesteps):
                if self._interrupt:
                    continue
                model_input = torch.cat([latents, latents]) if do_cfg else latents
                model_input = self.scheduler.scale_model_input(model_input, t)
                timestep = t.reshape(1).to(device).expand(model_input.shape[0])

                noise_pred = self.transformer(
                    model_input,
                    timestep,
                    context,
                    enable_temporal_attentions=enable_temporal_attentions,
                    return_dict=False,
                    sample_channels=sample_channels,
                )[0]  # (B or 2B, C or 2C, F, h, w)
                if do_cfg:
                    uncond, cond = noise_pred.chunk(2)
                    noise_pred = uncond + guidance_scale * (cond - uncond)
                latents = self.scheduler.step(noise_pred, t, latents, **step_kwargs, return_dict=False)[0]

                if callback_on_step_end is not None:
                    tensors = {
                        "latents": latents,
                        "prompt_embeds": prompt_embeds,
                        "negative_prompt_embeds": negative_prompt_embeds,
                    }
                    out = callback_on_step_end(
                        self, i, t, {k: tensors[k] for k in callback_on_step_end_tensor_inputs}
                    )
                    out = out or {}
                    latents = out.get("latents", latents)
                    if "prompt_embeds" in out or "negative_prompt_embeds" in out:
                        prompt_embeds = out.get("prompt_embeds", prompt_embeds)
                        negative_prompt_embeds = out.get("negative_prompt_embeds", negative_prompt_embeds)
                        context = text_context()
                bar.update()

        # 6. Decode
        if output_type == "latent":
            frames = latents
        else:
            self._activate("vae")
            video = decode_latents(self.vae, latents, chunk_size=decode_chunk_size)  # (B, 3, F, H, W)
            frames = self.postprocess(video, output_type)
        if self._offload_device is not None:
            for name in TORCH_COMPONENTS:
                getattr(self, name).to("cpu")
        return LattePipelineOutput(frames=frames) if return_dict else (frames,)

    @staticmethod
    def postprocess(video: torch.Tensor, output_type: str = "pil"):
        """Decoded video (B, 3, F, H, W) in [-1, 1] -> `output_type` frames in [0, 1] (see `__call__`)."""
        video = (video.float() * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 1, 3, 4)  # (B, F, 3, H, W)
        if output_type == "pt":
            return video
        array = video.permute(0, 1, 3, 4, 2).cpu().numpy()  # (B, F, H, W, 3)
        if output_type == "np":
            return array
        from PIL import Image

        return [[Image.fromarray(f) for f in (v * 255).round().astype("uint8")] for v in array]
