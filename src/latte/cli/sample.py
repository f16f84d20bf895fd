"""`latte sample`: videos from a class-conditional or unconditional Latte model (folder or original .pt)."""

import logging
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

DTYPES = ("fp32", "fp16", "bf16")
FORMATS = ("mp4", "gif", "png")


@dataclass
class SampleOptions:
    model: Path  # LatteClassPipeline folder, or an original checkpoint (.pt) with `vae`
    output: str | Path  # a folder
    vae: Path | None = None
    class_labels: list[int] | None = None
    num_videos: int = 1  # per label; in total for an unconditional model
    steps: int = 250
    guidance: float | None = None  # None: the pipeline's default (7.0 with a null class, else off)
    scheduler: str | None = None
    seed: int = 0
    fps: float = 8.0
    format: str = "mp4"
    device: str | None = None
    dtype: str = "fp32"
    num_heads: int | None = None
    overwrite: bool = False  # replace an output folder that holds files latte did not write


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sample",
        help="videos from a class-conditional or unconditional Latte model",
        description="Sample videos from a LatteClassPipeline folder (see `latte convert`) or an original "
        "checkpoint (ffs.pt, skytimelapse.pt, taichi-hd.pt, ucf101.pt; then --vae is required). Default: the "
        "paper's sampler, DDPM with the learned variance over 250 respaced steps.",
    )
    p.add_argument("--model", type=Path, required=True, help="model folder or original checkpoint (.pt)")
    p.add_argument("--vae", type=Path, default=None,
                   help="AutoencoderKL folder (sd-vae-ft-ema); required for a .pt, overrides a folder's vae/")
    p.add_argument("--class-label", type=int, nargs="+", dest="class_labels", metavar="N",
                   help="class label(s) (class-conditional models; UCF101: 0..100)")
    p.add_argument("--num-videos", type=int, default=1,
                   help="videos per label, or in total for an unconditional model (default 1)")
    p.add_argument("--steps", type=int, default=250, help="denoising steps (default 250)")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale (default 7.0 for class-conditional models, 1 = off)")
    p.add_argument("--scheduler", default=None,
                   help="diffusers scheduler class, e.g. DDIMScheduler (default: the model's; DDPM for a .pt)"
                   )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--fps", type=float, default=8.0, help="frames per second of the written videos")
    p.add_argument("--format", choices=FORMATS, default="mp4", help="mp4 (default), gif, or PNG folders")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--dtype", choices=DTYPES, default="fp32", help="model dtype (default fp32)")
    p.add_argument("--num-heads", type=int, default=None,
                   help="attention heads of a .pt whose width is not a paper size")
    p.add_argument("-o", "--output", required=True,  # a str: "" (an unset variable) is refused, not read as "."
                   help="folder for the videos (new, or one latte wrote; replaced as a whole)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output folder even if it holds files latte did not write")
    p.set_defaults(run=lambda args: run_sample(SampleOptions(**{
        k: v for k, v in vars(args).items() if k in SampleOptions.__dataclass_fields__})))


def load_pipeline(model: Path, vae: Path | None = None, num_heads: int | None = None, torch_dtype=None):
    """A `LatteClassPipeline` from a folder or an original checkpoint (which needs `vae`)."""
    from latte.models.vae import load_vae
    from latte.pipelines.class_conditional import LatteClassPipeline

    if model.is_dir():
        pipe = LatteClassPipeline.from_pretrained(model, torch_dtype=torch_dtype)
        if vae is not None:
            pipe.vae = load_vae(vae, torch_dtype)
        return pipe
    if not model.is_file():
        raise FileNotFoundError(f"no model folder or checkpoint at {model}")
    if vae is None:
        raise ValueError(f"{model} is a bare checkpoint without a VAE: pass --vae DIR (an AutoencoderKL "
                         "folder, e.g. a local copy of stabilityai/sd-vae-ft-ema), or first run "
                         "`latte convert CKPT --vae DIR -o FOLDER`")
    return LatteClassPipeline.from_original(model, vae=vae, num_heads=num_heads, torch_dtype=torch_dtype)


def check_options(options: SampleOptions) -> None:
    """Everything that can be checked before the model is loaded: numbers, device, the output folder."""
    from latte.cli.arguments import check_at_least, check_device, check_finite, check_seed
    from latte.outputs import check_folder_target
    from latte.pipelines.export import check_fps

    for flag, value in (("--num-videos", options.num_videos), ("--steps", options.steps),
                        ("--num-heads", options.num_heads)):
        check_at_least(flag, value, 1)
    for label in options.class_labels or ():
        check_at_least("--class-label", label, 0)
    check_finite("--guidance", options.guidance)
    check_fps(options.fps)
    check_seed(options.seed)
    check_device(options.device)
    check_folder_target(options.output, options.overwrite)


def sample(options: SampleOptions) -> list[Path]:
    """Generate the videos and write them as one new folder (`latte.outputs.write_folder`); returns their
    paths."""
    import torch

    from latte.cli.arguments import check_device
    from latte.outputs import write_folder
    from latte.pipelines.export import export_video
    from latte.pipelines.schedulers import make_scheduler

    check_options(options)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[options.dtype]
    device = check_device(options.device)
    pipe = load_pipeline(options.model, options.vae, options.num_heads, dtype).to(device)
    if options.scheduler:
        pipe.scheduler = make_scheduler(options.scheduler, pipe.scheduler.config)
    logger.info("seed %d, %s, %d steps", options.seed, type(pipe.scheduler).__name__, options.steps)
    generator = torch.Generator(device).manual_seed(options.seed)
    videos = pipe(options.class_labels, num_videos_per_label=options.num_videos,
                  num_inference_steps=options.steps, guidance_scale=options.guidance, generator=generator,
                  output_type="np").frames  # (B, F, H, W, 3) in [0, 1]
    labels = options.class_labels or [None]
    suffix = "" if options.format == "png" else f".{options.format}"
    names = []
    for i in range(len(videos)):
        label, k = labels[i // options.num_videos], i % options.num_videos
        names.append(f"video_{k:03d}{suffix}" if label is None else f"class{label:03d}_{k:03d}{suffix}")

    def fill(folder: Path) -> None:
        for name, video in zip(names, videos):
            export_video(video, folder / name, fps=options.fps)

    folder = write_folder(options.output, fill, options.overwrite)
    return [folder / name for name in names]


def run_sample(options: SampleOptions) -> int:
    for path in sample(options):
        print(path)
    return 0
