"""`latte eval fvd|fid|is|stats|adherence`: video metrics under a pinned protocol, and prompt adherence on the
synthetic shapes domain.

    latte eval fvd --real ucf101/train --fake samples/ --detector i3d_torchscript.pt --preset latte-paper -o r.json
"""

import argparse
import json
from pathlib import Path

from latte.cli.generate import QUANTIZE_MODES


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate a model (FVD, FID, IS, prompt adherence)")
    sub = p.add_subparsers(dest="eval_command", required=True, metavar="METRIC")
    register_metrics(sub)
    a = sub.add_parser(
        "adherence",
        help="colour / shape / motion accuracy of generated videos on the shapes domain",
        description="Generate a video per prompt and seed (seen and held-out colour x shape x motion "
        "combinations of latte.data.synthetic, and the held-out ones again in paraphrases no training caption "
        "uses), read colour, shape and motion back with a deterministic analyser and print the accuracy per "
        "attribute plus temporal consistency.",
    )
    a.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped model)")
    a.add_argument("--lora", action="append", default=[], metavar="PATH[:SCALE]",
                   help="evaluate the model with this LoRA adapter folder (`latte export --lora`) fused at SCALE "
                   "(default 1), as `latte generate --lora` applies it; repeatable")
    a.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds per prompt (default 0 1 2)")
    a.add_argument("--num-seen", type=int, default=24, help="training combinations to prompt (default 24)")
    a.add_argument("--shrink", action="store_true",
                   help="also prompt every colour x shape shrinking, a motion the shipped model never saw (the "
                   "new concept of configs/lora-shapes.yaml), reported as the split 'shrink'")
    a.add_argument("--steps", type=int, default=None,
                   help="denoising steps (default: the model's `latte generate` default)")
    a.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale (default: the model's `latte generate` default)")
    a.add_argument("--batch-size", type=int, default=8, help="videos generated at once (default 8)")
    a.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                   help="precision of the pipeline (default fp32: exact and the same on every machine; bf16 is "
                   "what `latte generate --dtype auto` picks on CPUs with AMX or AVX512-BF16)")
    a.add_argument("--quantize", choices=QUANTIZE_MODES, default=None,
                   help="quantize the pipeline as `latte generate --quantize` does (int8-dynamic needs fp32)")
    a.add_argument("--json", default=None,  # a str: "" (an unset variable) is refused, not read as "."
                   help="also write the table and per-video readings to this file")
    a.add_argument("--baseline", action="append", default=[], metavar="FILE",
                   help="compare with this earlier --json result (e.g. the model without its adapter) on the "
                   "videos both hold: the change per split and attribute, the videos lost and gained, and a 95%% "
                   "interval of the change (a paired bootstrap over prompts); repeatable for results of other "
                   "seeds, which are pooled (no video may be in two of them)")
    a.add_argument("--from", dest="sources", action="append", default=[], metavar="FILE",
                   help="read the readings from this earlier --json result instead of generating (with "
                   "--baseline: compare saved results); repeatable, e.g. adapters of several training seeds, "
                   "whose videos are pooled")
    a.add_argument("--ground-truth", type=int, default=0, metavar="N",
                   help="instead of generating, check the analyser on N rendered clips")
    a.set_defaults(run=run_adherence)


def check_adherence_args(args: argparse.Namespace) -> None:
    """Everything that can be checked before minutes of evaluation: numbers, precision and the --json target."""
    from dataclasses import asdict

    from latte.cli.arguments import check_at_least, check_finite, check_seed
    from latte.cli.generate import lora_spec, torch_dtype
    from latte.evaluation.adherence import prompt_set, read_adherence, video_key, videos_by_key
    from latte.outputs import check_file_target

    for seed in args.seeds:
        check_seed(seed, flag="--seeds")
    for flag, value in (("--num-seen", args.num_seen), ("--steps", args.steps), ("--batch-size", args.batch_size)):
        check_at_least(flag, value, 1)
    check_at_least("--ground-truth", args.ground_truth, 0)
    check_finite("--guidance", args.guidance)
    prompt_set(args.num_seen)  # its range check (1 .. the training combinations)
    for spec in args.lora:
        lora_spec(spec)
    if args.quantize is not None:
        from latte.acceleration.quantize import check_quantize

        check_quantize(args.quantize, torch_dtype(args.dtype), "cpu")
    if args.json is not None:
        check_file_target(args.json)
    if args.ground_truth and (args.sources or args.baseline):
        raise ValueError("--ground-truth checks the analyser on rendered clips; --from and --baseline are about "
                         "generated videos: use one or the other")
    if args.sources and (args.model or args.lora or args.quantize):
        raise ValueError("--from reads saved readings; --model, --lora and --quantize only apply when generating")
    for path in args.sources:
        read_adherence(path)
    if args.baseline:
        try:
            baseline = videos_by_key(read_baseline(args.baseline))
        except ValueError as err:
            raise ValueError(f"--baseline {' '.join(args.baseline)}: {err}") from None
        if not args.sources:  # the videos this run will generate must be in the baseline
            planned = {video_key({**asdict(c), "seed": seed}) for c in prompt_set(args.num_seen, shrink=args.shrink)
                       for seed in args.seeds}
            if not planned & baseline.keys():
                raise ValueError(f"--baseline {' '.join(args.baseline)} holds none of the videos this run generates: "
                                 "use the same --seeds, --num-seen and --shrink as the run that wrote it")


def read_baseline(paths: list[str]) -> dict:
    """The --baseline results as one: their videos together (a comparison needs no table of them)."""
    from latte.evaluation.adherence import read_adherence

    return {"videos": [v for path in paths for v in read_adherence(path)["videos"]]}


def run_adherence(args: argparse.Namespace) -> int:
    from latte.cli.generate import apply_loras, resolve_model, torch_dtype
    from latte.data.synthetic import NEW_MOTIONS
    from latte.evaluation.adherence import (
        compare_adherence,
        compare_concepts,
        evaluate_adherence,
        format_comparison,
        format_concepts,
        format_new_motion_drawn,
        format_table,
        ground_truth_check,
        new_motion_drawn,
        pool_adherence,
        prompt_set,
        read_adherence,
    )
    from latte.models.io import write_json

    check_adherence_args(args)
    if args.ground_truth:
        result = {"table": ground_truth_check(args.ground_truth)}
        print(f"analyser on {args.ground_truth} rendered clips (ground truth):")
    elif args.sources:
        result = pool_adherence([read_adherence(path) for path in args.sources])
        print(f"{', '.join(args.sources)}: {len(result['videos'])} videos")
    else:
        from latte.pipelines import LattePipeline
        from latte.pipelines.text_to_video import unrepresented_words

        folder = resolve_model(args.model)
        pipe = LattePipeline.from_pretrained(folder, torch_dtype=torch_dtype(args.dtype))
        apply_loras(pipe, args.lora)
        if args.quantize is not None:
            pipe.quantize(args.quantize)
        # The same sampling settings as `latte generate` with this model: its folder's defaults.
        settings = pipe.generation_settings(args.steps, args.guidance)
        steps, guidance = settings["steps"], settings["guidance"]
        pipe.set_progress_bar_config(disable=True)
        cases = prompt_set(args.num_seen, shrink=args.shrink)
        # Said once here (the pipeline also warns per batch): a model trained on the basic captions knows
        # none of the paraphrases' new words, which is part of what the paraphrase split measures.
        unknown = unrepresented_words(pipe.tokenizer, [case.prompt for case in cases])
        result = evaluate_adherence(
            pipe, cases, args.seeds, batch_size=args.batch_size, num_inference_steps=steps,
            guidance_scale=guidance, height=None, width=None,
        )
        result["settings"] = {
            "model": str(folder), "lora": args.lora, "seeds": args.seeds, "steps": steps, "guidance": guidance,
            "prompts": len(cases), "unrepresented_words": unknown, "dtype": args.dtype, "quantize": args.quantize,
        }
        adapters = "".join(f" + LoRA {spec}" for spec in args.lora)
        precision = args.dtype + (f", {args.quantize}" if args.quantize else "")
        print(f"{folder}{adapters} ({precision}): {len(cases)} prompts x {len(args.seeds)} seeds, {steps} steps, "
              f"guidance {guidance}")
        if unknown:
            print(f"words of the prompts this model's tokenizer cannot represent: {', '.join(unknown)}")
    print(format_table(result["table"]))
    if args.baseline:
        baseline = read_baseline(args.baseline)
        rows = compare_adherence(baseline, result)
        print(f"\nagainst {', '.join(args.baseline)} (before -> after, change in points; videos lost / gained; "
              "95% interval of the change):")
        print(format_comparison(rows))
        concepts = compare_concepts(baseline, result)
        if concepts:
            print("\nper old concept (every video of the old splits that asks for it):")
            print(format_concepts(concepts))
        drawn = new_motion_drawn(baseline, result)
        if "shrink" in rows:  # prompts of the new motion: an adapter that learns it may draw it for old ones
            print(f"\nold videos drawn with a new motion ({', '.join(NEW_MOTIONS)}), which none of their prompts asks "
                  f"for: {format_new_motion_drawn(drawn)}")
        result["baseline"] = {"files": args.baseline, "comparison": rows, "concepts": concepts,
                              "new_motion_drawn": drawn}
    if args.json is not None:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


METRIC_HELP = {
    "fvd": "Fréchet video distance (StyleGAN-V's I3D TorchScript)",
    "fid": "Fréchet inception distance on the frames of the clips (NVIDIA's Inception TorchScript)",
    "is": "inception score of generated videos (StyleGAN-V's C3D UCF101 TorchScript)",
    "stats": "compute and save the real statistics of a folder (FVD or FID) for later --real",
}


def register_metrics(sub) -> None:
    from latte.evaluation.detectors import KINDS
    from latte.evaluation.protocol import IS_PRESETS, PRESETS

    for metric, help_text in METRIC_HELP.items():
        m = sub.add_parser(metric, help=help_text, description=f"{help_text}. Every protocol knob is printed and "
                           "written into the report; every random choice comes from --seed. See docs/evaluation.md.")
        presets = IS_PRESETS if metric == "is" else PRESETS
        if metric == "stats":
            m.add_argument("real", metavar="REAL", help="a folder of videos or of frame folders (<video>/<frame>)")
            m.add_argument("-o", "--output", required=True, help="the statistics file to write (.npz)")
            m.add_argument("--metric", choices=("fvd", "fid"), default="fvd", help="whose statistics (default fvd)")
        else:
            if metric != "is":
                m.add_argument("--real", required=True,
                               help="real data: a folder of videos, a folder of frame folders, a .npz from "
                               "`latte eval stats`, or synthetic[:SPLIT[:SEED]] (the shapes domain, rendered)")
            m.add_argument("--fake", required=True,
                           help="generated data: a folder of videos or frame folders (with --model: the folder "
                           "to generate them into, kept, resumed when a run was killed)")
            m.add_argument("--model", default=None, help="generate the videos here with this model folder (or "
                           "latte-shapes, the shipped model) first")
            m.add_argument("--prompt", default=None, help="with a text-to-video --model: the prompt of every "
                           "generated video; with --real synthetic the domain's captions are the prompts "
                           "(class-conditional models draw their labels, seeded)")
            m.add_argument("--steps", type=int, default=None, help="with --model: denoising steps (default: the "
                           "model's)")
            m.add_argument("--guidance", type=float, default=None,
                           help="with --model: classifier-free guidance scale (default: the model's)")
            m.add_argument("--scheduler", default=None, help="with a text-to-video --model: a diffusers "
                           "scheduler class, e.g. DDIMScheduler (default: the model's); without --steps it runs at "
                           "its recommended step count, as `latte generate`")
            m.add_argument("--teacache", type=float, default=0.0, metavar="THRESHOLD",
                           help="with a text-to-video --model: TeaCache step skipping (default 0: off)")
            m.add_argument("--chunk", type=int, default=16, metavar="N",
                           help="with --model: videos per resumable chunk (default 16)")
            m.add_argument("--overwrite", action="store_true",
                           help="with --model: replace a --fake folder that holds files latte did not write, or "
                           "videos of another generation (default: resume the same one)")
            m.add_argument("-o", "--output", default=None, help="also write the report to this JSON file")
        detector = (f"{KINDS['fvd'].file_name} for fvd, {KINDS['fid'].file_name} for fid" if metric == "stats"
                    else KINDS[metric].file_name)
        shapes = "; with synthetic data: the shipped shapes detector" if metric in ("fvd", "stats") else ""
        m.add_argument("--detector", default=None, metavar="FILE",
                       help=f"the TorchScript detector ({detector}{shapes})")
        default_preset = "stylegan-v" if metric == "is" else "latte-paper; shapes with synthetic data"
        m.add_argument("--preset", choices=list(presets), default=None,
                       help=f"the protocol (default {default_preset}); the flags below change single knobs")
        m.add_argument("--num-videos", type=int, default=None, metavar="N",
                       help="real and generated videos (IS: generated videos per repeat); default 2048")
        m.add_argument("--num-frames", type=int, default=None, help="frames per clip (default 16)")
        if metric != "is":
            m.add_argument("--real-stride", type=int, default=None,
                           help="every k-th real frame (latte-paper 3, 6 for Taichi-HD; stylegan-v 1, shared)")
        if metric != "stats":
            m.add_argument("--fake-stride", type=int, default=None, help="every k-th generated frame")
        m.add_argument("--size", type=int, default=None,
                       help="centre-crop and LANCZOS-resize frames to this square size; 0: as they are")
        if metric == "is":
            m.add_argument("--splits", type=int, default=None, help="splits per repeat (tgan 1, stylegan-v 10)")
            m.add_argument("--repeats", type=int, default=None,
                           help="independent sets of --num-videos videos (tgan 10, stylegan-v 1)")
        m.add_argument("--seed", type=int, default=0,
                       help="seed of every random choice: which real videos, clip starts; generated video j "
                       "has seed --seed + j (default 0)")
        m.add_argument("--batch-size", type=int, default=8, help="videos per detector call (default 8)")
        m.add_argument("--cache", default=None, metavar="DIR",
                       help="keep each batch's features in this folder, so that a killed run picks up where it "
                       "stopped (default: none)")
        m.add_argument("--device", default=None, help="device of the detector and generation (default: cuda if "
                       "available, else cpu)")
        m.set_defaults(run=run_metric)


def uses_synthetic(args: argparse.Namespace) -> bool:
    """Whether --real or --fake names the shapes domain (synthetic[:SPLIT[:SEED]])."""
    from latte.evaluation.protocol import synthetic_spec

    return any(synthetic_spec(getattr(args, flag, None) or "") for flag in ("real", "fake"))


def protocol_from_args(args: argparse.Namespace):
    from latte.evaluation.protocol import make_protocol

    metric = args.metric if args.eval_command == "stats" else args.eval_command
    preset = args.preset or ("stylegan-v" if metric == "is" else "shapes" if uses_synthetic(args) else "latte-paper")
    knobs = {name: getattr(args, name, None) for name in
             ("num_videos", "num_frames", "real_stride", "fake_stride", "size", "splits", "repeats")}
    return metric, make_protocol(metric, preset, **knobs)


def check_metric_args(args: argparse.Namespace) -> None:
    """Everything that can be checked before minutes of work: numbers, the detector file, the outputs."""
    from latte.cli.arguments import check_at_least, check_device, check_finite, check_seed
    from latte.evaluation.detectors import check_detector_file
    from latte.evaluation.metrics import detector_for
    from latte.evaluation.protocol import synthetic_spec
    from latte.outputs import check_file_target, check_folder_target

    for flag in ("num_videos", "num_frames", "real_stride", "fake_stride", "splits", "repeats", "batch_size",
                 "chunk"):
        check_at_least("--" + flag.replace("_", "-"), getattr(args, flag, None), 1)
    check_at_least("--size", args.size, 0)
    check_at_least("--steps", getattr(args, "steps", None), 1)
    check_finite("--guidance", getattr(args, "guidance", None))
    check_at_least("--teacache", getattr(args, "teacache", None), 0)
    if getattr(args, "scheduler", None):
        from latte.pipelines.schedulers import recommended_steps

        recommended_steps(args.scheduler)  # its name check: an unknown scheduler names the known ones
    metric, protocol = protocol_from_args(args)
    check_seed(args.seed, protocol.num_videos * protocol.repeats)
    check_device(args.device)
    args.detector = detector_for(args.detector, metric, getattr(args, "real", None), getattr(args, "fake", None))
    check_detector_file(args.detector, metric)
    if args.output is not None:
        check_file_target(args.output)
    if args.cache is not None:
        if args.cache == "":
            raise ValueError("--cache is empty (an unset shell variable?): name a folder")
        check_file_target(Path(args.cache) / "probe")  # a folder there or to be made, writable
    real = getattr(args, "real", None)
    real_synthetic = real is not None and synthetic_spec(real) is not None
    if real is not None and not (real_synthetic or Path(real).is_dir() or Path(real).is_file()):
        raise FileNotFoundError(f"--real {real}: no such folder or statistics file (synthetic[:SPLIT[:SEED]] "
                                "names the shapes domain)")
    if getattr(args, "model", None) is not None:
        from latte.cli.generate import resolve_model
        from latte.evaluation.generation import is_class_model

        args.model = resolve_model(args.model)
        if is_class_model(args.model) and args.prompt is not None:
            raise ValueError(f"--model {args.model} is a class-conditional or unconditional model: it takes no "
                             "--prompt (class labels are drawn, seeded)")
        if not is_class_model(args.model) and not args.prompt and not real_synthetic:
            raise ValueError("--model needs --prompt TEXT, the prompt of every generated video (or --real "
                             "synthetic, whose captions are the prompts)")
        if synthetic_spec(args.fake) is not None:
            raise ValueError(f"--fake {args.fake} names rendered clips; with --model, --fake is the folder the "
                             "generated videos go to")
        check_folder_target(args.fake, args.overwrite)
    else:
        for flag in ("prompt", "scheduler", "teacache"):
            if getattr(args, flag, None):
                raise ValueError(f"--{flag} is used only with --model (generating the videos here)")
    if protocol.splits > protocol.num_videos:
        raise ValueError(f"--splits {protocol.splits} is more than the {protocol.num_videos} videos per repeat")


def run_metric(args: argparse.Namespace) -> int:
    """One metric; under torchrun (WORLD_SIZE > 1) every rank generates and extracts its share, and rank 0
    prints and writes."""
    import os

    from latte.evaluation import metrics
    from latte.outputs import write_file
    from latte.training.train import init_distributed

    check_metric_args(args)
    rank = int(os.environ.get("RANK", "0"))
    _, device = init_distributed(args.device)
    metric, protocol = protocol_from_args(args)
    say = print if rank == 0 else (lambda *a, **k: None)
    knobs = " ".join(f"{k}={v}" for k, v in protocol.as_dict().items())
    say(f"{args.eval_command} protocol: {knobs} seed={args.seed}")  # the report (JSON) is the last line
    common = dict(detector=args.detector, protocol=protocol, seed=args.seed, batch_size=args.batch_size,
                  device=str(device), cache=args.cache)
    if args.eval_command == "stats":
        say(json.dumps(metrics.real_stats_file(args.real, args.output, metric, **common)))
        return 0
    generation = {}
    if args.model is not None:
        from latte.evaluation.generation import generate_videos, is_class_model
        from latte.evaluation.protocol import domain_prompts, synthetic_spec

        prompt = args.prompt
        if prompt is None and synthetic_spec(getattr(args, "real", None) or "") and not is_class_model(args.model):
            prompt = domain_prompts(args.real, protocol, args.seed)
        steps = args.steps
        if args.scheduler and steps is None:
            from latte.pipelines.schedulers import recommended_steps

            steps = recommended_steps(args.scheduler)
        plan = generate_videos(args.fake, args.model, prompt, protocol.num_videos * protocol.repeats,
                               args.seed, steps, args.guidance, str(device), args.chunk, args.overwrite,
                               args.scheduler, args.teacache)
        generation = {"generation": plan}
    if metric == "is":
        result = metrics.inception_score(args.fake, **common)
    else:
        result = metrics.frechet(metric, args.real, args.fake, **common)
    result.update(generation, processes=metrics.shard()[1])
    line = json.dumps(result)
    say(line)
    if args.output is not None and rank == 0:
        write_file(args.output, lambda tmp: Path(tmp).write_text(line + "\n"))
    return 0
