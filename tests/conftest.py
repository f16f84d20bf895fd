import os

import pytest
import torch

# Parity tests compare float32 results; keep the thread count fixed so reductions are reproducible.
torch.set_num_threads(min(2, os.cpu_count() or 1))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def tiny_t2v_kwargs():
    """A Latte-1-shaped transformer small enough for CPU tests (depth 2, width 64)."""
    return dict(
        num_attention_heads=2, attention_head_dim=32, in_channels=4, out_channels=8, num_layers=2,
        cross_attention_dim=64, attention_bias=True, sample_size=8, patch_size=2,
        activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
        norm_elementwise_affine=False, norm_eps=1e-6, caption_channels=32,
    )


@pytest.fixture(scope="module")
def tiny_components():
    """The tiny pipeline components (`tiny_components.build_tiny_components(seed=1)`), shared by a module."""
    from tiny_components import build_tiny_components  # imported here: after the offline settings above

    return build_tiny_components(seed=1)


@pytest.fixture
def tiny_pipe(tiny_components):
    """A fresh `LattePipeline` over the module's tiny components, progress bars off."""
    from tiny_components import quiet_pipeline

    return quiet_pipeline(tiny_components)
