"""LoRA adapters on the Latte-1 transformer, built on peft: add, save, load, weight, fuse and remove them.

`LatteT2VTransformer` keeps diffusers' module names and, like diffusers' `LatteTransformer3DModel`, has
separate q/k/v projections (`attn1.to_q`, `attn1.to_k`, `attn1.to_v`, `attn1.to_out.0`; `attn2.*` in the
spatial blocks), so an adapter needs no key mapping: the same folder loads on ours and, through
`peft.PeftModel.from_pretrained`, on diffusers' model.

An adapter folder is peft's own format: `adapter_config.json` (a `peft.LoraConfig`) and
`adapter_model.safetensors` with keys `base_model.model.<module>.lora_A.weight` / `.lora_B.weight`. Keys
without the `base_model.model.` prefix (diffusers' `save_lora_adapter` layout) load too. An adapter trained with
new words (`train.lora.new_words`) also holds `new_words.safetensors`: each word's text-encoder embedding row,
keyed by the word, which `LattePipeline.load_lora_weights` adds to the tokenizer and text encoder
(`latte.models.text_encoder.add_words`); peft knows nothing of it.
"""

import logging
import os
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

ATTENTION_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # both block kinds; peft matches name suffixes
FEED_FORWARD_TARGETS = ("ff.net.0.proj", "ff.net.2")
CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
WORDS_NAME = "new_words.safetensors"
PEFT_PREFIX = "base_model.model."  # what PeftModel puts before the module names
_SUFFIXES = (".lora_A.weight", ".lora_B.weight")


def lora_config(rank: int, alpha: float | None = None, dropout: float = 0.0, targets=ATTENTION_TARGETS, base=None):
    """A `peft.LoraConfig`; `alpha` defaults to `rank` (a scale of 1)."""
    from peft import LoraConfig

    return LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else rank,
        lora_dropout=dropout,
        target_modules=list(targets),
        base_model_name_or_path=str(base) if base else None,
    )


def lora_layers(model: nn.Module) -> list[nn.Module]:
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def add_adapter(model: nn.Module, config, adapter_name: str = "default") -> nn.Module:
    """Wrap the linears `config.target_modules` names with peft LoRA layers (B starts at zero, so the model's
    output is unchanged). A target the model lacks is an error."""
    from peft import inject_adapter_in_model
    from peft.tuners.tuners_utils import check_target_module_exists

    if adapter_name in _adapter_names(model):
        raise ValueError(f"an adapter named {adapter_name!r} is already loaded; pass another adapter_name")
    names = [name for name, _ in model.named_modules()]
    for target in config.target_modules:
        if not any(name == target or name.endswith("." + target) for name in names):
            raise ValueError(
                f"LoRA target {target!r} names no module of {type(model).__name__}; targets are module name "
                f"suffixes such as {', '.join(ATTENTION_TARGETS + FEED_FORWARD_TARGETS)}"
            )
    if not any(check_target_module_exists(config, name) for name in names):
        raise ValueError(f"LoRA targets {list(config.target_modules)} match no module")
    return inject_adapter_in_model(config, model, adapter_name)


def adapter_state_dict(model: nn.Module, adapter_name: str = "default") -> dict[str, torch.Tensor]:
    """The adapter's weights, keyed `<module>.lora_A.weight` / `.lora_B.weight` (no adapter name)."""
    from peft import get_peft_model_state_dict

    # Our targets are never embeddings; peft's "auto" would look for the base's config.json, on the hub if the
    # local folder has none (a pipeline folder does not), and warn about the vocabulary.
    return get_peft_model_state_dict(model, adapter_name=adapter_name, save_embedding_layers=False)


def save_adapter(
    folder: Path, config, weights: dict[str, torch.Tensor], words: dict[str, torch.Tensor] | None = None
) -> None:
    """Write `weights` (as `adapter_state_dict` gives them) and `config` into `folder` in peft's format, and the
    new words' embedding rows if any; the caller creates the folder (by the output rule,
    `latte.outputs.write_folder`)."""
    from latte.models.io import save_weights

    config.save_pretrained(str(folder))
    save_weights({PEFT_PREFIX + key: value for key, value in weights.items()}, folder, WEIGHTS_NAME)
    if words:
        save_weights(words, folder, WORDS_NAME)


def read_adapter(path: str | os.PathLike):
    """(config, weights without the PeftModel prefix) of an adapter folder; one-line errors for what is not one."""
    from peft import LoraConfig
    from safetensors.torch import load_file

    path = Path(path)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path} is not a LoRA adapter folder: it lacks {name}")
    try:
        config = LoraConfig.from_pretrained(str(path))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path / CONFIG_NAME} is not a peft LoRA config: {err}") from err
    weights = {key.removeprefix(PEFT_PREFIX): value for key, value in load_file(str(path / WEIGHTS_NAME)).items()}
    return config, weights


def read_words(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """An adapter folder's new words and their embedding rows ({} for none)."""
    from safetensors.torch import load_file

    file = Path(path) / WORDS_NAME
    if not file.is_file():
        return {}
    try:
        return load_file(str(file))
    except Exception as err:  # safetensors raises its own error types for a bad file
        raise ValueError(f"{file} is not a safetensors file of word embeddings: {err}") from err


def check_adapter_fits(model: nn.Module, config, weights: dict[str, torch.Tensor], source) -> None:
    """Fail in one line when the adapter's keys, ranks or shapes do not fit `model`."""
    from peft.tuners.tuners_utils import check_target_module_exists

    if config.rank_pattern or config.alpha_pattern or config.use_dora:
        raise ValueError(f"adapter {source} uses rank_pattern, alpha_pattern or DoRA; only plain LoRA is supported")
    found = {}
    for key, value in weights.items():
        suffix = next((s for s in _SUFFIXES if key.endswith(s)), None)
        if suffix is None:
            raise ValueError(
                f"adapter {source} holds {key!r}, which is not a LoRA A/B weight; only plain LoRA is supported"
            )
        found.setdefault(key.removesuffix(suffix), {})[suffix] = value
    modules = dict(model.named_modules())
    targeted = {name for name, m in modules.items() if _is_linear(m) and check_target_module_exists(config, name)}
    strangers = sorted(set(found) - targeted)
    if strangers:
        raise ValueError(
            f"adapter {source} does not fit {type(model).__name__}: it has weights for {len(strangers)} modules "
            f"that the model lacks or its config does not target (e.g. {strangers[0]!r})"
        )
    missing = sorted(targeted - set(found))
    if missing:
        raise ValueError(
            f"adapter {source} does not fit {type(model).__name__}: its config targets {len(missing)} modules it "
            f"has no weights for (e.g. {missing[0]!r}); was it trained on a model of another depth?"
        )
    for name, pair in sorted(found.items()):
        base = modules[name]
        base = getattr(base, "base_layer", base)
        rank = config.r
        expected = {_SUFFIXES[0]: (rank, base.in_features), _SUFFIXES[1]: (base.out_features, rank)}
        for suffix, shape in expected.items():
            got = tuple(pair[suffix].shape) if suffix in pair else None
            if got != shape:
                raise ValueError(
                    f"adapter {source} does not fit: {name}{suffix} has shape {got}, the model and the adapter's "
                    f"rank r={rank} need {shape}"
                )


def load_adapter(model: nn.Module, path: str | os.PathLike, adapter_name: str = "default", scale: float = 1.0):
    """Load the adapter folder `path` onto `model` as `adapter_name` (checked first: nothing changes when it
    does not fit), active with weight `scale`."""
    from peft import set_peft_model_state_dict

    config, weights = read_adapter(path)
    check_adapter_fits(model, config, weights, path)
    add_adapter(model, config, adapter_name)
    set_peft_model_state_dict(model, weights, adapter_name=adapter_name)
    model.requires_grad_(False)
    layers = lora_layers(model)
    active = [a for a in layers[0].active_adapters if a in _adapter_names(model)] if layers else []
    set_adapters(model, [*dict.fromkeys([*active, adapter_name])], None)
    for layer in layers:
        layer.set_scale(adapter_name, scale)
    return model


def set_adapters(model: nn.Module, names: list[str], weights: list[float] | None) -> None:
    """Make `names` the active adapters, with `weights` (default: leave each one's weight as it is)."""
    known = _adapter_names(model)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"no adapter named {unknown[0]!r} is loaded; loaded: {', '.join(known) or 'none'}")
    if weights is not None and len(weights) != len(names):
        raise ValueError(f"set_adapters got {len(names)} adapter names but {len(weights)} weights")
    for layer in lora_layers(model):
        if layer.merged:
            raise ValueError("adapters are fused into the weights: call unfuse_lora() before set_adapters")
        layer.set_adapter(names)
        for name, weight in zip(names, weights or [], strict=False):
            layer.set_scale(name, weight)
    model.requires_grad_(False)  # peft's set_adapter makes the active adapters trainable


def fuse(model: nn.Module) -> None:
    """Add the active adapters (at their weights) into the base weights: plain-linear speed, same outputs."""
    for layer in lora_layers(model):
        layer.merge()


def unfuse(model: nn.Module) -> None:
    for layer in lora_layers(model):
        layer.unmerge()


def unload(model: nn.Module) -> None:
    """Remove every adapter: each LoRA layer is replaced by its base linear. Fused adapters stay in the weights
    (as in diffusers: `fuse` then `unload` gives a plain model with the adapters built in)."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config


def _adapter_names(model: nn.Module) -> list[str]:
    return list(getattr(model, "peft_config", {}))


def _is_linear(module: nn.Module) -> bool:
    return isinstance(getattr(module, "base_layer", module), nn.Linear)
