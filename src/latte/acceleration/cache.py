"""Cache mode (opt-in, approximate): skip whole transformer evaluations while the input barely changes.

TeaCache (Liu et al., "Timestep Embedding Tells: It's Time to Cache for Video Diffusion Model", 2024): the
timestep-modulated input of the first block changes, from one denoising step to the next, roughly as much as
the output of all the blocks does. So the wrapper sums the relative L1 change of that input since the last
full evaluation; while the sum stays below `threshold` it skips every block and adds the residual of the
last full evaluation (blocks' output minus their input) to the new input instead. Embedding and final
layer always run.

Differences from the paper: no fitted polynomial rescaling of the change (none is published for Latte-1, and a
rescale only moves the threshold); one decision for the whole batch (both guidance halves); the first step of
every generation is always computed. A new generation is recognised by a timestep that does not decrease.

    pipe.transformer = TeaCache(pipe.transformer, threshold=0.1)
    video = pipe(prompt, ...)
    print(pipe.transformer.computed, pipe.transformer.skipped)
"""

import logging

import torch

from latte.acceleration.wrappers import TransformerWrapper
from latte.models.latte_t2v import LatteT2VTransformer, TextContext

logger = logging.getLogger(__name__)


class TeaCache(TransformerWrapper):
    """`transformer` with TeaCache step skipping; `threshold` 0 computes every step (exact)."""

    def __init__(self, transformer: LatteT2VTransformer, threshold: float = 0.1):
        super().__init__(transformer)
        if not threshold >= 0:
            raise ValueError(f"TeaCache threshold must be >= 0, got {threshold}")
        self.threshold = threshold
        self.reset()

    def reset(self) -> None:
        """Forget the cached residual and the counters (done automatically when a new generation starts)."""
        self._signal: torch.Tensor | None = None  # modulated first-block input at the previous step
        self._residual: torch.Tensor | None = None  # blocks' output - input at the last full evaluation
        self._accumulated = 0.0
        self._last_timestep: float | None = None
        self.computed = 0
        self.skipped = 0

    # `denoise` is the transformer's (see TransformerWrapper): it calls this `embed` and `run_blocks`.
    def embed(self, hidden_states: torch.Tensor, timestep: torch.Tensor | int):
        """The transformer's `embed`, noting the timestep: one that does not decrease starts a new generation."""
        now = float(torch.as_tensor(timestep).reshape(-1)[0])
        if self._last_timestep is not None and now >= self._last_timestep:
            self.reset()  # timesteps only decrease within a generation
        self._last_timestep = now
        return self.transformer.embed(hidden_states, timestep)

    def run_blocks(self, x: torch.Tensor, t6: torch.Tensor, context: TextContext, *options) -> torch.Tensor:
        """The transformer's blocks on tokens `x`, or, while their modulated input has barely changed since the
        last full evaluation, `x` plus that evaluation's residual. `options` pass through to `run_blocks`."""
        first = self.transformer.transformer_blocks[0]
        shift, scale = first.modulation(t6)[:2]
        signal = first.attention_input(x, shift, scale)  # (B, F*N, D)
        compute = self._residual is None or self._residual.shape != x.shape or self.threshold == 0
        if not compute:
            change = ((signal - self._signal).abs().mean() / self._signal.abs().mean()).item()
            self._accumulated += change
            compute = self._accumulated >= self.threshold
        self._signal = signal
        if compute:
            out = self.transformer.run_blocks(x, t6, context, *options)
            self._residual = out - x
            self._accumulated = 0.0
            self.computed += 1
        else:
            out = x + self._residual
            self.skipped += 1
        logger.debug("TeaCache t=%s: %s", self._last_timestep, "computed" if compute else "skipped")
        return out
