"""`device_map` for `from_pretrained`: where each loaded component goes.

Latte's components are small enough that none needs splitting across devices (Latte-1's largest, the T5-XXL
encoder, is 9.5 GB in fp16), so a map places whole components:
- `None`: every component stays on the CPU, where it was loaded (then `pipe.to("cuda")` as usual);
- a device (`"cuda"`, `"cuda:1"`, `"cpu"`, `0`, a `torch.device`): every component there;
- `"balanced"` (diffusers' pipeline-level map) or `"auto"`: over all visible CUDA GPUs, largest component first
  onto the GPU holding least so far; everything on the one GPU when there is one, on the CPU when there is none;
- a dict `{component: device}`: as given; components it does not name stay on the CPU.
"""

import torch

from latte.devices import check_device

BALANCED = ("balanced", "auto")
SPREAD = '"balanced" or "auto" (whole components spread over the visible GPUs)'


def _gpus() -> list[torch.device]:
    return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]


def component_devices(device_map, sizes: dict[str, int]) -> dict[str, torch.device]:
    """Where each component (name -> size in bytes) goes; components missing from the answer stay put."""
    if device_map is None:
        return {}
    if isinstance(device_map, dict):
        unknown = sorted(set(device_map) - set(sizes))
        if unknown:
            raise ValueError(f"device_map names unknown components {unknown}; components: {sorted(sizes)}")
        return {name: check_device(device, f"device_map[{name!r}]") for name, device in device_map.items()}
    if isinstance(device_map, str) and device_map in BALANCED:
        gpus = _gpus()
        if len(gpus) < 2:
            return dict.fromkeys(sizes, gpus[0] if gpus else torch.device("cpu"))
        load = dict.fromkeys(gpus, 0)
        placed = {}
        for name in sorted(sizes, key=sizes.get, reverse=True):
            gpu = min(gpus, key=lambda g: (load[g], g.index))
            placed[name] = gpu
            load[gpu] += sizes[name]
        return placed
    return dict.fromkeys(sizes, check_device(device_map, "device_map",
                                              also=f"{SPREAD} or a dict {{component: device}}"))


def single_device(device_map) -> torch.device | None:
    """The one device a single model goes to (`"balanced"`/`"auto"`: the first GPU, else the CPU)."""
    if isinstance(device_map, dict):
        raise ValueError("a dict device_map places pipeline components; a single model takes one device: "
                         f'use None, a device ("cuda", "cuda:1", "cpu", 0, torch.device), {SPREAD}')
    return component_devices(device_map, {"model": 0}).get("model")


def module_bytes(module) -> int:
    """Bytes of a component's parameters and buffers (0 for a tokenizer or scheduler)."""
    if not isinstance(module, torch.nn.Module):
        return 0
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)
