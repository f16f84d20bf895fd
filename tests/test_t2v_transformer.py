"""Our Latte-1 transformer against diffusers' LatteTransformer3DModel with identical weights."""

import pytest
import torch
from diffusers import LatteTransformer3DModel

from latte import LatteT2VConfig, LatteT2VTransformer

TOL = 1e-5  # max abs difference relative to the output's scale (max abs value), fp32


def make_pair(kwargs, seed=0):
    torch.manual_seed(seed)
    ref = LatteTransformer3DModel(**kwargs).eval()
    # diffusers zero-inits nothing that matters here, but randomise every tensor so no path hides behind zeros.
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    ours = LatteT2VTransformer(LatteT2VConfig(**kwargs)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def rel_diff(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("frames", [1, 16])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("hw", [(8, 8), (6, 10)])
@pytest.mark.parametrize("temporal", [True, False])
def test_matches_diffusers(tiny_t2v_kwargs, frames, batch, hw, temporal):
    ref, ours = make_pair(tiny_t2v_kwargs)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 4, frames, *hw, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    text = torch.randn(batch, 7, 32, generator=g)
    with torch.no_grad():
        expected = ref(x, timestep=t, encoder_hidden_states=text, enable_temporal_attentions=temporal).sample
        got = ours(x, timestep=t, encoder_hidden_states=text, enable_temporal_attentions=temporal).sample
    assert got.shape == expected.shape == (batch, 8, frames, *hw)
    assert rel_diff(got, expected) <= TOL


def test_state_dict_keys_equal_diffusers(tiny_t2v_kwargs):
    ref, ours = make_pair(tiny_t2v_kwargs)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}


def test_any_frame_count(tiny_t2v_kwargs):
    """diffusers' table has a fixed length of 16; ours is built for the actual count."""
    _, ours = make_pair(tiny_t2v_kwargs)
    for frames in (2, 5, 24):
        out = ours(torch.randn(1, 4, frames, 8, 8), 10, torch.randn(1, 3, 32)).sample
        assert out.shape == (1, 8, frames, 8, 8)
        assert torch.isfinite(out).all()


def test_attention_mask_equals_cut_text(tiny_t2v_kwargs):
    """Masked text tokens take no part: a mask over padded text equals cutting the text to its real tokens."""
    _, ours = make_pair(tiny_t2v_kwargs)
    x, text = torch.randn(2, 4, 3, 8, 8), torch.randn(2, 9, 32)
    mask = torch.zeros(2, 9, dtype=torch.long)
    mask[0, :4] = 1
    mask[1, :9] = 1
    with torch.no_grad():
        masked = ours(x, torch.tensor([3, 700]), text, encoder_attention_mask=mask).sample
        alone0 = ours(x[:1], torch.tensor([3]), text[:1, :4]).sample
        alone1 = ours(x[1:], torch.tensor([700]), text[1:]).sample
    assert rel_diff(masked[:1], alone0) <= TOL
    assert rel_diff(masked[1:], alone1) <= TOL


def test_frames_are_coupled_only_by_temporal_blocks(tiny_t2v_kwargs):
    _, ours = make_pair(tiny_t2v_kwargs)
    x, text = torch.randn(1, 4, 4, 8, 8), torch.randn(1, 3, 32)
    x2 = x.clone()
    x2[:, :, 0] += 1.0  # change only frame 0
    with torch.no_grad():
        a = ours(x, 5, text, enable_temporal_attentions=False).sample
        b = ours(x2, 5, text, enable_temporal_attentions=False).sample
        c = ours(x2, 5, text).sample
    assert torch.equal(a[:, :, 1:], b[:, :, 1:])
    assert not torch.allclose(a[:, :, 1:], c[:, :, 1:])


def test_zero_output_at_init(tiny_t2v_kwargs):
    model = LatteT2VTransformer(LatteT2VConfig(**tiny_t2v_kwargs))
    model.initialize_weights()
    out = model(torch.randn(1, 4, 2, 8, 8), 1, torch.randn(1, 3, 32)).sample
    assert torch.count_nonzero(out) == 0


def test_gradient_checkpointing_same_grads(tiny_t2v_kwargs):
    _, ours = make_pair(tiny_t2v_kwargs)
    ours.train()
    x, text = torch.randn(1, 4, 3, 8, 8), torch.randn(1, 3, 32)
    ours(x, 7, text).sample.square().mean().backward()
    plain = [p.grad.clone() for p in ours.parameters()]
    ours.zero_grad()
    ours.enable_gradient_checkpointing()
    ours(x, 7, text).sample.square().mean().backward()
    for a, p in zip(plain, ours.parameters()):
        torch.testing.assert_close(p.grad, a, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_runs(tiny_t2v_kwargs, dtype):
    _, ours = make_pair(tiny_t2v_kwargs)
    ref = ours(torch.randn(1, 4, 2, 8, 8, generator=torch.Generator().manual_seed(0)), 9,
               torch.randn(1, 3, 32, generator=torch.Generator().manual_seed(1))).sample
    low = ours.to(dtype)
    out = low(torch.randn(1, 4, 2, 8, 8, generator=torch.Generator().manual_seed(0)), 9,
              torch.randn(1, 3, 32, generator=torch.Generator().manual_seed(1))).sample
    assert out.dtype == dtype
    assert rel_diff(out.float(), ref) < 0.05


def test_compile_has_no_graph_breaks(tiny_t2v_kwargs):
    _, ours = make_pair(tiny_t2v_kwargs)
    explanation = torch._dynamo.explain(ours)(torch.randn(1, 4, 2, 8, 8), torch.tensor([3]), torch.randn(1, 3, 32))
    assert explanation.graph_break_count == 0, explanation.break_reasons


def test_save_and_load_roundtrip_sharded(tiny_t2v_kwargs, tmp_path):
    ref, ours = make_pair(tiny_t2v_kwargs)
    ours.save_pretrained(tmp_path / "ours", max_shard_size=50_000)
    assert (tmp_path / "ours" / "diffusion_pytorch_model.safetensors.index.json").is_file()
    back = LatteT2VTransformer.from_pretrained(tmp_path / "ours")
    theirs = LatteTransformer3DModel.from_pretrained(tmp_path / "ours")
    x, text = torch.randn(1, 4, 16, 8, 8), torch.randn(1, 3, 32)  # diffusers only runs 16 frames
    with torch.no_grad():
        a = ours(x, 4, text).sample
        assert rel_diff(back(x, 4, text).sample, a) <= TOL  # same weights; loaded tensors may take other kernel paths
        assert rel_diff(theirs(x, timestep=torch.tensor([4]), encoder_hidden_states=text).sample, a) <= TOL
    ref.save_pretrained(tmp_path / "theirs")
    mine = LatteT2VTransformer.from_pretrained(tmp_path / "theirs", torch_dtype=torch.bfloat16)
    assert mine.dtype == torch.bfloat16


def test_from_original_pickle(tiny_t2v_kwargs, tmp_path):
    ref, ours = make_pair(tiny_t2v_kwargs)
    state = {f"module.{k}": v for k, v in ref.state_dict().items()}
    state["temp_pos_embed"] = torch.zeros(1, 16, 64)
    torch.save({"ema": state}, tmp_path / "t2v.pt")
    loaded = LatteT2VTransformer.from_original(tmp_path / "t2v.pt", num_attention_heads=2, attention_head_dim=32,
                                                sample_size=8)  # the pickle holds no position table
    assert loaded.config.num_layers == 2 and loaded.config.caption_channels == 32
    x, text = torch.randn(1, 4, 2, 8, 8), torch.randn(1, 3, 32)
    with torch.no_grad():
        assert rel_diff(loaded(x, 4, text).sample, ours(x, 4, text).sample) <= TOL


def test_bad_inputs_are_named(tiny_t2v_kwargs, tmp_path):
    _, ours = make_pair(tiny_t2v_kwargs)
    with pytest.raises(ValueError, match="multiples of patch_size=2"):
        ours(torch.randn(1, 4, 2, 7, 8), 1, torch.randn(1, 3, 32))
    with pytest.raises(ValueError, match="in_channels=4"):
        ours(torch.randn(1, 3, 2, 8, 8), 1, torch.randn(1, 3, 32))
    with pytest.raises(ValueError, match="unknown Latte transformer config keys \\['bogus'\\]"):
        LatteT2VConfig.from_dict({"bogus": 1})
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        LatteT2VTransformer.from_pretrained(tmp_path / "nope")
    ours.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "diffusion_pytorch_model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="diffusion_pytorch_model.safetensors"):
        LatteT2VTransformer.from_pretrained(tmp_path / "m")


def test_frozen_bf16_compile_gives_the_eager_bf16_output(tiny_t2v_kwargs, monkeypatch):
    """`latte generate --compile` freezes bf16 CPU models (weights packed once for oneDNN, epilogues fused) and
    not fp32 ones; the frozen model's output is as close to fp32 as eager bf16's (relative RMS error within
    1.5x eager bf16's: the fused kernels round at other places)."""
    import torch._inductor.config

    from latte.acceleration.compiled import compile_transformer, freezes

    _, ours = make_pair(tiny_t2v_kwargs)
    g = torch.Generator().manual_seed(0)
    x, text = torch.randn(1, 4, 2, 8, 8, generator=g), torch.randn(1, 3, 32, generator=g)
    with torch.inference_mode():
        exact = ours(x, 9, text).sample
    assert not freezes(ours)
    low = ours.to(torch.bfloat16)
    assert freezes(low)
    monkeypatch.setattr(torch._inductor.config, "freezing", False)  # compile_transformer sets it process-wide
    pipe = type("Pipe", (), {"transformer": low})()
    compile_transformer(pipe)
    assert torch._inductor.config.freezing
    x, text = x.to(torch.bfloat16), text.to(torch.bfloat16)
    with torch.inference_mode():
        eager, frozen = low(x, 9, text).sample.float(), pipe.transformer(x, 9, text).sample.float()
    rms = {name: ((out - exact).norm() / exact.norm()).item() for name, out in (("eager", eager), ("frozen", frozen))}
    assert 0 < rms["eager"] < 3e-2 and rms["frozen"] < 1.5 * rms["eager"], rms
