"""Reading and writing model folders: config.json plus safetensors weights (single file or sharded), atomically."""

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from latte.outputs import write_file

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_SUFFIX = ".index.json"


def write_json(path: str | os.PathLike, data: Mapping) -> Path:
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    return write_file(path, lambda tmp: Path(tmp).write_text(text))


def read_json(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing file: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"corrupt JSON file {path}: {err}") from err


def config_from_dict(cls, data: Mapping, what: str):
    """Build the config dataclass `cls` from a config.json dict; `_`-keys (class name, versions) are ignored and
    any other unknown key is an error naming it."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(k for k in data if not k.startswith("_") and k not in known)
    if unknown:
        raise ValueError(f"unknown {what} config keys {unknown}; allowed: {sorted(known)}")
    return cls(**{k: v for k, v in data.items() if k in known})


def save_weights(
    state_dict: Mapping[str, torch.Tensor], folder: str | os.PathLike, weights_name: str = WEIGHTS_NAME,
    max_shard_size: int | None = None,
) -> list[Path]:
    """Write safetensors weights; with `max_shard_size` (bytes) split into shards plus a diffusers-style index."""
    folder = Path(folder)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    meta = {"format": "pt"}
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    if max_shard_size is None or total <= max_shard_size:
        return [write_file(folder / weights_name, lambda tmp: save_file(tensors, tmp, metadata=meta))]
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_size:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    stem, ext = weights_name.rsplit(".", 1)
    written, weight_map = [], {}
    for i, shard in enumerate(shards, start=1):
        name = f"{stem}-{i:05d}-of-{len(shards):05d}.{ext}"
        written.append(write_file(folder / name, lambda tmp, s=shard: save_file(s, tmp, metadata=meta)))
        weight_map.update(dict.fromkeys(shard, name))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    written.append(write_json(folder / (weights_name + INDEX_SUFFIX), index))
    return written


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"corrupt or unreadable weights file {path}: {err}") from err


def load_weights(folder: str | os.PathLike, weights_name: str = WEIGHTS_NAME) -> dict[str, torch.Tensor]:
    """Read weights written by `save_weights` or diffusers: one safetensors file, a sharded index, or a .bin."""
    folder = Path(folder)
    single, index = folder / weights_name, folder / (weights_name + INDEX_SUFFIX)
    if single.is_file():
        return _load_safetensors(single)
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"corrupt index file {index}: no 'weight_map'")
        state: dict[str, torch.Tensor] = {}
        for name in sorted(set(weight_map.values())):
            shard = folder / name
            if not shard.is_file():
                raise FileNotFoundError(f"missing weights shard {shard} (listed in {index})")
            state.update(_load_safetensors(shard))
        return state
    pickle = folder / weights_name.replace(".safetensors", ".bin")
    if pickle.is_file():
        try:
            return torch.load(pickle, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(f"corrupt or unreadable weights file {pickle}: {err}") from err
    raise FileNotFoundError(f"no weights in {folder}: expected {weights_name} or {index.name}")


def load_torch_checkpoint(path: str | os.PathLike) -> Mapping:
    """Open a torch pickle (`.pt`/`.pth`) on the CPU with a clear error when it is missing or broken."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing checkpoint file: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"corrupt or unreadable checkpoint {path}: {err}") from err


def unwrap_state_dict(checkpoint: Mapping, prefer: tuple[str, ...] = ("ema", "model", "state_dict")) -> dict:
    """The weights inside a training checkpoint (`{"ema": ...}`, `{"model": ...}`) or a bare state dict,
    with DDP's `module.` and torch.compile's `_orig_mod.` prefixes removed."""
    for key in prefer:
        if key in checkpoint and isinstance(checkpoint[key], Mapping):
            checkpoint = checkpoint[key]
            break
    state = {}
    for key, value in checkpoint.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"checkpoint entry {key!r} is not a tensor; expected a state dict")
        for prefix in ("module.", "_orig_mod."):
            key = key.removeprefix(prefix)
        state[key] = value
    return state


def load_strict(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """`load_state_dict(strict=True, assign=True)` with shape checks and an error naming every bad key."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = [
        f"{k}: {tuple(state_dict[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''} ({len(missing)})")
        if unexpected:
            parts.append(
                f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''} ({len(unexpected)})"
            )
        if wrong:
            parts.append(f"shape mismatches {wrong[:8]}")
        raise ValueError(f"weights in {source} do not fit the model: " + "; ".join(parts))
    model.load_state_dict(state_dict, strict=True, assign=True)
