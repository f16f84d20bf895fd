"""Sequential CPU offload for the pipelines.

Sequential offload keeps every weight on the CPU and copies a model's parts to the execution device only while
they run: each *block* (an element of a `ModuleList`: transformer blocks, T5 layers, VAE up/down blocks) for
the length of its `forward`, and the rest of a model (embeddings, norms, projections: small) while that model
is active. Between uses the modules hold `meta` placeholders (no values), as with accelerate's offload, so a
weight used while not loaded gives wrong or failing results, never silently right ones: an exact comparison
with the no-offload frames (the tests) covers every weight. The CPU tensors are the originals, never copies:
the outputs are exactly those without offload on the same device.
"""

import contextlib
from collections.abc import Iterable

import torch
from torch import nn


def _blocks(module: nn.Module) -> list[nn.Module]:
    """The outermost ModuleList elements under `module`."""
    found = []
    for child in module.children():
        if isinstance(child, nn.ModuleList):
            found.extend(child)
        else:
            found.extend(_blocks(child))
    return found


class SequentialOffload:
    """Sequential CPU offload of `models` (name -> module) to `device`; `remove()` puts everything back."""

    def __init__(self, models: dict[str, nn.Module], device: torch.device):
        self.device = device
        # owner module -> [(is_parameter, name, CPU original, meta placeholder)]: tensors it holds directly.
        self._slots: dict[nn.Module, list[tuple[bool, str, torch.Tensor, torch.Tensor]]] = {}
        self._skeletons: dict[str, list[nn.Module]] = {}  # model name -> owners outside its blocks
        self._handles = []
        for name, model in models.items():
            blocks = _blocks(model)
            in_blocks = {id(m) for block in blocks for m in block.modules()}
            self._skeletons[name] = [m for m in model.modules() if id(m) not in in_blocks]
            for block in blocks:
                owners = list(block.modules())
                self._handles.append(block.register_forward_pre_hook(lambda m, a, o=owners: self._load(o)))
                self._handles.append(block.register_forward_hook(lambda m, a, out, o=owners: self._release(o)))
            for module in model.modules():
                self._register(module)
        self._release(self._slots)

    def _register(self, module: nn.Module) -> None:
        if module in self._slots:
            return  # shared (tied) module
        slots = []
        for is_param, tensors in ((True, module._parameters), (False, module._buffers)):
            for name, tensor in tensors.items():
                if tensor is not None:
                    placeholder = torch.empty_like(tensor, device="meta")
                    slots.append((is_param, name, tensor, nn.Parameter(placeholder, False) if is_param
                                  else placeholder))
        self._slots[module] = slots

    def _load(self, owners: Iterable[nn.Module]) -> None:
        for owner in owners:
            for is_param, name, original, _ in self._slots.get(owner, ()):
                if is_param:
                    value = original if original.device == self.device else nn.Parameter(
                        original.data.to(self.device), requires_grad=False)
                    owner._parameters[name] = value
                else:
                    owner._buffers[name] = original.to(self.device)

    def _release(self, owners: Iterable[nn.Module]) -> None:
        for owner in owners:
            for is_param, name, _, placeholder in self._slots.get(owner, ()):
                (owner._parameters if is_param else owner._buffers)[name] = placeholder

    def activate(self, name: str | None) -> None:
        """Model `name`'s parts outside its blocks on the device, every other model's released (None: all)."""
        for model, skeleton in self._skeletons.items():
            (self._load if model == name else self._release)(skeleton)

    @contextlib.contextmanager
    def loaded(self, modules: Iterable[nn.Module]):
        """`modules` (and everything inside them) on the device for the `with` body: for weights that a
        model uses outside its blocks' forward."""
        owners = [m for module in modules for m in module.modules()]
        self._load(owners)
        try:
            yield
        finally:
            self._release(owners)

    @contextlib.contextmanager
    def originals(self):
        """Every weight back in place (on the CPU) for the `with` body, e.g. to save the models."""
        self._load_originals()
        try:
            yield
        finally:
            self._release(self._slots)

    def _load_originals(self) -> None:
        for owner, slots in self._slots.items():
            for is_param, name, original, _ in slots:
                (owner._parameters if is_param else owner._buffers)[name] = original

    def remove(self) -> None:
        """Hooks off and the original CPU weights back in every module."""
        for handle in self._handles:
            handle.remove()
        self._load_originals()
