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

import contextlib
import inspect
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from latte.devices import check_device
from latte.models.io import import_torchao_quietly, read_json, write_json
from latte.models.latte_t2v import DIFFUSERS_CLASS_NAME, LatteT2VTransformer
from latte.models.text_encoder import (
    TOKENIZER_CLASSES,
    check_prompts,
    encode_text,
    load_text_encoder,
    load_tokenizer,
    preprocess_prompt,
)
from latte.models.vae import decode_latents, load_vae, vae_scale_factor
from latte.outputs import write_folder
from latte.pipelines.defaults import (
    FOLDER_DEFAULTS_KEY,
    check_generate_defaults,
    default_slow_motion,
    resolve_settings,
)
from latte.pipelines.limits import (
    FINITE_CHECK_EVERY,
    GenerationLimits,
    check_finite,
    check_guidance,
    check_timesteps,
    check_work_size,
    estimate_memory,
)
from latte.pipelines.long_video import (
    KnownLatents,
    TemporalWindows,
    WindowedTransformer,
    check_slow_motion,
    read_condition,
)
from latte.pipelines.offload import SequentialOffload
from latte.pipelines.schedulers import keep_latte_settings, load_scheduler, scheduler_names, uses_learned_variance

logger = logging.getLogger(__name__)

PIPELINE_CLASS_NAME = "LattePipeline"
OUTPUT_TYPES = ("pil", "np", "pt", "latent")
CALLBACK_TENSOR_INPUTS = ("latents", "prompt_embeds", "negative_prompt_embeds")
TORCH_COMPONENTS = ("text_encoder", "transformer", "vae")


def _unwrap(module):
    """The module inside a `torch.compile` wrapper (what gets saved and moved)."""
    return getattr(module, "_orig_mod", module)


def resolve_pipeline_folder(
    caller: str, name_or_path: str | os.PathLike, names: tuple[str, ...], options: dict, **weights
) -> tuple[Path, dict]:
    """(the local folder of a pipeline with components `names`, the components given ready). `options` are a
    pipeline `from_pretrained`'s keywords: the hub keywords (`latte.models.hub.HUB_KEYWORDS`, used with the
    `weights` keywords `variant`, `use_safetensors` to fetch a hub id) and ready components by name, whose
    folders are then not fetched. Any other keyword is a ValueError naming it: the diffusers keywords latte has
    no use for (max_memory, quantization_config, ...) end here."""
    from latte.models.hub import HUB_KEYWORDS, PIPELINE_WEIGHTS, resolve_model_folder

    hub = {k: v for k, v in options.items() if k in HUB_KEYWORDS}
    components = {k: v for k, v in options.items() if k not in HUB_KEYWORDS}
    unknown = sorted(set(components) - set(names))
    if unknown:
        raise ValueError(
            f"{caller} does not support {', '.join(unknown)}; it takes revision, variant, use_safetensors, "
            "cache_dir, local_files_only, token, force_download, device_map and ready components "
            f"({', '.join(names)})"
        )
    needed = {name: PIPELINE_WEIGHTS[name] for name in names if name not in components}
    folder = resolve_model_folder(name_or_path, needed, **weights, **hub)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder not found: {folder}")
    return folder, components


def load_components(loaders: dict[str, Callable], components: dict, device_map, modules: tuple[str, ...]) -> dict:
    """Every component by name: the ready one from `components`, else `loaders[name]()`; then the torch
    `modules` among them moved where `device_map` puts them (`latte.models.placement`)."""
    from latte.models.placement import component_devices, module_bytes

    loaded = {name: components[name] if name in components else load() for name, load in loaders.items()}
    sizes = {name: module_bytes(loaded[name]) for name in modules}
    for name, device in component_devices(device_map, sizes).items():
        loaded[name] = loaded[name].to(device)
    return loaded


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
        self._generate_defaults: dict = {}
        self.limits = GenerationLimits()  # ceilings checked before any work (latte.pipelines.limits)
        self._offload_device: torch.device | None = None
        self._sequential: SequentialOffload | None = None
        self._negative_cache: dict = {}  # (encoder id, text, length, device) -> (1, L, Ct) negative embedding
        # Before an adapter's new words: (Rust tokenizer, embedding rows, the spare rows new ids took over).
        self._base_vocabulary: tuple | None = None
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
    def generate_defaults(self) -> dict:
        """The model folder's own settings for the arguments a call leaves at None (`model_index.json`'s
        `_generate_defaults`: steps, guidance, frames, height, width, fps, slow_motion; see
        `latte.pipelines.defaults`).
        Assignable (checked); `save_pretrained` writes them back."""
        return self._generate_defaults

    @generate_defaults.setter
    def generate_defaults(self, defaults: dict) -> None:
        self._generate_defaults = check_generate_defaults(defaults, "generate_defaults")

    def generation_settings(
        self, num_inference_steps=None, guidance_scale=None, video_length=None, height=None, width=None
    ) -> dict:
        """The values a call uses: each argument given, else the folder's default (`generate_defaults`),
        else diffusers' (50 steps, guidance 7.5) or the transformer's trained frames and size (16 frames of
        512 x 512 for Latte-1). Keys: steps, guidance, frames, height, width."""
        config = _unwrap(self.transformer).config
        return resolve_settings(
            self._generate_defaults, config.video_length, config.sample_size * self.vae_scale_factor,
            steps=num_inference_steps, guidance=guidance_scale, frames=video_length, height=height, width=width,
        )

    def resolve_slow_motion(self, slow_motion: float | None, frames: int, long_video: bool = True,
                            extension: bool = False) -> float:
        """`slow_motion` if given, else the folder's default for `frames` new frames (its `slow_motion` cap, see
        `latte.pipelines.defaults`), else 1; always 1 by default for plain attention and for extensions, whose
        new frames keep the given clip's speed."""
        if slow_motion is not None:
            return slow_motion
        if not long_video or extension:
            return 1
        return default_slow_motion(self._generate_defaults, frames, _unwrap(self.transformer).config.video_length)

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    def to(self, *args, **kwargs) -> "LattePipeline":
        """Move/cast the torch components like `nn.Module.to`: `pipe.to("cuda")`, `pipe.to(torch.float16)`,
        `pipe.to(device=..., dtype=...)`. Turns CPU offload off."""
        self._remove_sequential_offload()
        for name in TORCH_COMPONENTS:
            getattr(self, name).to(*args, **kwargs)
        self._offload_device = None
        self._negative_cache.clear()
        return self

    def enable_model_cpu_offload(self, device: str | torch.device = "cuda") -> None:
        """Keep every model on the CPU and move each to `device` only while it runs (text encoder, then the
        transformer, then the VAE): peak accelerator memory is the largest single model. A device this
        machine does not have is an error here, not at the first call."""
        device = check_device(device, "enable_model_cpu_offload device")
        self.to("cpu")
        self._offload_device = device

    def enable_sequential_cpu_offload(self, device: str | torch.device = "cuda") -> None:
        """Keep every weight on the CPU and copy each block (transformer block, T5 layer, VAE block) to
        `device` only while it runs, with each model's small remaining parts while that model runs: the least
        accelerator memory, at the cost of copying the weights at every step. Same outputs as without offload
        on `device`. `pipe.to(...)` turns it off (see `latte.pipelines.offload`)."""
        device = check_device(device, "enable_sequential_cpu_offload device")
        self.to("cpu")
        models = {name: _unwrap(getattr(self, name)) for name in TORCH_COMPONENTS}
        self._sequential = SequentialOffload(models, device)
        self._offload_device = device

    def _remove_sequential_offload(self) -> None:
        if self._sequential is not None:
            self._sequential.remove()
            self._sequential = None

    def _activate(self, name: str | None) -> None:
        """Under CPU offload: `name` on the execution device, the other models on the CPU (None: all on the
        CPU)."""
        if self._sequential is not None:
            self._sequential.activate(name)
        elif self._offload_device is not None:
            for other in TORCH_COMPONENTS:
                getattr(self, other).to(self._offload_device if other == name else "cpu")

    def quantize(self, mode: str) -> None:
        """Quantize the models in place, lossy and for good: `"int8-dynamic"` (int8 weights and activations of the
        transformer blocks' linears) or `"int8"` (int8 weight-only, transformer blocks and T5). Quantize after
        `to(device, dtype)` and before `torch.compile`; see `latte.acceleration.quantize`."""
        from latte.acceleration.quantize import quantize_pipeline

        quantize_pipeline(self, mode)
        self._negative_cache.clear()  # embeddings of the unquantized T5

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
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        torch_dtype: torch.dtype | None = None,
        *,
        variant: str | None = None,
        use_safetensors: bool | None = None,
        device_map=None,
        low_cpu_mem_usage: bool | None = None,
        **options,
    ) -> "LattePipeline":
        """Load a diffusers-layout model: `model_index.json` plus `tokenizer/`, `text_encoder/`, `vae/`,
        `transformer/`, `scheduler/`, from a local folder or a Hugging Face Hub id (`"maxin-cn/Latte-1"`).

        Args:
            pretrained_model_name_or_path: a folder, or a hub id resolved through the hub cache (see
                `latte.models.hub`; offline, `HF_HUB_OFFLINE=1`, only a cached snapshot is used).
            torch_dtype: casts the three models (the scheduler stays float32).
            variant: e.g. "fp16": `diffusion_pytorch_model.fp16.safetensors` / `model.fp16.safetensors` (or their
                shards) for every model; a missing variant file is an error naming it.
            use_safetensors: None (safetensors, else `.bin`), True (safetensors only), False (`.bin` only).
            device_map: where the models go (see `latte.models.placement`): a device, "balanced"/"auto"
                (whole components over the visible GPUs) or `{component: device}`; None leaves them on the CPU.
            low_cpu_mem_usage: accepted for diffusers compatibility; the transformer is always built without
                a first random initialisation.
            options: for hub ids `revision`, `cache_dir`, `local_files_only`, `token`, `force_download`, as in
                diffusers; and ready components to use instead of loading them (`transformer=my_transformer`).
        """
        expected = {
            "tokenizer": TOKENIZER_CLASSES,
            "text_encoder": ("T5EncoderModel",),
            "vae": ("AutoencoderKL",),
            "transformer": (DIFFUSERS_CLASS_NAME,),
            "scheduler": tuple(scheduler_names()),
        }
        folder, components = resolve_pipeline_folder(
            "LattePipeline.from_pretrained", pretrained_model_name_or_path, tuple(expected), options,
            variant=variant, use_safetensors=use_safetensors,
        )
        index = read_json(folder / "model_index.json")
        for name, allowed in expected.items():
            entry = index.get(name)
            if name not in components and not (
                isinstance(entry, list) and len(entry) == 2 and entry[1] in allowed
            ):
                raise ValueError(
                    f"{folder / 'model_index.json'}: component {name!r} is {entry!r}; "
                    f"expected [library, class] with class one of {list(allowed)}"
                )
        generate_defaults = check_generate_defaults(
            index.get(FOLDER_DEFAULTS_KEY, {}), str(folder / "model_index.json")
        )
        import_torchao_quietly()  # before transformers' model classes import it loudly
        import transformers

        weights = dict(variant=variant, use_safetensors=use_safetensors)
        loaders = {
            "tokenizer": lambda: load_tokenizer(folder / "tokenizer", getattr(transformers, index["tokenizer"][1])),
            "text_encoder": lambda: load_text_encoder(
                folder / "text_encoder", transformers.T5EncoderModel, torch_dtype, **weights
            ),
            "vae": lambda: load_vae(folder / "vae", torch_dtype, **weights),
            "transformer": lambda: LatteT2VTransformer.from_pretrained(
                folder, subfolder="transformer", torch_dtype=torch_dtype, **weights
            ),
            "scheduler": lambda: load_scheduler(folder / "scheduler"),
        }
        pipe = cls(**load_components(loaders, components, device_map, TORCH_COMPONENTS))
        pipe.generate_defaults = generate_defaults
        return pipe

    def save_pretrained(self, folder: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the diffusers layout (loadable by diffusers' `LattePipeline` too) as a new folder: built
        beside `folder`, then swapped in, so it is never half-written; an existing folder is replaced only if
        latte wrote it or `overwrite=True` (the output rule of `latte.outputs`). `generate_defaults` are kept
        in `model_index.json`."""
        import diffusers

        def fill(tmp: Path) -> None:
            index = {"_class_name": PIPELINE_CLASS_NAME, "_diffusers_version": diffusers.__version__}
            if self._generate_defaults:
                index[FOLDER_DEFAULTS_KEY] = dict(self._generate_defaults)
            for name, component in self.components.items():
                component = _unwrap(component)
                component.save_pretrained(str(tmp / name))
                library = "transformers" if name in ("tokenizer", "text_encoder") else "diffusers"
                class_name = DIFFUSERS_CLASS_NAME if name == "transformer" else type(component).__name__
                index[name] = [library, class_name]
            write_json(tmp / "model_index.json", index)

        with self._sequential.originals() if self._sequential is not None else contextlib.nullcontext():
            return write_folder(folder, fill, overwrite)

    # ------------------------------------------------------------------ LoRA adapters (latte.models.lora)
    def load_lora_weights(
        self, path: str | os.PathLike, adapter_name: str | None = None, scale: float = 1.0
    ) -> None:
        """Load a LoRA adapter folder (peft's format, as `latte export --lora` writes) onto the transformer, active
        with weight `scale` beside the adapters already loaded; `adapter_name` defaults to the folder's name. An
        adapter trained with new words also adds them to the tokenizer and text encoder. Checked first: nothing
        changes when it does not fit."""
        from latte.models.lora import load_adapter, read_words
        from latte.models.text_encoder import add_words, words_to_add

        words = read_words(path)
        new = words_to_add(self.tokenizer, self.text_encoder, words)  # checks the words, changes nothing
        load_adapter(_unwrap(self.transformer), path, adapter_name or Path(path).name, scale)  # checks, then loads
        if new:
            if self._base_vocabulary is None:
                table = self.text_encoder.get_input_embeddings().weight
                spare = table[len(self.tokenizer):].detach().clone()
                self._base_vocabulary = (self.tokenizer.backend_tokenizer, table.shape[0], spare)
            add_words(self.tokenizer, self.text_encoder, words)
            self._negative_cache.clear()

    def set_adapters(self, adapter_names: str | list[str], adapter_weights: float | list[float] | None = None):
        """Make these adapters the active ones, with these weights (default: as loaded)."""
        from latte.models.lora import set_adapters

        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        weights = [adapter_weights] * len(names) if isinstance(adapter_weights, (int, float)) else adapter_weights
        set_adapters(_unwrap(self.transformer), names, weights)

    def fuse_lora(self) -> None:
        """Add the active adapters into the transformer's weights: plain speed, same outputs (float rounding)."""
        from latte.models.lora import fuse

        fuse(_unwrap(self.transformer))

    def unfuse_lora(self) -> None:
        from latte.models.lora import unfuse

        unfuse(_unwrap(self.transformer))

    def unload_lora_weights(self) -> None:
        """Remove every adapter: the transformer is the base model again, bit for bit, and the tokenizer and text
        encoder lose the adapters' new words; or, after `fuse_lora`, a plain model with the fused adapters (and
        their words) built in."""
        from latte.models.lora import lora_layers, unload

        model = _unwrap(self.transformer)
        fused = any(layer.merged for layer in lora_layers(model))
        unload(model)
        if self._base_vocabulary is not None and not fused:  # fused adapters still read their new words
            self._remove_new_words()
        self._base_vocabulary = None

    def _remove_new_words(self) -> None:
        """The tokenizer and text encoder as they were before an adapter added words."""
        tokenizer, size, spare = self._base_vocabulary
        self.tokenizer._tokenizer = tokenizer  # see latte.models.text_encoder.add_words
        self.text_encoder.resize_token_embeddings(size, mean_resizing=False)
        with torch.no_grad():
            self.text_encoder.get_input_embeddings().weight[size - len(spare):] = spare
        self._negative_cache.clear()

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
            if isinstance(value, bool) or not isinstance(value, int) or value < step or value % step:
                raise ValueError(
                    f"{name} must be a positive multiple of {step} (VAE factor "
                    f"{self.vae_scale_factor} x patch size {transformer.config.patch_size}), got {value!r}"
                )
        if isinstance(video_length, bool) or not isinstance(video_length, int) or video_length < 1:
            raise ValueError(f"video_length (frames) must be an integer >= 1, got {video_length!r}")
        check_timesteps(self.scheduler, num_inference_steps, timesteps)
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
        num_inference_steps: int | None = None,
        timesteps: list[int] | None = None,
        guidance_scale: float | None = None,
        num_images_per_prompt: int = 1,
        video_length: int | None = None,
        height: int | None = None,
        width: int | None = None,
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
        image=None,
        video=None,
        context_frames: int | None = None,
        long_video: bool = True,
        slow_motion: float | None = None,
    ) -> LattePipelineOutput | tuple:
        """Generate videos from text.

        Args:
            prompt: the text (or list of texts) to generate from; or pass `prompt_embeds`.
            negative_prompt: text guided away from (default `""`, as Latte-1 was trained); a string or one per
                prompt. Ignored without guidance.
            num_inference_steps: denoising steps, 1..the scheduler's num_train_timesteps (default: the
                folder's, else 50). More: slower, usually better.
            timesteps: custom timesteps instead of `num_inference_steps`: strictly descending integers in
                0..num_train_timesteps-1 (schedulers that support it).
            guidance_scale: classifier-free guidance weight, finite (default: the folder's, else 7.5); <= 1
                turns guidance off (half the work).
            num_images_per_prompt: videos per prompt (default 1); diffusers' name, see
                `num_videos_per_prompt`.
            video_length: frames per video (default: the folder's, else the transformer's trained length, 16
                for Latte-1); any count >= 1 up to `pipe.limits.max_frames` runs.
            height, width: pixel size (default: the folder's, else the trained size, 512 x 512 for Latte-1).
                Multiples of the VAE factor x patch size (16 for Latte-1).
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
            image: image-to-video: the first frame (a PIL image, a file path, or an (H, W, 3) array, uint8 or
                floats in [0, 1]), scaled to cover height x width and centre-cropped; every video starts with it.
            video: video extension: a clip (a file path, a list of PIL images or an (F, H, W, 3) array) to
                continue by `video_length` new frames, conditioned on its last `context_frames` frames (default
                half the training length). The output is the clip (resized like `image`) followed by the new
                frames; with `output_type="latent"`, the latents of the context and the new frames.
            context_frames: see `video`.
            long_video: for more frames than the transformer's training length, FreeNoise sampling (windowed
                temporal attention and rescheduled starting noise, see `latte.pipelines.long_video`; default);
                False attends over all frames at once. No effect on shorter videos.
            slow_motion: a number >= 1; S plays the motion S times slower (temporal windows of S times the
                training length, their frame positions interpolated), so a long video keeps moving where the
                model's motion would otherwise fill the frame; at `video_length` = S x the training length the
                whole video is one training clip's motion. Default: 1 (the model's own speed), except that a
                folder's `slow_motion` default (the shipped shapes model's: 4) slows a longer text- or
                image-to-video down to one training clip's motion, by min(that cap, frames / training length);
                an extension keeps its clip's speed.

        Defaults: an argument left at None takes the model folder's value (`pipe.generate_defaults`), else
        diffusers' (see `generation_settings`). Before any work the call checks the arguments, the scheduler's
        step limits and the work size (`pipe.limits`: frames, pixels, estimated memory against the device's
        free memory); it logs a warning for prompt words the tokenizer cannot represent and for frames or
        sizes beyond the model's training. Latents that turn NaN or infinite (checked every
        `FINITE_CHECK_EVERY` steps and after the last) stop the run with `NonFiniteLatentsError` (a
        ValueError) before anything is decoded.

        Returns:
            `LattePipelineOutput(frames)`, or `(frames,)` when `return_dict=False`.
        """
        # 1. Check inputs: everything that can be known wrong is refused before any work
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
        settings = self.generation_settings(num_inference_steps, guidance_scale, video_length, height, width)
        num_inference_steps, video_length = settings["steps"], settings["frames"]
        height, width = settings["height"], settings["width"]
        guidance_scale = check_guidance(settings["guidance"])
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
        condition = read_condition(image, video, height, width, context_frames, transformer.config.video_length)
        slow_motion = self.resolve_slow_motion(slow_motion, video_length, long_video, extension=video is not None)
        # an extension also denoises its context frames, placed first
        video_length += condition.added_frames if condition is not None else 0
        check_slow_motion(slow_motion, long_video)
        windows = (TemporalWindows.for_frames(transformer.config.video_length, video_length, slow_motion)
                   if long_video else None)
        for name, tensor in (("latents", latents), ("prompt_embeds", prompt_embeds),
                             ("negative_prompt_embeds", negative_prompt_embeds)):
            if isinstance(tensor, torch.Tensor) and not bool(torch.isfinite(tensor).all()):
                raise ValueError(f"{name} contain NaN or infinite values")
        device = self.device
        do_cfg = guidance_scale > 1.0
        videos = num_prompts * num_images_per_prompt
        self._check_work_size(videos, do_cfg, video_length, height, width, output_type, decode_chunk_size)
        if prompt is not None:
            self._warn_unrepresented_words(check_prompts(prompt))
        self._warn_beyond_training(video_length, height, width)
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
        for embeds in (prompt_embeds, negative_prompt_embeds):
            if embeds is not None and not bool(torch.isfinite(embeds).all()):
                hint = " (T5 overflows in float16: use bfloat16 or float32)" if embeds.dtype == torch.float16 else ""
                raise ValueError(f"the text encoder produced NaN or infinite prompt embeddings{hint}; check its "
                                 "weights")

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
        shape = (videos, channels, video_length, height // s, width // s)
        noise_given = latents is not None
        latents = self.prepare_latents(shape, generator, latents, device)
        if windows is not None and not noise_given:
            latents = windows.reschedule_noise(latents, generator)
        known = None
        if condition is not None:
            self._activate("vae")
            known = KnownLatents.for_steps(condition.encode(self.vae, videos, device, latents.dtype),
                                           latents / self.scheduler.init_noise_sigma, len(timesteps))
        step_kwargs = self._step_kwargs(generator, eta)

        # 5. Denoising loop. The prompt-only work (caption projection, cross-attention K/V) is done once, and
        # the variance channels are computed only for schedulers that use them.
        def text_context():
            text, mask = prompt_embeds, text_mask
            if do_cfg:  # one batch [negative; positive], each half masked like its video
                text = torch.cat([negative_prompt_embeds, prompt_embeds])
                mask = None if text_mask is None else torch.cat([text_mask, text_mask])
            if self._sequential is None:
                return transformer.prepare_text(text, mask)
            # prepare_text uses the cross-attention K/V projections outside their blocks' forward
            with self._sequential.loaded(block.attn2 for block in transformer.transformer_blocks):
                return transformer.prepare_text(text, mask)

        sample_channels = None if uses_learned_variance(self.scheduler) else channels
        model = self.transformer if windows is None else WindowedTransformer(transformer, windows)
        self._activate("transformer")
        context = text_context()
        with self.progress_bar(total=len(timesteps)) as bar:
            for i, t in enumerate(timesteps):
                if self._interrupt:
                    continue
                if known is not None:
                    latents = known.noised(latents, self.scheduler, t, i)
                model_input = torch.cat([latents, latents]) if do_cfg else latents
                model_input = self.scheduler.scale_model_input(model_input, t)
                timestep = t.reshape(1).to(device).expand(model_input.shape[0])

                noise_pred = model(
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
                if (i + 1) % FINITE_CHECK_EVERY == 0:
                    check_finite(latents, i + 1, len(timesteps), lambda: self._explain_non_finite(guidance_scale))
                bar.update()
        check_finite(latents, len(timesteps), len(timesteps), lambda: self._explain_non_finite(guidance_scale))
        if known is not None:
            latents = known.clean(latents)

        # 6. Decode
        if output_type == "latent":
            frames = latents
        else:
            self._activate("vae")
            video = decode_latents(self.vae, latents, chunk_size=decode_chunk_size)  # (B, 3, F, H, W)
            if condition is not None:
                video = condition.output_video(video)
            frames = self.postprocess(video, output_type)
        self._activate(None)
        return LattePipelineOutput(frames=frames) if return_dict else (frames,)

    def _check_work_size(self, videos, do_cfg, frames, height, width, output_type, decode_chunk_size) -> None:
        """`check_work_size` with this pipeline's models: refuse before any work what cannot fit."""
        config = _unwrap(self.transformer).config
        phases = estimate_memory(
            videos=videos, model_batch=videos * (2 if do_cfg else 1), frames=frames, height=height, width=width,
            scale=self.vae_scale_factor, patch=config.patch_size, latent_channels=config.in_channels,
            model_width=config.width, model_bytes=self.dtype.itemsize, vae=self.vae,
            decode_chunk=decode_chunk_size, decoded=output_type != "latent",
        )
        resident = 0  # model offload to an accelerator moves one whole model in at a time
        if self._sequential is None and self._offload_device is not None and self._offload_device.type != "cpu":
            resident = max(sum(p.numel() * p.element_size() for p in getattr(self, name).parameters())
                           for name in TORCH_COMPONENTS)
        check_work_size(self.limits, frames, height, width, phases, self.device, resident)

    def _explain_non_finite(self, guidance_scale: float) -> str:
        """The likely cause of non-finite latents, for the error message."""
        with self._sequential.originals() if self._sequential is not None else contextlib.nullcontext():
            for name, param in _unwrap(self.transformer).named_parameters():
                if not bool(torch.isfinite(param).all()):
                    return f"The transformer's weight {name} holds NaN or infinite values: reload or re-export it."
        fp16 = " or float16 overflow (try bfloat16 or float32)" if self.dtype == torch.float16 else ""
        scheduler = self.scheduler
        return (
            f"Likely causes: the scheduler ({type(scheduler).__name__} with {self._num_timesteps} steps of its "
            f"{scheduler.config.num_train_timesteps} training timesteps: try fewer steps or another scheduler), "
            f"the guidance scale ({guidance_scale:g}: try 1 to 10){fp16}, or a callback's latents."
        )

    def _warn_unrepresented_words(self, prompts: list[str]) -> None:
        words = unrepresented_words(self.tokenizer, prompts)
        if words:
            logger.warning(
                "the tokenizer cannot represent %s (split into single letters or unknown pieces): a model "
                "learns such a word only from captions spelling it (as a LoRA for a new word does) and otherwise "
                "mostly ignores it", ", ".join(map(repr, words))
            )

    def _warn_beyond_training(self, frames: int, height: int, width: int) -> None:
        config = _unwrap(self.transformer).config
        size = config.sample_size * self.vae_scale_factor
        if frames > config.video_length or height > size or width > size:
            logger.warning(
                "%d frames of %d x %d is beyond what this model was trained on (%d frames of %d x %d): expect "
                "degraded videos", frames, height, width, config.video_length, size, size
            )

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


def unrepresented_words(tokenizer, prompts: list[str]) -> list[str]:
    """Words of `prompts` (as the model sees them) that the tokenizer has no pieces for: split into unknown
    pieces, or into single characters (a word the vocabulary never saw, e.g. "cat" for a shapes-only model)."""
    words = dict.fromkeys(word for prompt in prompts for word in re.findall(r"[\w'-]+", preprocess_prompt(prompt)))
    found = []
    for word in words:
        pieces = tokenizer.tokenize(word)
        letters = [piece.lstrip("\u2581") for piece in pieces]
        if tokenizer.unk_token in pieces or (len(word) > 1 and all(len(piece) <= 1 for piece in letters)):
            found.append(word)
    return found
