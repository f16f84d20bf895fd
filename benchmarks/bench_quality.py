"""Speed against fidelity: bf16 and the TeaCache cache mode against our exact fp32 pipeline, and (with a
shapes-domain model) prompt adherence; optionally a steps-vs-adherence table for DDIM, DPM-Solver++, Euler.

The model is the shipped default (`src/latte/assets/latte-shapes`) or `--model FOLDER`; without either, a
random-weight Latte-1-width model (`--layers`) with the SD-style VAE is used, which measures speed and
PSNR/SSIM only (adherence needs a trained model). Timings are of the denoising loop (`output_type="latent"`);
the frames compared are decoded afterwards, identically for every variant.

    python benchmarks/bench_quality.py --thresholds 0.05 0.1 0.2 --bf16
    python benchmarks/bench_quality.py --adherence --num-seen 8 --seeds 0 1
    python benchmarks/bench_quality.py --schedulers --steps-list 10 25 50
"""

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch
from bench_utils import print_machine

from latte.acceleration.cache import TeaCache
from latte.acceleration.fidelity import psnr, ssim
from latte.models.latte_t2v import LatteT2VTransformer
from latte.models.vae import decode_latents
from latte.pipelines import LattePipeline, default_model_path

RANDOM_PROMPTS = ["a red circle moves left", "a blue square moves right", "a green triangle grows"]
SCHEDULERS = {
    "DDIM": ("DDIMScheduler", {}),
    "DPM-Solver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "Euler": ("EulerDiscreteScheduler", {}),
}


def load_pipeline(args) -> tuple[LattePipeline, bool]:
    """(pipeline, trained) from --model, the shipped default model, or random weights."""
    folder = Path(args.model) if args.model else default_model_path()
    if (folder / "model_index.json").is_file() or args.model:
        return LattePipeline.from_pretrained(folder), True
    from bench_pipeline import build_components

    logging.warning("no trained model at %s: random weights (speed and PSNR/SSIM only)", folder)
    components, _ = build_components(torch.float32, "cpu", args.layers)
    return LattePipeline(**components), False


def denoise(pipe: LattePipeline, prompts: list[str], call: dict) -> tuple[float, list[torch.Tensor]]:
    """Seconds of the denoising loops over `prompts` (seed = prompt index) and their final latents."""
    latents, start = [], time.perf_counter()
    for i, prompt in enumerate(prompts):
        g = torch.Generator().manual_seed(i)
        latents.append(pipe(prompt, generator=g, output_type="latent", **call).frames)
    return time.perf_counter() - start, latents


def frames(pipe: LattePipeline, latents: list[torch.Tensor]) -> torch.Tensor:
    video = torch.cat([decode_latents(pipe.vae, z.float().to(pipe.vae.dtype)) for z in latents])
    return pipe.postprocess(video, "pt")  # (videos, F, 3, H, W) in [0, 1]


def with_transformer(pipe: LattePipeline, transformer) -> LattePipeline:
    return LattePipeline(**{**pipe.components, "transformer": transformer})


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="pipeline folder (default: the shipped latte-shapes model)")
    parser.add_argument("--layers", type=int, default=4, help="depth of the random-weight fallback model")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--size", type=int, default=None, help="pixels (default: the model's trained size)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--prompts", type=int, default=3, help="videos timed and compared per variant")
    parser.add_argument("--thresholds", type=float, nargs="*", default=[0.05, 0.1, 0.2])
    parser.add_argument("--bf16", action="store_true", help="also bf16 (transformer) against fp32")
    parser.add_argument(
        "--adherence", action="store_true", help="prompt adherence per variant (shapes model)"
    )
    parser.add_argument("--num-seen", type=int, default=8, help="seen combinations in the adherence set")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--schedulers", action="store_true", help="steps-vs-adherence table per scheduler")
    parser.add_argument("--steps-list", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    print_machine(args.threads)

    pipe, trained = load_pipeline(args)
    pipe.set_progress_bar_config(disable=True)
    exact_model = pipe.transformer
    size = args.size or exact_model.config.sample_size * pipe.vae_scale_factor
    call = dict(num_inference_steps=args.steps, video_length=args.frames, height=size, width=size)
    if trained:
        from latte.evaluation.adherence import prompt_set

        cases = prompt_set(args.num_seen, paraphrase=False)  # seen and held-out, as measured before
        prompts = [c.prompt for c in cases[: args.prompts]]
    else:
        prompts = RANDOM_PROMPTS[: args.prompts]
    print(f"model: {'trained' if trained else 'random weights'}; {len(prompts)} videos of {args.frames} x "
          f"{size} x {size}, {args.steps} steps ({type(pipe.scheduler).__name__})")  # fmt: skip

    variants = {"exact fp32": exact_model}
    if args.bf16:
        state = {k: v.to(torch.bfloat16) for k, v in exact_model.state_dict().items()}
        variants["bf16"] = LatteT2VTransformer.from_state_dict(state, exact_model.config)
    for threshold in args.thresholds:
        variants[f"TeaCache {threshold:g}"] = TeaCache(exact_model, threshold)

    with torch.inference_mode():
        denoise(pipe, prompts[:1], {**call, "num_inference_steps": 2})  # warm-up, untimed
        results, reference, reference_latents = {}, None, None
        for name, transformer in variants.items():
            variant = with_transformer(pipe, transformer)
            variant.set_progress_bar_config(disable=True)
            seconds, latents = denoise(variant, prompts, call)
            video = frames(pipe, latents)
            z = torch.cat(latents).float()
            if reference is None:
                reference, reference_latents = video, z
            row = {
                "seconds": seconds,
                "latent_error": float((z - reference_latents).norm() / reference_latents.norm()),
                "psnr": psnr(video, reference),
                "ssim": ssim(video, reference),
            }
            if isinstance(transformer, TeaCache):
                row["computed"] = transformer.computed  # of the last video
            if args.adherence and trained:
                from latte.evaluation.adherence import evaluate_adherence

                table = evaluate_adherence(variant, cases, args.seeds, **call)["table"]
                row["adherence"] = table["all"]["all"]
                row["per_attribute"] = {k: table["all"][k] for k in ("color", "shape", "motion")}
            results[name] = row
            print(name, json.dumps(row))

    base = results["exact fp32"]["seconds"]
    print(
        "\n| variant | denoising s | speed-up | latent rel. error | PSNR dB | SSIM | steps run | adherence |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        adh = f"{100 * r['adherence']:.1f}%" if "adherence" in r else "-"
        steps = f"{r['computed']}/{args.steps}" if "computed" in r else f"{args.steps}/{args.steps}"
        speed = f"{base / r['seconds']:.2f}x"
        print(
            f"| {name} | {r['seconds']:.1f} | {speed} | {r['latent_error']:.1e} | {r['psnr']:.2f} "
            f"| {r['ssim']:.4f} | {steps} | {adh} |"
        )

    if args.schedulers:
        if not trained:
            raise SystemExit("--schedulers measures adherence: it needs a trained shapes model")
        from latte.evaluation.adherence import evaluate_adherence
        from latte.pipelines.schedulers import make_scheduler

        print("\n| scheduler | steps | adherence (all three) | seconds |")
        print("|---|---|---|---|")
        config = dict(pipe.scheduler.config)
        for label, (cls, extra) in SCHEDULERS.items():
            variant = LattePipeline(
                **{**pipe.components, "scheduler": make_scheduler(cls, {**config, **extra})}
            )
            variant.set_progress_bar_config(disable=True)
            for steps in args.steps_list:
                start = time.perf_counter()
                table = evaluate_adherence(
                    variant, cases, args.seeds, **{**call, "num_inference_steps": steps}
                )
                print(f"| {label} | {steps} | {100 * table['table']['all']['all']:.1f}% | "
                      f"{time.perf_counter() - start:.0f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
