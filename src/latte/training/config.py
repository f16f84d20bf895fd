"""Training configuration: frozen dataclasses read from a YAML file plus dotted `key=value` overrides.

    cfg = load_config("configs/shapes-cpu.yaml", ["train.lr=3e-4", "model.args.num_layers=2"])

Unknown keys, values of the wrong type and values out of range are errors that name the key, the value and
what is allowed. The resolved config is written next to the checkpoints (`RUN_DIR/config.yaml`), once the run
holds its folder's lock and may resume there, so a run can be resumed or exported from its folder alone.
"""

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from latte.data.synthetic import CAPTION_STYLES, split_parts
from latte.diffusion.gaussian import PREDICTION_TYPES
from latte.outputs import write_file

MODEL_TYPES = ("t2v", "latte")
DATA_SOURCES = ("synthetic", "videos")
FRAME_SAMPLING = ("stride", "linspace")
LR_SCHEDULES = ("constant", "cosine")
PRECISIONS = ("fp32", "bf16", "fp16")
PARALLEL = ("ddp", "fsdp")


@dataclass(frozen=True)
class ModelConfig:
    # "t2v": Latte-1-style text-to-video (LatteT2VTransformer); "latte": the paper's class/unconditional model
    type: str = "t2v"
    # "latte" only: a size preset from latte.models.latte.LATTE_CONFIGS, e.g. "Latte-XL/2".
    name: str | None = None
    # Constructor keywords (LatteT2VConfig / LatteConfig fields) over the preset or the defaults.
    args: dict = field(default_factory=dict)
    # Start from trained weights (fine-tuning): a model folder (a pipeline folder's transformer/ is found), or
    # for "latte" an original checkpoint (.pt). Its sizes are used; `args` and `name` must then be empty.
    pretrained: str | None = None


@dataclass(frozen=True)
class DataConfig:
    source: str = "synthetic"  # "synthetic": latte.data.synthetic.SyntheticShapes; "videos": a folder
    root: str | None = None  # videos: the folder of clips (class labels from sub-folders if no captions)
    captions: str | None = None  # videos: JSONL or CSV with `path` and `caption` (paths relative to root)
    image_root: str | None = None  # joint training: a folder of still images (sub-folders = class labels)
    use_image_num: int = 0  # stills appended to each clip (the paper's Latte+IMG uses 8); "latte" models only
    num_frames: int = 16
    frame_interval: int = 3  # stride between sampled frames; the window is num_frames * frame_interval
    sampling: str = (
        "stride"  # "stride": every frame_interval-th frame; "linspace": num_frames spread over the window
    )
    size: int = 256  # frames are resized (shorter side) and centre-cropped to size x size
    flip: bool = False  # random horizontal flip
    num_samples: int = 64  # synthetic: clips in the data set
    split: str = "train"  # synthetic: latte.data.synthetic.SPLITS, "+" mixes them ("train", "shrink+train", ...)
    synthetic_seed: int = 0
    # synthetic: the caption vocabulary, "basic" (the shipped model's) or "rich" (synonyms, many sentence
    # shapes); a rich model needs a tokenizer and text encoder built on the rich corpus (docs/default_model.md).
    synthetic_captions: str = "basic"
    # Encode clips with the VAE and captions with the text encoder once, then train from safetensors shards.
    use_cache: bool = True
    cache_dir: str | None = None  # default: RUN_DIR/cache
    cache_repeats: int = 1  # cached draws per clip (random window / flip differ per draw)
    shard_size: int = 256  # clips per cache shard
    num_workers: int = 0  # DataLoader workers: building the cache, and training batches from it


@dataclass(frozen=True)
class LoraSettings:
    """LoRA fine-tuning (peft): only the adapters train, the pretrained model stays frozen."""

    rank: int = 0  # 0 = off (full fine-tuning); Latte-1: 8-64
    alpha: float | None = None  # the adapters' scale is alpha / rank; default alpha = rank (scale 1)
    dropout: float = 0.0  # on the adapters' input
    # Module name suffixes to adapt: the attention projections of both block kinds; add "ff.net.0.proj" and
    # "ff.net.2" for the feed-forward layers too.
    targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    # Words of the captions the tokenizer lacks, each given a piece of its own and a new (seeded random, frozen)
    # text-encoder row, which the adapter learns to read; `latte export --lora` ships the rows with it.
    new_words: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return self.rank > 0


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 1000  # optimizer steps
    batch_size: int = 8  # global batch per optimizer step (all ranks and accumulation micro-steps)
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0  # linear warm-up from 0
    lr_schedule: str = "constant"  # after warm-up: "constant" or "cosine" (down to min_lr at `steps`)
    min_lr: float = 0.0
    clip_grad: float = 0.0  # max gradient norm; 0 = off (the paper: 0.1)
    clip_grad_from: int = 0  # step from which clipping applies (the paper: 20k-500k depending on the data)
    ema_decay: float = 0.9999
    precision: str = "fp32"  # "bf16" / "fp16" autocast; the master weights and the loss stay fp32
    gradient_checkpointing: bool = False
    tf32: bool = True  # TF32 matmuls on CUDA (the paper trained in fp32 with TF32)
    cfg_dropout: float = 0.1  # probability of dropping the caption (to "") or label (to the null class)
    # What the model predicts (diffusers' names): "epsilon" (the paper) or "v_prediction" (v = sqrt(abar) eps -
    # sqrt(1 - abar) x0), which weights the nearly-pure-noise timesteps enough for a small model to learn the
    # mean there; export writes it into the scheduler config, so every diffusers sampler follows.
    prediction_type: str = "epsilon"
    lora: LoraSettings = field(default_factory=LoraSettings)
    seed: int = 0
    parallel: str = "ddp"  # under torchrun: "ddp", or "fsdp" for models that do not fit one device
    device: str | None = None  # default: cuda when available, else cpu


@dataclass(frozen=True)
class LogSettings:
    log_every: int = 10  # steps between metric lines (JSONL, TensorBoard when installed)
    ckpt_every: int = 500  # steps between checkpoints (one is always written at the end)
    keep_last: int = 3  # checkpoints kept on disk
    sample_every: int = 0  # steps between rendered samples (0 = off)
    sample_prompts: tuple[str, ...] = ()  # t2v; class models sample labels 0.. instead
    sample_steps: int = 25
    tensorboard: bool = True  # only when tensorboard is installed


@dataclass(frozen=True)
class Config:
    output_dir: str = "runs/latte"
    # Folder with the frozen vae/ (t2v: also text_encoder/, tokenizer/, scheduler/); `latte export` copies it.
    components: str | None = None
    # When set, the finished run's EMA model is exported here (as `latte export`): one command, one model.
    export_dir: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainSettings = field(default_factory=TrainSettings)
    log: LogSettings = field(default_factory=LogSettings)

    def __post_init__(self):
        m, d, t, lg = self.model, self.data, self.train, self.log
        _choice("model.type", m.type, MODEL_TYPES)
        _choice("data.source", d.source, DATA_SOURCES)
        _choice("data.sampling", d.sampling, FRAME_SAMPLING)
        _choice("train.lr_schedule", t.lr_schedule, LR_SCHEDULES)
        _choice("train.precision", t.precision, PRECISIONS)
        _choice("train.parallel", t.parallel, PARALLEL)
        _choice("train.prediction_type", t.prediction_type, PREDICTION_TYPES)
        try:
            split_parts(d.split)
        except ValueError as e:
            raise ValueError(f"data.split: {e}") from None
        _choice("data.synthetic_captions", d.synthetic_captions, CAPTION_STYLES)
        # Whole numbers and the least value each allows.
        least = {
            "data.num_frames": (d.num_frames, 1),
            "data.frame_interval": (d.frame_interval, 1),
            "data.size": (d.size, 1),
            "data.num_samples": (d.num_samples, 1),
            "data.use_image_num": (d.use_image_num, 0),
            "data.cache_repeats": (d.cache_repeats, 1),
            "data.shard_size": (d.shard_size, 1),
            "data.num_workers": (d.num_workers, 0),
            "train.steps": (t.steps, 1),
            "train.batch_size": (t.batch_size, 1),
            "train.grad_accum": (t.grad_accum, 1),
            "train.warmup_steps": (t.warmup_steps, 0),
            "train.clip_grad_from": (t.clip_grad_from, 0),
            "log.log_every": (lg.log_every, 1),
            "log.ckpt_every": (lg.ckpt_every, 1),
            "log.keep_last": (lg.keep_last, 1),
            "log.sample_every": (lg.sample_every, 0),
            "log.sample_steps": (lg.sample_steps, 1),
        }
        for key, (value, low) in least.items():
            _check(key, value, value >= low, f">= {low}")
        for key, seed in (("train.seed", t.seed), ("data.synthetic_seed", d.synthetic_seed)):
            _check(key, seed, 0 <= seed < 2**32, "in [0, 2**32)")
        # Comparisons are False for NaN, so NaN fails each of these.
        _check("train.lr", t.lr, 0 < t.lr < math.inf, "a finite number > 0")
        _check("train.min_lr", t.min_lr, 0 <= t.min_lr <= t.lr, f"in [0, train.lr] = [0, {t.lr}]")
        _check("train.weight_decay", t.weight_decay, 0 <= t.weight_decay < math.inf, "a finite number >= 0")
        for i, beta in enumerate(t.adam_betas):
            _check(f"train.adam_betas[{i}]", beta, 0 <= beta < 1, "in [0, 1)")
        _check("train.clip_grad", t.clip_grad, 0 <= t.clip_grad < math.inf, "a finite number >= 0 (0 = off)")
        _check("train.ema_decay", t.ema_decay, 0 <= t.ema_decay <= 1, "in [0, 1]")
        _check("train.cfg_dropout", t.cfg_dropout, 0 <= t.cfg_dropout < 1, "in [0, 1)")
        if t.batch_size % t.grad_accum:
            raise ValueError(
                f"train.batch_size ({t.batch_size}) must be a multiple of train.grad_accum ({t.grad_accum})"
            )
        if d.source == "videos" and not d.root:
            raise ValueError("data.source=videos needs data.root (the folder of clips)")
        if m.pretrained and (m.args or m.name):
            raise ValueError(
                "model.pretrained takes the sizes from the pretrained model: leave model.args and "
                "model.name empty"
            )
        lora = t.lora
        _check("train.lora.rank", lora.rank, lora.rank >= 0, ">= 0 (0 = full fine-tuning)")
        if lora.alpha is not None:
            _check("train.lora.alpha", lora.alpha, 0 < lora.alpha < math.inf, "a finite number > 0, or null")
        _check("train.lora.dropout", lora.dropout, 0 <= lora.dropout < 1, "in [0, 1)")
        _check("train.lora.targets", list(lora.targets), len(lora.targets) > 0, "a non-empty list of module names")
        if lora.new_words and not lora.enabled:
            raise ValueError("train.lora.new_words needs a LoRA run (train.lora.rank > 0)")
        _check("train.lora.new_words", list(lora.new_words), len(set(lora.new_words)) == len(lora.new_words),
               "a list of distinct words")
        if lora.enabled and (m.type != "t2v" or not m.pretrained):
            raise ValueError(
                "train.lora adapts a pretrained text-to-video model: it needs model.type=t2v and model.pretrained "
                f"(got model.type={m.type!r}, model.pretrained={m.pretrained!r})"
            )
        if d.use_image_num and (m.type != "latte" or not d.image_root):
            raise ValueError(
                "data.use_image_num > 0 (joint image-video training) needs model.type=latte and "
                "data.image_root"
            )

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir)

    @property
    def cache_path(self) -> Path:
        return Path(self.data.cache_dir) if self.data.cache_dir else self.run_dir / "cache"

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))


def _check(key: str, value, ok: bool, rule: str) -> None:
    if not ok:
        raise ValueError(f"{key}={value!r} is not allowed; it must be {rule}")


def _choice(key: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{key}={value!r} is not allowed; use one of {', '.join(map(str, allowed))}")


def _plain(value):
    """Tuples to lists, recursively, so the config dumps as plain YAML."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ----------------------------------------------------------------------------- building from dicts
def _coerce(key: str, value, hint):
    """Check `value` against the annotation `hint`, converting int -> float and list -> tuple."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(key, value, option)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(errors[0])
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key} must be a list, got {value!r}")
        inner = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        if inner is None and len(args) != len(value):
            raise ValueError(f"{key} must have {len(args)} entries, got {value!r}")
        return tuple(_coerce(f"{key}[{i}]", v, inner or args[i]) for i, v in enumerate(value))
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    if hint is float and not isinstance(value, bool):
        # int -> float; YAML 1.1 reads "3e-4" (no dot) as a string.
        try:
            return float(value) if isinstance(value, (int, str)) else value
        except ValueError:
            pass
    if hint in (int, float, str, bool) and (type(value) is not hint):
        raise ValueError(f"{key} must be {hint.__name__}, got {value!r} ({type(value).__name__})")
    return value


def _build(cls, data: dict, prefix: str = ""):
    if not isinstance(data, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(
            f"unknown config key {prefix + unknown[0]!r}; allowed under "
            f"{prefix.rstrip('.') or 'the top level'}: {', '.join(names)}"
        )
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value or {}, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(prefix + name, value, hint)
    return cls(**kwargs)


def config_from_dict(data: dict) -> Config:
    return _build(Config, data)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set dotted `key=value` pairs (values parsed as YAML: 3e-4, true, [1, 2], null) in a nested dict."""
    data = dict(data)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} must look like key=value, e.g. train.lr=3e-4")
        node, parts = data, key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        node[parts[-1]] = yaml.safe_load(text) if text else None
    return data


def read_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"cannot parse {path}: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of config sections, got {type(data).__name__}")
    return data


def load_config(path: str | os.PathLike | None, overrides: list[str] = ()) -> Config:
    """A config from a YAML file (or the defaults when `path` is None) plus `key=value` overrides."""
    data = read_yaml(path) if path is not None else {}
    return config_from_dict(apply_overrides(data, list(overrides)))


def save_config(cfg: Config, path: str | os.PathLike) -> Path:
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    return write_file(path, lambda tmp: Path(tmp).write_text(text))
