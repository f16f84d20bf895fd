"""`latte convert`: original checkpoints to our folder format and back.

- original class/unconditional `.pt` (ffs, skytimelapse, taichi-hd, ucf101) -> a `Latte` folder (config.json +
  safetensors), or with `--vae` a whole `LatteClassPipeline` folder that `latte sample` runs as is;
- a `Latte` folder (or a pipeline folder's `transformer/`) -> an original-layout `.pt` (`{"ema": ...}`);
- Latte-1 `t2v.pt` -> a diffusers-layout transformer folder (`LatteT2VTransformer`).
"""

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert",
        help="original Latte checkpoints (.pt) <-> model folders",
        description="INPUT.pt (class/unconditional) -> OUTPUT folder; with --vae a full pipeline folder. "
        "INPUT folder -> OUTPUT.pt in the original layout. Latte-1 t2v.pt -> transformer folder.",
    )
    p.add_argument("input", type=Path, help="a .pt checkpoint or a Latte model/pipeline folder")
    p.add_argument("-o", "--output", required=True,  # a str: "" (an unset variable) is refused, not read as "."
                   help="folder to write (new, or one latte wrote), or a .pt file")
    p.add_argument("--vae", type=Path, default=None,
                   help="AutoencoderKL folder: write a whole LatteClassPipeline folder (transformer, vae, "
                   "scheduler)")
    p.add_argument("--num-heads", type=int, default=None, help="heads, for widths that are no paper size")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output folder even if it holds files latte did not write")
    p.set_defaults(run=run_convert)


def is_text_to_video(state: dict) -> bool:
    return any(k.startswith(("transformer_blocks.", "caption_projection.")) for k in state)


def convert(input: Path, output: str | Path, vae: Path | None = None, num_heads: int | None = None,
            overwrite: bool = False) -> str:
    """Convert one model; returns a one-line description of what was written. The output is checked before
    anything is loaded; an existing folder is replaced only under the output rule (`latte.outputs`)."""
    from latte.cli.arguments import check_at_least
    from latte.models.io import load_torch_checkpoint, unwrap_state_dict
    from latte.models.latte import Latte
    from latte.models.latte_t2v import LatteT2VTransformer
    from latte.outputs import check_file_target, check_folder_target
    from latte.pipelines.class_conditional import LatteClassPipeline

    check_at_least("--num-heads", num_heads, 1)
    to_checkpoint = Path(output).suffix in (".pt", ".pth")
    if input.is_dir():
        if not to_checkpoint:
            raise ValueError(f"a folder converts to an original .pt checkpoint; got output {output}")
        check_file_target(output)
        folder = input / "transformer" if (input / "model_index.json").is_file() else input
        Latte.from_pretrained(folder).save_original(output)
        return f"wrote {output} (original layout, {{'ema': state_dict}})"
    if not input.is_file():
        raise FileNotFoundError(f"no checkpoint or model folder at {input}")
    if to_checkpoint:
        raise ValueError(f"a checkpoint converts to a folder; got output {output} (drop the suffix)")
    check_folder_target(output, overwrite)
    checkpoint = load_torch_checkpoint(input)
    if is_text_to_video(unwrap_state_dict(checkpoint)):
        if vae is not None:
            raise ValueError("--vae builds class-pipeline folders; a text-to-video checkpoint becomes a "
                             "transformer folder (put it in a LattePipeline folder as transformer/)")
        LatteT2VTransformer.from_original(input).save_pretrained(output, overwrite=overwrite)
        return f"wrote {output} (Latte-1 text-to-video transformer, diffusers layout)"
    if vae is not None:
        pipe = LatteClassPipeline.from_original(checkpoint, vae=vae, num_heads=num_heads)
        pipe.save_pretrained(output, overwrite=overwrite)
        return f"wrote {output} (LatteClassPipeline: transformer, vae, scheduler)"
    model = Latte.from_original(checkpoint, num_heads=num_heads)
    model.save_pretrained(output, overwrite=overwrite)
    c = model.config
    return (f"wrote {output} (Latte, width {c.hidden_size}, depth {c.depth}, patch {c.patch_size}, "
            f"{c.num_frames} frames, {c.num_classes or 'no'} classes)")


def run_convert(args: argparse.Namespace) -> int:
    print(convert(args.input, args.output, args.vae, args.num_heads, args.overwrite))
    return 0
