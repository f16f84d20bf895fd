"""Base for opt-in wrappers that a pipeline calls in place of its transformer.

A wrapper runs the transformer's own `forward` and `denoise` (same signatures and argument handling) and
replaces only the phases it changes (`text_context`, cached here; `denoise`, `embed` or `run_blocks` in a
subclass), passing the arguments it does not use on as they come: the transformer's signature is written once,
in the transformer. Every attribute a wrapper does not define itself (config, dtype, device, save_pretrained,
...) is the wrapped model's, so `pipe.transformer = Wrapper(pipe.transformer)` works with our LattePipeline
unchanged. The wrapped model must be our `LatteT2VTransformer` (the wrappers run its forward phases:
`text_context`, `embed`, `run_blocks`, `unembed`, `denoise`).
"""

import torch
from torch import nn

from latte.models.latte_t2v import LatteT2VTransformer, TextContext


class TransformerWrapper(nn.Module):
    forward = LatteT2VTransformer.forward  # calls self.text_context, then self.denoise
    denoise = LatteT2VTransformer.denoise  # calls self.embed, self.run_blocks, then self.unembed

    def __init__(self, transformer: LatteT2VTransformer):
        super().__init__()
        if not isinstance(transformer, LatteT2VTransformer):
            raise ValueError(
                f"{type(self).__name__} wraps latte's LatteT2VTransformer, got {type(transformer).__name__}"
            )
        self.transformer = transformer
        self._text_key: tuple | None = None
        self._context: TextContext | None = None

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.transformer, name)

    def text_context(
        self, text: torch.Tensor | TextContext, mask: torch.Tensor | None, batch: int
    ) -> TextContext:
        """The transformer's `text_context`, kept while the same text comes back: a pipeline that passes the
        raw embeddings at every step gets the prompt-only work done once per generation."""
        if isinstance(text, TextContext):
            return self.transformer.text_context(text, mask, batch)
        key = (text, mask)
        same = self._text_key is not None and all(
            (a is None and b is None)
            or (a is not None and b is not None and a.shape == b.shape and torch.equal(a, b))
            for a, b in zip(key, self._text_key, strict=True)
        )
        if not same:
            self._context = self.transformer.text_context(text, mask, batch)
            self._text_key = (text.clone(), None if mask is None else mask.clone())
        return self._context
