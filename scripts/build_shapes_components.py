"""Build the frozen parts of the shipped `latte-shapes` model: VAE, T5 encoder, tokenizer, scheduler.

    python scripts/build_shapes_components.py OUT_DIR [--vae-steps 500] [--captions basic|rich]

writes OUT_DIR/{vae,text_encoder,tokenizer,scheduler}/ in the Latte-1 (diffusers) layout; `latte train
configs/latte-shapes.yaml` then trains the transformer on top of them and `latte export` assembles the model.

- vae/: a small diffusers `AutoencoderKL` (4 latent channels), trained here on frames of the synthetic
  domain; its `scaling_factor` is 1 / std of the trained latents (SD's 0.18215 plays the same role). It
  downsamples 4x by default (Latte-1's VAE: 8x): at 64 px an 8x latent leaves a shape one or two latent
  pixels, which a VAE trained for minutes on a CPU does not reconstruct.
- text_encoder/: a 2-layer `T5EncoderModel` with random, seeded weights. It is frozen: the transformer
  learns to read its features, exactly as Latte-1 reads a frozen T5-XXL.
- tokenizer/: a sentencepiece model trained on the domain's captions: `--captions basic` (the shipped model's
  vocabulary) or `rich` (synonyms and many sentence shapes, for `data.synthetic_captions: rich` training).
- scheduler/: DPM-Solver++ (2nd order multistep) over Latte's 1000-step linear beta schedule.
"""

import argparse
import logging
import sys
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DPMSolverMultistepScheduler
from tqdm import tqdm

from latte.data.synthetic import CAPTION_STYLES, SyntheticShapes, all_captions
from latte.models.text_encoder import train_tokenizer

log = logging.getLogger("build_shapes_components")

FRAME_SIZE = 64


def vae_config(downsample: int) -> dict:
    """A small AutoencoderKL; `downsample` (4 or 8) = 2 ** (number of blocks - 1)."""
    channels = {4: (8, 16, 32), 8: (16, 32, 64, 64)}
    if downsample not in channels:
        raise ValueError(f"downsample must be one of {sorted(channels)}, got {downsample}")
    n = len(channels[downsample])
    return dict(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=channels[downsample],
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        layers_per_block=1, norm_num_groups=4, sample_size=FRAME_SIZE,
    )


def random_frames(dataset: SyntheticShapes, batch: int, g: torch.Generator) -> torch.Tensor:
    """`batch` random frames (B, 3, H, W) in [-1, 1] from random clips of `dataset`."""
    frames = []
    for i in torch.randint(len(dataset), (batch,), generator=g).tolist():
        video = dataset[i]["video"]  # (3, F, H, W)
        frames.append(video[:, int(torch.randint(video.shape[1], (1,), generator=g))])
    return torch.stack(frames)


def foreground_weight(frames: torch.Tensor, weight: float) -> torch.Tensor:
    """Per-pixel loss weight (B, 1, H, W): 1 on the background, 1 + `weight` on the shape. The shape covers
    ~5% of a frame, so an unweighted loss is met by painting the background alone."""
    border = torch.cat([frames[..., 0, :], frames[..., -1, :], frames[..., 0], frames[..., -1]], dim=-1)
    background = border.median(-1).values[..., None, None]  # (B, 3, 1, 1)
    return 1 + weight * ((frames - background).abs().amax(1, keepdim=True) > 0.1).float()


@torch.no_grad()
def generated_pairs(model: Path, seed: int = 1_000_000, steps: int = 25, guidance: float = 4.0,
                    batch: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """The trained model's own latents, each paired with the clip its caption describes exactly.

    The domain's paths are centred, so a caption naming colour, shape, motion, size and background names one
    clip. Every training combination x background x size is generated from `model` (a pipeline folder) with
    the shipped sampler settings; returns unscaled latent frames (N, C, h, w) and their target frames
    (N, 3, H, W) in [-1, 1]. Only the "train" split is used: held-out combinations stay unseen.
    """
    from latte.data.synthetic import BACKGROUNDS, SIZES, caption, combinations, render_clip
    from latte.models.vae import scaling_factor
    from latte.pipelines.text_to_video import LattePipeline

    pipe = LattePipeline.from_pretrained(model)
    jobs = [
        (c, s, m, size, bg)
        for c, s, m in combinations("train") for bg in BACKGROUNDS
        for size in ((None,) if m == "grow" else SIZES)
    ]
    latents, targets = [], []
    for start in tqdm(range(0, len(jobs), batch), desc="generated pairs", unit="batch"):
        chunk = jobs[start : start + batch]
        # Template 3 names size and background; caption() drops the size word where size is None (grow).
        prompts = [caption(c, s, m, size, bg, template=3) for c, s, m, size, bg in chunk]
        out = pipe(prompts, num_inference_steps=steps, guidance_scale=guidance, height=None, width=None,
                   generator=[torch.Generator().manual_seed(seed + start + i) for i in range(len(chunk))],
                   output_type="latent").frames  # (B, C, F, h, w), scaled
        latents.append(out.transpose(1, 2).flatten(0, 1) / scaling_factor(pipe.vae))
        targets += [render_clip(c, s, m, bg, out.shape[2], FRAME_SIZE, size or "small").transpose(0, 1)
                    for c, s, m, size, bg in chunk]
    return torch.cat(latents), torch.cat(targets)


def set_scaling_factor(vae: AutoencoderKL, frames: torch.Tensor) -> None:
    """Unit-variance latents for the diffusion model (SD's 0.18215 plays the same role)."""
    with torch.no_grad():
        latents = vae.encode(frames).latent_dist.mean
    vae.register_to_config(scaling_factor=round(1.0 / latents.std().item(), 5))


def train_vae(downsample: int = 4, steps: int = 500, batch: int = 8, lr: float = 1e-3,
              kl_weight: float = 1e-6, fg_weight: float = 10.0, seed: int = 0,
              out: Path | None = None, save_every: int = 0, init: Path | None = None,
              decoder_only: bool = False, pairs: tuple[torch.Tensor, torch.Tensor] | None = None
              ) -> AutoencoderKL:
    """Train the frame autoencoder on the domain's training clips: foreground-weighted L1 + MSE and a light
    KL. With `out` and `save_every`, the VAE is also saved every `save_every` steps (a run can stop early);
    `init` continues from a saved VAE folder; `decoder_only` then trains the decoder alone, so the latent
    space (and latents already encoded with it) stays valid: SD's ft-MSE VAE was made the same way.
    `pairs` (decoder only): (latent frames, target frames) from `generated_pairs`, as many per batch as
    encoded frames, so the decoder also learns to turn the transformer's imperfect latents into clean shapes."""
    if pairs is not None and not decoder_only:
        raise ValueError("pairs need decoder_only: they are latents of the current encoder")
    torch.manual_seed(seed)
    vae = AutoencoderKL.from_pretrained(init) if init else AutoencoderKL(**vae_config(downsample))
    # A near-deterministic posterior (std e^-5): with the default std ~1 the sampling noise drowns the
    # latents and the decoder learns only blurred average colours in a short run.
    if not decoder_only:
        with torch.no_grad():
            c = vae.config.latent_channels
            vae.quant_conv.weight[c:].zero_()
            vae.quant_conv.bias[c:].fill_(-10.0)
    frozen = (vae.encoder, vae.quant_conv) if decoder_only else ()
    for module in frozen:
        module.requires_grad_(False)
    dataset = SyntheticShapes(100_000, size=FRAME_SIZE, seed=seed + 1, split="train")
    g = torch.Generator().manual_seed(seed)
    probe = random_frames(dataset, 64, g)  # fixed frames for the scaling factor
    opt = torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    bar = tqdm(range(1, steps + 1), desc="vae", unit="step")
    for step in bar:
        x = random_frames(dataset, batch, g)
        posterior = vae.encode(x).latent_dist
        z = posterior.sample(generator=g)
        if pairs is not None:
            pick = torch.randint(len(pairs[0]), (batch,), generator=g)
            z, x = torch.cat([z, pairs[0][pick]]), torch.cat([x, pairs[1][pick]])
        recon = vae.decode(z).sample
        w = foreground_weight(x, fg_weight)
        err = recon - x
        rec_loss = ((err.abs() + err.square()) * w).mean() / w.mean()
        kl = posterior.kl().mean() / x[0].numel()  # per pixel value, so the weight is resolution-free
        loss = rec_loss + kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{rec_loss.item():.4f}", kl=f"{kl.item():.1f}")
        if out is not None and save_every and (step % save_every == 0 or step == steps):
            if not decoder_only:
                set_scaling_factor(vae, probe)
            vae.save_pretrained(out)
    vae.eval().requires_grad_(False)
    if not decoder_only:  # the encoder, so the latents' scale, did not change
        set_scaling_factor(vae, probe)
    log.info("vae: final loss %.4f, scaling_factor %s", rec_loss.item(), vae.config.scaling_factor)
    return vae


# Ceilings on the tokenizer's pieces (sentencepiece stops below them: 68 basic, 107 rich); every word but
# "background" then stays one piece (a comma is a piece of its own).
TOKENIZER_SIZES = {"basic": 72, "rich": 256}


def build_text_components(folder: Path, width: int = 128, seed: int = 0, captions: str = "basic"):
    """A sentencepiece tokenizer trained on the domain's captions (`captions`: the vocabulary) and a small
    random, frozen T5 encoder."""
    from transformers import T5Config, T5EncoderModel

    from latte.pipelines.text_to_video import unrepresented_words

    corpus = all_captions(captions)
    # Each word of the domain also as a line of its own (300 times): sentencepiece then keeps the colour,
    # shape and motion words whole (on captions alone it splits most words into letters).
    words = sorted({w for c in corpus for w in c.split()})
    tokenizer = train_tokenizer(corpus + words * 300, folder / "tokenizer", vocab_size=TOKENIZER_SIZES[captions])
    missing = unrepresented_words(tokenizer, words)
    if missing:
        raise RuntimeError(f"the tokenizer split these words into letters: {', '.join(missing)}")
    config = T5Config(
        vocab_size=len(tokenizer), d_model=width, d_kv=width // 4, d_ff=2 * width, num_layers=2, num_heads=4,
        dropout_rate=0.0, feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False,
    )
    torch.manual_seed(seed)
    encoder = T5EncoderModel(config).eval()
    encoder.save_pretrained(str(folder / "text_encoder"))
    log.info("text: %d tokens in the vocabulary, T5 width %d", len(tokenizer), width)
    return tokenizer, encoder


def build_scheduler() -> DPMSolverMultistepScheduler:
    """DPM-Solver++ (2M) on Latte's training schedule: good samples in 20-25 steps."""
    return DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
        prediction_type="epsilon", algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="linspace",
        lower_order_final=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for vae/, text_encoder/, tokenizer/, scheduler/")
    parser.add_argument("--vae-steps", type=int, default=500)
    parser.add_argument("--lr", type=float, default=1e-3, help="VAE learning rate (cosine to 0)")
    parser.add_argument("--save-every", type=int, default=50, help="also save the VAE every N steps")
    parser.add_argument("--vae-downsample", type=int, default=4, choices=(4, 8))
    parser.add_argument("--only", choices=("vae", "text", "scheduler"), help="build one part only")
    parser.add_argument("--vae-init", type=Path, default=None, help="continue training this VAE folder")
    parser.add_argument("--decoder-only", action="store_true",
                        help="with --vae-init: train the decoder alone (keeps the latent space)")
    parser.add_argument("--pairs-from", type=Path, default=None, metavar="MODEL",
                        help="with --decoder-only: also train on this pipeline folder's generated latents, "
                        "paired with the clips their captions describe")
    parser.add_argument("--captions", choices=CAPTION_STYLES, default="basic",
                        help="the tokenizer's vocabulary (default basic: the shipped model's; rich: for "
                        "training with data.synthetic_captions=rich)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.pairs_from and not args.decoder_only:  # before generating the pairs (minutes), not after
        parser.error("--pairs-from needs --decoder-only: the pairs are latents of the current encoder")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    if args.only in (None, "vae"):
        pairs = generated_pairs(args.pairs_from) if args.pairs_from else None
        vae = train_vae(args.vae_downsample, args.vae_steps, out=args.out / "vae", save_every=args.save_every,
                        init=args.vae_init, decoder_only=args.decoder_only, seed=args.seed, pairs=pairs,
                        lr=args.lr)
        vae.save_pretrained(args.out / "vae")
    if args.only in (None, "text"):
        build_text_components(args.out, captions=args.captions)
    if args.only in (None, "scheduler"):
        build_scheduler().save_pretrained(args.out / "scheduler")
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
