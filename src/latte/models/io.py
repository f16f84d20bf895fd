"""Reading and writing model folders: config.json plus safetensors weights (single file or sharded), atomically.

Weight files follow the diffusers / transformers names: `NAME.safetensors`, a shard index
`NAME.safetensors.index.json` with shards `NAME-00001-of-00002.safetensors`, or the pickled `.bin` forms; a
variant inserts its name before the extension (`NAME.fp16.safetensors`, `NAME.safetensors.index.fp16.json`,
shards `NAME.fp16-00001-of-00002.safetensors`).
"""

import contextlib
import dataclasses
import functools
import importlib.util
import json
import logging
import math
import os
import pickle
import types
import typing
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from latte.outputs import write_file, write_folder

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_SUFFIX = ".index.json"


@functools.cache
def import_torchao_quietly() -> None:
    """Import torchao (the optional `quantize` extra) once, if installed, before diffusers does on its first
    load. That import logs a warning per kernel library built for other hardware (CUDA sm90, MXFP8) and
    diffusers 0.42 one about torchao tensor classes that moved: noise on every command, not problems."""
    if importlib.util.find_spec("torchao") is None:
        return
    with contextlib.ExitStack() as stack:
        for name in ("torchao", "torch.utils._pytree", "diffusers.quantizers.torchao.torchao_quantizer"):
            source = logging.getLogger(name)
            stack.callback(source.setLevel, source.level)
            source.setLevel(logging.ERROR)
        import diffusers.quantizers.torchao.torchao_quantizer  # noqa: F401  (imports torchao, checks its classes)
        import torchao.quantization  # noqa: F401


@contextlib.contextmanager
def library_bars_off():
    """Inside: no transformers "Loading weights" or diffusers shard progress bars (per-file noise on every
    load), unless latte logs at debug level (`latte -v`). The previous setting is restored after. Also imports
    torchao quietly (`import_torchao_quietly`)."""
    import_torchao_quietly()
    if logging.getLogger("latte").isEnabledFor(logging.DEBUG):
        yield
        return
    import diffusers.utils.logging
    import transformers.utils.logging

    libraries = (transformers.utils.logging, diffusers.utils.logging)
    enabled = [lib.is_progress_bar_enabled() for lib in libraries]
    for lib in libraries:
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, was in zip(libraries, enabled):
            if was:
                lib.enable_progress_bar()


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


def _value_error(value, expected: type) -> str | None:
    """Why `value` (from JSON) does not fit a field annotated `expected`, or None when it fits. Config numbers
    are sizes, counts and rates, so they must be finite and >= 0 (the dataclass checks tighter limits)."""
    if isinstance(expected, types.UnionType) or typing.get_origin(expected) is typing.Union:
        options = typing.get_args(expected)
        if value is None and type(None) in options:
            return None
        reasons = [_value_error(value, t) for t in options if t is not type(None)]
        return None if None in reasons else reasons[0]
    name = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(expected)
    if name is None:  # a type this check does not know: left to the dataclass
        return None
    if expected is bool:
        fits = isinstance(value, bool)
    elif expected in (int, float):
        numeric = (int, float) if expected is float else int
        fits = isinstance(value, numeric) and not isinstance(value, bool)
        if fits and not (math.isfinite(value) and value >= 0):
            return f"must be {name} >= 0"
    else:
        fits = isinstance(value, expected)
    return None if fits else f"must be {name}"


def config_from_dict(cls, data: Mapping, what: str, source: str | os.PathLike | None = None):
    """Build the config dataclass `cls` from a config.json dict; `_`-keys (class name, versions) are ignored and
    any other unknown key is an error naming it. Each value is checked against its field's type first, so a
    wrong one is reported with its key, value and file (`source`) instead of failing somewhere inside."""
    where = f"{source}: " if source else ""
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}a {what} config must be a JSON object, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(k for k in data if not k.startswith("_") and k not in known)
    if unknown:
        raise ValueError(f"{where}unknown {what} config keys {unknown}; allowed: {sorted(known)}")
    hints = typing.get_type_hints(cls)
    for key in sorted(known & set(data)):
        reason = _value_error(data[key], hints[key])
        if reason:
            raise ValueError(f"{where}{what} config key {key!r} is {data[key]!r}; it {reason}")
    try:
        return cls(**{k: v for k, v in data.items() if k in known})
    except ValueError as err:
        raise ValueError(f"{where}{err}") from err


def save_weights(
    state_dict: Mapping[str, torch.Tensor], folder: str | os.PathLike, weights_name: str = WEIGHTS_NAME,
    max_shard_size: int | None = None, variant: str | None = None,
) -> list[Path]:
    """Write safetensors weights; with `max_shard_size` (bytes) split into shards plus a diffusers-style index.
    `variant` names the files as diffusers does (`NAME.fp16.safetensors`, `NAME.safetensors.index.fp16.json`)."""
    folder = Path(folder)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    meta = {"format": "pt"}
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    single = add_variant(weights_name, variant)
    if max_shard_size is None or total <= max_shard_size:
        return [write_file(folder / single, lambda tmp: save_file(tensors, tmp, metadata=meta))]
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_size:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    stem, ext = single.rsplit(".", 1)
    written, weight_map = [], {}
    for i, shard in enumerate(shards, start=1):
        name = f"{stem}-{i:05d}-of-{len(shards):05d}.{ext}"
        written.append(write_file(folder / name, lambda tmp, s=shard: save_file(s, tmp, metadata=meta)))
        weight_map.update(dict.fromkeys(shard, name))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    written.append(write_json(folder / add_variant(weights_name + INDEX_SUFFIX, variant), index))
    return written


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"corrupt or unreadable weights file {path}: {err}") from err


def load_pickled_weights(path: str | os.PathLike, mmap: bool = False):
    """`torch.load` restricted to tensors and plain containers (`weights_only=True`) on the CPU. A file that
    holds any other pickled object is refused: unpickling it could run code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing file: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        if "weights only load failed" not in str(err).lower():
            raise ValueError(f"corrupt or unreadable file {path}: {str(err).splitlines()[0]}") from err
        raise ValueError(
            f"{path} contains Python code (a pickled object other than tensors) and was refused; "
            "only weights are loaded"
        ) from err
    except Exception as err:  # torch raises many types (RuntimeError, EOFError, ...) for a broken file
        first = (str(err).splitlines() or [""])[0]
        raise ValueError(f"corrupt or unreadable file {path}: {type(err).__name__}: {first}") from err


def add_variant(name: str, variant: str | None) -> str:
    """`model.safetensors` -> `model.fp16.safetensors`; `x.safetensors.index.json` -> `x.safetensors.index.fp16.json`
    (the diffusers and transformers naming)."""
    if not variant:
        return name
    stem, ext = name.rsplit(".", 1)
    return f"{stem}.{variant}.{ext}"


def weights_candidates(
    weights_name: str = WEIGHTS_NAME, variant: str | None = None, use_safetensors: bool | None = None
) -> list[str]:
    """The file names that can hold a model's weights, in the order they are looked for: safetensors (single,
    then sharded) unless `use_safetensors` is False, then the pickled `.bin` forms unless it is True."""
    kinds = []
    if use_safetensors is not False:
        kinds.append(weights_name)
    if use_safetensors is not True:
        kinds.append(weights_name.replace(".safetensors", ".bin"))
    return [add_variant(name, variant) for kind in kinds for name in (kind, kind + INDEX_SUFFIX)]


def _shard_names(index: Path) -> list[str]:
    """The shard files of an index, each checked to be a file inside the index's folder."""
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ValueError(f"corrupt index file {index}: no 'weight_map' of file names")
    names = sorted(set(weight_map.values()))
    for name in names:
        inside = index.parent.resolve()
        if Path(name).is_absolute() or ".." in Path(name).parts or inside not in (inside / name).resolve().parents:
            raise ValueError(f"{index} lists the shard {name!r} outside its folder; shards must be files beside it")
        if not (index.parent / name).is_file():
            raise FileNotFoundError(f"missing weights shard {index.parent / name} (listed in {index})")
    return names


def find_weights(
    folder: str | os.PathLike, weights_name: str = WEIGHTS_NAME, variant: str | None = None,
    use_safetensors: bool | None = None,
) -> Path:
    """The weights file, or shard index (its shards checked), that a folder's model loads from, or an error
    naming the file(s) looked for and what the folder holds instead."""
    folder = Path(folder)
    candidates = weights_candidates(weights_name, variant, use_safetensors)
    for name in candidates:
        path = folder / name
        if path.is_file():
            if name.endswith(".json"):
                _shard_names(path)
            return path
    stem = weights_name.split(".", 1)[0]
    present = sorted(p.name for p in folder.glob(f"{stem}*") if p.is_file()) if folder.is_dir() else []
    wanted = " or ".join(candidates[:2] if use_safetensors is not False else candidates)
    hint = {True: " (use_safetensors=True allows no .bin)", False: " (use_safetensors=False asks for .bin)"}.get(
        use_safetensors, "")
    more = f" and {len(present) - 4} more" if len(present) > 4 else ""
    holds = f"; it holds {', '.join(present[:4])}{more}" if present else ""
    variant_hint = f"; the {variant!r} variant is missing" if variant and present else ""
    raise FileNotFoundError(f"no weights in {folder}: expected {wanted}{hint}{holds}{variant_hint}")


def load_weights(
    folder: str | os.PathLike, weights_name: str = WEIGHTS_NAME, variant: str | None = None,
    use_safetensors: bool | None = None,
) -> dict[str, torch.Tensor]:
    """Read weights written by `save_weights`, diffusers or transformers: one file or a sharded index,
    safetensors or (unless `use_safetensors`) a weights-only `.bin`; `variant` picks e.g. the fp16 files."""
    path = find_weights(folder, weights_name, variant, use_safetensors)
    files = [path.parent / n for n in _shard_names(path)] if path.suffix == ".json" else [path]
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(_load_safetensors(file) if file.suffix == ".safetensors" else load_pickled_weights(file))
    return state


def load_torch_checkpoint(path: str | os.PathLike) -> Mapping:
    """Open a torch pickle (`.pt`/`.pth`) on the CPU with a clear error when it is missing, broken or holds
    code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing checkpoint file: {path}")
    return load_pickled_weights(path)


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


class ModelFolderMixin:
    """Loading and saving for our models (`Latte`, `LatteT2VTransformer`): an `nn.Module` built from one config
    dataclass, `config_class`, whose `to_dict` is the content of config.json and `from_dict` reads it back.

    Both models keep the same folder format and keywords, so this is their one implementation."""

    config_class: type

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        subfolder: str | None = None,
        torch_dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        *,
        variant: str | None = None,
        use_safetensors: bool | None = None,
        device_map=None,
        **options,
    ):
        """Load a model folder (`config.json` + weights, single or sharded), or a Hugging Face Hub id
        (`"maxin-cn/Latte-1", subfolder="transformer"`) through the hub cache. `variant="fp16"` reads
        `diffusion_pytorch_model.fp16.safetensors`; `use_safetensors` True/False allows only safetensors/.bin;
        `device_map` a single device (or "auto"/"balanced": the first GPU, else the CPU). For hub ids:
        `revision`, `cache_dir`, `local_files_only`, `token`, `force_download`."""
        # Imported here: the hub module imports this one.
        from latte.models.hub import hub_options, resolve_model_folder
        from latte.models.placement import single_device

        folder = resolve_model_folder(pretrained_model_name_or_path, {"": WEIGHTS_NAME}, subfolder=subfolder,
                                      variant=variant, use_safetensors=use_safetensors,
                                      **hub_options(options, f"{cls.__name__}.from_pretrained"))
        if not folder.is_dir():
            raise FileNotFoundError(f"model folder not found: {folder}")
        device = device or single_device(device_map) or "cpu"
        config_path = folder / "config.json"
        config = cls.config_class.from_dict(read_json(config_path), config_path)
        state = load_weights(folder, variant=variant, use_safetensors=use_safetensors)
        return cls.from_state_dict(state, config, str(folder), torch_dtype, device)

    @classmethod
    def from_state_dict(
        cls,
        state_dict: Mapping[str, torch.Tensor],
        config,
        source: str = "state dict",
        torch_dtype: torch.dtype | None = None,
        device: str | torch.device = "cpu",
    ):
        """Build on the meta device and load strictly (naming every bad key); returns it in eval mode."""
        with torch.device("meta"):
            model = cls(config)
        load_strict(model, state_dict, source)
        return model.to(device=device, dtype=torch_dtype).eval()

    def save_pretrained(
        self, folder: str | os.PathLike, max_shard_size: int | None = None, overwrite: bool = False
    ) -> Path:
        """Write `config.json` and safetensors weights as a new folder (the output rule of `latte.outputs`)."""

        def fill(tmp: Path) -> None:
            save_weights(self.state_dict(), tmp, max_shard_size=max_shard_size)
            write_json(tmp / "config.json", self.config.to_dict())

        return write_folder(folder, fill, overwrite)
