"""The paper's class-conditional Latte: build one, inspect it, sample it, save it in both layouts.

    python examples/paper_model.py -o out/paper

The model here is a small random one (Latte-S/2 at 8 frames of 16 x 16 latents) and the VAE is the shipped
model's, so the videos are noise; with a released checkpoint use
`LatteClassPipeline.from_original("ucf101.pt", vae="sd-vae-ft-ema")` instead.
"""

import argparse
from pathlib import Path

import torch

from latte import Latte, LatteClassPipeline
from latte.models.vae import load_vae
from latte.pipelines import default_model_path
from latte.pipelines.class_conditional import paper_scheduler

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("-o", "--output", default="out/paper", help="folder for the saved model and checkpoint")
parser.add_argument("--steps", type=int, default=20, help="sampling steps (the paper uses 250)")
args = parser.parse_args()

torch.manual_seed(0)
model = Latte("Latte-S/2", num_classes=101, num_frames=8, input_size=16).eval()
print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, {model.config.depth} blocks")

vae = load_vae(default_model_path() / "vae")
pipe = LatteClassPipeline(vae, model, paper_scheduler(model.config.learn_sigma))
videos = pipe(class_labels=[3, 7], num_inference_steps=args.steps, guidance_scale=7.0, height=64, width=64,
              video_length=8, generator=torch.Generator().manual_seed(0), output_type="pt").frames
print(f"videos {tuple(videos.shape)} (videos, frames, channels, height, width)")

out = Path(args.output)
pipe.save_pretrained(out / "pipeline", overwrite=True)  # model_index.json, transformer/, vae/, scheduler/
model.save_original(out / "latte-s2.pt")  # {"ema": state_dict} with the original code's keys
again = Latte.from_original(out / "latte-s2.pt")
assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
print(f"wrote {out / 'pipeline'} and {out / 'latte-s2.pt'} (reloaded: identical weights)")
