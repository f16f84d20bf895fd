"""`latte generate PROMPT [PROMPT ...] -o out.mp4`: text to video with a Latte-1-layout model folder.

One video goes to `-o` (.mp4, .gif or a PNG folder). Several (more prompts, `--prompts FILE`, `--num-videos`)
go into the folder `-o` as `NNN-<prompt>-s<seed>.mp4`; video j of a prompt has seed `--seed + j`, so each can be
made again alone (the printed command does that).
"""

import logging
import re
import shlex
import time
from dataclasses import dataclass, fields
from pathlib import Path

logger = logging.getLogger(__name__)

DTYPES = ("auto", "fp32", "fp16", "bf16")
QUANTIZE_MODES = ("int8-dynamic", "int8")  # latte.acceleration.quantize.MODES (not imported: torch-free CLI setup)
FORMATS = ("mp4", "gif", "png")


@dataclass
class GenerateOptions:
    prompts: list[str]
    output: str | Path  # one video: .mp4, .gif, or a folder for PNG frames; several: their folder
    model: str | Path | None = None  # a folder or hub id; None: the shipped default model
    steps: int | None = None  # None: the folder's default, else 50
    guidance: float | None = None  # None: the folder's default, else 7.5; <= 1 turns guidance off
    seed: int = 0
    frames: int | None = None  # None: the folder's default, else the transformer's video_length (16)
    height: int | None = None  # None: the folder's default, else transformer sample_size x VAE factor
    width: int | None = None
    negative_prompt: str = ""
    scheduler: str | None = None  # a diffusers scheduler class name; None: the folder's scheduler
    # auto: bf16 on CPUs with AMX/AVX512-BF16 and on bf16 GPUs, else fp32 (acceleration.precision). The command
    # line defaults to auto; callers of `generate` (evaluation) keep exact fp32 unless they ask.
    dtype: str = "fp32"
    quantize: str | None = None  # int8-dynamic or int8 (acceleration.quantize); None: off
    compile: bool = False  # torch.compile the transformer, compiled graphs cached on disk (acceleration.compiled)
    device: str | None = None  # None: cuda if available, else cpu
    fps: float | None = None  # None: the folder's default, else 8
    teacache: float = 0.0  # TeaCache threshold (approximate step skipping); 0 = off, every step computed
    num_videos: int = 1  # per prompt; video j gets seed `seed + j`
    batch_size: int = 4  # videos per pipeline call
    format: str | None = None  # mp4, gif or png; None: -o's suffix for one video, else mp4
    overwrite: bool = False  # replace an output folder that holds files latte did not write
    image: str | Path | None = None  # image-to-video: the first frame of every video
    extend: str | Path | None = None  # video extension: the clip to continue by --frames new frames
    long_video: str = "windows"  # beyond the training length: windows (FreeNoise) or plain (all frames at once)
    slow_motion: float | None = None  # S > 1: the motion S times slower; None: the folder's default, else 1

    max_frames: int | None = None  # None: the pipeline's limit (latte.pipelines.limits.GenerationLimits)
    max_size: int | None = None
    no_memory_check: bool = False
    lora: tuple[str, ...] = ()  # LoRA adapter folders, each "PATH" or "PATH:SCALE"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "generate",
        help="text to video with a Latte-1 model folder",
        description="Generate videos from prompts with a diffusers-layout Latte model folder (Latte-1 or "
        "the shipped default model) and write them as .mp4 (H.264), .gif, or folders of PNG frames. One video "
        "is written to -o; several go into the folder -o as NNN-<prompt>-s<seed>.<format>.",
    )
    p.add_argument("prompts", nargs="*", metavar="PROMPT", help="what the video shows (one or more)")
    p.add_argument("--prompts", type=Path, default=None, dest="prompts_file", metavar="FILE",
                   help="a UTF-8 text file with one prompt per line (blank lines and # comments skipped)")
    p.add_argument("-o", "--output", required=True,  # a str: "" (an unset variable) is refused, not read as "."
                   help="output .mp4, .gif, or folder for PNGs; the folder for the videos when there are several")
    p.add_argument("--num-videos", type=int, default=1, metavar="N",
                   help="videos per prompt (default 1); video j has seed --seed + j")
    p.add_argument("--batch-size", type=int, default=4, metavar="N",
                   help="videos per pipeline call (default 4); a larger batch needs more memory")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="mp4, gif or png (a folder of frames); default: -o's suffix for one video, else mp4")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output folder even if it holds files latte did not write")
    p.add_argument("--model", default=None,
                   help="model folder (model_index.json, transformer/, vae/, text_encoder/, tokenizer/, "
                   "scheduler/) or Hugging Face Hub id (e.g. maxin-cn/Latte-1, from the hub cache when "
                   "offline); default: the shipped model")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's, else 50)")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale, 1 = off (default: the model's, else 7.5)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--frames", type=int, default=None,
                   help="number of frames, new frames with --extend (default: the model's, 16)")
    p.add_argument("--height", type=int, default=None, help="pixels (default: the model's trained size)")
    p.add_argument("--width", type=int, default=None, help="pixels (default: the model's trained size)")
    p.add_argument("--image", default=None, metavar="FILE",
                   help="image-to-video: this image (resized and centre-cropped) becomes the first frame")
    p.add_argument("--extend", default=None, metavar="VIDEO",
                   help="continue this clip by --frames new frames, conditioned on its last frames; the output "
                   "is the clip followed by the new frames")
    p.add_argument("--long-video", choices=("windows", "plain"), default="windows",
                   help="beyond the model's frame count: windows (FreeNoise, default) or plain (all frames attend "
                   "to each other at once)")
    p.add_argument("--slow-motion", type=float, default=None, metavar="S",
                   help="play the motion S times slower, so a long video keeps moving (e.g. --frames 64 "
                   "--slow-motion 4: the motion of one 16-frame clip over 64 frames); default: 1 (the model's "
                   "speed), or the model folder's default (the shipped model slows long videos to one clip's "
                   "motion, up to 4 times)")
    p.add_argument("--negative-prompt", default="", help='text to steer away from (default "")')
    p.add_argument("--scheduler", default=None,
                   help="diffusers scheduler class, e.g. DDIMScheduler (default: the model's); without --steps it "
                   "runs at its recommended step count (latte.pipelines.schedulers.RECOMMENDED_STEPS)")
    p.add_argument("--dtype", choices=DTYPES, default="auto",
                   help="model dtype (default auto: bf16 on CPUs with AMX or AVX512-BF16 and on GPUs with bf16, "
                   "else fp32; the log says which and why); fp32 is exact")
    p.add_argument("--quantize", choices=QUANTIZE_MODES, default=None,
                   help="int8-dynamic: int8 weights and activations for the transformer's linears; int8: int8 "
                   "weights only, transformer and T5 (less memory; needs torchao). Lossy; default off")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the transformer (inductor); the first run compiles (minutes on a small CPU, "
                   "logged apart), later runs reuse the compiled graphs cached in ~/.cache/latte/inductor")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--fps", type=float, default=None, help="frames per second of the video (default 8)")
    p.add_argument("--teacache", type=float, default=0.0, metavar="THRESHOLD",
                   help="skip transformer steps while its input barely changes (TeaCache; approximate, "
                   "0.1 skips about a third of 50 steps); default 0 = off")
    p.add_argument("--max-frames", type=int, default=None,
                   help="refuse more frames than this (default: the pipeline's limit, 1024)")
    p.add_argument("--max-size", type=int, default=None,
                   help="refuse a height or width above this (default: the pipeline's limit, 8192)")
    p.add_argument("--no-memory-check", action="store_true",
                   help="run even when the estimated memory exceeds what the device has free")
    p.add_argument("--lora", action="append", default=[], metavar="PATH[:SCALE]",
                   help="apply a LoRA adapter folder (`latte export --lora`) at SCALE (default 1); repeatable")
    p.set_defaults(run=lambda args: run_generate(options_from_args(args)))


def options_from_args(args) -> GenerateOptions:
    """The options of a parsed command line; `--prompts FILE` adds its prompts after the positional ones."""
    values = {f.name: getattr(args, f.name) for f in fields(GenerateOptions)}
    if args.prompts_file is not None:
        values["prompts"] = [*args.prompts, *read_prompts(args.prompts_file)]
    return GenerateOptions(**values)


def read_prompts(path: Path) -> list[str]:
    """The prompts of a text file: one per line, blank lines and `#` comments skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"prompts file not found: {path}") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"--prompts {path} is a folder; name a text file, one prompt per line") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"prompts file {path} is not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    prompts = [line.strip() for line in text.splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise ValueError(f"prompts file {path} holds no prompts (blank lines and # comments are skipped)")
    return prompts


def check_options(options: GenerateOptions) -> None:
    """Everything that can be checked before the model is loaded: prompts, numbers, device."""
    from latte.cli.arguments import check_at_least, check_device, check_finite, check_seed
    from latte.pipelines.export import check_fps
    from latte.pipelines.schedulers import recommended_steps

    if not options.prompts:
        raise ValueError("no prompt: give one or more PROMPTs, or --prompts FILE")
    for prompt in options.prompts:
        if not prompt.strip():
            raise ValueError("a prompt is empty (an unset shell variable?); give the text the video shows")
    for flag, value in (("--steps", options.steps), ("--frames", options.frames), ("--height", options.height),
                        ("--width", options.width), ("--num-videos", options.num_videos),
                        ("--batch-size", options.batch_size), ("--max-frames", options.max_frames),
                        ("--max-size", options.max_size)):
        check_at_least(flag, value, 1)
    check_finite("--guidance", options.guidance)
    check_finite("--teacache", options.teacache)
    if options.teacache < 0:
        raise ValueError(f"--teacache must be >= 0 (0 = off), got {options.teacache}")
    if options.fps is not None:
        check_fps(options.fps)
    check_seed(options.seed, options.num_videos)
    if options.scheduler is not None:
        recommended_steps(options.scheduler)  # an unknown or unsupported name fails here, before loading
    check_device(options.device)
    if options.quantize is not None:  # auto loads int8-dynamic's CPU models in fp32 (choose_dtype)
        import torch

        from latte.acceleration.quantize import check_quantize

        dtype = torch_dtype("fp32" if options.dtype == "auto" else options.dtype)
        check_quantize(options.quantize, dtype, torch.device(check_device(options.device)).type)
    if options.compile and options.teacache:
        raise ValueError("--compile and --teacache exclude each other (TeaCache wraps the uncompiled transformer); "
                         "give one")
    for spec in options.lora:
        lora_spec(spec)
    check_condition(options)


def lora_spec(spec: str) -> tuple[Path, float]:
    """`--lora PATH[:SCALE]` as (adapter folder, scale); the folder must hold an adapter config."""
    from latte.cli.arguments import check_finite
    from latte.models.lora import CONFIG_NAME

    path, sep, tail = spec.rpartition(":")
    try:
        path, scale = (Path(path), float(tail)) if sep else (Path(spec), 1.0)
    except ValueError:  # a ":" that is part of the path
        path, scale = Path(spec), 1.0
    check_finite("--lora scale", scale)
    if not (path / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"--lora {spec}: {path} is not a LoRA adapter folder (no {CONFIG_NAME} in it)")
    return path, scale


def apply_loras(pipe, specs) -> None:
    """Load each `--lora PATH[:SCALE]` onto the pipeline's transformer and fuse them (plain-linear speed)."""
    if specs:
        for i, (path, scale) in enumerate(map(lora_spec, specs)):
            pipe.load_lora_weights(path, adapter_name=f"lora{i}", scale=scale)
        pipe.fuse_lora()


def check_condition(options: GenerateOptions) -> None:
    """--image / --extend: one of them at most, and a file that can be read; a valid --slow-motion."""
    from latte.pipelines.long_video import check_slow_motion, read_frames, read_image

    if options.slow_motion is not None:
        check_slow_motion(options.slow_motion, options.long_video == "windows")

    if options.image is not None and options.extend is not None:
        raise ValueError("--image (image-to-video) and --extend (video extension) exclude each other; give one")
    if options.image is not None:
        read_image(options.image)
    if options.extend is not None:
        read_frames(options.extend)


def video_kind(path: Path) -> str:
    """mp4, gif or png (a frame folder), as `export_video` reads an output path."""
    from latte.pipelines.export import VIDEO_SUFFIXES

    suffix = path.suffix.lower()
    return suffix[1:] if suffix in VIDEO_SUFFIXES else "png"


def check_outputs(options: GenerateOptions) -> None:
    """Fail before any work when the output cannot be written (see `latte.outputs` for the rule)."""
    from latte.outputs import check_folder_target
    from latte.pipelines.export import check_output_path

    count = len(options.prompts) * options.num_videos
    if count == 1:
        check_output_path(options.output, options.overwrite)
        kind = video_kind(Path(options.output))
        if options.format is not None and options.format != kind:
            raise ValueError(f"--format {options.format} contradicts -o {options.output}, which writes {kind}; "
                             "drop one of them")
        return
    kind = video_kind(Path(options.output))
    if kind != "png":
        raise ValueError(f"{count} videos go into a folder, but -o {options.output} names a .{kind} file; name "
                         "a folder (choose the format with --format)")
    check_folder_target(options.output, options.overwrite)


def slug(prompt: str, max_length: int = 40) -> str:
    """A file-name-safe short form of a prompt: `A red circle, moving!` -> `a-red-circle-moving`."""
    words = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")
    return words[:max_length].rstrip("-") or "video"


def video_names(options: GenerateOptions) -> list[tuple[str, int, str]]:
    """(prompt, seed, file name) per video, prompt by prompt: `000-a-red-circle-s0.mp4`, ..."""
    suffix = "" if (options.format or "mp4") == "png" else f".{options.format or 'mp4'}"
    jobs = [(prompt, options.seed + j) for prompt in options.prompts for j in range(options.num_videos)]
    digits = max(3, len(str(len(jobs) - 1)))
    return [(prompt, seed, f"{k:0{digits}d}-{slug(prompt)}-s{seed}{suffix}")
            for k, (prompt, seed) in enumerate(jobs)]


def single_command(options: GenerateOptions, prompt: str, seed: int, output: str) -> str:
    """The `latte generate` command that makes one video of this run alone."""
    argv = ["latte", "generate", prompt, "--seed", str(seed), "-o", output]
    flags = {"--model": options.model, "--steps": options.steps, "--guidance": options.guidance,
             "--frames": options.frames, "--height": options.height, "--width": options.width,
             "--negative-prompt": options.negative_prompt or None, "--scheduler": options.scheduler,
             "--dtype": None if options.dtype == "auto" else options.dtype, "--device": options.device,
             "--quantize": options.quantize,
             "--fps": options.fps, "--teacache": options.teacache or None, "--image": options.image,
             "--extend": options.extend, "--long-video": None if options.long_video == "windows" else "plain",
             "--slow-motion": options.slow_motion}
    for flag, value in flags.items():
        if value is not None:
            argv += [flag, str(value)]
    for spec in options.lora:
        argv += ["--lora", spec]
    if options.compile:
        argv.append("--compile")
    return shlex.join(argv)


def resolve_model(model: str | Path | None) -> str | Path:
    """The model to load: `model` (a folder, or a Hugging Face Hub id that `from_pretrained` resolves through
    the hub cache), else (None or "latte-shapes") the shipped default, else a clear error."""
    from latte.models.hub import is_repo_id
    from latte.pipelines import DEFAULT_MODEL_DIRNAME, default_model_path

    if model is not None and str(model) == DEFAULT_MODEL_DIRNAME and not Path(model).is_dir():
        model = None  # the shipped model by its name
    if model is not None:
        if not (Path(model).is_dir() or is_repo_id(str(model))):
            raise FileNotFoundError(f"model folder not found: {model} (nor is it a hub id like org/name)")
        return model
    default = default_model_path()
    if not (default / "model_index.json").is_file():
        raise ValueError(f"no model given and the default model is not installed (expected at {default}): "
                         "pass --model DIR, a diffusers-layout Latte folder such as a local copy of "
                         "maxin-cn/Latte-1")
    return default


def generate(options: GenerateOptions) -> list[tuple[Path, str]]:
    """Load the model, generate the videos, write them; returns (path, command making it alone) per video."""
    import torch

    from latte.cli.arguments import check_device
    from latte.outputs import write_folder
    from latte.pipelines import LattePipeline
    from latte.pipelines.defaults import BUILTIN_DEFAULTS
    from latte.pipelines.export import export_video
    from latte.pipelines.schedulers import make_scheduler, recommended_steps

    check_options(options)  # before minutes of work, not after
    check_outputs(options)
    model = resolve_model(options.model)

    device = check_device(options.device)
    dtype = torch_dtype(choose_dtype(options, device))
    start = time.perf_counter()
    pipe = LattePipeline.from_pretrained(model, torch_dtype=dtype).to(device)
    apply_loras(pipe, options.lora)
    if options.quantize:
        pipe.quantize(options.quantize)
    if options.compile:
        from latte.acceleration.compiled import compile_seconds, compile_transformer, graph_cache_use

        logger.info("compiling the transformer at the first step; graphs cached in %s", compile_transformer(pipe))
        compiled_before = compile_seconds()
    steps = options.steps
    if options.scheduler:
        pipe.scheduler = make_scheduler(options.scheduler, pipe.scheduler.config)
        if steps is None:  # the folder's step count suits its own scheduler; this one was measured at its own
            steps = recommended_steps(options.scheduler)
    if options.teacache:
        from latte.acceleration.cache import TeaCache

        pipe.transformer = TeaCache(pipe.transformer, threshold=options.teacache)
    for name, value in (("max_frames", options.max_frames), ("max_size", options.max_size)):
        if value is not None:
            setattr(pipe.limits, name, value)
    if options.no_memory_check:
        pipe.limits.max_memory_fraction = None
    # Flags left unset take the model folder's defaults (pipe.generate_defaults), else diffusers'.
    chosen = pipe.generation_settings(steps, options.guidance, options.frames, options.height,
                                      options.width)
    logger.info("%s: %d frames, %d steps of %s, guidance %s, seed %d", model, chosen["frames"], chosen["steps"],
                type(pipe.scheduler).__name__, chosen["guidance"], options.seed)
    slow = pipe.resolve_slow_motion(None, chosen["frames"], options.long_video == "windows", bool(options.extend))
    if options.slow_motion is None and slow > 1:
        logger.info("slow motion %g, the model folder's default for %d frames (one training clip's motion; "
                    "--slow-motion 1 keeps the model's speed)", slow, chosen["frames"])
    fps = options.fps if options.fps is not None else pipe.generate_defaults.get("fps", BUILTIN_DEFAULTS["fps"])
    names = video_names(options)

    def videos():
        """(F, H, W, 3) arrays in [0, 1], in the order of `names`, `batch_size` videos per pipeline call."""
        for first in range(0, len(names), options.batch_size):
            batch = names[first:first + options.batch_size]
            yield from pipe(
                [prompt for prompt, _, _ in batch], negative_prompt=options.negative_prompt,
                num_inference_steps=chosen["steps"], guidance_scale=chosen["guidance"], video_length=chosen["frames"],
                height=chosen["height"], width=chosen["width"], output_type="np", image=options.image,
                video=options.extend, long_video=options.long_video == "windows", slow_motion=options.slow_motion,
                generator=[torch.Generator(device).manual_seed(seed) for _, seed, _ in batch],  # one per video
            ).frames

    if len(names) == 1:
        (prompt, seed, _), (video,) = names[0], videos()
        path = export_video(video, options.output, fps=fps, overwrite=options.overwrite)
        written = [(path, single_command(options, prompt, seed, str(path)))]
    else:

        def fill(folder: Path) -> None:
            for k, ((_, _, name), video) in enumerate(zip(names, videos())):
                export_video(video, folder / name, fps=fps)
                logger.info("%d of %d: %s", k + 1, len(names), name)

        folder = write_folder(options.output, fill, options.overwrite)
        written = [(folder / name, single_command(options, prompt, seed, name)) for prompt, seed, name in names]
    if options.compile:
        logger.info("compile: %.1f s of the run (%s)", compile_seconds() - compiled_before, graph_cache_use())
    if options.teacache:
        logger.info("TeaCache: %d transformer steps computed, %d reused", pipe.transformer.computed,
                    pipe.transformer.skipped)
    logger.info("done in %.1f s", time.perf_counter() - start)
    return written


def torch_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def choose_dtype(options: GenerateOptions, device: str) -> str:
    """The dtype name to load in: `--dtype`, or for `auto` the device's best (logged with the reason)."""
    from latte.acceleration.precision import auto_dtype

    if options.dtype != "auto":
        return options.dtype
    if options.quantize == "int8-dynamic" and device.startswith("cpu"):
        chosen, why = "fp32", "int8-dynamic on CPU quantizes float32 activations"
    else:
        chosen, why = auto_dtype(device)
    logger.info("--dtype auto: %s, as %s", chosen, why)
    return chosen


def run_generate(options: GenerateOptions) -> int:
    written = generate(options)
    for path, command in written:
        print(f"wrote {path}" if len(written) == 1 else f"wrote {path}  (alone: {command})")
    return 0
