"""T5 text conditioning for Latte-1: loading the tokenizer and encoder, 120-token prompt encoding, and
training a small sentencepiece tokenizer for tiny models.

The prompt preprocessing follows diffusers' `LattePipeline` without the optional bs4/ftfy caption cleaning:
lower-case and strip, pad/truncate to exactly `max_length` tokens with the closing `</s>`.
"""

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import torch

from latte.models.io import find_weights, library_bars_off
from latte.outputs import write_file

logger = logging.getLogger(__name__)

MAX_TEXT_TOKENS = 120  # Latte-1 / PixArt-alpha token budget per prompt
TOKENIZER_CLASSES = ("T5Tokenizer", "T5TokenizerFast")
TEXT_ENCODER_WEIGHTS = "model.safetensors"  # transformers' weights file name
# T5's fixed special ids; the sentencepiece model we train uses the same layout so T5Tokenizer reads it as is.
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
NEW_WORD_SEED = 1234  # the generator of new words' embedding rows (`draw_word_rows`)


def preprocess_prompt(prompt: str) -> str:
    """The text Latte-1 sees: lower-cased and stripped (diffusers' behaviour without bs4/ftfy)."""
    return prompt.lower().strip()


def check_prompts(prompts) -> list[str]:
    """A prompt or a list of prompts as a list of strings; anything else is a clear error."""
    if isinstance(prompts, str):
        return [prompts]
    if isinstance(prompts, (list, tuple)) and prompts and all(isinstance(p, str) for p in prompts):
        return list(prompts)
    raise ValueError(
        f"prompt must be a string or a non-empty list of strings, got {type(prompts).__name__}: "
        f"{prompts!r:.80}"
    )


def load_text_components(
    folder: str | os.PathLike, torch_dtype: torch.dtype | None = None, variant: str | None = None,
    use_safetensors: bool | None = None,
):
    """(tokenizer, text_encoder) from a model folder's `tokenizer/` and `text_encoder/` subfolders."""
    from transformers import T5EncoderModel, T5Tokenizer

    folder = Path(folder)
    tok_dir, enc_dir = folder / "tokenizer", folder / "text_encoder"
    for sub in (tok_dir, enc_dir):
        if not sub.is_dir():
            raise FileNotFoundError(
                f"missing folder {sub}: a Latte-1 model folder has tokenizer/ and text_encoder/"
            )
    tokenizer = load_tokenizer(tok_dir, T5Tokenizer)
    return tokenizer, load_text_encoder(enc_dir, T5EncoderModel, torch_dtype, variant, use_safetensors)


def load_tokenizer(folder: Path, cls):
    if not any((folder / name).is_file() for name in ("tokenizer.json", "spiece.model")):
        raise FileNotFoundError(f"no tokenizer in {folder}: expected tokenizer.json or spiece.model")
    try:
        return cls.from_pretrained(str(folder))
    except (OSError, ValueError, ImportError, RuntimeError) as err:
        hint = " (reading spiece.model needs `pip install protobuf`)" if "protobuf" in str(err) else ""
        raise ValueError(f"cannot load the tokenizer in {folder}{hint}: {err}") from err


def load_text_encoder(
    folder: Path, cls, torch_dtype: torch.dtype | None = None, variant: str | None = None,
    use_safetensors: bool | None = None,
):
    """A transformers encoder from `folder`; `variant` (e.g. "fp16") reads `model.fp16.safetensors` (or its
    shards), `use_safetensors` True/False allows only safetensors/.bin. A missing file is named before
    transformers runs."""
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"missing file {folder / 'config.json'}")
    find_weights(folder, TEXT_ENCODER_WEIGHTS, variant, use_safetensors)
    try:
        with library_bars_off():
            model = cls.from_pretrained(
                str(folder), dtype=torch_dtype, variant=variant, use_safetensors=use_safetensors
            )
        return model.eval()
    except Exception as err:  # transformers raises many types (OSError, SafetensorError, ...) for a bad file
        raise ValueError(f"cannot load the text encoder in {folder}: {' '.join(str(err).split())}") from err


def draw_word_rows(text_encoder, words: Iterable[str]) -> dict[str, torch.Tensor]:
    """Embedding rows for `words`, new to `text_encoder`: drawn in order from a fixed seed, with the spread of
    its own rows. The shipped encoder is itself random and frozen, so a new random row means as much as its
    old ones: the transformer (a LoRA) learns what its features stand for, as it learnt theirs."""
    words = list(words)
    table = text_encoder.get_input_embeddings().weight.detach()
    generator = torch.Generator().manual_seed(NEW_WORD_SEED)
    rows = torch.randn(len(words), table.shape[1], generator=generator) * table.float().std()
    return {word: row.to(table.dtype) for word, row in zip(words, rows, strict=True)}


def words_to_add(tokenizer, text_encoder, rows: dict[str, torch.Tensor]) -> list[str]:
    """The words of `rows` that `add_words` would add, after checking them all (one-line errors, nothing
    changed): each must be one lower-case word of a sentencepiece unigram tokenizer (T5's), with a row of the
    encoder's width, and new to the tokenizer unless it already has this very row (another adapter's)."""
    if not rows:
        return []
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    if model["type"] != "Unigram":
        raise ValueError(f"new words need a sentencepiece unigram tokenizer (T5's); this one is {model['type']}")
    table = text_encoder.get_input_embeddings().weight
    vocab = tokenizer.get_vocab()
    new = []
    for word, row in rows.items():
        if not word or word != preprocess_prompt(word) or any(c.isspace() for c in word):
            raise ValueError(f"new word {word!r} must be one lower-case word without spaces")
        if tuple(row.shape) != (table.shape[1],):
            raise ValueError(
                f"new word {word!r} has an embedding row of shape {tuple(row.shape)}; this text encoder's "
                f"rows have {table.shape[1]} values"
            )
        known = vocab.get("\u2581" + word)
        if known is None:
            new.append(word)
        elif not torch.equal(table[known].detach().cpu(), row.to(table.dtype)):
            raise ValueError(
                f"the tokenizer already has the word {word!r} with another embedding row: an adapter's new "
                "words must be new to the model, or the same as those of an adapter already loaded"
            )
    return new


def add_words(tokenizer, text_encoder, rows: dict[str, torch.Tensor]) -> list[str]:
    """Give each word of `rows` a piece of its own in `tokenizer` and `rows[word]` as its embedding row in
    `text_encoder`, in place (after `words_to_add`'s checks); returns the words added.

    A word the tokenizer lacks is otherwise spelled in pieces, most often single letters that every such word
    shares, so a LoRA taught one spelled word reads others as it (docs/training.md, section 14). The new piece
    is as likely as the tokenizer's likeliest one, so the whole word always wins over its spellings."""
    from tokenizers import Tokenizer

    new = words_to_add(tokenizer, text_encoder, rows)
    if not new:
        return []
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    pieces = spec["model"]["vocab"]
    special = set(tokenizer.all_special_tokens)
    score = max(s for piece, s in pieces if piece not in special)
    pieces += [["\u2581" + word, score] for word in new]
    backend = Tokenizer.from_str(json.dumps(spec))
    for word in new:
        split = backend.encode(word, add_special_tokens=False).tokens
        if split != ["\u2581" + word]:
            raise ValueError(f"new word {word!r} is still split by the tokenizer (its normaliser?): {split}")
    # transformers' tokenizers-backed classes keep the Rust tokenizer here and read every id from it.
    tokenizer._tokenizer = backend
    # T5-XXL's table has spare rows past its 32100 pieces: new ids take those before the table grows.
    if len(tokenizer) > text_encoder.get_input_embeddings().weight.shape[0]:
        text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        table = text_encoder.get_input_embeddings().weight
        for word in new:
            table[tokenizer.convert_tokens_to_ids("\u2581" + word)] = rows[word].to(table)
    logger.info("added %d new words to the tokenizer: %s", len(new), ", ".join(new))
    return new


@torch.no_grad()
def encode_text(
    tokenizer,
    text_encoder,
    prompts: str | list[str],
    max_length: int = MAX_TEXT_TOKENS,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """T5 features of `prompts` -> (embeds (B, max_length, C) float, mask (B, max_length) long, 1 = real
    token).

    Padded positions keep the encoder's output (not zeroed): Latte-1's batch-1 recipe attends to the first k
    positions of the negative prompt, pads included, so those values matter.
    """
    prompts = [preprocess_prompt(p) for p in check_prompts(prompts)]
    tokens = tokenizer(
        prompts,
        padding="max_length",
        max_length=max_length,
        truncation=True,
        add_special_tokens=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    untruncated = tokenizer(prompts, add_special_tokens=True)["input_ids"]
    for prompt, ids in zip(prompts, untruncated, strict=False):
        if len(ids) > max_length:
            logger.warning("prompt truncated to %d tokens: %r", max_length, prompt)
    # The encoder runs where it lives (it may sit on another GPU than the transformer); results go to `device`.
    encoder_device = text_encoder.device
    device = encoder_device if device is None else device
    mask = tokens.attention_mask.to(encoder_device)
    embeds = text_encoder(tokens.input_ids.to(encoder_device), attention_mask=mask)[0]  # (B, L, C)
    return embeds.to(device), mask.to(device).long()


def train_tokenizer(texts: Iterable[str], folder: str | os.PathLike, vocab_size: int = 256):
    """Train a sentencepiece unigram model on `texts` (lower-cased like prompts) and save it as a T5 tokenizer
    folder (`tokenizer.json`, `tokenizer_config.json` and the raw `spiece.model`). Returns the tokenizer.

    The model uses T5's ids (<pad> 0, </s> 1, <unk> 2) and no text normalisation, so the tokenizers-backed
    T5Tokenizer built from its pieces splits text exactly as sentencepiece does. `vocab_size` is a ceiling:
    a small corpus yields fewer pieces.
    """
    import io

    import sentencepiece as spm
    from transformers import T5Tokenizer

    texts = [preprocess_prompt(t) for t in texts]
    if not texts:
        raise ValueError("train_tokenizer needs at least one text")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        pad_id=PAD_ID,
        eos_id=EOS_ID,
        unk_id=UNK_ID,
        bos_id=-1,
        hard_vocab_limit=False,
        normalization_rule_name="identity",
        character_coverage=1.0,
        minloglevel=2,
    )
    processor = spm.SentencePieceProcessor(model_proto=model.getvalue())
    pieces = [(processor.id_to_piece(i), processor.get_score(i)) for i in range(processor.get_piece_size())]
    tokenizer = T5Tokenizer(vocab=pieces, extra_ids=0)
    folder = Path(folder)
    tokenizer.save_pretrained(str(folder))
    # The raw model too, for tokenizer versions that read spiece.model.
    write_file(folder / "spiece.model", lambda tmp: Path(tmp).write_bytes(model.getvalue()))
    return tokenizer
