"""LoRA fine-tuning in the trainer (`train.lora.rank > 0`): peft adapters on the pretrained model, the rest frozen.

Checkpoints then hold only the adapter weights (and the adapter's EMA and optimizer state): the frozen base is
`model.pretrained`, which the run reloads on resume and export. The EMA model shares the frozen weights with
the trained one, so it costs the adapter's size, not a second copy of the model.
"""

import copy

from torch import nn

from latte.models.lora import lora_config
from latte.training.config import Config


def run_lora_config(cfg: Config):
    """The run's `peft.LoraConfig`, naming the pretrained model as its base."""
    lora = cfg.train.lora
    return lora_config(lora.rank, lora.alpha, lora.dropout, lora.targets, base=cfg.model.pretrained)


def apply_lora(model: nn.Module, cfg: Config) -> nn.Module:
    """Wrap the targeted linears with trainable LoRA adapters and freeze everything else."""
    from latte.models.lora import add_adapter

    add_adapter(model, run_lora_config(cfg))
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name)
    return model


def trained_names(model: nn.Module) -> list[str]:
    """The names of the weights a run trains, saves and exports: all of them, or the adapter's."""
    return [name for name, param in model.named_parameters() if param.requires_grad]


def make_ema(model: nn.Module, share_frozen: bool) -> nn.Module:
    """A frozen copy of `model` for the EMA; with `share_frozen` it shares the weights that do not train."""
    memo = {id(p): p for p in model.parameters() if not p.requires_grad} if share_frozen else {}
    return copy.deepcopy(model, memo).requires_grad_(False).eval()
