"""Several prompts and videos per prompt in one call, a scheduler swap, and a step callback.

    python examples/batches_and_callbacks.py -o out/batch

Every video in a batch is conditioned exactly as if it were generated alone, so batching changes speed, not
results; each video gets its own generator here, so any one of them can be regenerated alone.
"""

import argparse
from pathlib import Path

import torch
from diffusers import DDIMScheduler

from latte import LattePipeline
from latte.pipelines import default_model_path
from latte.pipelines.export import export_video

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("-o", "--output", default="out/batch", help="folder for the videos")
parser.add_argument("--steps", type=int, default=None, help="DDIM steps (default 50)")
parser.add_argument("--frames", type=int, default=None)
args = parser.parse_args()

pipe = LattePipeline.from_pretrained(default_model_path())
pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)  # swapped schedulers keep Latte's settings

prompts = ["a red circle moving left", "a yellow triangle moving down"]
per_prompt = 2
seen_steps = []


def on_step_end(pipe, step, timestep, tensors):
    seen_steps.append(int(timestep))
    return {}  # returning {"latents": ...} would replace them


frames = pipe(
    prompts,
    num_videos_per_prompt=per_prompt,
    num_inference_steps=args.steps or 50,
    video_length=args.frames,
    generator=[torch.Generator().manual_seed(seed) for seed in range(len(prompts) * per_prompt)],
    callback_on_step_end=on_step_end,
    output_type="np",  # (videos, frames, height, width, 3) floats in [0, 1]
).frames
print(f"{frames.shape[0]} videos, timesteps {seen_steps[0]} .. {seen_steps[-1]}")
out = Path(args.output)
for i, video in enumerate(frames):
    print(f"wrote {export_video(video, out / f'{i:02d}.gif')}")
