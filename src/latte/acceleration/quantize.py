"""int8 quantization of the pipeline's linears (`pipe.quantize(mode)`, `latte generate --quantize MODE`).

- `int8-dynamic`: int8 weights and per-token int8 activations, quantized on the fly, for the linears of the
  transformer blocks (attention and feed-forward: nearly all of a step's FLOPs). On CPU this is PyTorch's own
  x86 dynamic quantization (`torch.ao.quantization.quantize_dynamic`, the x86 engine: fbgemm, oneDNN with
  VNNI/AMX where the CPU has them); elsewhere torchao's `Int8DynamicActivationInt8WeightConfig`. torchao's
  path runs on CPU too, but its int8 linear took 13-18x the fp32 time on an AVX2 CPU, compiled or not.
- `int8`: int8 weight-only (torchao's `Int8WeightOnlyConfig`) for the transformer blocks and the T5 encoder:
  their weights take a quarter of the fp32 bytes (plus a scale per row), activations stay in the model dtype.

The embeddings, the adaLN/timestep linears and the output projection stay in the model dtype: they are a
sliver of the work and the most sensitive to rounding. Quantization is lossy: frames move away from the
unquantized ones (measured in docs/benchmarks.md); it cannot be undone on the same pipeline.
"""

import gc
import importlib.util
import logging
import warnings

import torch
from torch import nn

logger = logging.getLogger(__name__)

MODES = ("int8-dynamic", "int8")


def check_mode(mode: str) -> str:
    """`mode` if it is one of `MODES`, else a one-line ValueError that names it and the allowed ones."""
    if mode not in MODES:
        raise ValueError(f"unknown quantization mode {mode!r}; allowed: {', '.join(MODES)}")
    return mode


def check_quantize(mode: str, dtype: torch.dtype, device_type: str) -> None:
    """What can be known wrong before loading: the mode, the model dtype, torchao where the mode needs it."""
    check_mode(mode)
    if mode == "int8-dynamic" and device_type == "cpu" and dtype != torch.float32:
        raise ValueError(f"int8-dynamic on CPU quantizes float32 models, not {dtype}; load in float32 "
                         "(--dtype fp32 or auto)")
    if (mode == "int8" or device_type != "cpu") and importlib.util.find_spec("torchao") is None:
        raise ValueError(f"quantization mode {mode!r} needs torchao: pip install 'latte[quantize]' (or pip "
                         "install torchao --no-deps next to your torch)")


def transformer_block_linears(transformer: nn.Module) -> set[str]:
    """Qualified names of the linears inside the spatial and temporal transformer blocks."""
    blocks = ("transformer_blocks.", "temporal_transformer_blocks.")
    return {name for name, module in transformer.named_modules()
            if isinstance(module, nn.Linear) and name.startswith(blocks)}


def quantize_pipeline(pipe, mode: str) -> None:
    """Quantize `pipe`'s models in place (see the module docstring for what each mode does)."""
    from latte.pipelines.text_to_video import _unwrap

    transformer = _unwrap(pipe.transformer)
    check_quantize(mode, transformer.dtype, transformer.device.type)
    quantize_transformer(transformer, mode)
    if mode == "int8":
        weight_only_int8(pipe.text_encoder)
    gc.collect()  # reference cycles hold the replaced float linears until a collection: 4 GiB at Latte-1's size
    logger.info("quantized: %s", mode)


def quantize_transformer(transformer: nn.Module, mode: str) -> None:
    """What `pipe.quantize(mode)` does to the transformer: its block linears in int8, with dynamically
    quantized activations ("int8-dynamic") or weight-only ("int8")."""
    names = transformer_block_linears(transformer)
    (dynamic_int8 if mode == "int8-dynamic" else weight_only_int8)(transformer, names)


def dynamic_int8(model: nn.Module, names: set[str]) -> None:
    """int8 weights and dynamically quantized int8 activations for the linears `names` of `model`."""
    if next(model.parameters()).device.type != "cpu":
        torchao = _import_torchao()
        torchao.quantize_(model, torchao.Int8DynamicActivationInt8WeightConfig(), filter_fn=_named(names))
        return
    with warnings.catch_warnings():  # the deprecation notice of eager quantization: still the fast CPU path
        warnings.simplefilter("ignore")
        torch.ao.quantization.quantize_dynamic(model, names, dtype=torch.qint8, inplace=True)


def weight_only_int8(model: nn.Module, names: set[str] | None = None) -> None:
    """int8 weight-only quantization of the linears `names` of `model` (None: all of them)."""
    torchao = _import_torchao()
    torchao.quantize_(model, torchao.Int8WeightOnlyConfig(),
                      filter_fn=None if names is None else _named(names))


def _named(names: set[str]):
    return lambda module, name: isinstance(module, nn.Linear) and name in names


def _import_torchao():
    """torchao's quantization API (checked to be installed by `check_quantize`), without its import noise."""
    from latte.models.io import import_torchao_quietly

    import_torchao_quietly()
    import torchao.quantization

    return torchao.quantization
