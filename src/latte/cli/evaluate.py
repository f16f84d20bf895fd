"""`latte eval adherence`: how well a text-to-video model follows prompts on the synthetic shapes domain."""

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate a model (prompt adherence)")
    sub = p.add_subparsers(dest="eval_command", required=True, metavar="METRIC")
    a = sub.add_parser(
        "adherence",
        help="colour / shape / motion accuracy of generated videos on the shapes domain",
        description="Generate a video per prompt and seed (seen and held-out colour x shape x motion "
        "combinations of latte.data.synthetic), read colour, shape and motion back with a deterministic "
        "analyser and print the accuracy per attribute plus temporal consistency.",
    )
    a.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped model)")
    a.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds per prompt (default 0 1 2)")
    a.add_argument("--num-seen", type=int, default=24, help="training combinations to prompt (default 24)")
    a.add_argument("--steps", type=int, default=None,
                   help="denoising steps (default: the model's `latte generate` default)")
    a.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale (default: the model's `latte generate` default)")
    a.add_argument("--batch-size", type=int, default=8, help="videos generated at once (default 8)")
    a.add_argument("--json", default=None,  # a str: "" (an unset variable) is refused, not read as "."
                   help="also write the table and per-video readings to this file")
    a.add_argument("--ground-truth", type=int, default=0, metavar="N",
                   help="instead of generating, check the analyser on N rendered clips")
    a.set_defaults(run=run_adherence)


def check_adherence_args(args: argparse.Namespace) -> None:
    """Everything that can be checked before minutes of evaluation: numbers and the --json target."""
    from latte.cli.arguments import check_at_least, check_finite, check_seed
    from latte.evaluation.adherence import prompt_set
    from latte.outputs import check_file_target

    for seed in args.seeds:
        check_seed(seed, flag="--seeds")
    for flag, value in (("--num-seen", args.num_seen), ("--steps", args.steps), ("--batch-size", args.batch_size)):
        check_at_least(flag, value, 1)
    check_at_least("--ground-truth", args.ground_truth, 0)
    check_finite("--guidance", args.guidance)
    prompt_set(args.num_seen)  # its range check (1 .. the training combinations)
    if args.json is not None:
        check_file_target(args.json)


def run_adherence(args: argparse.Namespace) -> int:
    from latte.cli.generate import resolve_model
    from latte.evaluation.adherence import (
        evaluate_adherence,
        format_table,
        ground_truth_check,
        prompt_set,
    )
    from latte.models.io import write_json

    check_adherence_args(args)
    if args.ground_truth:
        result = {"table": ground_truth_check(args.ground_truth)}
        print(f"analyser on {args.ground_truth} rendered clips (ground truth):")
    else:
        from latte.pipelines import LattePipeline

        folder = resolve_model(args.model)
        pipe = LattePipeline.from_pretrained(folder)
        # The same sampling settings as `latte generate` with this model: its folder's defaults.
        settings = pipe.generation_settings(args.steps, args.guidance)
        steps, guidance = settings["steps"], settings["guidance"]
        pipe.set_progress_bar_config(disable=True)
        cases = prompt_set(args.num_seen)
        result = evaluate_adherence(
            pipe, cases, args.seeds, batch_size=args.batch_size, num_inference_steps=steps,
            guidance_scale=guidance, height=None, width=None,
        )
        result["settings"] = {
            "model": str(folder), "seeds": args.seeds, "steps": steps, "guidance": guidance,
            "prompts": len(cases),
        }
        print(f"{folder}: {len(cases)} prompts x {len(args.seeds)} seeds, {steps} steps, guidance {guidance}")
    print(format_table(result["table"]))
    if args.json is not None:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0
