"""Text to video with the shipped model (no download): load, generate with the folder's defaults, write an mp4.

    python examples/text_to_video.py "a red circle moving left" -o out/circle.mp4

For Latte-1 pass its folder or hub id: `--model maxin-cn/Latte-1` (then `--dtype fp16 --device cuda` on a GPU).
"""

import argparse

import torch

from latte import LattePipeline
from latte.pipelines import default_model_path
from latte.pipelines.export import export_video

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("prompt", nargs="?", default="a red circle moving left")
parser.add_argument("-o", "--output", default="out/text_to_video.mp4")
parser.add_argument("--model", default=str(default_model_path()), help="model folder or hub id")
parser.add_argument("--steps", type=int, default=None, help="default: the folder's (25 for the shipped model)")
parser.add_argument("--frames", type=int, default=None, help="default: the folder's (16)")
parser.add_argument("--device", default="cpu")
args = parser.parse_args()

pipe = LattePipeline.from_pretrained(args.model).to(args.device)
result = pipe(
    args.prompt,
    num_inference_steps=args.steps,  # None: the model folder's default (its `_generate_defaults`)
    video_length=args.frames,
    generator=torch.Generator(args.device).manual_seed(0),
)
video = result.frames[0]  # a list of PIL images
print(f"{len(video)} frames of {video[0].size[0]} x {video[0].size[1]}")
print(f"wrote {export_video(video, args.output, fps=pipe.generate_defaults.get('fps', 8))}")
