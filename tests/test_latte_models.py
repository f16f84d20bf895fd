"""The paper's Latte family: original-checkpoint parity, every option combination, structure, sizes, FLOPs."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from latte import Latte, LatteConfig
from latte.models.latte import LATTE_CONFIGS, apply_rope, forward_flops, rope_tables

TINY = dict(input_size=8, num_frames=4, patch_size=2, hidden_size=32, depth=4, num_heads=4)


def randomize(model, seed=0, std=0.2):
    """Random values everywhere (the init zeros would hide every path behind zero gates)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


# ------------------------------------------------------------------------------------------------------------
# An independent reference of the original model's forward (layout (B, F, C, H, W)), written from the
# reference text: DiT blocks with fused qkv, adaLN-Zero with c = t_emb + y_emb repeated per frame / per patch.
# ------------------------------------------------------------------------------------------------------------


def ref_timestep_embedding(t, dim=256):
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def ref_linear(sd, name, x):
    return F.linear(x, sd[name + ".weight"], sd[name + ".bias"])


def ref_block(sd, pre, x, c, heads):
    n, length, d = x.shape
    mod = ref_linear(sd, pre + ".adaLN_modulation.1", F.silu(c))
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=1)
    h = F.layer_norm(x, (d,), eps=1e-6) * (1 + scale_msa[:, None]) + shift_msa[:, None]
    qkv = ref_linear(sd, pre + ".attn.qkv", h).reshape(n, length, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    att = (q @ k.transpose(-2, -1) * (d // heads) ** -0.5).softmax(dim=-1)
    a = (att @ v).transpose(1, 2).reshape(n, length, d)
    x = x + gate_msa[:, None] * ref_linear(sd, pre + ".attn.proj", a)
    h = F.layer_norm(x, (d,), eps=1e-6) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
    h = ref_linear(sd, pre + ".mlp.fc2", F.gelu(ref_linear(sd, pre + ".mlp.fc1", h), approximate="tanh"))
    return x + gate_mlp[:, None] * h


def ref_original_forward(sd, x, t, y, heads):
    b, frames, _, height, width = x.shape
    w = sd["x_embedder.proj.weight"]
    d, p = w.shape[0], w.shape[2]
    out_channels = sd["final_layer.linear.weight"].shape[0] // (p * p)
    x = F.conv2d(x.reshape(b * frames, *x.shape[2:]), w, sd["x_embedder.proj.bias"], stride=p)
    x = x.flatten(2).transpose(1, 2) + sd["pos_embed"]  # (B*F, T, D)
    tokens = x.shape[1]
    emb = ref_linear(sd, "t_embedder.mlp.0", ref_timestep_embedding(t))
    emb = ref_linear(sd, "t_embedder.mlp.2", F.silu(emb))
    if y is not None:
        emb = emb + sd["y_embedder.embedding_table.weight"][y]
    c_spatial, c_temporal = emb.repeat_interleave(frames, 0), emb.repeat_interleave(tokens, 0)
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for i in range(0, depth, 2):
        x = ref_block(sd, f"blocks.{i}", x, c_spatial, heads)
        x = x.reshape(b, frames, tokens, d).transpose(1, 2).reshape(b * tokens, frames, d)
        if i == 0:
            x = x + sd["temp_embed"]
        x = ref_block(sd, f"blocks.{i + 1}", x, c_temporal, heads)
        x = x.reshape(b, tokens, frames, d).transpose(1, 2).reshape(b * frames, tokens, d)
    shift, scale = ref_linear(sd, "final_layer.adaLN_modulation.1", F.silu(c_spatial)).chunk(2, dim=1)
    x = F.layer_norm(x, (d,), eps=1e-6) * (1 + scale[:, None]) + shift[:, None]
    x = ref_linear(sd, "final_layer.linear", x)
    gh, gw = height // p, width // p
    x = x.reshape(b * frames, gh, gw, p, p, out_channels)
    x = torch.einsum("nhwpqc->nchpwq", x).reshape(b * frames, out_channels, height, width)
    return x.reshape(b, frames, out_channels, height, width)


def original_state_dict(depth=4, d=64, p=2, grid=4, frames=16, num_classes=101, learn_sigma=True, seed=0):
    """An original-layout checkpoint: the exact key names and shapes, random values."""
    g = torch.Generator().manual_seed(seed)
    shapes = {
        "x_embedder.proj.weight": (d, 4, p, p), "x_embedder.proj.bias": (d,),
        "t_embedder.mlp.0.weight": (d, 256), "t_embedder.mlp.0.bias": (d,),
        "t_embedder.mlp.2.weight": (d, d), "t_embedder.mlp.2.bias": (d,),
        "pos_embed": (1, grid * grid, d), "temp_embed": (1, frames, d),
        "final_layer.linear.weight": (p * p * (8 if learn_sigma else 4), d),
        "final_layer.linear.bias": (p * p * (8 if learn_sigma else 4),),
        "final_layer.adaLN_modulation.1.weight": (2 * d, d), "final_layer.adaLN_modulation.1.bias": (2 * d,),
    }
    if num_classes:
        shapes["y_embedder.embedding_table.weight"] = (num_classes + 1, d)
    for n in range(depth):
        shapes.update({
            f"blocks.{n}.attn.qkv.weight": (3 * d, d), f"blocks.{n}.attn.qkv.bias": (3 * d,),
            f"blocks.{n}.attn.proj.weight": (d, d), f"blocks.{n}.attn.proj.bias": (d,),
            f"blocks.{n}.mlp.fc1.weight": (4 * d, d), f"blocks.{n}.mlp.fc1.bias": (4 * d,),
            f"blocks.{n}.mlp.fc2.weight": (d, 4 * d), f"blocks.{n}.mlp.fc2.bias": (d,),
            f"blocks.{n}.adaLN_modulation.1.weight": (6 * d, d),
            f"blocks.{n}.adaLN_modulation.1.bias": (6 * d,),
        })
    return {k: torch.randn(s, generator=g) * (0.5 if k.endswith("embed") else 0.1) for k, s in shapes.items()}


def rel_diff(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("wrapper", ["ema", "model", None])
@pytest.mark.parametrize("num_classes", [101, 0])
def test_original_checkpoint_matches_reference(tmp_path, wrapper, num_classes):
    sd = original_state_dict(num_classes=num_classes)
    path = tmp_path / "ckpt.pt"
    torch.save({wrapper: sd} if wrapper else sd, path)
    model = Latte.from_original(path, num_heads=4)
    c = model.config
    sizes = (c.hidden_size, c.depth, c.patch_size, c.input_size, c.num_frames, c.num_classes, c.learn_sigma)
    assert sizes == (64, 4, 2, 8, 16, num_classes, True)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, 4, 8, 8, generator=g)  # original layout (B, F, C, H, W)
    t = torch.tensor([3, 871])
    y = torch.tensor([5, 101]) if num_classes else None  # 101 = the null class
    with torch.no_grad():
        expected = ref_original_forward(sd, x, t, y, heads=4)
        got = model(x.permute(0, 2, 1, 3, 4), t, class_labels=y).sample.permute(0, 2, 1, 3, 4)
    assert got.shape == expected.shape == (2, 16, 8, 8, 8)
    assert rel_diff(got, expected) <= 1e-5


def test_original_keys_are_exact():
    sd = original_state_dict(num_classes=101, learn_sigma=False)
    model = Latte(input_size=8, num_frames=16, hidden_size=64, depth=4, num_heads=4, num_classes=101,
                  learn_sigma=False)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in sd.items()}
    # Its buffers equal the original's frozen sin-cos tables (MAE's numpy code, rewritten here).
    assert torch.allclose(model.pos_embed, torch.from_numpy(mae_2d_sincos(64, 4)).float()[None], atol=1e-6)
    temporal = torch.from_numpy(mae_1d_sincos(64, np.arange(16))).float()
    assert torch.allclose(model.temp_embed[0], temporal, atol=1e-6)


def mae_1d_sincos(dim, pos):
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def mae_2d_sincos(dim, grid):
    gw, gh = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))
    return np.concatenate([mae_1d_sincos(dim // 2, gw), mae_1d_sincos(dim // 2, gh)], axis=1)


def test_from_original_errors_name_the_keys(tmp_path):
    sd = original_state_dict()
    sd["blocks.0.attn.extra"] = torch.zeros(1)
    del sd["blocks.2.mlp.fc1.bias"]
    with pytest.raises(ValueError, match=r"missing keys \['blocks.2.mlp.fc1.bias'\].*unexpected keys "
                                         r"\['blocks.0.attn.extra'\]"):
        Latte.from_original(sd, num_heads=4)
    with pytest.raises(ValueError, match="pass num_heads"):
        Latte.from_original(original_state_dict(), num_heads=None)  # width 64 is no paper size
    with pytest.raises(ValueError, match="text-to-video"):
        Latte.from_original({"caption_projection.linear_1.weight": torch.zeros(2, 2)})
    with pytest.raises(FileNotFoundError):
        Latte.from_original(tmp_path / "missing.pt")


def test_heads_inferred_from_width():
    sd = original_state_dict(depth=2, d=384, num_classes=0, frames=2)
    assert Latte.from_original(sd).config.num_heads == 6  # S: 384 wide, 6 heads


# ------------------------------------------------------------------------------------------------------------
# Every option combination
# ------------------------------------------------------------------------------------------------------------

COMBOS = list(itertools.product([1, 2, 3, 4], ["frame", "tubelet"], ["adaln", "tokens"],
                                ["absolute", "rope"]))


@pytest.mark.parametrize("variant,embedding,conditioning,position", COMBOS)
def test_every_combination_forward_backward(variant, embedding, conditioning, position):
    model = Latte(**TINY, num_classes=3, variant=variant, patch_embedding=embedding,
                  conditioning=conditioning, temporal_position=position)
    stills = 2 if embedding == "frame" else 0
    x = torch.randn(2, 4, 4 + stills, 8, 8)
    labels = torch.tensor([[0, 1, 2], [2, 3, 0]]) if stills else torch.tensor([0, 3])  # 3 = null class
    t = torch.tensor([10, 900])
    assert model(x, t, labels, use_image_num=stills).sample.abs().max() == 0  # zero-initialised output layer

    randomize(model)
    out = model(x, t, labels, use_image_num=stills).sample
    assert out.shape == (2, 8, 4 + stills, 8, 8)
    out.square().mean().backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert unused == []  # every parameter takes part


@pytest.mark.parametrize("learn_sigma", [True, False])
def test_unconditional_and_sigma(learn_sigma):
    model = randomize(Latte(**TINY, learn_sigma=learn_sigma))
    assert not hasattr(model, "y_embedder")
    out = model(torch.randn(1, 4, 4, 8, 8), 5).sample
    assert out.shape == (1, 8 if learn_sigma else 4, 4, 8, 8)
    with torch.no_grad():  # labels are ignored, as by the original unconditional model
        assert torch.equal(model(torch.ones(1, 4, 4, 8, 8), 5, class_labels=torch.tensor([1])).sample,
                           model(torch.ones(1, 4, 4, 8, 8), 5).sample)


def test_other_frame_counts_and_grids():
    model = randomize(Latte(**TINY, num_classes=2)).eval()
    for frames, hw in ((3, (8, 8)), (7, (8, 8)), (4, (6, 10))):
        out = model(torch.randn(1, 4, frames, *hw), 1, torch.tensor([1])).sample
        assert out.shape == (1, 8, frames, *hw) and torch.isfinite(out).all()


# ------------------------------------------------------------------------------------------------------------
# Structure
# ------------------------------------------------------------------------------------------------------------


def changed_positions(block, x, frame, patch, c=None, num_video=None, rope=None):
    """(F, N) map of the output tokens that change when input token (frame, patch) changes."""
    num_video = x.shape[1] if num_video is None else num_video
    with torch.no_grad():
        base = block(x, c, num_video, rope)
        x2 = x.clone()
        x2[:, frame, patch] += torch.linspace(-1, 1, x.shape[-1])  # not constant: LayerNorm removes the mean
        diff = (block(x2, c, num_video, rope) - base).abs().amax(dim=(0, 3))
    return diff > 1e-6


def test_variant1_blocks_mix_along_one_axis():
    model = randomize(Latte(**TINY, num_classes=3))
    spatial, temporal = model.blocks[0], model.blocks[1]
    assert (spatial.mixing, temporal.mixing) == ("spatial", "temporal")
    x, c = torch.randn(2, 4, 16, 32), torch.randn(2, 4, 32)
    moved = changed_positions(temporal, x, frame=1, patch=5, c=c)
    assert moved[:, 5].all() and not moved[:, [n for n in range(16) if n != 5]].any()  # same location only
    moved = changed_positions(spatial, x, frame=1, patch=5, c=c)
    assert moved[1].all() and not moved[[0, 2, 3]].any()  # same frame only


def test_variant4_mixes_frame_and_location():
    model = randomize(Latte(**TINY, variant=4))
    block = model.blocks[0]
    moved = changed_positions(block, torch.randn(1, 4, 16, 32), frame=2, patch=7, c=torch.randn(1, 4, 32))
    expected = torch.zeros(4, 16, dtype=torch.bool)
    expected[2], expected[:, 7] = True, True
    assert torch.equal(moved, expected)
    assert len(model.blocks) == 2 and len(Latte(**TINY, variant=3).blocks) == 2  # depth 4 = 2 fused pairs


def test_variant2_is_late_fusion():
    model = Latte(**TINY, variant=2)
    assert [b.mixing for b in model.blocks] == ["spatial", "spatial", "temporal", "temporal"]
    assert model.temporal_table_at == 2


def capture_input(module):
    seen = []
    module.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape))
    return seen


def test_condition_tokens_are_removed_before_output():
    model = randomize(Latte(**TINY, num_classes=3, conditioning="tokens")).eval()
    assert not any("adaLN" in n for n, _ in model.named_parameters())
    into_blocks, into_final = capture_input(model.blocks[0]), capture_input(model.final_layer)
    x = torch.randn(1, 4, 4, 8, 8)
    out = model(x, 10, torch.tensor([1])).sample
    assert into_blocks[0] == (1, 4, 2 + 16, 32)  # timestep and class tokens before each frame's 16 patches
    assert into_final[0] == (1, 4, 16, 32)
    assert out.shape == (1, 8, 4, 8, 8)
    # The condition reaches the output only through attention to those tokens.
    assert not torch.allclose(out, model(x, 10, torch.tensor([2])).sample)
    assert not torch.allclose(out, model(x, 500, torch.tensor([1])).sample)


@pytest.mark.parametrize("s", [2, 4])
def test_tubelet_has_f_over_s_temporal_tokens(s):
    model = randomize(Latte(**{**TINY, "num_frames": 8}, patch_embedding="tubelet", tubelet_size=s))
    assert model.temp_embed.shape == (1, 8 // s, 32)
    into_blocks = capture_input(model.blocks[1])
    out = model(torch.randn(2, 4, 8, 8, 8), 3).sample
    assert into_blocks[0] == (2, 8 // s, 16, 32)
    assert out.shape == (2, 8, 8, 8, 8)  # temporal upsampling back to 8 frames
    with pytest.raises(ValueError, match="multiple of tubelet_size"):
        model(torch.randn(1, 4, 8 + 1, 8, 8), 3)


@pytest.mark.parametrize("variant", [1, 2, 3, 4])
def test_stills_skip_temporal_mixing(variant):
    """Stills and video do not see each other; each still is conditioned on its own label."""
    model = randomize(Latte(**TINY, num_classes=5, variant=variant)).eval()  # eval: no label dropout
    x = torch.randn(1, 4, 4 + 3, 8, 8)
    labels = torch.tensor([[0, 1, 2, 3]])
    with torch.no_grad():
        base = model(x, 7, labels, use_image_num=3).sample
        moved_video = x.clone()
        moved_video[:, :, 1] += torch.randn(4, 8, 8)
        out = model(moved_video, 7, labels, use_image_num=3).sample
        assert torch.allclose(out[:, :, 4:], base[:, :, 4:], atol=1e-6)
        assert not torch.allclose(out[:, :, :4], base[:, :, :4])
        moved_still = x.clone()
        moved_still[:, :, 5] += torch.randn(4, 8, 8)
        out = model(moved_still, 7, labels, use_image_num=3).sample
        assert torch.allclose(out[:, :, [0, 1, 2, 3, 4, 6]], base[:, :, [0, 1, 2, 3, 4, 6]], atol=1e-6)
        out = model(x, 7, torch.tensor([[0, 1, 4, 3]]), use_image_num=3).sample  # relabel still 1 only
        changed = (out - base).abs().amax(dim=(0, 1, 3, 4)) > 1e-6
        assert changed.tolist() == [False] * 5 + [True, False]


def test_rope_depends_on_relative_position():
    cos, sin = rope_tables(12, 8)
    q, k = torch.randn(8), torch.randn(8)
    qs, ks = apply_rope(q.expand(1, 12, 8), cos, sin, 1)[0], apply_rope(k.expand(1, 12, 8), cos, sin, 1)[0]
    scores = qs @ ks.T  # (12, 12): score of position i against j
    assert torch.allclose(scores[3, 1], scores[9, 7], atol=1e-5) and torch.allclose(scores[0, 0], q @ k)
    assert not torch.allclose(scores[3, 1], scores[3, 2])
    assert not hasattr(Latte(**TINY, temporal_position="rope"), "temp_embed")


def test_gradient_checkpointing_gives_same_gradients():
    grads = []
    for enabled in (False, True):
        model = randomize(Latte(**TINY, num_classes=3))
        model.enable_gradient_checkpointing(enabled)
        model(torch.ones(1, 4, 4, 8, 8), 9, torch.tensor([1])).sample.sum().backward()
        grads.append(model.blocks[0].attn.qkv.weight.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_label_dropout_in_training_uses_null_class():
    model = randomize(Latte(**TINY, num_classes=3, class_dropout_prob=0.5)).eval()
    x = torch.randn(64, 4, 1, 8, 8)  # 64 items at once: some dropped, some not
    with torch.no_grad():
        null = model(x, 5, torch.full((64,), 3)).sample
        kept = model(x, 5, torch.zeros(64, dtype=torch.long)).sample
        model.train()
        torch.manual_seed(0)
        out = model(x, 5, torch.zeros(64, dtype=torch.long)).sample
    dropped = (out - null).abs().amax(dim=(1, 2, 3, 4)) < 1e-5
    assert dropped.any() and not dropped.all()
    assert torch.allclose(out[~dropped], kept[~dropped], atol=1e-5)


# ------------------------------------------------------------------------------------------------------------
# Sizes, cost, configuration
# ------------------------------------------------------------------------------------------------------------


def test_paper_parameter_counts():
    with torch.device("meta"):
        xl = Latte("Latte-XL/2")
        ucf = Latte("Latte-XL/2", num_classes=101)
        small = Latte("Latte-S/2")
    assert round(xl.num_parameters(trainable_only=True) / 1e6, 2) == 673.68
    assert round((ucf.num_parameters() - xl.num_parameters()) / 1e6, 2) == 0.12  # the 102-row label table
    assert round(small.num_parameters(trainable_only=True) / 1e6, 2) == 32.48
    assert xl.num_frozen_table_values() == (256 + 16) * 1152  # pos_embed + temp_embed, not trainable
    assert len(LATTE_CONFIGS) == 12 and LATTE_CONFIGS["Latte-B/4"]().patch_size == 4


@pytest.mark.parametrize("options,stills", [
    (dict(), 0), (dict(num_classes=3), 2), (dict(variant=2, conditioning="tokens"), 1),
    (dict(variant=3, num_classes=3, temporal_position="rope"), 2), (dict(variant=4), 2),
    (dict(variant=4, patch_embedding="tubelet", conditioning="tokens", num_classes=2), 0),
])
def test_flops_match_a_counter(options, stills):
    config = LatteConfig(**TINY, **options)
    model = Latte(config)
    labels = torch.zeros(2, dtype=torch.long) if config.num_classes else None
    counter = FlopCounterMode(display=False)
    # The math backend runs attention as two bmm's the counter sees (the fused CPU kernel is not counted).
    with counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        model(torch.randn(2, 4, 4 + stills, 8, 8), 1, labels, use_image_num=stills)
    assert forward_flops(config, batch=2, use_image_num=stills)["total"] == counter.get_total_flops()


def test_config_validation_and_names():
    assert LatteConfig.from_name("Latte-L/8", num_classes=7).hidden_size == 1024
    with pytest.raises(ValueError, match="Latte-XL/2"):
        LatteConfig.from_name("Latte-XXL/2")
    with pytest.raises(ValueError, match="variant must be one of"):
        LatteConfig(variant=5)
    with pytest.raises(ValueError, match="conditioning must be one of"):
        LatteConfig(conditioning="film")
    with pytest.raises(ValueError, match="unknown Latte config keys"):
        LatteConfig.from_dict({"hidden": 3})
    model = Latte(**TINY, num_classes=3)
    with pytest.raises(ValueError, match=r"0\.\.3"):
        model(torch.randn(1, 4, 4, 8, 8), 1, torch.tensor([4]))
    with pytest.raises(ValueError, match="class-conditional"):
        model(torch.randn(1, 4, 4, 8, 8), 1)
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(1, 3, 4, 8, 8), 1, torch.tensor([0]))


def test_folder_round_trip(tmp_path):
    model = randomize(Latte(**TINY, num_classes=3, variant=3, conditioning="tokens"))
    model.save_pretrained(tmp_path / "m")
    loaded = Latte.from_pretrained(tmp_path / "m")
    assert loaded.config == model.config
    x = torch.randn(1, 4, 4, 8, 8)
    with torch.no_grad():
        expected = model.eval()(x, 3, torch.tensor([2])).sample
        assert torch.equal(loaded(x, 3, torch.tensor([2])).sample, expected)
    with pytest.raises(ValueError, match="only variant 1"):
        model.save_original(tmp_path / "x.pt")


def test_original_round_trip(tmp_path):
    sd = original_state_dict(depth=2, frames=4)
    Latte.from_original(sd, num_heads=4).save_original(tmp_path / "back.pt")
    back = torch.load(tmp_path / "back.pt", weights_only=True)
    assert set(back) == {"ema"} and all(torch.equal(back["ema"][k], v) for k, v in sd.items())
    assert set(back["ema"]) == set(sd)


def test_half_precision_forward_is_close():
    model = randomize(Latte(**TINY, num_classes=3, temporal_position="rope"), std=0.1).eval()
    x, t, y = torch.randn(2, 4, 4, 8, 8), torch.tensor([5, 700]), torch.tensor([0, 2])
    with torch.no_grad():
        expected = model(x, t, y).sample
        got = model.to(torch.bfloat16)(x, t, y).sample
    assert got.dtype == torch.bfloat16 and rel_diff(got.float(), expected) < 5e-2
