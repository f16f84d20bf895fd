"""`latte info`: what a model folder holds, or the size and cost of a Latte configuration.

- a pipeline folder (model_index.json) or a single model folder: components, parameters, dtypes, size on disk
  (read from the safetensors headers, no weights loaded);
- a Latte name ("Latte-XL/2") with options, a Latte model folder, or an original .pt: trainable parameters,
  the frozen sin-cos tables separately, and the matmul FLOPs of one forward pass.
"""

import argparse
import re
from pathlib import Path

from latte.models.latte import CONDITIONINGS, LATTE_CONFIGS, PATCH_EMBEDDINGS, TEMPORAL_POSITIONS, VARIANTS

VAE_FACTOR = 8  # pixels per latent cell of the SD VAE, to print sizes in pixels
# safetensors header dtypes in torch's names
SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
                      "I64": "int64", "I32": "int32", "U8": "uint8", "BOOL": "bool"}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "info",
        help="components, parameters and FLOPs of a model folder or a Latte configuration",
        description="TARGET: a model or pipeline folder, an original .pt, or a name such as Latte-XL/2 "
        f"(one of {', '.join(LATTE_CONFIGS)}) with the options below.",
    )
    p.add_argument("target", help="folder, .pt checkpoint, or Latte configuration name")
    p.add_argument("--num-classes", type=int, default=0, help="0 = unconditional (default)")
    p.add_argument("--frames", type=int, default=16, help="video frames (default 16)")
    p.add_argument("--image-size", type=int, default=256, help="pixels per side (default 256)")
    p.add_argument("--variant", type=int, choices=VARIANTS, default=1)
    p.add_argument("--patch-embedding", choices=PATCH_EMBEDDINGS, default="frame")
    p.add_argument("--tubelet-size", type=int, default=2)
    p.add_argument("--conditioning", choices=CONDITIONINGS, default="adaln")
    p.add_argument("--temporal-position", choices=TEMPORAL_POSITIONS, default="absolute")
    p.add_argument("--no-learn-sigma", action="store_true", help="epsilon output only")
    p.add_argument("--batch", type=int, default=1, help="batch size the FLOPs are counted for (default 1)")
    p.add_argument("--use-image-num", type=int, default=0, help="stills per video (joint training)")
    p.add_argument("--num-heads", type=int, default=None, help="heads of a .pt whose width is no paper size")
    p.set_defaults(run=run_info)


# ------------------------------------------------------------------------------------------ model folders


def weights_summary(folder: Path) -> tuple[int, list[str], list[str]]:
    """(parameter count, dtypes, other variants) of the weights in `folder`, from safetensors headers (a .bin is
    read weights-only). Variant copies (`model.fp16.safetensors`) hold the same parameters again: the count is
    the plain files' (else the first variant's), the other variants are listed."""
    from safetensors import SafetensorError, safe_open

    from latte.models.io import load_pickled_weights

    groups: dict[str, list[Path]] = {}
    for path in sorted([*folder.glob("*.safetensors"), *folder.glob("*.bin")]):
        groups.setdefault(_variant_of(path.name), []).append(path)
    if not groups:
        return 0, [], []
    chosen = "" if "" in groups else sorted(groups)[0]
    count, dtypes = 0, set()
    for path in groups[chosen]:
        if path.suffix == ".bin":
            state = load_pickled_weights(path, mmap=True)
            count += sum(v.numel() for v in state.values())
            dtypes.update(str(v.dtype).removeprefix("torch.") for v in state.values())
            continue
        try:
            with safe_open(str(path), "pt") as f:
                for key in f.keys():  # noqa: SIM118 (safe_open is no dict)
                    tensor = f.get_slice(key)
                    count += _numel(tensor.get_shape())
                    dtypes.add(SAFETENSORS_DTYPES.get(tensor.get_dtype(), tensor.get_dtype()))
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(f"corrupt or unreadable weights file {path}: {err}") from err
    return count, sorted(dtypes), sorted(v for v in groups if v != chosen)


def _variant_of(name: str) -> str:
    """"fp16" for `model.fp16.safetensors` or `model.fp16-00001-of-00002.safetensors`, "" for plain files."""
    parts = re.sub(r"-\d{5}-of-\d{5}", "", name).split(".")
    return parts[1] if len(parts) == 3 else ""


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def disk_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _class_name(folder: Path) -> str:
    """The component's class from its config: diffusers' `_class_name`, transformers' `architectures`, or a
    tokenizer's `tokenizer_class`."""
    from latte.models.io import read_json

    if not folder.is_dir():
        return "?"
    for name in ("config.json", "scheduler_config.json", "tokenizer_config.json"):
        if (folder / name).is_file():
            data = read_json(folder / name)
            architectures = data.get("architectures") or ["?"]
            return data.get("_class_name") or data.get("tokenizer_class") or architectures[0]
    return "?"


def folder_report(folder: Path) -> list[str]:
    """One line per component (or one for a single model folder)."""
    from latte.models.io import read_json

    index_path = folder / "model_index.json"
    if index_path.is_file():
        index = read_json(index_path)
        lines = [f"{folder}: {index.get('_class_name', '?')} pipeline, {_mib(disk_size(folder))} on disk"]
        components = [(name, folder / name) for name in index if not name.startswith("_")]
    elif (folder / "config.json").is_file():
        lines, components = [], [(folder.name, folder)]
    else:  # component folders without an index (e.g. a training export)
        components = [(sub.name, sub) for sub in sorted(folder.iterdir()) if _class_name(sub) != "?"]
        if not components:
            raise ValueError(f"{folder} holds no model_index.json, config.json or component folders")
        lines = [f"{folder}: {_mib(disk_size(folder))} on disk"]
    for name, sub in components:
        if not sub.is_dir():
            lines.append(f"  {name:<14} missing folder {sub}")
            continue
        count, dtypes, variants = weights_summary(sub)
        params = f"{count / 1e6:10.2f} M params  {','.join(dtypes):<9}" if count else f"{'':>28}"
        extra = f"  (+ variant {', '.join(variants)})" if variants else ""
        lines.append(f"  {name:<14} {_class_name(sub):<26} {params} {_mib(disk_size(sub)):>10}{extra}")
    return lines


def _giga(flops: int) -> str:
    return f"{flops / 1e9:10.2f} G" if flops >= 1e8 else f"{flops / 1e6:10.2f} M"


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB"


# ------------------------------------------------------------------------------------------ configurations


def config_from_args(args: argparse.Namespace):
    from latte.models.latte import LatteConfig

    if args.image_size % VAE_FACTOR:
        raise ValueError(f"--image-size must be a multiple of {VAE_FACTOR}, got {args.image_size}")
    return LatteConfig.from_name(
        args.target, input_size=args.image_size // VAE_FACTOR, num_frames=args.frames,
        num_classes=args.num_classes, learn_sigma=not args.no_learn_sigma, variant=args.variant,
        patch_embedding=args.patch_embedding, tubelet_size=args.tubelet_size, conditioning=args.conditioning,
        temporal_position=args.temporal_position,
    )


def config_report(config, name: str, batch: int = 1, use_image_num: int = 0) -> list[str]:
    """Trainable parameters, frozen tables and forward FLOPs of a Latte configuration (built on meta)."""
    import torch

    from latte.models.latte import Latte, forward_flops

    with torch.device("meta"):
        model = Latte(config)
    c = config
    trainable = model.num_parameters(trainable_only=True)
    tables = {n: b.numel() for n, b in model.named_buffers()}
    flops = forward_flops(c, batch=batch, use_image_num=use_image_num)
    options = (f"variant {c.variant}, {c.patch_embedding} patches"
               f"{f' (s={c.tubelet_size})' if c.patch_embedding == 'tubelet' else ''}, {c.conditioning}, "
               f"{c.temporal_position} temporal positions")
    classes = f"{c.num_classes} classes" if c.num_classes else "unconditional"
    lines = [
        f"{name}: width {c.hidden_size}, depth {c.depth}, {c.num_heads} heads, patch {c.patch_size}; "
        f"{options}",
        f"  input {c.input_size * VAE_FACTOR} px ({c.input_size}x{c.input_size} latents), "
        f"{c.num_frames} frames, {classes}, {'learned' if c.learn_sigma else 'fixed'} variance",
        f"  trainable parameters   {trainable / 1e6:10.2f} M  ({trainable:,})",
        f"  frozen sin-cos tables  {sum(tables.values()) / 1e6:10.2f} M  "
        f"({', '.join(f'{k} {v:,}' for k, v in tables.items())}; not trained)",
        f"  FLOPs per forward      {_giga(flops['total'])}  (batch {batch}"
        f"{f', {use_image_num} stills' if use_image_num else ''}; matmuls and attention products, "
        "2 per multiply-add)",
    ]
    lines += [f"    {part:<20} {_giga(value)}" for part, value in flops.items() if part != "total"]
    return lines


def info(args: argparse.Namespace) -> list[str]:
    from latte.models.io import read_json
    from latte.models.latte import LatteConfig, infer_original_config

    target = Path(args.target)
    if target.is_dir():
        lines = folder_report(target)
        config_path = target / "config.json"
        if config_path.is_file() and read_json(config_path).get("_class_name") == "Latte":
            config = LatteConfig.from_dict(read_json(config_path), config_path)
            lines += config_report(config, target.name, args.batch, args.use_image_num)
        return lines
    if target.is_file():
        from latte.models.io import load_torch_checkpoint, unwrap_state_dict

        state = unwrap_state_dict(load_torch_checkpoint(target))
        config = infer_original_config(state, str(target), args.num_heads)
        return [f"{target}: {_mib(disk_size(target))} on disk"] + config_report(
            config, target.name, args.batch, args.use_image_num)
    if args.target in LATTE_CONFIGS:
        return config_report(config_from_args(args), args.target, args.batch, args.use_image_num)
    raise ValueError(f"{args.target!r} is no folder, checkpoint or Latte name; names: "
                     f"{', '.join(LATTE_CONFIGS)}")


def run_info(args: argparse.Namespace) -> int:
    print("\n".join(info(args)))
    return 0
