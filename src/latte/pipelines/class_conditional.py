"""Class-conditional and unconditional video generation with the paper's Latte models.

The released checkpoints sample with DDPM ancestral steps over 250 IDDPM-respaced timesteps (kept indices
round(k * 999 / 249) = 0, 4, ..., 995, 999), the learned-range variance, no x0 clipping and no noise at the
last step. diffusers' `DDPMScheduler` with `variance_type="learned_range"` does exactly that when given those
indices as custom timesteps: each step uses beta = 1 - abar_t / abar_prev of the kept pair (tested against
IDDPM's respaced chain). Other diffusers schedulers (DDIM, DPM-Solver++, ...) get the epsilon channels only.

Guidance (UCF101 uses 7.0): the batch is [cond; null] with the null class `num_classes`; only the epsilon
channels are mixed and the conditional half keeps its own variance, as the original `forward_with_cfg`.

Letters in shape comments: B videos, F frames, C latent channels.
"""

import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch

from latte.diffusion.schedules import space_timesteps
from latte.models.io import read_json, write_json
from latte.models.latte import CLASS_NAME, Latte
from latte.models.vae import decode_latents, load_vae
from latte.outputs import write_folder
from latte.pipelines.limits import (
    FINITE_CHECK_EVERY,
    GenerationLimits,
    check_finite,
    check_guidance,
    check_timesteps,
    check_work_size,
    estimate_memory,
)
from latte.pipelines.schedulers import LEARNED_VARIANCE_SCHEDULERS, load_scheduler, uses_learned_variance
from latte.pipelines.text_to_video import (
    OUTPUT_TYPES,
    LattePipeline,
    LattePipelineOutput,
    load_components,
    resolve_pipeline_folder,
)

logger = logging.getLogger(__name__)

PIPELINE_CLASS_NAME = "LatteClassPipeline"
PAPER_GUIDANCE = 7.0  # classifier-free guidance scale of the UCF101 model's sample config
PAPER_STEPS = 250


def paper_scheduler(learn_sigma: bool = True, prediction_type: str = "epsilon"):
    """The training diffusion of every released checkpoint as a diffusers DDPMScheduler: 1000 linear betas
    1e-4..0.02, epsilon prediction (v for models trained so), no clipping, learned-range variance (IDDPM's
    fixed-large without it)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
        variance_type="learned_range" if learn_sigma else "fixed_large", clip_sample=False,
        prediction_type=prediction_type,
    )


def respaced_timesteps(num_train: int, steps: int) -> list[int]:
    """IDDPM's evenly respaced kept indices, descending (250 of 1000: 999, 995, ..., 4, 0)."""
    return sorted(space_timesteps(num_train, steps), reverse=True)


class LatteClassPipeline:
    """Videos from a class-conditional or unconditional `Latte` model.

    ```python
    pipe = LatteClassPipeline.from_original("ucf101.pt", vae="sd-vae-ft-ema")
    videos = pipe(class_labels=[0, 5], generator=torch.Generator().manual_seed(0)).frames  # 2 PIL lists
    ```
    """

    # The denoising conventions are the text pipeline's, shared rather than copied: starting noise drawn
    # like diffusers' randn_tensor in the transformer's dtype, per-scheduler step arguments, the output
    # types, the progress bar, the VAE scale factor and the scheduler setter (it drops
    # `variance_type: learned*` from schedulers that would then keep 3 of the 4 epsilon channels, e.g.
    # DPM-Solver++ built from the DDPM config).
    scheduler = LattePipeline.scheduler
    prepare_latents = LattePipeline.prepare_latents
    _step_kwargs = LattePipeline._step_kwargs
    postprocess = staticmethod(LattePipeline.postprocess)
    set_progress_bar_config = LattePipeline.set_progress_bar_config
    progress_bar = LattePipeline.progress_bar
    vae_scale_factor = LattePipeline.vae_scale_factor

    def __init__(self, vae, transformer: Latte, scheduler):
        self.vae = vae
        self.transformer = transformer
        self.scheduler = scheduler
        self._progress_bar_config: dict = {}
        self.limits = GenerationLimits()  # ceilings checked before any work (latte.pipelines.limits)

    # ------------------------------------------------------------------ components
    @property
    def components(self) -> dict:
        return dict(vae=self.vae, transformer=self.transformer, scheduler=self.scheduler)

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    def to(self, *args, **kwargs) -> "LatteClassPipeline":
        """Move/cast the VAE and the transformer like `nn.Module.to`."""
        self.vae.to(*args, **kwargs)
        self.transformer.to(*args, **kwargs)
        return self

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, torch_dtype: torch.dtype | None = None, *,
        variant: str | None = None, use_safetensors: bool | None = None, device_map=None,
        low_cpu_mem_usage: bool | None = None, **options,
    ):
        """Load `model_index.json`, `transformer/` (our Latte folder), `vae/` (AutoencoderKL), `scheduler/`
        from a folder or a Hugging Face Hub id, with the keywords of `LattePipeline.from_pretrained`.

        A folder without `model_index.json` (as `latte export` writes for class-conditional runs) loads too.
        """
        folder, components = resolve_pipeline_folder(
            "LatteClassPipeline.from_pretrained", pretrained_model_name_or_path, ("vae", "transformer", "scheduler"),
            options, variant=variant, use_safetensors=use_safetensors,
        )
        if (folder / "model_index.json").is_file():
            index = read_json(folder / "model_index.json")
            if index.get("_class_name") != PIPELINE_CLASS_NAME:
                raise ValueError(f"{folder / 'model_index.json'} describes a {index.get('_class_name')!r}, "
                                 f"not a {PIPELINE_CLASS_NAME} (LattePipeline folders: `latte generate`)")
        weights = dict(variant=variant, use_safetensors=use_safetensors)
        loaders = {
            "vae": lambda: load_vae(folder / "vae", torch_dtype, **weights),
            "transformer": lambda: Latte.from_pretrained(folder / "transformer", torch_dtype=torch_dtype, **weights),
            "scheduler": lambda: load_scheduler(folder / "scheduler"),
        }
        return cls(**load_components(loaders, components, device_map, ("vae", "transformer")))

    @classmethod
    def from_original(cls, checkpoint: str | os.PathLike, vae, scheduler=None, num_heads: int | None = None,
                      torch_dtype: torch.dtype | None = None):
        """A pipeline around an original checkpoint (`ucf101.pt`, ...). `vae`: an AutoencoderKL or its
        folder (the checkpoints use Stable Diffusion's `sd-vae-ft-ema`); `scheduler`: `paper_scheduler()`."""
        transformer = Latte.from_original(checkpoint, num_heads=num_heads, torch_dtype=torch_dtype)
        if isinstance(vae, (str, os.PathLike)):
            vae = load_vae(vae, torch_dtype)
        return cls(vae, transformer, scheduler or paper_scheduler(transformer.config.learn_sigma))

    def save_pretrained(self, folder: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the three component folders and `model_index.json` as a new folder (the output rule of
        `latte.outputs`: built beside, then swapped in)."""
        import diffusers

        def fill(tmp: Path) -> None:
            self.transformer.save_pretrained(tmp / "transformer")
            self.vae.save_pretrained(str(tmp / "vae"))
            self.scheduler.save_pretrained(str(tmp / "scheduler"))
            write_json(tmp / "model_index.json", {
                "_class_name": PIPELINE_CLASS_NAME, "_diffusers_version": diffusers.__version__,
                "transformer": ["latte", CLASS_NAME], "vae": ["diffusers", type(self.vae).__name__],
                "scheduler": ["diffusers", type(self.scheduler).__name__],
            })

        return write_folder(folder, fill, overwrite)

    # ------------------------------------------------------------------ generation
    def _labels(self, class_labels, per_label: int) -> torch.Tensor | None:
        """(B,) labels, label-major (each repeated `per_label` times), or None for unconditional models."""
        num_classes = self.transformer.config.num_classes
        if not isinstance(per_label, int) or per_label < 1:
            raise ValueError(f"num_videos_per_label must be an integer >= 1, got {per_label!r}")
        if num_classes == 0:
            if class_labels is not None:
                raise ValueError("this model is unconditional: pass class_labels=None and choose the number "
                                 "of videos with num_videos_per_label")
            return None
        if class_labels is None:
            raise ValueError(f"this model is class-conditional: pass class_labels (0..{num_classes - 1})")
        labels = [class_labels] if isinstance(class_labels, int) else list(class_labels)
        bad = [y for y in labels if not isinstance(y, int) or not 0 <= y < num_classes]
        if not labels or bad:
            raise ValueError(f"class labels must be integers in 0..{num_classes - 1}, got {class_labels!r}")
        return torch.tensor(labels).repeat_interleave(per_label)

    def _set_timesteps(self, num_inference_steps: int, timesteps: list[int] | None, device) -> None:
        scheduler = self.scheduler
        check_timesteps(scheduler, num_inference_steps, timesteps)
        if timesteps is None and type(scheduler).__name__ in LEARNED_VARIANCE_SCHEDULERS:
            # DDPM runs the paper's respaced chain; diffusers' own 250-step grid (996, ..., 0) is another set.
            timesteps = respaced_timesteps(scheduler.config.num_train_timesteps, num_inference_steps)
        try:
            if timesteps is not None:
                scheduler.set_timesteps(timesteps=list(timesteps), device=device)
            else:
                scheduler.set_timesteps(num_inference_steps, device=device)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{type(scheduler).__name__} rejected the timesteps: {err}") from err

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | list[int] | None = None,
        num_videos_per_label: int = 1,
        num_inference_steps: int = PAPER_STEPS,
        timesteps: list[int] | None = None,
        guidance_scale: float | None = None,
        video_length: int | None = None,
        height: int | None = None,
        width: int | None = None,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[["LatteClassPipeline", int, torch.Tensor, dict], dict] | None = None,
        decode_chunk_size: int | None = 14,
    ) -> LattePipelineOutput | tuple:
        """Generate videos.

        Args:
            class_labels: one label or a list (class-conditional models); None for unconditional models.
            num_videos_per_label: videos per label (default 1); for an unconditional model, the video count.
            num_inference_steps: denoising steps, 1..num_train_timesteps (default 250, the paper's). DDPM
                schedulers run IDDPM's respaced chain; others their own spacing.
            timesteps: custom strictly descending timesteps in 0..num_train_timesteps-1 instead (schedulers
                that support it).
            guidance_scale: classifier-free guidance on the epsilon channels; default 7.0 (the UCF101 setting)
                for class-conditional models with a null class, 1.0 (off) otherwise.
            video_length, height, width: frames and pixel size (default: the model's trained size).
            eta: DDIM eta (default 0); ignored by other schedulers.
            generator: a `torch.Generator` (or one per video) for the noise; seeds make runs repeatable.
            latents: starting noise (B, C, F, height/8, width/8) instead of drawing it.
            output_type: "pil" (default; per video a list of PIL images), "np" ((B, F, H, W, 3) in [0, 1]),
                "pt" ((B, F, 3, H, W) in [0, 1]) or "latent" (the final latents).
            return_dict: return a `LattePipelineOutput` (default) or a 1-tuple `(frames,)`.
            callback_on_step_end: `fn(pipe, step_index, timestep, {"latents": latents}) -> dict` after every
                step; a returned "latents" replaces the pipeline's.
            decode_chunk_size: frames per VAE decode call (default 14; None = all at once); memory only.

        As in `LattePipeline`: the arguments, the scheduler's step limits and the work size (`pipe.limits`)
        are checked before any work, and latents that turn NaN or infinite stop the run with
        `NonFiniteLatentsError` before anything is decoded.
        """
        # 1. Check inputs
        transformer, config = self.transformer, self.transformer.config
        labels = self._labels(class_labels, num_videos_per_label)
        if guidance_scale is None:
            guidance_scale = PAPER_GUIDANCE if config.has_null_class else 1.0
        guidance_scale = check_guidance(guidance_scale)
        do_cfg = guidance_scale > 1.0
        if do_cfg and not config.has_null_class:
            raise ValueError(f"guidance_scale={guidance_scale} needs a class-conditional model trained with "
                             "label dropout (a null class); use guidance_scale=1")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {list(OUTPUT_TYPES)}, got {output_type!r}")
        check_timesteps(self.scheduler, num_inference_steps, timesteps)
        s = self.vae_scale_factor
        video_length = config.num_frames if video_length is None else video_length
        height = config.input_size * s if height is None else height
        width = config.input_size * s if width is None else width
        if isinstance(video_length, bool) or not isinstance(video_length, int) or video_length < 1:
            raise ValueError(f"video_length (frames) must be an integer >= 1, got {video_length!r}")
        step = s * config.patch_size
        for name, value in (("height", height), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < step or value % step:
                raise ValueError(f"{name} must be a positive multiple of {step} (VAE factor {s} x patch size "
                                 f"{config.patch_size}), got {value!r}")
        if latents is not None and not bool(torch.isfinite(latents).all()):
            raise ValueError("latents contain NaN or infinite values")
        batch = num_videos_per_label if labels is None else len(labels)
        device = self.device
        phases = estimate_memory(
            videos=batch, model_batch=batch * (2 if do_cfg else 1), frames=video_length, height=height,
            width=width, scale=s, patch=config.patch_size, latent_channels=config.in_channels,
            model_width=config.hidden_size, model_bytes=self.dtype.itemsize, vae=self.vae,
            decode_chunk=decode_chunk_size, decoded=output_type != "latent",
        )
        check_work_size(self.limits, video_length, height, width, phases, device)

        # 2. Timesteps and starting noise
        self._set_timesteps(num_inference_steps, timesteps, device)
        channels = config.in_channels
        shape = (batch, channels, video_length, height // s, width // s)
        # Noise is drawn in the transformer's dtype, but the diffusion arithmetic stays float32, as in the
        # original fp16 sampling (its float64 schedule tables promote every step to float32).
        latents = self.prepare_latents(shape, generator, latents, device).float()
        step_kwargs = self._step_kwargs(generator, eta)
        if labels is not None:
            labels = labels.to(device)
            if do_cfg:
                labels = torch.cat([labels, torch.full_like(labels, config.num_classes)])  # [cond; null]

        # 3. Denoising loop
        timesteps = self.scheduler.timesteps
        with self.progress_bar(total=len(timesteps)) as bar:
            for i, t in enumerate(timesteps):
                model_input = torch.cat([latents, latents]) if do_cfg else latents
                model_input = self.scheduler.scale_model_input(model_input, t)
                timestep = t.reshape(1).to(device).expand(model_input.shape[0])
                out = transformer(model_input, timestep, class_labels=labels, return_dict=False)[0].float()
                if do_cfg:
                    cond, uncond = out.chunk(2)
                    eps = uncond[:, :channels] + guidance_scale * (cond[:, :channels] - uncond[:, :channels])
                    out = torch.cat([eps, cond[:, channels:]], dim=1)  # (B, C or 2C, F, h, w)
                out = out if uses_learned_variance(self.scheduler) else out[:, :channels]
                latents = self.scheduler.step(out, t, latents, **step_kwargs, return_dict=False)[0]
                if callback_on_step_end is not None:
                    latents = (callback_on_step_end(self, i, t, {"latents": latents}) or {}).get("latents",
                                                                                                 latents)
                if (i + 1) % FINITE_CHECK_EVERY == 0:
                    check_finite(latents, i + 1, len(timesteps), lambda: self._explain_non_finite(guidance_scale))
                bar.update()
        check_finite(latents, len(timesteps), len(timesteps), lambda: self._explain_non_finite(guidance_scale))

        # 4. Decode
        if output_type == "latent":
            frames = latents
        else:
            frames = self.postprocess(decode_latents(self.vae, latents, chunk_size=decode_chunk_size),
                                      output_type)
        return LattePipelineOutput(frames=frames) if return_dict else (frames,)

    def _explain_non_finite(self, guidance_scale: float) -> str:
        """The likely cause of non-finite latents, for the error message."""
        for name, param in self.transformer.named_parameters():
            if not bool(torch.isfinite(param).all()):
                return f"The transformer's weight {name} holds NaN or infinite values: reload or re-export it."
        scheduler = self.scheduler
        return (
            f"Likely causes: the scheduler ({type(scheduler).__name__} with {len(scheduler.timesteps)} steps: try "
            f"fewer steps or another scheduler), the guidance scale ({guidance_scale:g}), or a callback's latents."
        )
