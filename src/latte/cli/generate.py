"""`latte generate PROMPT -o out.mp4`: one text-to-video generation with a Latte-1-layout model folder."""

import logging
import time
from dataclasses import dataclass, fields
from pathlib import Path

logger = logging.getLogger(__name__)

DTYPES = ("fp32", "fp16", "bf16")
# Optional per-folder defaults for this command, in model_index.json (diffusers ignores `_` keys), e.g.
# "_generate_defaults": {"steps": 25, "guidance": 4.0, "fps": 8}. Flags on the command line win.
FOLDER_DEFAULTS_KEY = "_generate_defaults"


@dataclass
class GenerateOptions:
    prompt: str
    output: Path  # .mp4, .gif, or a folder for PNG frames
    model: Path | None = None  # None: the shipped default model, if installed
    steps: int | None = None  # None: the folder's default, else 50
    guidance: float | None = None  # None: the folder's default, else 7.5; <= 1 turns guidance off
    seed: int = 0
    frames: int | None = None  # None: the folder's default, else the transformer's video_length (16)
    height: int | None = None  # None: the folder's default, else transformer sample_size x VAE factor
    width: int | None = None
    negative_prompt: str = ""
    scheduler: str | None = None  # a diffusers scheduler class name; None: the folder's scheduler
    dtype: str = "fp32"
    device: str | None = None  # None: cuda if available, else cpu
    fps: float | None = None  # None: the folder's default, else 8
    teacache: float = 0.0  # TeaCache threshold (approximate step skipping); 0 = off, every step computed


BUILTIN_DEFAULTS = {"steps": 50, "guidance": 7.5, "fps": 8.0}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "generate",
        help="text to video with a Latte-1 model folder",
        description="Generate one video from a prompt with a diffusers-layout Latte model folder (Latte-1 or "
        "the shipped default model) and write it as .mp4 (H.264), .gif, or a folder of PNG frames.",
    )
    p.add_argument("prompt", help="what the video shows")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .mp4, .gif, or folder for PNGs")
    p.add_argument("--model", type=Path, default=None,
                   help="model folder (model_index.json, transformer/, vae/, text_encoder/, tokenizer/, "
                   "scheduler/); default: the shipped model, if installed")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's, else 50)")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale, 1 = off (default: the model's, else 7.5)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--frames", type=int, default=None, help="number of frames (default: the model's, 16)")
    p.add_argument("--height", type=int, default=None, help="pixels (default: the model's trained size)")
    p.add_argument("--width", type=int, default=None, help="pixels (default: the model's trained size)")
    p.add_argument("--negative-prompt", default="", help='text to steer away from (default "")')
    p.add_argument("--scheduler", default=None,
                   help="diffusers scheduler class, e.g. DPMSolverMultistepScheduler (default: the model's)")
    p.add_argument("--dtype", choices=DTYPES, default="fp32", help="model dtype (default fp32)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--fps", type=float, default=None, help="frames per second of the video (default 8)")
    p.add_argument("--teacache", type=float, default=0.0, metavar="THRESHOLD",
                   help="skip transformer steps while its input barely changes (TeaCache; approximate, "
                   "0.1 skips about a third of 50 steps); default 0 = off")
    p.set_defaults(run=lambda args: run_generate(GenerateOptions(**{
        f.name: getattr(args, f.name) for f in fields(GenerateOptions)})))


def resolve_model(model: Path | None) -> Path:
    """The model folder to use: `model`, else the shipped default, else a clear error."""
    from latte.pipelines import default_model_path

    if model is not None:
        if not model.is_dir():
            raise FileNotFoundError(f"model folder not found: {model}")
        return model
    default = default_model_path()
    if not (default / "model_index.json").is_file():
        raise ValueError(f"no model given and the default model is not installed (expected at {default}): "
                         "pass --model DIR, a diffusers-layout Latte folder such as a local copy of "
                         "maxin-cn/Latte-1")
    return default


def generate(options: GenerateOptions) -> Path:
    """Load the model, generate one video, write it; returns the written path."""
    import torch
    import transformers

    from latte.models.io import read_json
    from latte.pipelines import LattePipeline
    from latte.pipelines.export import check_output_path, export_video
    from latte.pipelines.schedulers import make_scheduler

    check_output_path(options.output)  # before minutes of work, not after
    if options.teacache < 0:
        raise ValueError(f"--teacache must be >= 0 (0 = off), got {options.teacache}")
    model = resolve_model(options.model)
    folder_defaults = read_json(model / "model_index.json").get(FOLDER_DEFAULTS_KEY, {})
    chosen = {name: getattr(options, name) if getattr(options, name) is not None
              else folder_defaults.get(name, BUILTIN_DEFAULTS.get(name))
              for name in ("steps", "guidance", "fps", "frames", "height", "width")}

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[options.dtype]
    device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device is available here; use --device cpu")
    start = time.perf_counter()
    transformers.utils.logging.disable_progress_bar()  # per-tensor "Loading weights" bars: noise here
    pipe = LattePipeline.from_pretrained(model, torch_dtype=dtype).to(device)
    if options.scheduler:
        pipe.scheduler = make_scheduler(options.scheduler, pipe.scheduler.config)
    if options.teacache:
        from latte.acceleration.cache import TeaCache

        pipe.transformer = TeaCache(pipe.transformer, threshold=options.teacache)
    frames = pipe.transformer.config.video_length if chosen["frames"] is None else chosen["frames"]
    logger.info("%s: %d frames, %d steps of %s, guidance %s, seed %d", model, frames, chosen["steps"],
                type(pipe.scheduler).__name__, chosen["guidance"], options.seed)
    video = pipe(
        options.prompt, negative_prompt=options.negative_prompt, num_inference_steps=chosen["steps"],
        guidance_scale=chosen["guidance"], video_length=frames, height=chosen["height"],
        width=chosen["width"], generator=torch.Generator(device).manual_seed(options.seed), output_type="np",
    ).frames[0]  # (F, H, W, 3) in [0, 1]
    path = export_video(video, options.output, fps=chosen["fps"])
    if options.teacache:
        logger.info("TeaCache: %d transformer steps computed, %d reused", pipe.transformer.computed,
                    pipe.transformer.skipped)
    logger.info("done in %.1f s", time.perf_counter() - start)
    return path


def run_generate(options: GenerateOptions) -> int:
    print(f"wrote {generate(options)}")
    return 0
