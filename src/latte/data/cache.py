"""Latent cache: clips encoded once by the frozen VAE and captions once by the text encoder, in safetensors
shards, so training never runs the big frozen models (the normal path on small machines).

Layout of a cache folder:
    cache.json                  what was encoded (data settings, components, shapes, clip count, shards)
    text.safetensors            unique captions' T5 features, real tokens only: `embeds` (sum k_i, C),
                                `offsets` (U + 1,); caption 0 is the empty prompt "" (caption dropout),
                                kept whole (all 120 positions, pads included; see `null_text`)
    latents-00000.safetensors   `mean`, `std` (n, 4, F, h, w) of the VAE posterior (x scaling factor),
                                `caption` (n,) index into the text table, `label` (n,) (-1: none),
                                joint training only: `image_mean`, `image_std` (n, 4, K, h, w),
                                `image_label` (n, K)

Why the posterior's mean and std rather than samples: the paper draws a fresh latent from the posterior every
time a clip is used; storing (mean, std) keeps that exactly (latent = mean + std * eps, new eps each step)
for twice the bytes of one sample. Why only real tokens: training masks padded text tokens out
(`encoder_attention_mask`), so their features never matter, and a T5-XXL caption of 15 tokens then takes
15 x 4096 floats instead of 120 x 4096.
"""

import bisect
import logging
import os
from pathlib import Path

import torch
from einops import rearrange
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from latte.models.io import read_json, write_json
from latte.models.vae import scaling_factor
from latte.outputs import write_file

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
META_NAME = "cache.json"
TEXT_NAME = "text.safetensors"
NULL_CAPTION = ""  # caption index 0: the empty prompt, used for caption dropout and as CFG's negative
NO_LABEL = -1


@torch.no_grad()
def encode_posterior(vae, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Video (B, 3, F, H, W) in [-1, 1] -> mean and std of the VAE posterior, each (B, C_latent, F, h, w),
    multiplied by the VAE's scaling factor (so mean + std * eps is a training latent)."""
    frames = rearrange(video, "b c f h w -> (b f) c h w").to(device=vae.device, dtype=vae.dtype)
    posterior = vae.encode(frames).latent_dist
    scale = scaling_factor(vae)
    mean, std = (
        rearrange(x.float() * scale, "(b f) c h w -> b c f h w", b=video.shape[0])
        for x in (posterior.mean, posterior.std)
    )
    return mean, std


def skip_bad_items(items: list) -> list:
    """DataLoader collate that drops unreadable items (None), keeping the rest as a list."""
    return [item for item in items if item is not None]


def build_cache(
    dataset: Dataset,
    folder: str | os.PathLike,
    vae,
    text_components=None,
    fingerprint: dict | None = None,
    repeats: int = 1,
    shard_size: int = 256,
    batch_size: int = 4,
    num_workers: int = 0,
) -> Path:
    """Encode every clip of `dataset` (`repeats` draws each) into a cache folder and return it.

    Items are {"video": (3, F, H, W), "caption": str, "label": int}, optionally "images" (3, K, H, W) and
    "image_labels" (K,) for joint training; None items (unreadable files) are skipped. `text_components` is
    (tokenizer, text_encoder) for text-to-video, None for class/unconditional models. `fingerprint` (a
    JSON-able dict) is stored so that a later run can tell whether the cache fits its config.
    `dataset.set_epoch(r)` is called before draw r when the dataset has it (new random windows and flips).
    """
    folder = Path(folder)
    for old in folder.glob("latents-*.safetensors"):
        old.unlink()
    (folder / META_NAME).unlink(missing_ok=True)
    captions: dict[str, int] = {NULL_CAPTION: 0}
    shard: dict[str, list[torch.Tensor]] = {}
    shards, count = [], 0

    def flush():
        nonlocal shard
        if not shard:
            return
        tensors = {k: torch.cat(v).contiguous() for k, v in shard.items()}
        name = f"latents-{len(shards):05d}.safetensors"
        write_file(folder / name, lambda tmp: save_file(tensors, tmp))
        shards.append({"name": name, "size": len(tensors["caption"])})
        shard = {}

    bar = tqdm(total=len(dataset) * repeats, desc="encoding clips", unit="clip")
    for repeat in range(repeats):
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(repeat)
        loader = DataLoader(
            dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=skip_bad_items
        )
        for items in loader:
            bar.update(batch_size)
            if not items:
                continue
            mean, std = encode_posterior(vae, torch.stack([it["video"] for it in items]))
            fields = {
                "mean": mean,
                "std": std,
                "caption": torch.tensor([captions.setdefault(it["caption"], len(captions)) for it in items]),
                "label": torch.tensor([int(it.get("label", NO_LABEL)) for it in items]),
            }
            if "images" in items[0]:
                fields["image_mean"], fields["image_std"] = encode_posterior(
                    vae, torch.stack([it["images"] for it in items])
                )
                fields["image_label"] = torch.stack([torch.as_tensor(it["image_labels"]) for it in items])
            for key, value in fields.items():
                shard.setdefault(key, []).append(value.cpu())
            count += len(items)
            if sum(len(v) for v in shard["caption"]) >= shard_size:
                flush()
    bar.close()
    flush()
    if count == 0:
        raise ValueError(f"no readable clips to cache in {folder}: every item of the data set was skipped")

    text_dim = None
    if text_components is not None:
        text_dim = write_text_table(list(captions), folder / TEXT_NAME, *text_components)
    first = _open(folder / shards[0]["name"])
    names = first.keys()
    meta = {
        "version": CACHE_VERSION,
        "num_clips": count,
        "shards": shards,
        "num_captions": len(captions),
        "latent_shape": list(first.get_slice("mean").get_shape()[1:]),
        "text_dim": text_dim,
        "num_images": first.get_slice("image_mean").get_shape()[2] if "image_mean" in names else 0,
        "scaling_factor": scaling_factor(vae),
        "fingerprint": fingerprint or {},
    }
    write_json(folder / META_NAME, meta)  # written last: a cache without it is incomplete
    logger.info("cached %d clips (%d captions) in %s", count, len(captions), folder)
    return folder


@torch.no_grad()
def caption_features(tokenizer, text_encoder, captions: list[str]) -> list[torch.Tensor]:
    """T5 features of each caption's real tokens [(k_i, C)] on the CPU; the empty prompt keeps all its
    positions, pads included (see `LatentCache.null_text`)."""
    from latte.models.text_encoder import encode_text

    embeds, mask = encode_text(tokenizer, text_encoder, captions)
    keep = mask.bool()
    keep[[c == NULL_CAPTION for c in captions]] = True
    return [e[m].float().cpu() for e, m in zip(embeds, keep, strict=True)]


def write_text_table(captions: list[str], path: Path, tokenizer, text_encoder, batch_size: int = 32) -> int:
    """Encode captions (caption 0 must be "") and store their features; returns the feature width."""
    pieces = []
    for start in tqdm(range(0, len(captions), batch_size), desc="encoding captions", unit="batch"):
        pieces += caption_features(tokenizer, text_encoder, captions[start : start + batch_size])
    offsets = torch.tensor([0] + [len(p) for p in pieces]).cumsum(0)
    tensors = {"embeds": torch.cat(pieces).contiguous(), "offsets": offsets}
    write_file(path, lambda tmp: save_file(tensors, tmp))
    return int(tensors["embeds"].shape[1])


def _open(path: Path):
    return safe_open(str(path), framework="pt")


class LatentCache(Dataset):
    """A cache folder as a data set: item i = {"mean", "std" (4, F, h, w), "caption" (int), "label" (int)}
    (+ "image_mean", "image_std", "image_label" for joint training). Shards are memory-mapped, not loaded."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        meta_path = self.folder / META_NAME
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"no latent cache in {self.folder} (missing {META_NAME}); build it with `latte cache CONFIG`"
            )
        self.meta = read_json(meta_path)
        if self.meta.get("version") != CACHE_VERSION:
            raise ValueError(
                f"cache {self.folder} has version {self.meta.get('version')}; this code reads "
                f"version {CACHE_VERSION}: rebuild it"
            )
        self.sizes = [s["size"] for s in self.meta["shards"]]
        self.starts = torch.tensor([0] + self.sizes).cumsum(0).tolist()
        self._handles: dict[int, object] = {}
        self._text = None

    def __len__(self) -> int:
        return self.meta["num_clips"]

    def _shard(self, i: int):
        if i not in self._handles:
            path = self.folder / self.meta["shards"][i]["name"]
            if not path.is_file():
                raise FileNotFoundError(f"missing cache shard {path} (listed in {self.folder / META_NAME})")
            self._handles[i] = _open(path)
        return self._handles[i]

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a cache of {len(self)} clips")
        shard = bisect.bisect_right(self.starts, index) - 1  # starts[shard] <= index < starts[shard + 1]
        row, handle = index - self.starts[shard], self._shard(shard)
        item = {key: handle.get_slice(key)[row : row + 1][0] for key in handle.keys()}  # noqa: SIM118 (not a dict)
        item["caption"], item["label"] = int(item["caption"]), int(item["label"])
        return item

    def null_text(self, length: int) -> torch.Tensor:
        """The dropped-caption condition for a caption of `length` tokens: the first `length` positions of the
        encoded empty prompt, pads included. Latte-1's pipeline builds its CFG negative exactly so (cut to
        the prompt's token count), so training and sampling see the same unconditional input."""
        return self.text(0)[:length]

    def text(self, caption: int) -> torch.Tensor:
        """Real-token features (k, C) of caption `caption` (0 = the empty prompt)."""
        if self._text is None:
            path = self.folder / TEXT_NAME
            if not path.is_file():
                raise FileNotFoundError(
                    f"cache {self.folder} has no text features ({TEXT_NAME}): it was built "
                    "for a class/unconditional model"
                )
            handle = _open(path)
            self._text = (handle.get_tensor("embeds"), handle.get_tensor("offsets").tolist())
        embeds, offsets = self._text
        return embeds[offsets[caption] : offsets[caption + 1]]


class OnlineLatents:
    """The `LatentCache` interface over a clip data set, encoding each clip when it is drawn
    (`data.use_cache: false`, for GPUs where the frozen models are cheap next to the transformer): a new
    random window / flip per epoch, unlike a cache. Captions are encoded once and remembered."""

    def __init__(self, dataset: Dataset, vae, text_components=None):
        self.dataset, self.vae, self.text_components = dataset, vae, text_components
        self.captions: dict[str, int] = {NULL_CAPTION: 0}
        self._features: dict[int, torch.Tensor] = {}
        first = self[0]
        self.meta = {
            "latent_shape": list(first["mean"].shape),
            "text_dim": self.text(0).shape[1] if text_components is not None else None,
        }

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict:
        for offset in range(len(self)):  # an unreadable clip (None) is replaced by the next readable one
            item = self.dataset[(index + offset) % len(self)]
            if item is not None:
                break
        else:
            raise ValueError("no readable clips in the data set: every item was skipped")
        mean, std = encode_posterior(self.vae, item["video"][None])
        out = {
            "mean": mean[0].cpu(),
            "std": std[0].cpu(),
            "label": int(item.get("label", NO_LABEL)),
            "caption": self.captions.setdefault(item["caption"], len(self.captions)),
        }
        if "images" in item:
            image_mean, image_std = encode_posterior(self.vae, item["images"][None])
            out.update(
                image_mean=image_mean[0].cpu(),
                image_std=image_std[0].cpu(),
                image_label=torch.as_tensor(item["image_labels"]),
            )
        return out

    def text(self, caption: int) -> torch.Tensor:
        if caption not in self._features:
            text = next(t for t, i in self.captions.items() if i == caption)
            self._features[caption] = caption_features(*self.text_components, [text])[0]
        return self._features[caption]

    def null_text(self, length: int) -> torch.Tensor:
        return self.text(0)[:length]
