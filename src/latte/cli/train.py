"""Training commands: `latte train CONFIG [key=value ...]`, `latte cache CONFIG [key=value ...]`,
`latte export RUN_DIR -o FOLDER [--lora] [--overwrite]`."""

import argparse
import contextlib
import os
from pathlib import Path


def register(subparsers) -> None:
    overrides_help = "dotted config overrides, e.g. train.lr=3e-4 train.steps=2000 model.args.num_layers=4"
    p = subparsers.add_parser(
        "train",
        help="train a Latte model from a YAML config (torchrun for several GPUs)",
        description="Train from a YAML config. Re-running the same command resumes from "
        "the newest checkpoint in output_dir. Several GPUs: "
        "torchrun --nproc_per_node K -m latte train CONFIG",
    )
    p.add_argument("config", type=Path, help="YAML config file (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help=overrides_help)
    p.set_defaults(run=run_train)

    p = subparsers.add_parser("cache", help="encode a config's clips and captions into a latent cache")
    p.add_argument("config", type=Path, help="YAML config file (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help=overrides_help)
    p.set_defaults(run=run_cache)

    p = subparsers.add_parser(
        "export",
        help="write a training run's EMA weights as a model folder",
        description="Write the EMA transformer of a run plus the frozen components "
        "(vae, text encoder, tokenizer, scheduler) as a pipeline folder that "
        "`latte generate` and diffusers load.",
    )
    p.add_argument("run_dir", type=Path, help="the run's output_dir")
    p.add_argument("-o", "--output", type=Path, required=True, help="folder to write")
    p.add_argument("--checkpoint", type=Path, default=None, help="a checkpoint file (default: the newest)")
    p.add_argument("--raw", action="store_true", help="export the raw weights instead of the EMA")
    p.add_argument(
        "--lora",
        action="store_true",
        help="a LoRA run: write its adapter (peft format: adapter_config.json, adapter_model.safetensors) "
        "instead of a model folder with the adapter fused in",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing output folder that latte did not write"
    )
    p.set_defaults(run=run_export)


def run_train(args: argparse.Namespace) -> int:
    from latte.training.config import load_config
    from latte.training.train import train

    summary = train(load_config(args.config, args.overrides))
    if summary.get("loss") is not None and os.environ.get("RANK", "0") == "0":  # torchrun: rank 0 reports
        print(
            f"step {summary['step']}: loss {summary['loss']:.4f} (mse {summary['mse']:.4f}, "
            f"vb {summary['vb']:.4f}); run folder {summary['run_dir']}"
        )
    return 0


def run_cache(args: argparse.Namespace) -> int:
    from latte.training.config import load_config
    from latte.training.train import hold_run_folder, init_distributed, prepare_cache

    cfg = load_config(args.config, args.overrides)
    ranks, device = init_distributed(cfg.train.device)
    # A cache inside the run folder is written under the run folder's lock, like training.
    inside = cfg.run_dir.resolve() in cfg.cache_path.resolve().parents
    with hold_run_folder(cfg.run_dir, ranks) if inside else contextlib.nullcontext():
        cache = prepare_cache(cfg, ranks, device)
    print(f"{len(cache)} clips cached in {cache.folder}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from latte.training.export import export_run

    output = export_run(
        args.run_dir, args.output, args.checkpoint, use_ema=not args.raw, overwrite=args.overwrite, lora=args.lora
    )
    print(f"wrote {output}")
    return 0
