"""Opt-in acceleration around the exact models: TeaCache step skipping (`cache`), multi-device generation
(`distributed`), fidelity metrics (`fidelity`) and the analytic FLOP count (`flops`). The exact speed-ups
live in the models themselves and are always on."""

from latte.acceleration.cache import TeaCache
from latte.acceleration.distributed import CFGParallel, generate_spread

__all__ = ["CFGParallel", "TeaCache", "generate_spread"]
