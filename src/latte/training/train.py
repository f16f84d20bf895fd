"""`train(cfg)`: the Latte trainer, read top to bottom.

One process or many (`torchrun --nproc_per_node K -m latte train CONFIG`): DDP or FSDP, rank 0 alone logs
and writes. Data order and every random draw of a sample (timestep, noise, posterior draw, caption dropout)
come from (seed, global sample position), so a run resumed from a checkpoint, or run on another number of
processes with the same global batch, sees exactly the same samples and noise.
"""

import contextlib
import logging
import math
import os
import pickle
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from latte.data.cache import NO_LABEL, LatentCache, OnlineLatents, build_cache
from latte.diffusion import GaussianDiffusion, linear_betas
from latte.models.io import read_json, write_json
from latte.outputs import check_folder_target, remove_orphans
from latte.training.checkpoint import (
    CHECKPOINT_DIR,
    checkpoint_step,
    load_latest,
    newest_readable,
    resume_conflicts,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from latte.training.config import Config, save_config
from latte.training.export import export_run
from latte.training.lock import run_folder_lock
from latte.training.lora import apply_lora, make_ema, trained_names
from latte.training.model import build_model, load_frozen
from latte.training.samples import SAMPLES_DIR, SampleRenderer

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.yaml"
METRICS_NAME = "metrics.jsonl"
NUM_TRAIN_TIMESTEPS = 1000


#################################################################################
#                               Small helpers                                   #
#################################################################################


def lr_at(step: int, t) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warm-up, then constant or cosine to min_lr."""
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    if t.lr_schedule == "constant":
        return t.lr
    progress = (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps)
    return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1 + math.cos(math.pi * min(progress, 1.0)))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema = decay * ema + (1 - decay) * model, parameter by parameter."""
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        # Frozen weights (a LoRA run's base) never change: the EMA shares them, or (FSDP) holds an equal copy
        # that needs no gathering every step.
        if p.requires_grad:
            e.lerp_(_full(p.detach()).to(e.dtype), 1 - decay)


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """A plain tensor from an FSDP DTensor (gathering its shards), or the tensor itself."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def sample_generator(seed: int, position: int) -> torch.Generator:
    """The generator of the sample at global position `position` of the data stream."""
    return torch.Generator().manual_seed(seed * 1_000_003 + position)


class SampleOrder:
    """Global sample position -> data set index: a new permutation per epoch, a pure function of the seed."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self._perms = size, seed, {}

    def __call__(self, position: int) -> tuple[int, int]:
        """(epoch, data set index) of the sample at `position`."""
        epoch, offset = divmod(position, self.size)
        if epoch not in self._perms:
            generator = sample_generator(self.seed, -1 - epoch)
            self._perms = {epoch: torch.randperm(self.size, generator=generator)}
        return epoch, int(self._perms[epoch][offset])


def pad_text(features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Text features [(k_i, C)] -> embeds (B, max k, C) zero-padded, and keep-mask (B, max k)."""
    length = max(len(f) for f in features)
    embeds = features[0].new_zeros(len(features), length, features[0].shape[1])
    mask = torch.zeros(len(features), length, dtype=torch.long)
    for i, f in enumerate(features):
        embeds[i, : len(f)], mask[i, : len(f)] = f, 1
    return embeds, mask


@dataclass
class Dist:
    """This process's place in the job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")  # where collectives run (NCCL needs CUDA tensors)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def share(self, value):
        """Rank 0's `value` on every rank (a picklable object); also a barrier."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, device=self.device)
        return box[0]

    def agree(self, failure: BaseException | None, doing: str) -> None:
        """Fail on every rank when rank 0 failed at `doing`; also a barrier. The other ranks learn of the failure
        instead of waiting forever for a rank 0 that gave up, and raise rank 0's error themselves, so that every
        rank reports it the same way (bad input: one line from the CLI, no traceback)."""
        shared = self.share(None if failure is None else _picklable(failure, doing))
        if failure is not None:
            raise failure
        if shared is not None:
            raise shared

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean of `values` over all ranks (a CPU tensor)."""
        if self.world > 1:
            values = values.to(self.device)
            dist.all_reduce(values)
            values = values.cpu() / self.world
        return values


def _picklable(failure: BaseException, doing: str) -> BaseException:
    """`failure`, or a RuntimeError naming it when it cannot travel to the other ranks."""
    try:
        pickle.loads(pickle.dumps(failure))
    except Exception:
        return RuntimeError(f"rank 0 failed {doing}: {type(failure).__name__}: {failure}")
    return failure


def init_distributed(device: str | None) -> tuple[Dist, torch.device]:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if world == 1:
        return Dist(), torch.device(device or ("cuda" if cuda else "cpu"))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    return Dist(rank, world, device), device


#################################################################################
#                         Data: the latent cache                                #
#################################################################################


def make_dataset(cfg: Config):
    """The clip data set the config names (items {"video", "caption", "label"}, optional stills)."""
    d = cfg.data
    if d.source == "synthetic":
        from latte.data.synthetic import SyntheticShapes

        return SyntheticShapes(
            d.num_samples, num_frames=d.num_frames, size=d.size, seed=d.synthetic_seed, split=d.split,
            captions=d.synthetic_captions,
        )
    from latte.data.video import VideoFolder

    return VideoFolder(
        d.root,
        captions=d.captions,
        num_frames=d.num_frames,
        frame_interval=d.frame_interval,
        sampling=d.sampling,
        size=d.size,
        flip=d.flip,
        seed=cfg.train.seed,
        image_root=d.image_root,
        use_image_num=d.use_image_num,
    )


def cache_fingerprint(cfg: Config) -> dict:
    """What a cache depends on: the data settings (not where the cache lives) and the frozen components."""
    data = {
        k: v for k, v in cfg.to_dict()["data"].items() if k not in ("use_cache", "cache_dir", "num_workers")
    }
    components = str(Path(cfg.components).resolve()) if cfg.components else None
    fingerprint = {"data": data, "components": components, "text": cfg.model.type == "t2v"}
    if cfg.train.lora.new_words:  # they change how captions are encoded
        fingerprint["new_words"] = list(cfg.train.lora.new_words)
    return fingerprint


def prepare_cache(cfg: Config, ranks: Dist, device: torch.device) -> LatentCache:
    """Open the run's latent cache, building it first (rank 0) when it does not exist."""
    folder, fingerprint = cfg.cache_path, cache_fingerprint(cfg)
    meta_path = folder / "cache.json"
    failure = None
    if ranks.main and not meta_path.is_file():
        logger.info("building the latent cache in %s", folder)
        try:
            dataset = make_dataset(cfg)  # before loading the big frozen models: bad data paths fail fast
            vae, text = load_frozen(cfg, device)
            build_cache(
                dataset,
                folder,
                vae,
                text,
                fingerprint,
                repeats=cfg.data.cache_repeats,
                shard_size=cfg.data.shard_size,
                num_workers=cfg.data.num_workers,
            )
        except Exception as err:
            failure = err
    ranks.agree(failure, "to build the latent cache")
    found = read_json(meta_path).get("fingerprint") or {}
    if found != fingerprint:
        changed = sorted(
            k for k in fingerprint["data"] if found.get("data", {}).get(k) != fingerprint["data"][k]
        )
        if found.get("new_words") != fingerprint.get("new_words"):
            changed.append("train.lora.new_words")
        what = ", ".join(changed) or "the components"
        raise ValueError(
            f"the latent cache in {folder} was built for other settings ({what} differ); "
            "delete it or set data.cache_dir to another folder"
        )
    return LatentCache(folder)


#################################################################################
#                                 Batches                                       #
#################################################################################


def draw(generator: torch.Generator, shape: tuple[int, ...], cfg_dropout: float) -> dict:
    """The random draws of one sample: timestep, diffusion noise, posterior noise, conditioning dropout."""
    return {
        "t": int(torch.randint(NUM_TRAIN_TIMESTEPS, (1,), generator=generator)),
        "noise": torch.randn(shape, generator=generator),
        "posterior": torch.randn(shape, generator=generator),
        "drop": bool(torch.rand(1, generator=generator) < cfg_dropout),
    }


def make_batch(
    cache: LatentCache, order: SampleOrder, positions: list[int], cfg: Config, num_classes: int = 0
):
    """Training tensors for the samples at global `positions` (CPU): latents x0, noise, t, conditioning."""
    items = []
    for p in positions:
        epoch, index = order(p)
        if hasattr(cache, "set_epoch"):
            cache.set_epoch(epoch)  # encoding on the fly: a new random window per epoch
        items.append(cache[index])
    draws = [
        draw(sample_generator(cfg.train.seed, p), _latent_shape(it), cfg.train.cfg_dropout)
        for p, it in zip(positions, items, strict=True)
    ]
    # (B, C, F(+K), h, w): a posterior sample of each clip (and its stills)
    x0 = torch.stack([_latent(it, d["posterior"]) for it, d in zip(items, draws, strict=True)])
    batch = {
        "x0": x0,
        "noise": torch.stack([d["noise"] for d in draws]),
        "t": torch.tensor([d["t"] for d in draws]),
    }
    if cfg.model.type == "t2v":
        batch["text"], batch["text_mask"] = pad_text(
            [_caption(cache, it["caption"], d["drop"]) for it, d in zip(items, draws, strict=True)]
        )
    elif num_classes:  # class-conditional: dropped labels become the null class `num_classes`
        labels = []
        for it, d in zip(items, draws, strict=True):
            label = torch.tensor([it["label"], *it.get("image_label", torch.empty(0)).tolist()])
            if (label == NO_LABEL).any() or (label >= num_classes).any():
                raise ValueError(
                    f"a model with num_classes={num_classes} needs labels 0..{num_classes - 1}; "
                    f"got {label.tolist()} (class sub-folders give the labels)"
                )
            labels.append(torch.full_like(label, num_classes) if d["drop"] else label)
        batch["labels"] = torch.stack(labels)  # (B, 1 + K)
    return batch


class BatchStream(Dataset):
    """Micro-batch k of this rank (k = step * grad_accum + micro) as a data set, so that DataLoader workers
    build batches ahead of the device. Each is a pure function of k: workers change nothing in the data."""

    def __init__(self, cache, order: SampleOrder, cfg: Config, num_classes: int, local_batch: int, ranks):
        self.cache, self.order, self.cfg, self.num_classes = cache, order, cfg, num_classes
        self.local_batch, self.rank, self.world = local_batch, ranks.rank, ranks.world

    def __len__(self) -> int:
        return self.cfg.train.steps * self.cfg.train.grad_accum

    def __getitem__(self, k: int) -> dict:
        # This rank's slice of the micro-batch, as positions in the global sample stream.
        first = k * self.local_batch * self.world + self.rank * self.local_batch
        positions = list(range(first, first + self.local_batch))
        return make_batch(self.cache, self.order, positions, self.cfg, self.num_classes)


def _caption(cache: LatentCache, caption: int, drop: bool) -> torch.Tensor:
    text = cache.text(caption)
    return cache.null_text(len(text)) if drop else text


def _latent_shape(item: dict) -> tuple[int, ...]:
    c, f, h, w = item["mean"].shape
    return (c, f + (item["image_mean"].shape[1] if "image_mean" in item else 0), h, w)


def _latent(item: dict, eps: torch.Tensor) -> torch.Tensor:
    """A posterior sample of the clip (and its stills, appended after the frames)."""
    mean, std = item["mean"], item["std"]
    if "image_mean" in item:
        mean, std = torch.cat([mean, item["image_mean"]], dim=1), torch.cat([std, item["image_std"]], dim=1)
    return mean + std * eps


def predict(model: nn.Module, cfg: Config, x_t: torch.Tensor, batch: dict) -> torch.Tensor:
    """The model's output (B, C_out, F(+K), h, w) for noised latents and the batch's conditioning."""
    if cfg.model.type == "t2v":
        out = model(
            x_t, batch["t"], encoder_hidden_states=batch["text"], encoder_attention_mask=batch["text_mask"]
        )
    else:
        labels = batch.get("labels")
        if labels is not None and cfg.data.use_image_num == 0:
            labels = labels[:, 0]
        out = model(x_t, batch["t"], class_labels=labels, use_image_num=cfg.data.use_image_num)
    return out.sample if hasattr(out, "sample") else out


#################################################################################
#                                 Training                                      #
#################################################################################


class MetricsLog:
    """Rank 0's metric sink: JSONL lines in RUN_DIR/metrics.jsonl, plus TensorBoard when it is installed."""

    def __init__(self, run_dir: Path, resume_step: int, tensorboard: bool):
        import json

        self._json = json
        self.path = run_dir / METRICS_NAME
        if self.path.is_file():  # drop lines a killed run logged after its last checkpoint
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= resume_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept))
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:
                logger.debug("tensorboard is not installed; metrics go to %s only", self.path)

    def write(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(self._json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"train/{key}", value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def wrap_parallel(model: nn.Module, cfg: Config, ranks: Dist, device: torch.device) -> nn.Module:
    """DDP, or FSDP (version 2, `fully_shard`): one shard group per sub-layer of each transformer block, the
    rest of the model in the root group."""
    if ranks.world == 1:
        return model
    if cfg.train.parallel == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(device.type, (ranks.world,))
        for blocks in (m for m in model.children() if isinstance(m, nn.ModuleList)):
            for block in blocks:
                for name, layer in block.named_children():
                    # The T2V model projects cross-attention keys/values (attn2) in its own forward, once
                    # per step, outside the block: those weights must stay in the root group.
                    if name != "attn2" and any(True for _ in layer.parameters()):
                        fully_shard(layer, mesh=mesh)
        return fully_shard(model, mesh=mesh)
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


@contextlib.contextmanager
def hold_run_folder(run_dir: Path, ranks: Dist):
    """Rank 0 holds the lock of the run folder for the `with` block (the other ranks work under it); when it
    cannot take it, every rank fails at once."""
    with contextlib.ExitStack() as stack:
        failure = None
        if ranks.main:
            try:
                stack.enter_context(run_folder_lock(run_dir))
            except Exception as err:
                failure = err
        ranks.agree(failure, "to lock the run folder")
        yield


def train(cfg: Config) -> dict:
    """Train the model `cfg` describes; returns a summary dict (final step, last logged loss, run folder).

    Rank 0 holds the run folder's lock for the whole run. Ctrl-C stops the run, logs which checkpoint was kept
    and raises KeyboardInterrupt again."""
    t = cfg.train
    ranks, device = init_distributed(t.device)
    if t.batch_size % (ranks.world * t.grad_accum):
        raise ValueError(
            f"train.batch_size ({t.batch_size}) must be divisible by processes ({ranks.world}) x "
            f"train.grad_accum ({t.grad_accum})"
        )
    if t.precision == "fp16" and device.type != "cuda":
        raise ValueError("train.precision=fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    if cfg.export_dir:
        check_folder_target(cfg.export_dir)  # now, not after the training
    if device.type == "cuda" and t.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    with hold_run_folder(cfg.run_dir, ranks):
        try:
            return _train(cfg, ranks, device)
        except KeyboardInterrupt:
            if ranks.main:
                logger.warning("%s", interrupted_message(cfg.run_dir))
            raise


def interrupted_message(run_dir: Path) -> str:
    """What an interrupted run kept, and how to go on."""
    kept = newest_readable(run_dir)
    if kept is None:
        return f"interrupted before the first checkpoint of {run_dir}; rerun the same command to start again"
    return f"interrupted: kept {kept} (step {checkpoint_step(kept)}); rerun the same command to resume"


def check_resumable(cfg: Config, path: Path, state: dict) -> None:
    """Fail, naming the differing settings, when the checkpoint `path` was made with settings that cannot be
    resumed under `cfg`."""
    conflicts = resume_conflicts(state["config"], cfg.to_dict())
    if conflicts:
        raise ValueError(
            f"cannot resume {cfg.run_dir} from {path.name} with these settings: {'; '.join(conflicts)} (old -> "
            f"new); resume with the run's own settings ({cfg.run_dir / CONFIG_NAME}), or set output_dir to a new "
            "folder to start a new run"
        )


def check_weights_fit(model: nn.Module, weights: dict, path: Path, names: list[str] | None = None) -> None:
    """Fail in one line when a checkpoint's weights (all, or those `names` lists) do not fit the model built
    from the config."""
    expected = {k: tuple(v.shape) for k, v in _state_dict(model, names).items()}
    found = {k: tuple(v.shape) for k, v in weights.items()}
    differ = sorted(k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k))
    if differ:
        raise ValueError(
            f"cannot resume from {path}: {len(differ)} of its weights do not fit the model this config builds "
            f"(e.g. {differ[0]}: {found.get(differ[0])} in the checkpoint, {expected.get(differ[0])} now); set "
            "output_dir to a new folder to start a new run"
        )


def _train(cfg: Config, ranks: Dist, device: torch.device) -> dict:
    """The run itself, under the run folder's lock."""
    t, run_dir = cfg.train, cfg.run_dir
    if ranks.main:  # what a killed run left half-written
        for folder in (run_dir, run_dir / CHECKPOINT_DIR, run_dir / SAMPLES_DIR):
            remove_orphans(folder)
    latest = load_latest(run_dir)
    if latest is not None:
        check_resumable(cfg, *latest)

    # 1. Data: the latent cache (built on first use) or on-the-fly encoding; the deterministic sample order.
    if cfg.data.use_cache:
        cache = prepare_cache(cfg, ranks, device)
    else:
        dataset = make_dataset(cfg)
        cache = OnlineLatents(dataset, *load_frozen(cfg, device))
    order = SampleOrder(len(cache), t.seed)
    local_batch = t.batch_size // (ranks.world * t.grad_accum)

    # 2. Model and EMA (resumed from the newest checkpoint of the run folder, if any), optimizer, objective.
    #    The resolved config is written once the checkpoint is known to fit.
    torch.manual_seed(t.seed)
    model = build_model(cfg, cache.meta["latent_shape"], cache.meta["text_dim"])
    fsdp = ranks.world > 1 and t.parallel == "fsdp"
    # LoRA: only the adapter trains, is averaged and is saved; the frozen base is model.pretrained.
    saved = None
    if t.lora.enabled:
        saved = trained_names(apply_lora(model, cfg))
    model = model.to(device)
    if t.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    ema = make_ema(model, share_frozen=not fsdp)
    start, state = 0, None
    if latest is not None:
        path, state = latest
        check_weights_fit(model, state["model"], path, saved)
        model.load_state_dict(state["model"], strict=saved is None)
        ema.load_state_dict(state["ema"], strict=saved is None)
        set_rng_state(state["rng"])
        start = state["step"]
        if ranks.main:
            logger.info("resumed from %s (step %d)", path, start)
    if ranks.main:
        save_config(cfg, run_dir / CONFIG_NAME)
    train_model = wrap_parallel(model, cfg, ranks, device)  # FSDP shards `model` in place
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=t.lr, betas=t.adam_betas, weight_decay=t.weight_decay
    )
    scaler = torch.amp.GradScaler("cuda", enabled=t.precision == "fp16")
    if state is not None:
        _load_optimizer(model, optimizer, state["optimizer"], fsdp)
        scaler.load_state_dict(state["scaler"])
    num_classes = model.config.num_classes if cfg.model.type == "latte" else 0
    diffusion = GaussianDiffusion(linear_betas(NUM_TRAIN_TIMESTEPS), t.prediction_type)
    train_model.train()
    if ranks.main:
        n_params = sum(p.numel() for p in model.parameters())
        n_trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
        logger.info(
            "model: %s, %.2f M parameters (%.2f M trained); %d cached clips; global batch %d = %d processes x %d x %d "
            "accumulation",
            type(model).__name__,
            n_params / 1e6,
            n_trained / 1e6,
            len(cache),
            t.batch_size,
            ranks.world,
            local_batch,
            t.grad_accum,
        )
    metrics = MetricsLog(run_dir, start, cfg.log.tensorboard) if ranks.main else None
    render = SampleRenderer(cfg, device) if cfg.log.sample_every and ranks.main else None
    autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.precision)

    # 3. The loop: lr, micro-steps (forward, loss, backward), clip, step, EMA, log, checkpoint.
    stream = BatchStream(cache, order, cfg, num_classes, local_batch, ranks)
    workers = cfg.data.num_workers if cfg.data.use_cache else 0  # on-the-fly encoding uses the device
    batches = iter(
        DataLoader(
            stream,
            batch_size=None,
            sampler=range(start * t.grad_accum, len(stream)),
            num_workers=workers,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
        )
    )
    # The bar is closed however the loop ends, so that a Ctrl-C message starts on a line of its own.
    with tqdm(total=t.steps, initial=start, desc="training", unit="step", disable=not ranks.main) as bar:
        # Running sums stay on the device: reading them every step would stall the GPU queue.
        running, window, window_start, last = torch.zeros(4, device=device), 0, time.perf_counter(), {}
        for step in range(start, t.steps):
            lr = lr_at(step, t)
            for group in optimizer.param_groups:
                group["lr"] = lr
            for micro in range(t.grad_accum):
                batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
                x_t = diffusion.q_sample(batch["x0"], batch["t"], batch["noise"])
                # DDP: all-reduce gradients only on the last micro-step.
                last_micro = micro == t.grad_accum - 1
                no_sync = train_model.no_sync() if not last_micro and hasattr(train_model, "no_sync") else None
                with no_sync or contextlib.nullcontext():
                    with torch.autocast(
                        device.type, dtype=autocast or torch.float32, enabled=autocast is not None
                    ):
                        out = predict(train_model, cfg, x_t, batch)
                    losses = diffusion.training_losses(out, batch["x0"], x_t, batch["t"], batch["noise"])
                    scaler.scale(losses["loss"].mean() / t.grad_accum).backward()
                vb = losses["vb"] if losses["vb"] is not None else torch.zeros_like(losses["mse"])
                running[:3] += (
                    torch.stack([losses["loss"].mean(), losses["mse"].mean(), vb.mean()]).detach().float()
                    / t.grad_accum
                )
            scaler.unscale_(optimizer)
            clip = t.clip_grad if t.clip_grad > 0 and step >= t.clip_grad_from else float("inf")
            grad_norm = nn.utils.clip_grad_norm_(model.parameters(), clip)
            running[3] += _full(grad_norm).detach().float()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            update_ema(ema, model, t.ema_decay)
            done, window = step + 1, window + 1
            bar.update(1)

            if done % cfg.log.log_every == 0 or done == t.steps:
                avg = ranks.mean(running / window).cpu()
                last = {
                    "step": done,
                    "loss": avg[0].item(),
                    "mse": avg[1].item(),
                    "vb": avg[2].item(),
                    "grad_norm": avg[3].item(),
                    "lr": lr,
                    "steps_per_s": window / (time.perf_counter() - window_start),
                }
                if metrics is not None:
                    metrics.write(last)
                    bar.set_postfix(loss=f"{last['loss']:.4f}", lr=f"{lr:.2e}")
                running, window, window_start = torch.zeros(4, device=device), 0, time.perf_counter()
            if render is not None and done % cfg.log.sample_every == 0:
                render(ema, done)
            if done % cfg.log.ckpt_every == 0 or done == t.steps:
                # Every rank takes part: FSDP gathers its shards here.
                weights, opt_state = _state_dict(model, saved), _optimizer_state(model, optimizer, fsdp)
                if ranks.main:
                    save_checkpoint(
                        run_dir,
                        done,
                        {
                            "step": done,
                            "model": weights,
                            "ema": _state_dict(ema, saved),
                            "optimizer": opt_state,
                            "scaler": scaler.state_dict(),
                            "rng": rng_state(),
                            "config": cfg.to_dict(),
                            "latent_shape": cache.meta["latent_shape"],
                            "text_dim": cache.meta["text_dim"],
                        },
                        cfg.log.keep_last,
                    )
                ranks.barrier()
    if metrics is not None:
        metrics.close()
    summary = {"step": t.steps, "run_dir": str(run_dir), **{k: v for k, v in last.items() if k != "step"}}
    if ranks.main:
        write_json(run_dir / "summary.json", summary)
        if cfg.export_dir:
            export_run(run_dir, cfg.export_dir, lora=t.lora.enabled)
    return summary


def _state_dict(module: nn.Module, names: list[str] | None = None) -> dict:
    """The module's state dict on the CPU (FSDP shards gathered), or only the entries `names` lists."""
    keep = None if names is None else set(names)
    return {k: _full(v).detach().cpu() for k, v in module.state_dict().items() if keep is None or k in keep}


def _optimizer_state(model: nn.Module, optimizer, fsdp: bool) -> dict:
    if not fsdp:
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(
        model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )


def _load_optimizer(model: nn.Module, optimizer, state: dict, fsdp: bool) -> None:
    if not fsdp:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
