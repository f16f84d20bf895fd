"""Text and VAE wrappers: 120-token T5 encoding, the trained tokenizer, frame-wise VAE encode/decode."""

import logging

import pytest
import sentencepiece as spm
import torch

from latte.models.text_encoder import MAX_TEXT_TOKENS, encode_text, load_text_components, train_tokenizer
from latte.models.vae import decode_latents, encode_video, vae_scale_factor
from tiny_components import TEXT_WIDTH, build_tiny_pipeline_folder, tiny_vae


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_pipeline_folder(tmp_path_factory.mktemp("parts") / "model", seed=3)


def test_trained_tokenizer_splits_like_sentencepiece(tmp_path):
    texts = ["a red circle moves left", "a blue square moves right", "two dogs run"]
    tokenizer = train_tokenizer(texts, tmp_path / "tok", vocab_size=64)
    processor = spm.SentencePieceProcessor(model_file=str(tmp_path / "tok" / "spiece.model"))
    for text in ["a red square moves", "unseen words: zebra!", "two  dogs   run "]:
        text = text.lower().strip()
        assert tokenizer(text).input_ids == processor.encode(text) + [1]  # T5 appends </s> (id 1)
    assert tokenizer.pad_token_id == 0 and tokenizer.eos_token_id == 1 and tokenizer.unk_token_id == 2


def test_encode_text_pads_masks_and_preprocesses(folder, caplog):
    caplog.set_level(logging.WARNING)
    tokenizer, encoder = load_text_components(folder)
    embeds, mask = encode_text(tokenizer, encoder, ["  A Red Circle ", "a red circle", "a " * 200])
    assert embeds.shape == (3, MAX_TEXT_TOKENS, TEXT_WIDTH) and mask.dtype == torch.long
    k = int(mask[0].sum())
    assert mask[0, :k].all() and not mask[0, k:].any()  # real tokens first, then padding
    assert torch.equal(embeds[0], embeds[1])  # lower-cased and stripped
    assert int(mask[2].sum()) == MAX_TEXT_TOKENS  # truncated to the budget ...
    assert "prompt truncated to 120 tokens" in caplog.text
    short, short_mask = encode_text(tokenizer, encoder, "a red circle", max_length=k)
    assert short.shape == (1, k, TEXT_WIDTH) and short_mask.all()
    with pytest.raises(ValueError, match="prompt must be a string or a non-empty list of strings, got int"):
        encode_text(tokenizer, encoder, 3)


def test_missing_text_parts_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing folder .*tokenizer"):
        load_text_components(tmp_path)


def test_vae_encode_decode_shapes_and_chunks():
    vae = tiny_vae()
    assert vae_scale_factor(vae) == 8
    video = torch.rand(2, 3, 3, 32, 16) * 2 - 1
    latents = encode_video(vae, video, generator=torch.Generator().manual_seed(0))
    assert latents.shape == (2, 4, 3, 4, 2)
    mean = encode_video(vae, video, sample=False)
    assert torch.allclose(encode_video(vae, video, sample=False, chunk_size=1), mean, atol=1e-6)
    # frames are independent: latents of one frame alone equal its slice of the whole video
    assert torch.allclose(encode_video(vae, video[:, :, 1:2], sample=False), mean[:, :, 1:2], atol=1e-6)
    decoded = decode_latents(vae, latents)
    assert decoded.shape == video.shape and decoded.dtype == torch.float32
    assert torch.allclose(decode_latents(vae, latents, chunk_size=2), decoded, atol=1e-5)
    direct = vae.decode(latents[1, :, 2][None] / vae.config.scaling_factor).sample[0]  # video 1, frame 2
    assert torch.allclose(decoded[1, :, 2], direct, atol=1e-5)
    with pytest.raises(ValueError, match=r"video must be \(batch, 3, frames, height, width\)"):
        encode_video(vae, torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"latents must be \(batch, 4, frames, height, width\)"):
        decode_latents(vae, torch.rand(1, 3, 1, 8, 8))



def test_sentencepiece_only_tokenizer_folder_loads(folder, tmp_path):
    """Latte-1's tokenizer/ holds spiece.model, no tokenizer.json; transformers 5 converts it (protobuf)."""
    pytest.importorskip("google.protobuf")
    texts = ["a red circle moves left", "two dogs run across a field"]
    train_tokenizer(texts, tmp_path / "trained", vocab_size=64)
    (tmp_path / "m" / "tokenizer").mkdir(parents=True)
    model = (tmp_path / "trained" / "spiece.model").read_bytes()
    (tmp_path / "m" / "tokenizer" / "spiece.model").write_bytes(model)
    (tmp_path / "m" / "text_encoder").symlink_to(folder / "text_encoder")
    tokenizer, _ = load_text_components(tmp_path / "m")
    processor = spm.SentencePieceProcessor(model_file=str(tmp_path / "trained" / "spiece.model"))
    assert tokenizer("two red dogs").input_ids == processor.encode("two red dogs") + [1]
