"""End to end: our LattePipeline against diffusers' LattePipeline on the very same components.

Components, random weights: a small T5 encoder of Latte-1's width (4096, 2 layers), the SD-style VAE
(block_out_channels 128, 256, 512, 512), the Latte-1-shaped transformer (28 layers, width 1152; ours shares
diffusers' weight tensors) and DDIM. Both pipelines run in this one process, same threads and allocator,
timed round-robin; the frames are compared.

    python benchmarks/bench_pipeline.py                     # CPU: 16 x 128 x 128, 4 steps
    python benchmarks/bench_pipeline.py --dtype bf16 --compile   # CPU in bf16, ours compiled as `latte generate`
    python benchmarks/bench_pipeline.py --gpu    # the Latte-1 docs setting: fp16, 16 x 512 x 512, 50 steps

In bf16 both pipelines' frames are also compared with our fp32 frames of the same weights (PSNR), so that a
faster bf16 path shows it is no further from exact than diffusers' own bf16 path.
"""

import argparse
import logging
import sys

import torch
from bench_transformer import LATTE1
from bench_utils import interleaved, measure_peak, print_machine, summary, time_call, tune_allocator
from diffusers import DDIMScheduler, LatteTransformer3DModel
from diffusers import LattePipeline as DiffusersLattePipeline

from latte.acceleration.compiled import compile_seconds, compile_transformer
from latte.acceleration.fidelity import psnr
from latte.cli.generate import torch_dtype
from latte.models.latte_t2v import LatteT2VConfig, LatteT2VTransformer
from latte.models.vae import decode_latents
from latte.pipelines import LattePipeline
from latte.testing import random_text_encoder, random_tokenizer, random_vae

PROMPT = "a red circle moves left across a blue background"
CORPUS = [PROMPT, "a green triangle bounces", "a yellow star spins slowly", "waves on a beach at sunset"]


# Random-weight component shapes: Latte-1's (T5 of Latte-1's width but 2 layers, the SD VAE, the Latte-1
# transformer) and a tiny set that runs the same code in seconds on a CPU (smoke runs).
SHAPES = {
    "latte1": dict(
        transformer=LATTE1,
        text=(4096, dict(d_ff=2048)),
        vae=((128, 256, 512, 512), dict(layers_per_block=2)),
    ),
    "tiny": dict(
        transformer={**LATTE1, "num_attention_heads": 2, "attention_head_dim": 8, "cross_attention_dim": 16,
                     "caption_channels": 32, "sample_size": 8},
        text=(32, dict(d_kv=8, num_heads=4, d_ff=64, relative_attention_num_buckets=8)),
        vae=((8, 8, 16, 16), dict(layers_per_block=1, norm_num_groups=4)),
    ),
}  # fmt: skip


def build_components(dtype: torch.dtype, device: str, layers: int, seed: int = 0, shapes: str = "latte1"):
    """Shared components and diffusers' transformer; ours shares its weights (no copy). Built on the CPU
    from `seed`, then moved: the same weights on every device and in every process."""
    shape = SHAPES[shapes]
    tokenizer = random_tokenizer(CORPUS, vocab_size=64)
    (text_width, text_config), (vae_channels, vae_config) = shape["text"], shape["vae"]
    text_encoder = random_text_encoder(len(tokenizer), text_width, seed, **text_config)
    vae = random_vae(vae_channels, seed, **vae_config)
    config = {**shape["transformer"], "num_layers": layers}
    torch.manual_seed(seed)
    ref = LatteTransformer3DModel(**config).eval()
    for module in (text_encoder, vae, ref):
        module.requires_grad_(False).to(device=device, dtype=dtype)
    # Built from the moved tensors, so the two transformers share one copy of the weights on `device` too.
    ours = LatteT2VTransformer.from_state_dict(
        ref.state_dict(), LatteT2VConfig(**config), torch_dtype=dtype, device=device
    ).requires_grad_(False)
    # DDIM as published for Latte-1 but without `variance_type` (diffusers' pipeline crashes on it).
    scheduler = DDIMScheduler(
        beta_start=1e-4, beta_end=0.02, beta_schedule="linear", clip_sample=False, timestep_spacing="leading"
    )
    parts = dict(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler)
    return {**parts, "transformer": ours}, ref


def fp32_frames(call: dict, device: str, layers: int) -> torch.Tensor:
    """Our pipeline's frames in float32 from the same seeds: the exact reference of the bf16 runs."""
    components, _ = build_components(torch.float32, device, layers)
    pipe = LattePipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    with torch.inference_mode():
        return pipe(**call, generator=torch.Generator(device).manual_seed(0)).frames.float()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=4, help="denoising steps (default 4 on CPU)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=128, help="pixel height = width")
    parser.add_argument("--layers", type=int, default=28, help="transformer depth (Latte-1: 28)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--allocator", choices=["default", "tuned"], default="default")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="CPU precision of both pipelines")
    parser.add_argument("--compile", action="store_true",
                        help="ours through torch.compile as `latte generate --compile` does (compile time apart)")
    parser.add_argument("--gpu", action="store_true", help="CUDA, fp16, 16 x 512 x 512, 50 steps")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device, dtype = ("cuda", torch.float16) if args.gpu else ("cpu", torch_dtype(args.dtype))
    if args.gpu:
        if not torch.cuda.is_available():
            raise SystemExit("--gpu needs a CUDA device")
        args.steps, args.size = 50, 512

    torch.set_num_threads(args.threads)
    print_machine(args.threads, device)
    print(f"allocator: {tune_allocator(args.allocator)}")
    size = f"{args.frames} x {args.size} x {args.size}"
    print(f"setting: {device}, {dtype}, {size}, {args.steps} DDIM steps, guidance 7.5")
    call = dict(
        prompt=PROMPT, num_inference_steps=args.steps, video_length=args.frames, height=args.size,
        width=args.size, output_type="pt", clean_caption=False,
    )  # fmt: skip
    exact = fp32_frames(call, device, args.layers) if dtype == torch.bfloat16 else None
    components, ref_transformer = build_components(dtype, device, args.layers)
    ours = LattePipeline(**components)
    ours.set_progress_bar_config(disable=True)
    if args.compile:
        compile_transformer(ours)
    theirs = DiffusersLattePipeline(**{**components, "transformer": ref_transformer})
    theirs.set_progress_bar_config(disable=True)

    def run(pipe):
        return pipe(**call, generator=torch.Generator(device).manual_seed(0)).frames

    with torch.inference_mode():
        compiled_before = compile_seconds()
        fns = {"diffusers": lambda: run(theirs), "ours": lambda: run(ours)}
        outputs = {}
        for name, fn in fns.items():
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
                outputs[name] = fn()
                print(f"{name:>10} peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
            else:
                peak = measure_peak(lambda fn=fn, name=name: outputs.__setitem__(name, fn()))
                print(
                    f"{name:>10} peak RSS {peak['peak_gib']:.2f} GiB, +{peak['above_gib']:.2f} GiB over the "
                    "loaded models (one process: heap reuse makes the second figure a lower bound)"
                )
        compile_time = compile_seconds() - compiled_before  # the first (peak-memory) run compiled
        times = interleaved(fns, args.repeats, warmup=0, device=device)
        latents = torch.randn(1, 4, args.frames, args.size // 8, args.size // 8, device=device, dtype=dtype)
        decode = time_call(lambda: decode_latents(components["vae"], latents, chunk_size=14), device)
    med = {k: summary(v) for k, v in times.items()}
    diff = (outputs["ours"].float() - outputs["diffusers"].float()).abs().max().item()
    for k, v in med.items():
        print(f"{k:>10}: {v:8.2f} s end to end")
    print(f"VAE decode of the {args.frames} frames alone (shared component): {decode:.2f} s")
    print(f"speed-up ours vs diffusers, end to end: {med['diffusers'] / med['ours']:.2f}x")
    print(f"max |frames ours - diffusers| = {diff:.2e} (frames in [0, 1])")
    if args.compile:
        print(f"ours compiled: {compile_time:.1f} s of compiling in the first (untimed) run")
    if exact is not None:
        for name, frames in outputs.items():
            print(f"{name:>10} bf16 frames vs our fp32 frames: PSNR {psnr(frames, exact):.1f} dB, "
                  f"max diff {(frames.float() - exact).abs().max().item():.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
